/* API round trips and every error path of libcowsnap, with codes and messages.
 * Usage: test_api <scratch-dir>   (files are created there) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define MiB (1024u * 1024u)
#define CHUNK 4096u

static char dir[512];

static const char *path_in(const char *name) {
  static char buf[4][640];
  static int i = 0;
  i = (i + 1) % 4;
  snprintf(buf[i], sizeof buf[i], "%s/%s", dir, name);
  return buf[i];
}

static void fill(uint8_t *p, size_t n, uint8_t seed) {
  size_t i;
  for (i = 0; i < n; i++) p[i] = (uint8_t)(seed + i * 7);
}

static int is_filled(const uint8_t *p, size_t n, uint8_t seed) {
  size_t i;
  for (i = 0; i < n; i++)
    if (p[i] != (uint8_t)(seed + i * 7)) return 0;
  return 1;
}

static struct cowsnap_snapshot_options mem_opts(uint64_t cow_size) {
  cowsnap_snapshot_options o;
  OK(cowsnap_snapshot_options_init(&o));
  o.cow_size = cow_size;
  return o;
}

static void test_version_and_names(void) {
  EXPECT(strcmp(cowsnap_version(), COWSNAP_VERSION_STRING) == 0);
  EXPECT(strcmp(cowsnap_error_name(COWSNAP_OK), "OK") == 0);
  EXPECT(strcmp(cowsnap_error_name(COWSNAP_ERR_OUT_OF_RANGE), "OUT_OF_RANGE") == 0);
  EXPECT(strcmp(cowsnap_error_name(COWSNAP_ERR_SNAPSHOT_INVALID), "SNAPSHOT_INVALID") == 0);
  EXPECT(strcmp(cowsnap_error_name(COWSNAP_ERR_BUFFER_TOO_SMALL), "BUFFER_TOO_SMALL") == 0);
  EXPECT(strcmp(cowsnap_error_name(-1000), "UNKNOWN") == 0);
  EXPECT(COWSNAP_ERR_OUT_OF_RANGE == -1 && COWSNAP_ERR_CORRUPT_METADATA == -8 &&
         COWSNAP_ERR_BUFFER_TOO_SMALL == -14);
}

static void test_round_trip(void) {
  cowsnap_volume *v = NULL;
  uint8_t *a = malloc(64 * 1024), *b = malloc(64 * 1024);
  uint32_t id, id2;
  uint64_t size = 0;
  struct cowsnap_snapshot_status st;
  cowsnap_snapshot_options o = mem_opts(256 * 1024);

  OK(cowsnap_volume_create_mem(MiB, &v));
  EXPECT(v != NULL);
  OK(cowsnap_volume_size(v, &size));
  EXPECT(size == MiB);
  fill(a, 64 * 1024, 1);
  OK(cowsnap_volume_write(v, 100, a, 64 * 1024)); /* unaligned */
  OK(cowsnap_volume_read(v, 100, b, 64 * 1024));
  EXPECT(memcmp(a, b, 64 * 1024) == 0);
  OK(cowsnap_volume_read(v, 0, NULL, 0)); /* zero-length I/O is a no-op */
  OK(cowsnap_volume_flush(v));

  OK(cowsnap_snapshot_create(v, &o, &id));
  OK(cowsnap_snapshot_status(v, id, &st));
  EXPECT(st.state == COWSNAP_STATE_ACTIVE && st.store == COWSNAP_STORE_PERSISTENT);
  EXPECT(st.overflow == COWSNAP_OVERFLOW_INVALIDATE && st.chunk_size == CHUNK);
  EXPECT(st.exceptions == 0 && st.data_percent == 0.0 && !st.merging);
  EXPECT(st.total_sectors == 512 && st.metadata_sectors == 16 && st.sectors_allocated == 16);
  EXPECT(strcmp(st.dm_status, "16/512 16") == 0 && strcmp(st.lvs_attr, "swi-a-s---") == 0);

  /* Overwrite the origin: the snapshot keeps the old bytes. One chunk at 0 and the run at 100.. */
  fill(b, 8192, 99);
  OK(cowsnap_volume_write(v, 0, b, 8192));
  OK(cowsnap_volume_read(v, 0, b, 8192));
  EXPECT(is_filled(b, 8192, 99));
  OK(cowsnap_snapshot_read(v, id, 100, b, 64 * 1024));
  EXPECT(memcmp(a, b, 64 * 1024) == 0);
  OK(cowsnap_snapshot_status(v, id, &st));
  EXPECT(st.exceptions == 2 && st.sectors_allocated == 16 + 16);
  EXPECT(st.data_percent > 6.24 && st.data_percent < 6.26); /* 32/512 */
  EXPECT(strcmp(st.dm_status, "32/512 16") == 0);

  /* Snapshot writes change the snapshot only. */
  fill(b, 512, 42);
  OK(cowsnap_snapshot_write(v, id, 200000, b, 512));
  OK(cowsnap_snapshot_read(v, id, 200000, a, 512));
  EXPECT(is_filled(a, 512, 42));
  OK(cowsnap_volume_read(v, 200000, a, 512));
  EXPECT(!is_filled(a, 512, 42));

  /* Two snapshots; list their ids. */
  {
    uint32_t ids[4] = {0};
    size_t n = 99;
    cowsnap_snapshot_options t = mem_opts(128 * 1024);
    t.store = COWSNAP_STORE_TRANSIENT;
    t.chunk_size = 16384;
    OK(cowsnap_snapshot_create(v, &t, &id2));
    EXPECT(id2 == id + 1);
    OK(cowsnap_snapshot_status(v, id2, &st));
    EXPECT(st.store == COWSNAP_STORE_TRANSIENT && st.chunk_size == 16384 && st.metadata_sectors == 0);
    OK(cowsnap_volume_snapshot_ids(v, NULL, 0, &n));
    EXPECT(n == 2);
    ERR(cowsnap_volume_snapshot_ids(v, ids, 1, &n), COWSNAP_ERR_BUFFER_TOO_SMALL, "do not fit");
    EXPECT(n == 2);
    OK(cowsnap_volume_snapshot_ids(v, ids, 4, &n));
    EXPECT(n == 2 && ids[0] == id && ids[1] == id2);
    OK(cowsnap_snapshot_delete(v, id2));
    OK(cowsnap_volume_snapshot_ids(v, ids, 4, &n));
    EXPECT(n == 1 && ids[0] == id);
  }

  /* COW export: the dm header ("SnAp", valid 1, version 1, chunk 8 sectors). */
  {
    size_t needed = 0;
    uint8_t *cow;
    uint8_t small[16];
    OK(cowsnap_snapshot_export_cow(v, id, NULL, 0, &needed));
    EXPECT(needed == 256 * 1024);
    ERR(cowsnap_snapshot_export_cow(v, id, small, sizeof small, &needed),
        COWSNAP_ERR_BUFFER_TOO_SMALL, "the buffer holds 16");
    EXPECT(needed == 256 * 1024);
    cow = malloc(needed);
    OK(cowsnap_snapshot_export_cow(v, id, cow, needed, &needed));
    EXPECT(memcmp(cow, "SnAp", 4) == 0);
    EXPECT(cow[4] == 1 && cow[8] == 1 && cow[12] == 8);
    free(cow);
  }

  /* Extend, autoextend. */
  OK(cowsnap_snapshot_extend(v, id, 512 * 1024));
  OK(cowsnap_snapshot_status(v, id, &st));
  EXPECT(st.total_sectors == 1024);
  ERR(cowsnap_snapshot_extend(v, id, 4096), COWSNAP_ERR_INVALID_ARGUMENT, "cannot shrink");
  OK(cowsnap_snapshot_set_autoextend(v, id, 70, 20));
  ERR(cowsnap_snapshot_set_autoextend(v, id, 70, 0), COWSNAP_ERR_INVALID_ARGUMENT, "percent");
  OK(cowsnap_snapshot_set_autoextend(v, id, 0, 0));

  OK(cowsnap_snapshot_delete(v, id));
  cowsnap_volume_free(v);
  cowsnap_volume_free(NULL); /* accepted */
  free(a);
  free(b);
}

