/* vnbd-lz4.c: decode LZ4 frames of a chain in the shim, with a bounded cache of decoded frames.
 *
 * - One shared cache per export (nbdkit process), keyed by (file index, frame offset), holding
 *   at most `max_bytes` decoded bytes, least recently used first out. A frame larger than the
 *   bound is decoded for the requests waiting for it and not kept.
 * - Concurrent requests for a frame that is being decoded wait for that decode (one decode per
 *   frame, however many requests arrive at once: nbdcopy sends 16 reads into one 32 MiB frame).
 * - At most `decoders` frames are read and decoded at once: decoding is CPU-bound, and this bounds
 *   the memory outside the cache (compressed + decoded buffers of the frames being decoded).
 * - Buffers are mmap'd/munmap'd directly so that freed frames go back to the kernel at once (with
 *   malloc, glibc's sliding mmap threshold would keep them in arenas and RSS would grow).
 * - Frames in use by a reader are reference-counted: eviction unlinks them, the last reader
 *   frees them. Nothing is copied under the lock.
 */
#define _GNU_SOURCE
#include "vnbd-lz4.h"

#include <errno.h>
#include <inttypes.h>
#include <lz4frame.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#define LOCK() do { if (pthread_mutex_lock (&lock) != 0) abort (); } while (0)
#define UNLOCK() do { if (pthread_mutex_unlock (&lock) != 0) abort (); } while (0)
#define NBUCKETS (1u << 16)
#define MSG_LEN 256

enum { PENDING, READY, FAILED };

