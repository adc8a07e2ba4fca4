/* Threads: 4 writers hammer the origin while 2 readers check that snapshots never change.
 * Reader 0 checks a snapshot taken before the threads start against the known initial pattern;
 * reader 1 takes its own snapshot in the middle of the writes, reads it whole as its reference and
 * re-reads it while the writers go on.
 * Then on files: 4 writers on interleaved sectors (so they share chunks) write, read their writes
 * back, flush now and then (sharing group commits) and read the snapshots; the origin must end as
 * the model says, and so must everything after closing and reopening the files.
 * Usage: test_stress [writes-per-writer] */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define VOL_SIZE (2u * 1024u * 1024u)
#define MAX_IO (20u * 1024u)
#define WRITERS 4
#define READERS 2

static cowsnap_volume *vol;
static uint32_t snap0;
static int writes_per_writer = 400;
static volatile int writers_done = 0;
static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static int failures = 0;
static long reads_done[READERS];
/* Reader 1's snapshot and its contents, kept for the merge phase. */
static uint32_t snap1;
static uint8_t *snap1_ref;
static volatile int merge_done = 0;
static int merge_started = 0;
/* Reader 1 takes its snapshot once a quarter of the writes are done; writers wait for it at half-way,
 * so that the snapshot lands in the middle of the writes whatever the scheduling. */
static pthread_cond_t progress_cv = PTHREAD_COND_INITIALIZER;
static long writes_total = 0;
static int snap1_taken = 0;
static long merge_reads = 0;

static uint8_t initial(uint64_t off) { return (uint8_t)((off * 31) >> 9) ^ (uint8_t)off; }

static void fail(const char *what, int r) {
  char msg[512];
  cowsnap_last_error(msg, sizeof msg);
  fprintf(stderr, "%s: %d (%s) %s\n", what, r, cowsnap_error_name(r), msg);
  pthread_mutex_lock(&done_lock);
  failures++;
  pthread_mutex_unlock(&done_lock);
}

static int done(void) {
  int d;
  pthread_mutex_lock(&done_lock);
  d = writers_done == WRITERS || failures > 0;
  pthread_mutex_unlock(&done_lock);
  return d;
}

static void *writer(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 1;
  uint8_t *buf = malloc(MAX_IO);
  int i, r;
  for (i = 0; i < writes_per_writer; i++) {
    size_t len = 1 + (size_t)rand_r(&seed) % MAX_IO;
    uint64_t off = (uint64_t)rand_r(&seed) % (VOL_SIZE - len);
    memset(buf, 0x80 | ((uintptr_t)arg << 4) | (i & 15), len);
    pthread_mutex_lock(&done_lock);
    writes_total++;
    pthread_cond_broadcast(&progress_cv);
    while (i == writes_per_writer / 2 && !snap1_taken && failures == 0)
      pthread_cond_wait(&progress_cv, &done_lock);
    pthread_mutex_unlock(&done_lock);
    if ((r = cowsnap_volume_write(vol, off, buf, len)) != COWSNAP_OK) {
      fail("writer", r);
      break;
    }
  }
  free(buf);
  pthread_mutex_lock(&done_lock);
  writers_done++;
  pthread_mutex_unlock(&done_lock);
  return NULL;
}

