/* libFuzzer harness for the shim's table parser (plugin/vnbd-table.c).
 * Built by bench/fuzz-table.ts with clang -fsanitize=fuzzer,address,undefined. The shim's file
 * list is /f0 .. /f63 (the seeds, tables of the fixture chains, are rewritten to these names),
 * each 1 GiB long; nfiles is taken from the input's header when it is 1..64.
 * Besides "no crash, no leak, no out-of-range access" it checks what a successful parse
 * promises: extents contiguous from 0, non-empty, covering exactly the size, inside their files. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../vnbd-table.h"

#define MAXF 64
#define FILE_SIZE (UINT64_C(1) << 30)

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static char names[MAXF][8];
  static const char *paths[MAXF];
  static uint64_t sizes[MAXF];
  if (paths[0] == NULL)
    for (int i = 0; i < MAXF; i++) {
      snprintf (names[i], sizeof names[i], "/f%d", i);
      paths[i] = names[i];
      sizes[i] = FILE_SIZE;
    }
  size_t nfiles = 1;
  if (size >= 16) {
    const uint32_t n = data[12] | (uint32_t) data[13] << 8 | (uint32_t) data[14] << 16 | (uint32_t) data[15] << 24;
    if (n >= 1 && n <= MAXF) nfiles = n;
  }
  struct vnbd_extent *ext = NULL;
  uint64_t n = 0, sz = 0;
  char err[512] = "";
  if (vnbd_parse_table (data, size, nfiles, paths, sizes, &ext, &n, &sz, err, sizeof err) == 0) {
    uint64_t end = 0;
    for (uint64_t i = 0; i < n; i++) {
      const struct vnbd_extent *e = &ext[i];
      if (e->start != end || e->length == 0 || e->kind > VNBD_LZ4) abort ();
      if (e->kind == VNBD_RAW && (e->file >= nfiles || e->file_offset + e->length > FILE_SIZE)) abort ();
      if (e->kind == VNBD_LZ4 &&
          (e->file >= nfiles || e->file_offset + e->csize > FILE_SIZE || e->usize > VNBD_MAX_USIZE ||
           e->slice_offset + e->length > e->usize))
        abort ();
      end += e->length;
    }
    if (end != sz) abort ();
    free (ext);
  }
  else if (err[0] == '\0' || ext != NULL) abort ();   /* a refusal always says why */
  return 0;
}