struct frame {
  struct frame *hnext;          /* hash chain */
  struct frame *prev, *next;    /* LRU list (READY and cached only) */
  uint64_t offset;
  uint32_t file, usize;
  int state;
  unsigned refs;
  bool linked;                  /* in the hash table */
  bool in_lru;
  unsigned char *data;          /* mmap'd, usize bytes, when READY */
  int err;                      /* FAILED: errno and message for every waiter */
  char msg[MSG_LEN];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static struct frame **buckets;
static struct frame *lru_head, *lru_tail;     /* head: most recently used */
static uint64_t max_bytes, cached_bytes;
static unsigned max_decoders = 1, active_decoders;
/* One reusable buffer for the compressed bytes per decoder slot (grown as needed, kept until
 * the export ends: fresh mappings per frame cost a page fault per 4 KiB). */
struct srcbuf {
  unsigned char *p;
  size_t cap;
  bool busy;
};
static struct srcbuf *srcbufs;
static struct vnbd_lz4_stats stats;

int vnbd_lz4_init (uint64_t max, unsigned decoders)
{
  buckets = calloc (NBUCKETS, sizeof *buckets);
  if (buckets == NULL) return -1;
  max_bytes = max;
  max_decoders = decoders ? decoders : 1;
  srcbufs = calloc (max_decoders, sizeof *srcbufs);
  if (srcbufs == NULL) {
    free (buckets);
    buckets = NULL;
    return -1;
  }
  return 0;
}

/* MAP_POPULATE: the pages are written at once anyway; one call instead of a fault per page. */
static void *map_bytes (size_t n)
{
  void *p = mmap (NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

static void unmap_bytes (void *p, size_t n)
{
  if (p && munmap (p, n) == -1) abort ();   /* only EINVAL: a programming error */
}

static void free_frame (struct frame *f)
{
  unmap_bytes (f->data, f->usize);
  free (f);
}

void vnbd_lz4_free (void)
{
  if (buckets == NULL) return;
  for (size_t i = 0; i < NBUCKETS; i++)
    for (struct frame *f = buckets[i], *nx; f; f = nx) {
      nx = f->hnext;
      free_frame (f);
    }
  free (buckets);
  buckets = NULL;
  lru_head = lru_tail = NULL;
  cached_bytes = 0;
  if (srcbufs)
    for (unsigned i = 0; i < max_decoders; i++) unmap_bytes (srcbufs[i].p, srcbufs[i].cap);
  free (srcbufs);
  srcbufs = NULL;
}

void vnbd_lz4_stats (struct vnbd_lz4_stats *s)
{
  LOCK ();
  *s = stats;
  s->bytes = cached_bytes;
  UNLOCK ();
}

static size_t bucket (uint32_t file, uint64_t offset)
{
  uint64_t h = (offset >> 6) * UINT64_C (0x9E3779B97F4A7C15) ^ (uint64_t) file * UINT64_C (0xC2B2AE3D27D4EB4F);
  return (size_t) (h >> 48) & (NBUCKETS - 1);
}

static struct frame *lookup (uint32_t file, uint64_t offset)
{
  for (struct frame *f = buckets[bucket (file, offset)]; f; f = f->hnext)
    if (f->offset == offset && f->file == file) return f;
  return NULL;
}

static void hash_unlink (struct frame *f)
{
  struct frame **pp = &buckets[bucket (f->file, f->offset)];
  while (*pp != f) pp = &(*pp)->hnext;
  *pp = f->hnext;
  f->linked = false;
}

static void lru_unlink (struct frame *f)
{
  if (f->prev) f->prev->next = f->next; else lru_head = f->next;
  if (f->next) f->next->prev = f->prev; else lru_tail = f->prev;
  f->prev = f->next = NULL;
  f->in_lru = false;
}

static void lru_push (struct frame *f)
{
  f->prev = NULL;
  f->next = lru_head;
  if (lru_head) lru_head->prev = f; else lru_tail = f;
  lru_head = f;
  f->in_lru = true;
}

static void release (struct frame *f)
{
  if (--f->refs == 0 && !f->linked) free_frame (f);
}

static void evict (void)
{
  while (cached_bytes > max_bytes && lru_tail) {
    struct frame *f = lru_tail;
    lru_unlink (f);
    hash_unlink (f);
    cached_bytes -= f->usize;
    if (f->refs == 0) free_frame (f);
  }
}

static int say (char *err, size_t errlen, int e, const char *fmt, ...)
  __attribute__ ((format (printf, 4, 5)));
static int say (char *err, size_t errlen, int e, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (err, errlen, fmt, ap);
  va_end (ap);
  errno = e;
  return -1;
}

/* Decode the complete frame src[csize] into dst[usize]. */
static int decode (const unsigned char *src, uint32_t csize, unsigned char *dst, uint32_t usize,
                   uint64_t offset, char *err, size_t errlen)
{
  LZ4F_dctx *d = NULL;
  size_t rc = LZ4F_createDecompressionContext (&d, LZ4F_VERSION);
  if (LZ4F_isError (rc))
    return say (err, errlen, ENOMEM, "LZ4F_createDecompressionContext: %s", LZ4F_getErrorName (rc));
  int r = -1;
  LZ4F_frameInfo_t fi;
  size_t in = csize;
  rc = LZ4F_getFrameInfo (d, &fi, src, &in);
  if (LZ4F_isError (rc))
    say (err, errlen, EIO, "corrupt LZ4 frame at offset %" PRIu64 ": %s", offset, LZ4F_getErrorName (rc));
  else if (fi.frameType != LZ4F_frame)
    say (err, errlen, EIO, "corrupt LZ4 frame at offset %" PRIu64 ": skippable frame", offset);
  else if (fi.dictID != 0)
    say (err, errlen, EIO, "LZ4 frame at offset %" PRIu64 " needs a dictionary", offset);
  else if (fi.contentSize != 0 && fi.contentSize != usize)
    say (err, errlen, EIO, "corrupt LZ4 frame at offset %" PRIu64 ": content size field %llu, "
         "expected %" PRIu32, offset, (unsigned long long) fi.contentSize, usize);
  else {
    /* One call normally decodes everything: the whole frame is in memory and dst is stable. */
    LZ4F_decompressOptions_t opt = { .stableDst = 1 };
    size_t inpos = in, outpos = 0;
    for (;;) {
      size_t is = csize - inpos, os = usize - outpos;
      size_t hint = LZ4F_decompress (d, dst + outpos, &os, src + inpos, &is, &opt);
      if (LZ4F_isError (hint)) {     /* includes block/content checksum mismatches */
        say (err, errlen, EIO, "corrupt LZ4 frame at offset %" PRIu64 ": %s", offset,
             LZ4F_getErrorName (hint));
        break;
      }
      inpos += is;
      outpos += os;
      if (hint == 0) {          /* end of frame; every declared checksum verified */
        if (inpos != csize)
          say (err, errlen, EIO, "corrupt LZ4 frame at offset %" PRIu64 ": it ends %zu bytes "
               "before its recorded size %" PRIu32, offset, csize - inpos, csize);
        else if (outpos != usize)
          say (err, errlen, EIO, "corrupt LZ4 frame at offset %" PRIu64 ": decodes to %zu bytes, "
               "expected %" PRIu32, offset, outpos, usize);
        else r = 0;
        break;
      }
      if (inpos == csize || (is == 0 && os == 0)) {
        say (err, errlen, EIO, "corrupt LZ4 frame at offset %" PRIu64 ": %s", offset,
             outpos == usize ? "decodes to more than the expected size" : "truncated frame");
        break;
      }
    }
  }
  LZ4F_freeDecompressionContext (d);
  return r;
}

/* Read (pread, into the slot's buffer sb) and decode the frame into a new mapping; NULL with
 * err on failure. */
static unsigned char *load (struct srcbuf *sb, int fd, uint64_t offset, uint32_t csize,
                            uint32_t usize, int *e, char *err, size_t errlen)
{
  unsigned char *dst = NULL;
  if (sb->cap < csize) {
    unmap_bytes (sb->p, sb->cap);
    sb->cap = ((size_t) csize + (1u << 20) - 1) & ~(size_t) ((1u << 20) - 1);
    if ((sb->p = map_bytes (sb->cap)) == NULL) sb->cap = 0;
  }
  unsigned char *src = sb->p;
  if (src == NULL || (dst = map_bytes (usize)) == NULL) {
    say (err, errlen, ENOMEM, "cannot allocate %" PRIu32 " + %" PRIu32 " bytes for the LZ4 frame "
         "at offset %" PRIu64, csize, usize, offset);
    goto fail;
  }
  for (size_t got = 0; got < csize; ) {
    ssize_t n = pread (fd, src + got, csize - got, (off_t) (offset + got));
    if (n > 0) { got += (size_t) n; continue; }
    if (n == -1 && errno == EINTR) continue;
    if (n == 0)
      say (err, errlen, EIO, "unexpected end of file at offset %" PRIu64 " reading the LZ4 frame "
           "at offset %" PRIu64 " (was the file truncated after it was mapped?)", offset + got, offset);
    else
      say (err, errlen, EIO, "read error at offset %" PRIu64 ": %s", offset + got, strerror (errno));
    goto fail;
  }
  if (decode (src, csize, dst, usize, offset, err, errlen) == -1) goto fail;
  return dst;

 fail:
  *e = errno;
  unmap_bytes (dst, usize);
  return NULL;
}

int vnbd_lz4_read (uint32_t file, int fd, uint64_t offset, uint32_t csize, uint32_t usize,
                   uint64_t slice, uint32_t count, void *buf, char *err, size_t errlen)
{
  if (usize == 0 || slice > usize || count > usize - slice || csize == 0)
    return say (err, errlen, EIO, "bad read of %" PRIu32 " bytes at %" PRIu64 " of the LZ4 frame "
                "at offset %" PRIu64, count, slice, offset);
  LOCK ();
  struct frame *f = lookup (file, offset);
  if (f) {
    if (f->usize != usize) {
      UNLOCK ();
      return say (err, errlen, EIO, "the LZ4 frame at offset %" PRIu64 " is recorded with two "
                  "decoded sizes (%" PRIu32 ", %" PRIu32 ")", offset, f->usize, usize);
    }
    f->refs++;
    if (f->state == PENDING) {
      stats.waits++;
      while (f->state == PENDING)
        if (pthread_cond_wait (&cond, &lock) != 0) abort ();
    }
    else stats.hits++;
    if (f->in_lru) { lru_unlink (f); lru_push (f); }
  }
  else {
    stats.misses++;
    if ((f = calloc (1, sizeof *f)) == NULL) {
      UNLOCK ();
      return say (err, errlen, ENOMEM, "cannot allocate a cache entry");
    }
    f->file = file;
    f->offset = offset;
    f->usize = usize;
    f->state = PENDING;
    f->refs = 1;
    size_t b = bucket (file, offset);
    f->hnext = buckets[b];
    buckets[b] = f;
    f->linked = true;
    while (active_decoders >= max_decoders)
      if (pthread_cond_wait (&cond, &lock) != 0) abort ();
    active_decoders++;
    struct srcbuf *sb = srcbufs;
    while (sb->busy) sb++;      /* active_decoders <= max_decoders: one is free */
    sb->busy = true;
    UNLOCK ();
    int e = 0;
    char msg[MSG_LEN];
    unsigned char *data = load (sb, fd, offset, csize, usize, &e, msg, sizeof msg);
    LOCK ();
    sb->busy = false;
    active_decoders--;
    if (data) {
      f->data = data;
      f->state = READY;
      if (usize <= max_bytes) {
        lru_push (f);
        cached_bytes += usize;
        evict ();
        if (cached_bytes > stats.peak_bytes) stats.peak_bytes = cached_bytes;
      }
      else hash_unlink (f);     /* too large to keep: serves the requests waiting now */
    }
    else {
      f->state = FAILED;
      f->err = e;
      memcpy (f->msg, msg, sizeof msg);
      hash_unlink (f);          /* the next request tries again */
    }
    if (pthread_cond_broadcast (&cond) != 0) abort ();
  }
  if (f->state == FAILED) {
    snprintf (err, errlen, "%s", f->msg);
    const int e = f->err;
    release (f);
    UNLOCK ();
    errno = e;
    return -1;
  }
  stats.frames = stats.misses;
  UNLOCK ();
  memcpy (buf, f->data + slice, count);
  LOCK ();
  release (f);
  UNLOCK ();
  return 0;
}