static void *reader(void *arg) {
  int who = (int)(uintptr_t)arg;
  unsigned seed = 12345u + (unsigned)who;
  uint8_t *buf = malloc(MAX_IO);
  uint8_t *ref = NULL;
  uint32_t id = snap0;
  int r;
  size_t k;
  if (who == 1) {
    /* Snapshot in the middle of the writes; its contents are frozen from now on. */
    cowsnap_snapshot_options o;
    cowsnap_snapshot_options_init(&o);
    o.cow_size = 3 * VOL_SIZE;
    o.chunk_size = 8192;
    pthread_mutex_lock(&done_lock);
    while (writes_total < (long)WRITERS * writes_per_writer / 4) pthread_cond_wait(&progress_cv, &done_lock);
    pthread_mutex_unlock(&done_lock);
    r = cowsnap_snapshot_create(vol, &o, &id);
    pthread_mutex_lock(&done_lock);
    snap1_taken = 1;
    if (r != COWSNAP_OK) failures++;
    pthread_cond_broadcast(&progress_cv);
    pthread_mutex_unlock(&done_lock);
    if (r != COWSNAP_OK) {
      fail("reader 1 snapshot", r);
      free(buf);
      return NULL;
    }
    ref = malloc(VOL_SIZE);
    if ((r = cowsnap_snapshot_read(vol, id, 0, ref, VOL_SIZE)) != COWSNAP_OK) fail("reader 1 ref", r);
  }
  do {
    size_t len = 1 + (size_t)rand_r(&seed) % MAX_IO;
    uint64_t off = (uint64_t)rand_r(&seed) % (VOL_SIZE - len);
    if ((r = cowsnap_snapshot_read(vol, id, off, buf, len)) != COWSNAP_OK) {
      fail("reader", r);
      break;
    }
    for (k = 0; k < len; k++) {
      uint8_t want = ref ? ref[off + k] : initial(off + k);
      if (buf[k] != want) {
        fprintf(stderr, "reader %d: snapshot %u changed at byte %llu: %u != %u\n", who, id,
                (unsigned long long)(off + k), buf[k], want);
        fail("reader", 0);
        break;
      }
    }
    reads_done[who]++;
  } while (!done());
  if (ref) {
    /* One last full comparison after every writer is done. */
    uint8_t *all = malloc(VOL_SIZE);
    if ((r = cowsnap_snapshot_read(vol, id, 0, all, VOL_SIZE)) != COWSNAP_OK) fail("reader final", r);
    else if (memcmp(all, ref, VOL_SIZE) != 0) fail("reader 1: snapshot changed", 0);
    free(all);
    snap1 = id;
    snap1_ref = ref;
  }
  free(buf);
  return NULL;
}

static int32_t count_steps(void *user, uint64_t merged, uint64_t total, bool finished) {
  (void)merged;
  (void)total;
  (void)finished;
  ++*(int *)user;
  pthread_mutex_lock(&done_lock);
  merge_started = 1;
  pthread_mutex_unlock(&done_lock);
  return 0;
}

static void *merge_reader(void *arg) {
  unsigned seed = 777;
  uint8_t *buf = malloc(MAX_IO);
  int r, d, started;
  size_t k;
  (void)arg;
  do {
    size_t len = 1 + (size_t)rand_r(&seed) % MAX_IO;
    uint64_t off = (uint64_t)rand_r(&seed) % (VOL_SIZE - len);
    /* The merge begins in the main thread: until then the origin holds the writers' data. */
    if ((r = cowsnap_snapshot_read(vol, snap0, off, buf, len)) != COWSNAP_OK) {
      fail("merge reader (snapshot 0)", r);
      break;
    }
    for (k = 0; k < len; k++)
      if (buf[k] != initial(off + k)) {
        fail("merge reader: snapshot 0 changed during the merge", 0);
        break;
      }
    pthread_mutex_lock(&done_lock);
    started = merge_started;
    pthread_mutex_unlock(&done_lock);
    if ((r = cowsnap_volume_read(vol, off, buf, len)) != COWSNAP_OK) {
      fail("merge reader (origin)", r);
      break;
    }
    /* Once the merge has begun, the origin reads as the merging snapshot. */
    if (started && memcmp(buf, snap1_ref + off, len) != 0) {
      fail("merge reader: the origin does not show the merging snapshot", 0);
      break;
    }
    merge_reads++;
    pthread_mutex_lock(&done_lock);
    d = merge_done || failures > 0;
    pthread_mutex_unlock(&done_lock);
  } while (!d);
  free(buf);
  return NULL;
}

/* ---- files: writers with flushes, against a model ---------------------------------------------- */

#define F_SIZE (1024u * 1024u)
#define F_SECTORS (F_SIZE / 512u)
static cowsnap_volume *fvol;
static uint32_t fsnap[2];
static uint8_t *fmodel; /* each writer changes only its own sectors (sector % WRITERS == t) */
static int f_writes = 100;