struct progress {
  int calls;
  int stop_at; /* stop (return 1) on this call number; 0 never */
  uint64_t last_merged, last_total;
  int saw_done;
  int monotonic;
};

static int32_t on_progress(void *user, uint64_t merged, uint64_t total, bool done) {
  struct progress *p = (struct progress *)user;
  p->calls++;
  if (merged < p->last_merged) p->monotonic = 0;
  p->last_merged = merged;
  p->last_total = total;
  if (done) p->saw_done = 1;
  return p->calls == p->stop_at ? 1 : 0;
}

static void test_merge(void) {
  cowsnap_volume *v = NULL;
  uint32_t id, other;
  uint8_t *buf = malloc(256 * 1024);
  struct cowsnap_snapshot_status st;
  struct progress p = {0, 1, 0, 0, 0, 1};
  cowsnap_snapshot_options o = mem_opts(MiB);
  size_t i;

  OK(cowsnap_volume_create_mem(MiB, &v));
  fill(buf, 256 * 1024, 5);
  OK(cowsnap_volume_write(v, 0, buf, 256 * 1024));
  OK(cowsnap_snapshot_create(v, &o, &id));
  /* Origin changes after the snapshot; snapshot writes too: the merge brings back the snapshot. */
  memset(buf, 0xEE, 256 * 1024);
  OK(cowsnap_volume_write(v, 0, buf, 128 * 1024));
  fill(buf, 4096, 77);
  OK(cowsnap_snapshot_write(v, id, 300 * 1024, buf, 4096));

  /* Stopped by the callback at its first call: MERGING, the snapshot stays merging. */
  ERR(cowsnap_snapshot_merge(v, id, on_progress, &p), COWSNAP_ERR_MERGING, "stopped by the progress callback");
  EXPECT(p.calls == 1);
  OK(cowsnap_snapshot_status(v, id, &st));
  EXPECT(st.state == COWSNAP_STATE_MERGING && st.merging && st.merge_total == 33);
  EXPECT(strcmp(st.lvs_attr, "Swi-a-s---") == 0);
  ERR(cowsnap_snapshot_delete(v, id), COWSNAP_ERR_MERGING, "being merged");
  ERR(cowsnap_snapshot_create(v, &o, &other), COWSNAP_ERR_MERGING, "being merged");
  /* The origin already reads as the snapshot. */
  OK(cowsnap_volume_read(v, 0, buf, 4096));
  EXPECT(is_filled(buf, 4096, 5));

  /* Resume to the end. */
  p.stop_at = 0;
  p.calls = 0;
  OK(cowsnap_snapshot_merge(v, id, on_progress, &p));
  EXPECT(p.calls >= 2 && p.saw_done && p.monotonic && p.last_merged == p.last_total);
  ERR(cowsnap_snapshot_status(v, id, &st), COWSNAP_ERR_UNKNOWN_SNAPSHOT, "no snapshot with id");
  OK(cowsnap_volume_read(v, 0, buf, 256 * 1024));
  EXPECT(is_filled(buf, 256 * 1024, 5));
  OK(cowsnap_volume_read(v, 300 * 1024, buf, 4096));
  EXPECT(is_filled(buf, 4096, 77));

  /* Merge without a callback. */
  OK(cowsnap_snapshot_create(v, &o, &id));
  for (i = 0; i < 8; i++) OK(cowsnap_volume_write(v, i * 65536, buf, 100));
  OK(cowsnap_snapshot_merge(v, id, NULL, NULL));
  cowsnap_volume_free(v);
  free(buf);
}

