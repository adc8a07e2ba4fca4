/* Live backup from a snapshot, the way LVM snapshots are used to back up a database:
 *
 *   1. take the application's lock (here a mutex standing in for the database's write lock),
 *   2. create a snapshot (no data is copied, so the lock is held for microseconds),
 *   3. release the lock: the writers go on,
 *   4. copy the snapshot to a backup file while the writers keep writing,
 *   5. verify the backup, and delete the snapshot.
 *
 * The "database" is a file-backed cowsnap volume of 4 KiB pages, each holding an account balance;
 * writer threads move money between two accounts per transaction, under the lock. A backup is
 * consistent when every page is intact and the balances add up to the initial total.
 *
 * Build:  cc -std=c99 -o backup backup.c $(pkg-config --cflags --libs cowsnap) -lpthread
 * Run:    ./backup [work-dir]      (creates db.img, db.cow, db.backup there; keeps only db.backup) */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cowsnap.h>

#define PAGE 4096u
#define PAGES 2048u /* 8 MiB */
#define INITIAL 1000
#define WRITERS 3

static cowsnap_volume *db;
static pthread_mutex_t db_lock = PTHREAD_MUTEX_INITIALIZER; /* the application's lock */
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static int stop = 0;
static long transactions = 0;
static int writer_error = 0;

static int die(const char *what, int r) {
  char msg[512];
  cowsnap_last_error(msg, sizeof msg);
  fprintf(stderr, "backup: %s failed: %s (%s)\n", what, msg, cowsnap_error_name(r));
  return 1;
}

/* A page: the balance (little-endian int64) then filler derived from it, so torn pages show. */
static void make_page(uint8_t *p, uint32_t page, int64_t balance) {
  uint32_t i;
  memcpy(p, &balance, sizeof balance);
  for (i = sizeof balance; i < PAGE; i++) p[i] = (uint8_t)(balance * 31 + page + i);
}

