/* A program compiled against the first header (tests/c/compat/cowsnap_v0.h, frozen), run against
 * today's libcowsnap: the structs of that header (cowsnap_snapshot_options, cowsnap_snapshot_status)
 * and the functions taking them must keep working byte for byte. The library must also never write
 * past the old status struct (a canary follows it).
 *
 * Usage: test_v0 SCRATCH_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cowsnap_v0.h"

static int failures = 0;

#define OK(call)                                                                            \
  do {                                                                                      \
    int r_ = (call);                                                                        \
    if (r_ != COWSNAP_OK) {                                                                 \
      char m_[512];                                                                         \
      cowsnap_last_error(m_, sizeof m_);                                                    \
      fprintf(stderr, "%s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #call, r_, m_);    \
      exit(1);                                                                              \
    }                                                                                       \
  } while (0)

#define EXPECT(cond)                                                                        \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);                   \
      failures++;                                                                           \
    }                                                                                       \
  } while (0)

/* The old status struct with a canary after it: the library must fill the first, never the second. */
struct guarded_status {
  struct cowsnap_snapshot_status st;
  unsigned char canary[64];
};

static void status(struct cowsnap_volume *v, uint32_t id, struct guarded_status *g) {
  size_t i;
  memset(g, 0xAB, sizeof *g);
  OK(cowsnap_snapshot_status(v, id, &g->st));
  for (i = 0; i < sizeof g->canary; i++) {
    if (g->canary[i] != 0xAB) {
      fprintf(stderr, "cowsnap_snapshot_status wrote past the old struct (byte %zu after it)\n", i);
      failures++;
      return;
    }
  }
}

static void run(struct cowsnap_volume *v, const char *cow_path) {
  struct cowsnap_snapshot_options o;
  struct guarded_status g;
  uint32_t id;
  uint8_t buf[4096], old[4096];

  memset(&o, 0x5A, sizeof o); /* init must set every field */
  OK(cowsnap_snapshot_options_init(&o));
  EXPECT(o.chunk_size == 4096 && o.store == COWSNAP_STORE_PERSISTENT && o.cow_path == NULL);
  EXPECT(o.overflow == COWSNAP_OVERFLOW_INVALIDATE && o.cow_size == 0);
  EXPECT(o.autoextend_threshold == 0 && o.autoextend_percent == 0);
  o.cow_size = 256 * 1024;
  o.cow_path = cow_path;
  o.chunk_size = 8192;
  o.overflow = COWSNAP_OVERFLOW_REPORT;
  o.autoextend_threshold = 80;
  o.autoextend_percent = 50;

  memset(old, 7, sizeof old);
  OK(cowsnap_volume_write(v, 0, old, sizeof old));
  OK(cowsnap_snapshot_create(v, &o, &id));
  status(v, id, &g);
  EXPECT(g.st.state == COWSNAP_STATE_ACTIVE && g.st.store == COWSNAP_STORE_PERSISTENT);
  EXPECT(g.st.overflow == COWSNAP_OVERFLOW_REPORT && g.st.chunk_size == 8192);
  EXPECT(g.st.exceptions == 0 && !g.st.merging && g.st.total_sectors == 512);
  EXPECT(strcmp(g.st.dm_status, "32/512 32") == 0);
  EXPECT(strcmp(g.st.lvs_attr, "swi-a-s---") == 0);

  memset(buf, 9, sizeof buf);
  OK(cowsnap_volume_write(v, 0, buf, sizeof buf));
  OK(cowsnap_snapshot_read(v, id, 0, buf, sizeof buf));
  EXPECT(memcmp(buf, old, sizeof old) == 0);
  status(v, id, &g);
  EXPECT(g.st.exceptions == 1 && g.st.sectors_allocated == 48);
  EXPECT(g.st.data_percent > 9.37 && g.st.data_percent < 9.38); /* 48/512 */
  EXPECT(strcmp(g.st.dm_status, "48/512 32") == 0);

  OK(cowsnap_snapshot_merge(v, id, NULL, NULL));
  OK(cowsnap_volume_read(v, 0, buf, sizeof buf));
  EXPECT(memcmp(buf, old, sizeof old) == 0);
}

int main(int argc, char **argv) {
  struct cowsnap_volume *v = NULL;
  char path[1024];
  const char *dir = argc > 1 ? argv[1] : ".";

  /* The version check a careful 0.1 program does: same major.minor. */
  EXPECT(strncmp(cowsnap_version(), "0.1.", 4) == 0);
  OK(cowsnap_volume_create_mem(1 << 20, &v));
  run(v, NULL);
  snprintf(path, sizeof path, "%s/compat-v0.cow", dir);
  unlink(path);
  run(v, path);
  cowsnap_volume_free(v);
  unlink(path);
  if (failures) {
    fprintf(stderr, "test_v0: %d failures\n", failures);
    return 1;
  }
  printf("test_v0: all passed (a program built against the first header, on libcowsnap %s)\n",
         cowsnap_version());
  return 0;
}
