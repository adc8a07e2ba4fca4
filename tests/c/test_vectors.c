/* Cross-language check: replaying tests/shared/vectors/scripts/basic-4k.json (the repository's copy of the shared vectors) through the C ABI gives the
 * same COW bytes as the Linux kernel wrote (kernel/basic-4k/s0.cow, decompressed by the caller).
 * The few operations of that script are spelled out here.
 * Usage: test_vectors <kernel-s0.cow> */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define ORIGIN_SIZE (8u * 1024u * 1024u)
#define COW_SIZE (4u * 1024u * 1024u)

static void write_fill(cowsnap_volume *v, uint64_t off, size_t len, uint8_t fill) {
  uint8_t *b = malloc(len);
  memset(b, fill, len);
  OK(cowsnap_volume_write(v, off, b, len));
  free(b);
}

int main(int argc, char **argv) {
  cowsnap_volume *v;
  uint8_t *img = malloc(ORIGIN_SIZE), *ours = malloc(COW_SIZE), *kernel = malloc(COW_SIZE + 1);
  uint64_t s, k;
  uint32_t id;
  size_t n, got, i;
  cowsnap_snapshot_options o;
  FILE *f;

  if (argc < 2) {
    fprintf(stderr, "usage: test_vectors <kernel s0.cow>\n");
    return 2;
  }
  /* origin_init "sector-index": sector s holds the u64 LE value s, 64 times. */
  for (s = 0; s < ORIGIN_SIZE / 512; s++)
    for (k = 0; k < 64; k++)
      for (i = 0; i < 8; i++) img[s * 512 + k * 8 + i] = (uint8_t)(s >> (8 * i));
  OK(cowsnap_volume_create_mem(ORIGIN_SIZE, &v));
  OK(cowsnap_volume_write(v, 0, img, ORIGIN_SIZE));

  OK(cowsnap_snapshot_options_init(&o));
  o.cow_size = COW_SIZE;
  o.chunk_size = 8 * 512;
  o.store = COWSNAP_STORE_PERSISTENT;
  OK(cowsnap_snapshot_create(v, &o, &id));
  write_fill(v, 0, 4096, 171);
  write_fill(v, 20480, 512, 17);
  write_fill(v, 21504, 512, 18);
  write_fill(v, 1048576, 65536, 34);

  OK(cowsnap_snapshot_export_cow(v, id, ours, COW_SIZE, &n));
  EXPECT(n == COW_SIZE);
  f = fopen(argv[1], "rb");
  if (!f) {
    perror(argv[1]);
    return 1;
  }
  got = fread(kernel, 1, COW_SIZE + 1, f);
  fclose(f);
  EXPECT(got == COW_SIZE);
  for (i = 0; i < COW_SIZE && i < got; i++)
    if (ours[i] != kernel[i]) {
      fprintf(stderr, "COW differs from the kernel's at byte %zu (chunk %zu): %u != %u\n", i, i / 4096,
              ours[i], kernel[i]);
      check_failures++;
      break;
    }
  /* The snapshot reads as the origin did before the writes. */
  OK(cowsnap_snapshot_read(v, id, 0, ours, COW_SIZE));
  EXPECT(memcmp(ours, img, COW_SIZE) == 0);
  cowsnap_volume_free(v);
  free(img);
  free(ours);
  free(kernel);
  return finish("test_vectors (basic-4k vs kernel)");
}