static int page_ok(const uint8_t *p, uint32_t page, int64_t *balance) {
  uint32_t i;
  memcpy(balance, p, sizeof *balance);
  for (i = sizeof *balance; i < PAGE; i++)
    if (p[i] != (uint8_t)(*balance * 31 + page + i)) return 0;
  return 1;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *writer(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg + 1;
  uint8_t a[PAGE], b[PAGE];
  int64_t ba, bb;
  int done = 0, r = COWSNAP_OK;
  while (!done) {
    uint32_t pa = (uint32_t)rand_r(&seed) % PAGES, pb = (uint32_t)rand_r(&seed) % PAGES;
    int64_t amount = rand_r(&seed) % 50;
    if (pa == pb) continue;
    pthread_mutex_lock(&db_lock); /* one transaction */
    if ((r = cowsnap_volume_read(db, (uint64_t)pa * PAGE, a, PAGE)) == COWSNAP_OK &&
        (r = cowsnap_volume_read(db, (uint64_t)pb * PAGE, b, PAGE)) == COWSNAP_OK) {
      page_ok(a, pa, &ba);
      page_ok(b, pb, &bb);
      make_page(a, pa, ba - amount);
      make_page(b, pb, bb + amount);
      if ((r = cowsnap_volume_write(db, (uint64_t)pa * PAGE, a, PAGE)) == COWSNAP_OK)
        r = cowsnap_volume_write(db, (uint64_t)pb * PAGE, b, PAGE);
    }
    pthread_mutex_unlock(&db_lock);
    pthread_mutex_lock(&stats_lock);
    if (r != COWSNAP_OK) writer_error = die("writer", r);
    else transactions++;
    done = stop || writer_error;
    pthread_mutex_unlock(&stats_lock);
  }
  return NULL;
}

static long tx_count(void) {
  long n;
  pthread_mutex_lock(&stats_lock);
  n = transactions;
  pthread_mutex_unlock(&stats_lock);
  return n;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : ".";
  char img[1024], cow[1024], bak[1024];
  uint8_t *buf = malloc(PAGE * 256);
  pthread_t w[WRITERS];
  cowsnap_snapshot_create_options opts;
  cowsnap_snapshot_info st;
  uint32_t snap, p;
  uintptr_t i;
  int r, bad_pages = 0;
  long tx_at_snapshot, tx_after_copy;
  int64_t total = 0, balance;
  double t0, locked_for, copy_secs;
  FILE *f;

  snprintf(img, sizeof img, "%s/db.img", dir);
  snprintf(cow, sizeof cow, "%s/db.cow", dir);
  snprintf(bak, sizeof bak, "%s/db.backup", dir);
  printf("cowsnap %s: live backup of an %u KiB database\n", cowsnap_version(), PAGES * PAGE / 1024);

  if ((r = cowsnap_volume_create_file(img, (uint64_t)PAGES * PAGE, &db)) != COWSNAP_OK)
    return die("creating the volume", r);
  for (p = 0; p < PAGES; p++) {
    make_page(buf, p, INITIAL);
    if ((r = cowsnap_volume_write(db, (uint64_t)p * PAGE, buf, PAGE)) != COWSNAP_OK)
      return die("initialising", r);
  }
  for (i = 0; i < WRITERS; i++) pthread_create(&w[i], NULL, writer, (void *)i);
  while (tx_count() < 200) { /* let the writers get going */
  }

  /* 1-3: lock, snapshot, unlock. */
  cowsnap_snapshot_create_options_init(&opts, sizeof opts); /* sized: it can gain fields */
  opts.cow_size = (uint64_t)PAGES * PAGE / 2; /* room for half the pages to change */
  opts.cow_path = cow;
  opts.autoextend_threshold = 70; /* grow the COW rather than lose the snapshot */
  opts.autoextend_percent = 50;
  pthread_mutex_lock(&db_lock);
  t0 = now();
  r = cowsnap_snapshot_create_with(db, &opts, &snap);
  locked_for = now() - t0;
  pthread_mutex_unlock(&db_lock);
  tx_at_snapshot = tx_count();
  if (r != COWSNAP_OK) return die("creating the snapshot", r);

  /* 4: copy the snapshot while the writers go on. */
  t0 = now();
  f = fopen(bak, "wb");
  if (!f) {
    perror(bak);
    return 1;
  }
  for (p = 0; p < PAGES; p += 256) {
    if ((r = cowsnap_snapshot_read(db, snap, (uint64_t)p * PAGE, buf, PAGE * 256)) != COWSNAP_OK)
      return die("reading the snapshot", r);
    if (fwrite(buf, PAGE, 256, f) != 256) {
      perror(bak);
      return 1;
    }
  }
  fclose(f);
  copy_secs = now() - t0;
  tx_after_copy = tx_count();
  st.struct_size = sizeof st;
  if ((r = cowsnap_snapshot_get_info(db, snap, &st)) != COWSNAP_OK) return die("status", r);

  /* 5: verify the backup file, then drop the snapshot. */
  f = fopen(bak, "rb");
  if (!f) {
    perror(bak);
    return 1;
  }
  for (p = 0; p < PAGES; p++) {
    if (fread(buf, PAGE, 1, f) != 1 || !page_ok(buf, p, &balance)) bad_pages++;
    total += balance;
  }
  fclose(f);
  if ((r = cowsnap_snapshot_delete(db, snap)) != COWSNAP_OK) return die("deleting the snapshot", r);

  pthread_mutex_lock(&stats_lock);
  stop = 1;
  pthread_mutex_unlock(&stats_lock);
  for (i = 0; i < WRITERS; i++) pthread_join(w[i], NULL);
  cowsnap_volume_free(db);
  remove(img);
  remove(cow);
  free(buf);

  printf("lock held for %.3f ms to take the snapshot\n", locked_for * 1e3);
  printf("copied %u KiB in %.3f s while the writers committed %ld transactions\n",
         PAGES * PAGE / 1024, copy_secs, tx_after_copy - tx_at_snapshot);
  printf("snapshot COW at the end of the copy: %s (Data%% %.2f, %llu chunks preserved)\n", st.dm_status,
         st.data_percent, (unsigned long long)st.exceptions);
  printf("backup %s: %u pages, %d torn, total balance %lld (expected %lld)\n", bak, PAGES, bad_pages,
         (long long)total, (long long)PAGES * INITIAL);
  if (writer_error || bad_pages || total != (int64_t)PAGES * INITIAL || st.state != COWSNAP_STATE_ACTIVE) {
    fprintf(stderr, "backup: FAILED: the backup is not consistent\n");
    return 1;
  }
  printf("backup is consistent\n");
  return 0;
}