static uint8_t f_initial(uint64_t off) { return (uint8_t)(off * 7 + (off >> 12)); }

static void *file_writer(void *arg) {
  int t = (int)(uintptr_t)arg;
  unsigned seed = 99u + (unsigned)t;
  uint8_t buf[512], back[512], snap[4096];
  int i, r;
  size_t k;
  for (i = 0; i < f_writes; i++) {
    uint64_t sec = ((uint64_t)rand_r(&seed) % (F_SECTORS / WRITERS)) * WRITERS + (uint64_t)t;
    uint64_t at;
    memset(buf, (int)(1 + t * 50 + i % 50), sizeof buf);
    if ((r = cowsnap_volume_write(fvol, sec * 512, buf, sizeof buf)) != COWSNAP_OK) {
      fail("file writer", r);
      return NULL;
    }
    memcpy(fmodel + sec * 512, buf, sizeof buf);
    if ((r = cowsnap_volume_read(fvol, sec * 512, back, sizeof back)) != COWSNAP_OK ||
        memcmp(back, buf, sizeof buf) != 0) {
      fail("file writer: a write does not read back", r);
      return NULL;
    }
    if (i % 4 == t % 4 && (r = cowsnap_volume_flush(fvol)) != COWSNAP_OK) {
      fail("file writer flush", r);
      return NULL;
    }
    at = (uint64_t)rand_r(&seed) % (F_SIZE - sizeof snap);
    if ((r = cowsnap_snapshot_read(fvol, fsnap[i % 2], at, snap, sizeof snap)) != COWSNAP_OK) {
      fail("file writer snapshot read", r);
      return NULL;
    }
    for (k = 0; k < sizeof snap; k++)
      if (snap[k] != f_initial(at + k)) {
        fail("file writer: a snapshot changed", 0);
        return NULL;
      }
  }
  return NULL;
}

/* The origin reads as the model, both snapshots as the initial data. */
static void check_files(const char *when) {
  uint8_t *all = malloc(F_SIZE);
  uint64_t k;
  int s;
  OK(cowsnap_volume_read(fvol, 0, all, F_SIZE));
  if (memcmp(all, fmodel, F_SIZE) != 0) {
    fprintf(stderr, "files (%s): the origin is not the model\n", when);
    failures++;
  }
  for (s = 0; s < 2; s++) {
    OK(cowsnap_snapshot_read(fvol, fsnap[s], 0, all, F_SIZE));
    for (k = 0; k < F_SIZE; k++)
      if (all[k] != f_initial(k)) {
        fprintf(stderr, "files (%s): snapshot %d changed at %llu\n", when, s, (unsigned long long)k);
        failures++;
        break;
      }
  }
  free(all);
}

static void file_phase(void) {
  char dir[] = "/tmp/cowsnap-stress-XXXXXX";
  char origin[64], cows[2][64];
  const char *paths[2];
  pthread_t w[WRITERS];
  uintptr_t i;
  uint64_t k;
  int s;
  if (!mkdtemp(dir)) {
    fprintf(stderr, "mkdtemp failed\n");
    failures++;
    return;
  }
  snprintf(origin, sizeof origin, "%s/origin", dir);
  fmodel = malloc(F_SIZE);
  for (k = 0; k < F_SIZE; k++) fmodel[k] = f_initial(k);
  OK(cowsnap_volume_create_file(origin, F_SIZE, &fvol));
  OK(cowsnap_volume_write(fvol, 0, fmodel, F_SIZE));
  for (s = 0; s < 2; s++) {
    cowsnap_snapshot_options o;
    OK(cowsnap_snapshot_options_init(&o));
    snprintf(cows[s], sizeof cows[s], "%s/s%d.cow", dir, s);
    paths[s] = cows[s];
    o.cow_path = cows[s];
    o.cow_size = 2 * F_SIZE;
    o.chunk_size = s ? 16384 : 4096;
    OK(cowsnap_snapshot_create(fvol, &o, &fsnap[s]));
  }
  for (i = 0; i < WRITERS; i++) EXPECT(pthread_create(&w[i], NULL, file_writer, (void *)i) == 0);
  for (i = 0; i < WRITERS; i++) pthread_join(w[i], NULL);
  OK(cowsnap_volume_flush(fvol));
  check_files("written");
  cowsnap_volume_free(fvol);
  OK(cowsnap_volume_open_file(origin, paths, 2, &fvol));
  check_files("reopened");
  cowsnap_volume_free(fvol);
  for (s = 0; s < 2; s++) unlink(cows[s]);
  unlink(origin);
  rmdir(dir);
  free(fmodel);
  printf("test_stress: files: %d writers x %d writes with flushes, reopened\n", WRITERS, f_writes);
}