static void test_error_paths(void) {
  cowsnap_volume *v = (cowsnap_volume *)&v; /* garbage, must be reset to NULL on failure */
  uint8_t buf[8192];
  uint32_t id, dead;
  uint64_t u64;
  size_t n;
  char small[5];
  struct cowsnap_snapshot_status st;
  cowsnap_snapshot_options o = mem_opts(64 * 1024);
  const char *cows[1];

  /* Constructors. */
  ERR(cowsnap_volume_create_mem(MiB, NULL), COWSNAP_ERR_NULL_POINTER, "out_vol is NULL");
  ERR(cowsnap_volume_create_mem(0, &v), COWSNAP_ERR_INVALID_ARGUMENT, "volume size is 0");
  EXPECT(v == NULL);
  ERR(cowsnap_volume_create_mem((uint64_t)1 << 62, &v), COWSNAP_ERR_NO_SPACE, "cannot allocate");
  ERR(cowsnap_volume_create_file(NULL, MiB, &v), COWSNAP_ERR_NULL_POINTER, "path is NULL");
  ERR(cowsnap_volume_create_file("", MiB, &v), COWSNAP_ERR_INVALID_ARGUMENT, "empty string");
  ERR(cowsnap_volume_create_file(path_in("no/such/dir/vol.img"), MiB, &v), COWSNAP_ERR_IO,
      "no/such/dir/vol.img");
  ERR(cowsnap_volume_open_file(path_in("missing.img"), NULL, 0, &v), COWSNAP_ERR_IO,
      "cannot open origin");
  ERR(cowsnap_volume_open_file(path_in("missing.img"), NULL, 1, &v), COWSNAP_ERR_NULL_POINTER,
      "cow_paths is NULL");
  cows[0] = NULL;
  ERR(cowsnap_volume_open_file(path_in("missing.img"), cows, 1, &v), COWSNAP_ERR_NULL_POINTER,
      "cow_paths[0] is NULL");
  ERR(cowsnap_volume_open_file(NULL, NULL, 0, &v), COWSNAP_ERR_NULL_POINTER, "origin_path is NULL");
  EXPECT(v == NULL);

  /* NULL volume everywhere. */
  ERR(cowsnap_volume_read(NULL, 0, buf, 1), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  ERR(cowsnap_volume_write(NULL, 0, buf, 1), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  ERR(cowsnap_volume_flush(NULL), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  ERR(cowsnap_volume_size(NULL, &u64), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  ERR(cowsnap_volume_snapshot_ids(NULL, NULL, 0, &n), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  ERR(cowsnap_snapshot_create(NULL, &o, &id), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  ERR(cowsnap_snapshot_read(NULL, 0, 0, buf, 1), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  ERR(cowsnap_snapshot_write(NULL, 0, 0, buf, 1), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  ERR(cowsnap_snapshot_status(NULL, 0, &st), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  ERR(cowsnap_snapshot_delete(NULL, 0), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  ERR(cowsnap_snapshot_merge(NULL, 0, NULL, NULL), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  ERR(cowsnap_snapshot_export_cow(NULL, 0, NULL, 0, &n), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  ERR(cowsnap_snapshot_extend(NULL, 0, 1), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  ERR(cowsnap_snapshot_set_autoextend(NULL, 0, 0, 0), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  ERR(cowsnap_snapshot_options_init(NULL), COWSNAP_ERR_NULL_POINTER, "opts is NULL");

  OK(cowsnap_volume_create_mem(MiB, &v));
  /* NULL buffers and out-parameters. */
  ERR(cowsnap_volume_read(v, 0, NULL, 1), COWSNAP_ERR_NULL_POINTER, "buf is NULL");
  ERR(cowsnap_volume_write(v, 0, NULL, 1), COWSNAP_ERR_NULL_POINTER, "buf is NULL");
  ERR(cowsnap_volume_size(v, NULL), COWSNAP_ERR_NULL_POINTER, "out_size is NULL");
  ERR(cowsnap_volume_snapshot_ids(v, NULL, 0, NULL), COWSNAP_ERR_NULL_POINTER, "out_count is NULL");
  ERR(cowsnap_volume_snapshot_ids(v, NULL, 3, &n), COWSNAP_ERR_NULL_POINTER, "ids is NULL");
  ERR(cowsnap_snapshot_create(v, NULL, &id), COWSNAP_ERR_NULL_POINTER, "opts is NULL");
  ERR(cowsnap_snapshot_create(v, &o, NULL), COWSNAP_ERR_NULL_POINTER, "out_id is NULL");

  /* Out of range (nothing touched: buf would be too small for these lengths). */
  ERR(cowsnap_volume_read(v, MiB - 10, buf, 11), COWSNAP_ERR_OUT_OF_RANGE, "out of range");
  ERR(cowsnap_volume_write(v, MiB, buf, 1), COWSNAP_ERR_OUT_OF_RANGE, "at offset 1048576");
  ERR(cowsnap_volume_read(v, UINT64_MAX, buf, 2), COWSNAP_ERR_OUT_OF_RANGE, "out of range");
  ERR(cowsnap_volume_read(v, 0, buf, SIZE_MAX), COWSNAP_ERR_OUT_OF_RANGE, "out of range");
  ERR(cowsnap_volume_read(v, MiB + 1, NULL, 0), COWSNAP_ERR_OUT_OF_RANGE, "out of range");

  /* Snapshot options. */
  o.chunk_size = 3000;
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_BAD_CHUNK_SIZE, "bad chunk size 3000");
  o.chunk_size = 1024 * 1024;
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_BAD_CHUNK_SIZE, "power of two");
  o.chunk_size = 2048;
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_BAD_CHUNK_SIZE, "bad chunk size 2048");
  o = mem_opts(64 * 1024);
  o.store = 7;
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "unknown store kind 7");
  o = mem_opts(64 * 1024);
  o.overflow = -1;
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "unknown overflow mode -1");
  o = mem_opts(0);
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "COW size is 0");
  o = mem_opts(4096);
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_NO_SPACE, "too small");
  o = mem_opts(64 * 1024);
  o.autoextend_threshold = 70;
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "autoextend percent");
  o.autoextend_threshold = 101;
  o.autoextend_percent = 20;
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "threshold");
  o = mem_opts(64 * 1024);
  o.autoextend_percent = 20;
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "but the threshold is 0");
  o = mem_opts(64 * 1024);
  o.cow_path = "";
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "cow_path is an empty string");
  o.cow_path = path_in("no/such/dir/cow");
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_IO, "cannot create COW");

  /* Unknown ids, and ids used after delete. */
  ERR(cowsnap_snapshot_read(v, 42, 0, buf, 1), COWSNAP_ERR_UNKNOWN_SNAPSHOT, "no snapshot with id 42");
  o = mem_opts(64 * 1024);
  OK(cowsnap_snapshot_create(v, &o, &dead));
  OK(cowsnap_snapshot_delete(v, dead));
  ERR(cowsnap_snapshot_read(v, dead, 0, buf, 1), COWSNAP_ERR_UNKNOWN_SNAPSHOT, "no snapshot with id");
  ERR(cowsnap_snapshot_write(v, dead, 0, buf, 1), COWSNAP_ERR_UNKNOWN_SNAPSHOT, "no snapshot with id");
  ERR(cowsnap_snapshot_status(v, dead, &st), COWSNAP_ERR_UNKNOWN_SNAPSHOT, "no snapshot with id");
  ERR(cowsnap_snapshot_delete(v, dead), COWSNAP_ERR_UNKNOWN_SNAPSHOT, "no snapshot with id");
  ERR(cowsnap_snapshot_merge(v, dead, NULL, NULL), COWSNAP_ERR_UNKNOWN_SNAPSHOT, "no snapshot with id");
  ERR(cowsnap_snapshot_export_cow(v, dead, NULL, 0, &n), COWSNAP_ERR_UNKNOWN_SNAPSHOT, "no snapshot");
  ERR(cowsnap_snapshot_extend(v, dead, MiB), COWSNAP_ERR_UNKNOWN_SNAPSHOT, "no snapshot with id");
  ERR(cowsnap_snapshot_set_autoextend(v, dead, 70, 20), COWSNAP_ERR_UNKNOWN_SNAPSHOT, "no snapshot");
  OK(cowsnap_snapshot_create(v, &o, &id));
  EXPECT(id != dead); /* ids are never reused */
  ERR(cowsnap_snapshot_status(v, id, NULL), COWSNAP_ERR_NULL_POINTER, "out_status is NULL");
  ERR(cowsnap_snapshot_export_cow(v, id, NULL, 0, NULL), COWSNAP_ERR_NULL_POINTER, "out_needed is NULL");
  ERR(cowsnap_snapshot_export_cow(v, id, NULL, 10, &n), COWSNAP_ERR_NULL_POINTER, "buf is NULL");
  ERR(cowsnap_snapshot_read(v, id, MiB, buf, 1), COWSNAP_ERR_OUT_OF_RANGE, "out of range");
  ERR(cowsnap_snapshot_write(v, id, 0, NULL, 5), COWSNAP_ERR_NULL_POINTER, "buf is NULL");
  OK(cowsnap_snapshot_delete(v, id));

  /* Overflow on an origin write invalidates (header + 1 metadata area + 1 data chunk). */
  o = mem_opts(3 * CHUNK);
  OK(cowsnap_snapshot_create(v, &o, &id));
  memset(buf, 1, sizeof buf);
  OK(cowsnap_volume_write(v, 0, buf, CHUNK));         /* fills the one data chunk */
  OK(cowsnap_volume_write(v, 4 * CHUNK, buf, CHUNK)); /* overflows: the write itself succeeds */
  OK(cowsnap_volume_read(v, 4 * CHUNK, buf, 1));
  EXPECT(buf[0] == 1);
  ERR(cowsnap_snapshot_read(v, id, 0, buf, 1), COWSNAP_ERR_SNAPSHOT_INVALID, "snapshot is invalid");
  ERR(cowsnap_snapshot_write(v, id, 0, buf, 1), COWSNAP_ERR_SNAPSHOT_INVALID, "snapshot is invalid");
  ERR(cowsnap_snapshot_merge(v, id, NULL, NULL), COWSNAP_ERR_SNAPSHOT_INVALID, "snapshot is invalid");
  OK(cowsnap_snapshot_status(v, id, &st));
  EXPECT(st.state == COWSNAP_STATE_INVALID && st.data_percent < 0);
  EXPECT(strcmp(st.dm_status, "Invalid") == 0 && strcmp(st.lvs_attr, "swi-I-s---") == 0);
  OK(cowsnap_snapshot_export_cow(v, id, NULL, 0, &n)); /* the COW is still there */
  EXPECT(n == 3 * CHUNK);
  OK(cowsnap_snapshot_delete(v, id));

  /* Overflow mode REPORT: a snapshot write past the end is refused, reads go on. */
  o = mem_opts(3 * CHUNK);
  o.overflow = COWSNAP_OVERFLOW_REPORT;
  OK(cowsnap_snapshot_create(v, &o, &id));
  memset(buf, 2, sizeof buf);
  OK(cowsnap_snapshot_write(v, id, 0, buf, CHUNK));
  ERR(cowsnap_snapshot_write(v, id, 8 * CHUNK, buf, CHUNK), COWSNAP_ERR_SNAPSHOT_OVERFLOW, "overflowed");
  OK(cowsnap_snapshot_read(v, id, 0, buf, CHUNK));
  EXPECT(buf[0] == 2);
  OK(cowsnap_snapshot_status(v, id, &st));
  EXPECT(st.state == COWSNAP_STATE_OVERFLOW && st.overflow == COWSNAP_OVERFLOW_REPORT);
  EXPECT(st.data_percent == 100.0 && strcmp(st.dm_status, "Overflow") == 0);
  OK(cowsnap_snapshot_delete(v, id));

  /* last_error: snprintf-like truncation, length returned. */
  ERR(cowsnap_snapshot_read(v, 42, 0, buf, 1), COWSNAP_ERR_UNKNOWN_SNAPSHOT, "id 42");
  n = cowsnap_last_error(small, sizeof small);
  EXPECT(n == strlen("cowsnap_snapshot_read: no snapshot with id 42"));
  EXPECT(strcmp(small, "cows") == 0);
  EXPECT(cowsnap_last_error(NULL, 0) == n);

  cowsnap_volume_free(v);
}

/* The seed's workflow on a file-backed volume: snapshot a "database", keep writing, copy the
 * snapshot to a backup file, verify it; the snapshot survives closing and reopening the volume. */
static void test_file_backup(void) {
  const uint64_t size = 4 * MiB;
  const char *origin = path_in("db.img");
  const char *cow = path_in("db.cow");
  const char *backup = path_in("db.backup");
  cowsnap_volume *v = NULL;
  uint32_t id;
  uint8_t *buf = malloc(MiB), *chk = malloc(MiB);
  cowsnap_snapshot_options o;
  struct cowsnap_snapshot_status st;
  FILE *f;
  uint64_t off;
  const char *cows[1];
  size_t n;
  uint32_t ids[2];

  OK(cowsnap_volume_create_file(origin, size, &v));
  for (off = 0; off < size; off += MiB) {
    fill(buf, MiB, (uint8_t)(off / MiB));
    OK(cowsnap_volume_write(v, off, buf, MiB));
  }
  OK(cowsnap_snapshot_options_init(&o));
  o.cow_size = 2 * MiB;
  o.cow_path = cow;
  OK(cowsnap_snapshot_create(v, &o, &id));
  {
    /* An existing, non-empty file (here the live COW, then the origin) is refused, not wiped. */
    uint32_t other;
    ERR(cowsnap_snapshot_create(v, &o, &other), COWSNAP_ERR_INVALID_ARGUMENT, "refusing to overwrite");
    o.cow_path = origin;
    ERR(cowsnap_snapshot_create(v, &o, &other), COWSNAP_ERR_INVALID_ARGUMENT, "exists and is not empty");
    o.cow_path = cow; /* the backup checked below proves the live COW was left intact */
  }
  /* The "database" keeps changing after the snapshot. */
  memset(buf, 0xAB, MiB);
  OK(cowsnap_volume_write(v, MiB / 2, buf, MiB));
  OK(cowsnap_volume_flush(v));

  /* Copy the snapshot to the backup file. */
  f = fopen(backup, "wb");
  EXPECT(f != NULL);
  for (off = 0; f && off < size; off += MiB) {
    OK(cowsnap_snapshot_read(v, id, off, buf, MiB));
    EXPECT(fwrite(buf, 1, MiB, f) == MiB);
  }
  if (f) fclose(f);
  /* Verify the backup holds the data as it was at snapshot time. */
  f = fopen(backup, "rb");
  EXPECT(f != NULL);
  for (off = 0; f && off < size; off += MiB) {
    EXPECT(fread(chk, 1, MiB, f) == MiB);
    EXPECT(is_filled(chk, MiB, (uint8_t)(off / MiB)));
  }
  if (f) fclose(f);
  OK(cowsnap_snapshot_status(v, id, &st));
  EXPECT(st.exceptions == 256); /* 1 MiB of 4 KiB chunks */
  cowsnap_volume_free(v);

  /* Reopen: the persistent COW is activated with its exceptions. */
  cows[0] = cow;
  OK(cowsnap_volume_open_file(origin, cows, 1, &v));
  OK(cowsnap_volume_snapshot_ids(v, ids, 2, &n));
  EXPECT(n == 1);
  OK(cowsnap_snapshot_status(v, ids[0], &st));
  EXPECT(st.state == COWSNAP_STATE_ACTIVE && st.exceptions == 256);
  OK(cowsnap_snapshot_read(v, ids[0], MiB, buf, MiB));
  EXPECT(is_filled(buf, MiB, 1));
  OK(cowsnap_volume_read(v, MiB, buf, 16));
  EXPECT(buf[0] == 0xAB);
  OK(cowsnap_snapshot_delete(v, ids[0]));
  cowsnap_volume_free(v);

  /* A corrupt COW is refused on activation, with the file named. */
  f = fopen(cow, "r+b");
  EXPECT(f != NULL);
  if (f) {
    fwrite("XXXX", 1, 4, f); /* magic */
    fclose(f);
  }
  v = (cowsnap_volume *)&v;
  ERR(cowsnap_volume_open_file(origin, cows, 1, &v), COWSNAP_ERR_CORRUPT_METADATA, "db.cow");
  EXPECT(v == NULL);
  /* Truncated below a header. */
  f = fopen(cow, "wb");
  if (f) {
    fwrite("SnAp", 1, 4, f);
    fclose(f);
  }
  ERR(cowsnap_volume_open_file(origin, cows, 1, &v), COWSNAP_ERR_CORRUPT_METADATA, "smaller than a header");
  remove(origin);
  remove(cow);
  remove(backup);
  free(buf);
  free(chk);
}

/* Changed ranges: where two snapshots (or one and the origin) may differ, sorted and merged. */
static void test_changed_ranges(void) {
  cowsnap_volume *v = NULL;
  uint32_t old_id, new_id;
  struct cowsnap_range r[4];
  size_t n = 99;
  uint8_t byte = 0x5a;
  cowsnap_snapshot_options o = mem_opts(256 * 1024);

  OK(cowsnap_volume_create_mem(MiB, &v));
  OK(cowsnap_snapshot_create(v, &o, &old_id));
  OK(cowsnap_snapshot_changed_ranges(v, old_id, old_id, NULL, 0, &n));
  EXPECT(n == 0);
  OK(cowsnap_volume_write(v, 3 * CHUNK + 1, &byte, 1));
  OK(cowsnap_volume_write(v, 4 * CHUNK, &byte, 1)); /* chunks 3 and 4: one range */
  OK(cowsnap_volume_write(v, 9 * CHUNK, &byte, 1));
  OK(cowsnap_snapshot_create(v, &o, &new_id));
  OK(cowsnap_snapshot_write(v, new_id, 20 * CHUNK, &byte, 1)); /* the newer snapshot itself */
  OK(cowsnap_snapshot_changed_ranges(v, old_id, old_id, NULL, 0, &n));
  EXPECT(n == 2);
  ERR(cowsnap_snapshot_changed_ranges(v, old_id, new_id, r, 1, &n), COWSNAP_ERR_BUFFER_TOO_SMALL,
      "do not fit");
  EXPECT(n == 3);
  OK(cowsnap_snapshot_changed_ranges(v, old_id, new_id, r, 4, &n));
  EXPECT(n == 3);
  EXPECT(r[0].offset == 3 * CHUNK && r[0].length == 2 * CHUNK);
  EXPECT(r[1].offset == 9 * CHUNK && r[1].length == CHUNK);
  EXPECT(r[2].offset == 20 * CHUNK && r[2].length == CHUNK);
  ERR(cowsnap_snapshot_changed_ranges(v, old_id, 77, r, 4, &n), COWSNAP_ERR_UNKNOWN_SNAPSHOT, "77");
  ERR(cowsnap_snapshot_changed_ranges(v, old_id, new_id, NULL, 4, &n), COWSNAP_ERR_NULL_POINTER,
      "ranges");
  ERR(cowsnap_snapshot_changed_ranges(NULL, 0, 0, NULL, 0, &n), COWSNAP_ERR_NULL_POINTER, "vol is NULL");
  cowsnap_volume_free(v);
}

/* The sized structs: cowsnap_snapshot_create_options and cowsnap_snapshot_info, as this header has
 * them, as an older header had them (smaller: refused below the first version), and as a newer
 * header will (larger: unknown fields must be zero in, are zeroed out). */
struct future_options {
  cowsnap_snapshot_create_options o;
  uint64_t unknown_field;
};
struct future_info {
  cowsnap_snapshot_info i;
  uint8_t unknown_fields[40];
};

static void test_sized_structs(void) {
  cowsnap_volume *v = NULL;
  cowsnap_snapshot_create_options o;
  cowsnap_snapshot_info info;
  struct cowsnap_snapshot_status st;
  struct future_options fo;
  struct future_info fi;
  uint32_t id, id2;
  uint8_t buf[4096];

  OK(cowsnap_volume_create_mem(MiB, &v));
  memset(&o, 0x5A, sizeof o);
  OK(cowsnap_snapshot_create_options_init(&o, sizeof o));
  EXPECT(o.struct_size == sizeof o && o.chunk_size == 4096 && o.cow_size == 0);
  EXPECT(o.store == COWSNAP_STORE_PERSISTENT && o.overflow == COWSNAP_OVERFLOW_INVALIDATE);
  EXPECT(o.cow_path == NULL && o.autoextend_threshold == 0 && o.autoextend_percent == 0);
  o.cow_size = 256 * 1024;
  o.chunk_size = 8192;
  OK(cowsnap_snapshot_create_with(v, &o, &id));
  memset(&info, 0x5A, sizeof info);
  info.struct_size = sizeof info;
  OK(cowsnap_snapshot_get_info(v, id, &info));
  EXPECT(info.struct_size == sizeof info && info.state == COWSNAP_STATE_ACTIVE);
  EXPECT(info.chunk_size == 8192 && info.total_sectors == 512 && info.metadata_sectors == 32);
  EXPECT(!info.merging && info.exceptions == 0 && info.data_percent == 0.0);
  EXPECT(strcmp(info.dm_status, "32/512 32") == 0 && strcmp(info.lvs_attr, "swi-a-s---") == 0);
  /* The same numbers as the first status struct. */
  fill(buf, sizeof buf, 3);
  OK(cowsnap_volume_write(v, 0, buf, sizeof buf));
  OK(cowsnap_snapshot_get_info(v, id, &info));
  OK(cowsnap_snapshot_status(v, id, &st));
  EXPECT(info.exceptions == 1 && st.exceptions == 1);
  EXPECT(info.sectors_allocated == st.sectors_allocated && info.data_percent == st.data_percent);
  EXPECT(strcmp(info.dm_status, st.dm_status) == 0 && strcmp(info.lvs_attr, st.lvs_attr) == 0);

  /* A zeroed struct with only struct_size set is the defaults. */
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.cow_size = 64 * 1024;
  OK(cowsnap_snapshot_create_with(v, &o, &id2));
  OK(cowsnap_snapshot_get_info(v, id2, &info));
  EXPECT(info.chunk_size == 4096 && info.store == COWSNAP_STORE_PERSISTENT);
  OK(cowsnap_snapshot_delete(v, id2));

  /* A newer caller: its unknown field zero is accepted, set is refused. */
  memset(&fo, 0, sizeof fo);
  OK(cowsnap_snapshot_create_options_init(&fo.o, sizeof fo));
  EXPECT(fo.o.struct_size == sizeof fo && fo.unknown_field == 0 && fo.o.chunk_size == 4096);
  fo.o.cow_size = 64 * 1024;
  OK(cowsnap_snapshot_create_with(v, &fo.o, &id2));
  OK(cowsnap_snapshot_delete(v, id2));
  fo.unknown_field = 1;
  ERR(cowsnap_snapshot_create_with(v, &fo.o, &id2), COWSNAP_ERR_INVALID_ARGUMENT,
      "does not know");
  /* ...and gets its unknown status fields zeroed, with struct_size saying what was filled. */
  memset(&fi, 0x5A, sizeof fi);
  fi.i.struct_size = sizeof fi;
  OK(cowsnap_snapshot_get_info(v, id, &fi.i));
  EXPECT(fi.i.struct_size == sizeof(cowsnap_snapshot_info) && fi.i.exceptions == 1);
  {
    size_t k;
    int zero = 1;
    for (k = 0; k < sizeof fi.unknown_fields; k++) zero &= fi.unknown_fields[k] == 0;
    EXPECT(zero);
  }

  /* Sizes below the first version, or garbage, are refused; nothing is written. */
  o.struct_size = 8;
  ERR(cowsnap_snapshot_create_with(v, &o, &id2), COWSNAP_ERR_INVALID_ARGUMENT, "struct_size is 8");
  o.struct_size = (size_t)-1;
  ERR(cowsnap_snapshot_create_with(v, &o, &id2), COWSNAP_ERR_INVALID_ARGUMENT, "struct_size");
  ERR(cowsnap_snapshot_create_options_init(&o, 4), COWSNAP_ERR_INVALID_ARGUMENT, "struct_size is 4");
  ERR(cowsnap_snapshot_create_options_init(NULL, sizeof o), COWSNAP_ERR_NULL_POINTER, "opts is NULL");
  ERR(cowsnap_snapshot_create_with(v, NULL, &id2), COWSNAP_ERR_NULL_POINTER, "opts is NULL");
  memset(&info, 0x5A, sizeof info);
  info.struct_size = 16;
  ERR(cowsnap_snapshot_get_info(v, id, &info), COWSNAP_ERR_INVALID_ARGUMENT, "struct_size is 16");
  EXPECT(info.struct_size == 16 && info.state == 0x5A5A5A5A);
  ERR(cowsnap_snapshot_get_info(v, id, NULL), COWSNAP_ERR_NULL_POINTER, "out_info is NULL");
  info.struct_size = sizeof info;
  ERR(cowsnap_snapshot_get_info(v, 999, &info), COWSNAP_ERR_UNKNOWN_SNAPSHOT, "no snapshot");
  ERR(cowsnap_snapshot_get_info(NULL, id, &info), COWSNAP_ERR_NULL_POINTER, "vol is NULL");

  cowsnap_volume_free(v);
}

int main(int argc, char **argv) {
  snprintf(dir, sizeof dir, "%s", argc > 1 ? argv[1] : ".");
  test_version_and_names();
  test_round_trip();
  test_merge();
  test_error_paths();
  test_file_backup();
  test_changed_ranges();
  test_sized_structs();
  return finish("test_api");
}
