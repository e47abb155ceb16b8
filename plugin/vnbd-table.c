/* vnbd-table.c: parse and validate the extent table (docs/PROTOCOL.md, "The table").
 * Every field is checked before it is used; nothing is allocated before the sizes add up. */
#include "vnbd-table.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t get32 (const unsigned char *p)
{ return p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24; }
static uint64_t get64 (const unsigned char *p)
{ return get32 (p) | (uint64_t) get32 (p + 4) << 32; }

static int fail (char *err, size_t errlen, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));
static int fail (char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  if (errlen > 0) vsnprintf (err, errlen, fmt, ap);
  va_end (ap);
  errno = EINVAL;
  return -1;
}

/* Why extent e is invalid, or NULL. `end` is where it must start. */
static const char *check_extent (const struct vnbd_extent *e, uint64_t end, uint64_t size,
                                 size_t nfiles, const uint64_t *sizes)
{
  if (e->start != end) return "not contiguous";
  if (e->length == 0 || e->length > size - e->start) return "bad length";
  if (e->kind > VNBD_LZ4) return "bad kind";
  if (e->kind == VNBD_ZERO)
    return e->file_offset || e->slice_offset || e->file || e->csize || e->usize ?
      "zero extent with a file position" : NULL;
  if (e->file >= nfiles) return "bad file index";
  if (e->kind == VNBD_RAW) {
    if (e->slice_offset || e->csize || e->usize) return "raw extent with lz4 fields";
    if (e->file_offset > sizes[e->file] || e->length > sizes[e->file] - e->file_offset)
      return "raw extent beyond the end of its file";
    return NULL;
  }
  if (e->csize == 0 || e->usize == 0) return "lz4 frame of size 0";
  if (e->usize > VNBD_MAX_USIZE) return "lz4 frame decodes to more than 256 MiB";
  if (e->csize > vnbd_max_csize (e->usize)) return "lz4 frame larger than twice its decoded size";
  if (e->slice_offset > e->usize || e->length > e->usize - e->slice_offset)
    return "lz4 slice beyond the decoded frame";
  if (e->file_offset > sizes[e->file] || e->csize > sizes[e->file] - e->file_offset)
    return "lz4 frame beyond the end of its file";
  return NULL;
}

int vnbd_parse_table (const unsigned char *t, uint64_t len,
                      size_t nfiles, const char *const *paths, const uint64_t *sizes,
                      struct vnbd_extent **extents, uint64_t *np, uint64_t *sizep,
                      char *err, size_t errlen)
{
  *extents = NULL;
  if (len < VNBD_TABLE_HDR)
    return fail (err, errlen, "bad table: %" PRIu64 " bytes, shorter than its header", len);
  if (memcmp (t, "VNBDTBL1", 8) != 0) return fail (err, errlen, "bad table: bad magic");
  if (get32 (t + 8) != 1)
    return fail (err, errlen, "bad table: unsupported version %" PRIu32, get32 (t + 8));
  const uint32_t tfiles = get32 (t + 12);
  const uint64_t n = get64 (t + 16), size = get64 (t + 24);
  if (tfiles != nfiles)
    return fail (err, errlen, "bad table: %" PRIu32 " files, expected %zu", tfiles, nfiles);
  if (n > VNBD_MAX_EXTENTS)
    return fail (err, errlen, "bad table: %" PRIu64 " extents, more than the limit %" PRIu64,
                 n, VNBD_MAX_EXTENTS);
  if (size > INT64_MAX) return fail (err, errlen, "bad table: size %" PRIu64 " too large", size);
  uint64_t off = VNBD_TABLE_HDR;
  for (size_t i = 0; i < nfiles; i++) {
    if (len - off < 4) return fail (err, errlen, "bad table: truncated file list");
    const uint32_t plen = get32 (t + off);
    if (plen > VNBD_MAX_PATH_LEN)
      return fail (err, errlen, "bad table: file %zu: path of %" PRIu32 " bytes", i, plen);
    if (len - off - 4 < plen) return fail (err, errlen, "bad table: truncated file list");
    if (strlen (paths[i]) != plen || memcmp (t + off + 4, paths[i], plen) != 0)
      return fail (err, errlen, "bad table: file %zu is not %s", i, paths[i]);
    off += 4 + plen;
  }
  for (; off % 8; off++)
    if (off >= len || t[off] != 0) return fail (err, errlen, "bad table: bad padding");
  if ((len - off) / VNBD_RECORD_LEN != n || (len - off) % VNBD_RECORD_LEN != 0)
    return fail (err, errlen, "bad table: %" PRIu64 " bytes of records for %" PRIu64 " extents",
                 len - off, n);
  struct vnbd_extent *tab = malloc (n ? n * sizeof *tab : 1);
  if (tab == NULL) {
    fail (err, errlen, "cannot allocate %" PRIu64 " extents", n);
    errno = ENOMEM;
    return -1;
  }
  uint64_t end = 0;
  for (uint64_t i = 0; i < n; i++) {
    const unsigned char *r = t + off + i * VNBD_RECORD_LEN;
    struct vnbd_extent *e = &tab[i];
    e->start = get64 (r);
    e->length = get64 (r + 8);
    e->file_offset = get64 (r + 16);
    e->slice_offset = get64 (r + 24);
    e->kind = get32 (r + 32);
    e->file = get32 (r + 36);
    e->csize = get32 (r + 40);
    e->usize = get32 (r + 44);
    const char *bad = check_extent (e, end, size, nfiles, sizes);
    if (bad) {
      fail (err, errlen, "bad table: extent %" PRIu64 " at %" PRIu64 ": %s", i, e->start, bad);
      free (tab);
      return -1;
    }
    end = e->start + e->length;
  }
  if (end != size) {
    free (tab);
    return fail (err, errlen, "bad table: extents cover %" PRIu64 " of %" PRIu64 " bytes", end, size);
  }
  *extents = tab;
  *np = n;
  *sizep = size;
  return 0;
}
