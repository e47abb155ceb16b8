/* vnbd-lz4.h: LZ4 frames decoded in the shim, with a bounded shared cache of decoded frames
 * (docs/PROTOCOL.md, "LZ4 decoding in the shim"). Thread-safe (nbdkit's PARALLEL model). */
#ifndef VNBD_LZ4_H
#define VNBD_LZ4_H

#include <stddef.h>
#include <stdint.h>

/* max_bytes: decoded bytes the cache may hold (0: no cache); decoders: frames decoded at once. */
int vnbd_lz4_init (uint64_t max_bytes, unsigned decoders);
/* Drop every cached frame (none may be in use). */
void vnbd_lz4_free (void);

/* Copy `count` bytes at `slice` of the frame of file `file` (descriptor fd) at `offset` (csize
 * bytes, decoding to usize) into buf. The frame is read with pread and decoded by liblz4, which
 * verifies the block and content checksums the frame declares; its content-size field, if
 * present, and the decoded length must equal usize, and the frame must end exactly at csize.
 * 0 on success; -1 with errno (EIO, ENOMEM) and a message in err naming the offset. */
int vnbd_lz4_read (uint32_t file, int fd, uint64_t offset, uint32_t csize, uint32_t usize,
                   uint64_t slice, uint32_t count, void *buf, char *err, size_t errlen);

struct vnbd_lz4_stats {
  uint64_t hits, misses, waits, bytes, frames, peak_bytes;
};
void vnbd_lz4_stats (struct vnbd_lz4_stats *s);

#endif