int main(int argc, char **argv) {
  pthread_t w[WRITERS], rd[READERS];
  uint8_t *init = malloc(VOL_SIZE);
  uintptr_t i;
  uint64_t k;
  cowsnap_snapshot_options o;
  struct cowsnap_snapshot_status st;

  if (argc > 1) writes_per_writer = atoi(argv[1]);
  f_writes = writes_per_writer / 3 < 20 ? 20 : writes_per_writer / 3;
  OK(cowsnap_volume_create_mem(VOL_SIZE, &vol));
  for (k = 0; k < VOL_SIZE; k++) init[k] = initial(k);
  OK(cowsnap_volume_write(vol, 0, init, VOL_SIZE));
  OK(cowsnap_snapshot_options_init(&o));
  o.cow_size = 3 * VOL_SIZE; /* never overflows: the snapshots must stay valid */
  OK(cowsnap_snapshot_create(vol, &o, &snap0));

  for (i = 0; i < READERS; i++) EXPECT(pthread_create(&rd[i], NULL, reader, (void *)i) == 0);
  for (i = 0; i < WRITERS; i++) EXPECT(pthread_create(&w[i], NULL, writer, (void *)i) == 0);
  for (i = 0; i < WRITERS; i++) pthread_join(w[i], NULL);
  for (i = 0; i < READERS; i++) pthread_join(rd[i], NULL);

  /* The first snapshot still holds the initial pattern, everywhere. */
  OK(cowsnap_snapshot_read(vol, snap0, 0, init, VOL_SIZE));
  for (k = 0; k < VOL_SIZE; k++)
    if (init[k] != initial(k)) {
      fprintf(stderr, "snapshot 0 changed at %llu\n", (unsigned long long)k);
      failures++;
      break;
    }
  OK(cowsnap_snapshot_status(vol, snap0, &st));
  EXPECT(st.state == COWSNAP_STATE_ACTIVE && st.exceptions > 0);

  /* Merge reader 1's snapshot while another thread reads the origin (which must show the snapshot's
   * contents from the first step on) and snapshot 0 (which must not change). */
  if (snap1_ref) {
    pthread_t m;
    int steps = 0;
    EXPECT(pthread_create(&m, NULL, merge_reader, NULL) == 0);
    OK(cowsnap_snapshot_merge(vol, snap1, count_steps, &steps));
    pthread_mutex_lock(&done_lock);
    merge_done = 1;
    pthread_mutex_unlock(&done_lock);
    pthread_join(m, NULL);
    EXPECT(steps >= 2);
    OK(cowsnap_volume_read(vol, 0, init, VOL_SIZE));
    EXPECT(memcmp(init, snap1_ref, VOL_SIZE) == 0);
    printf("test_stress: merged in %d progress calls while %ld reads ran\n", steps, merge_reads);
    free(snap1_ref);
  }
  EXPECT(reads_done[0] > 0 && reads_done[1] > 0);
  printf("test_stress: %d writers x %d writes, reads %ld + %ld, snapshot 0 has %llu exceptions\n",
         WRITERS, writes_per_writer, reads_done[0], reads_done[1], (unsigned long long)st.exceptions);
  cowsnap_volume_free(vol);
  free(init);
  file_phase();
  check_failures += failures;
  return finish("test_stress");
}
