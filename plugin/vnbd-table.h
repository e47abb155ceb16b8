/* vnbd-table.h: the extent table the Node worker sends the shim (docs/PROTOCOL.md, "The table").
 * The parser is pure (no nbdkit, no I/O) so that plugin/fuzz/ can drive it with libFuzzer. */
#ifndef VNBD_TABLE_H
#define VNBD_TABLE_H

#include <stddef.h>
#include <stdint.h>

#define VNBD_TABLE_HDR 32
#define VNBD_RECORD_LEN 48
#define VNBD_MAX_EXTENTS (UINT64_C(64) << 20)
#define VNBD_MAX_USIZE (UINT32_C(256) << 20)
#define VNBD_MAX_PATH_LEN 65536u

enum { VNBD_ZERO = 0, VNBD_RAW = 1, VNBD_LZ4 = 2 };

struct vnbd_extent {
  uint64_t start, length, file_offset, slice_offset;
  uint32_t kind, file, csize, usize;
};

/* The most compressed bytes accepted for a frame decoding to usize bytes. Real LZ4 writers stay
 * within usize + 0.4% + a few bytes per block; anything beyond 2x is refused before allocating. */
static inline uint64_t vnbd_max_csize (uint32_t usize)
{
  return 2 * (uint64_t) usize + 65536;
}

/* Parse and validate a table of `len` bytes. `paths[nfiles]` are the shim's own files (the table's
 * file list must repeat them exactly), `sizes[nfiles]` their sizes: every raw extent and LZ4 frame
 * must lie inside its file. On success returns 0 and sets *extents (malloc'd; free it), *n and
 * *size. On failure returns -1 with a message in err (always NUL-terminated); errno is ENOMEM
 * when allocation failed, EINVAL otherwise. */
int vnbd_parse_table (const unsigned char *t, uint64_t len,
                      size_t nfiles, const char *const *paths, const uint64_t *sizes,
                      struct vnbd_extent **extents, uint64_t *n, uint64_t *size,
                      char *err, size_t errlen);

#endif
