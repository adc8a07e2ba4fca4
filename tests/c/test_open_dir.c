/* cowsnap_volume_open_dir on volume directories made by the cowsnap CLI (issue 15): the manifest's
 * autoextend policy is honoured (and its absence too), the volume's lock is respected both ways (a
 * CLI writer waits while a C handle is open; a C open fails while a CLI command holds the volume),
 * and snapshots of the manifest cannot be deleted behind its back.
 * Usage: test_open_dir <cowsnap-binary> <scratch-dir>. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#define KiB 1024u

static const char *cli;
static char scratch[2048];

/* Runs the CLI with `args` (a shell fragment); returns its exit status (-1 if not exited). */
static int run_cli(const char *args) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "%s %s", cli, args);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static uint64_t file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

/* A volume of 4 MiB filled with 0x11 and a 64 KiB snapshot `s` (autoextend `ae`, or none). */
static void make_volume(const char *dir, const char *ae) {
  char a[4096];
  snprintf(a, sizeof a, "rm -rf '%s'", dir);
  if (system(a) != 0) exit(1);
  snprintf(a, sizeof a, "-q create '%s' --size 4M", dir);
  EXPECT(run_cli(a) == 0);
  snprintf(a, sizeof a, "-q write '%s' --offset 0 --fill 0x11 --len 4M", dir);
  EXPECT(run_cli(a) == 0);
  snprintf(a, sizeof a, "-q snapshot '%s' --name s --size 64K%s%s", dir, ae ? " --autoextend " : "",
           ae ? ae : "");
  EXPECT(run_cli(a) == 0);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: test_open_dir <cowsnap-binary> <scratch-dir>\n");
    return 2;
  }
  cli = argv[1];
  snprintf(scratch, sizeof scratch, "%s", argv[2]);
  char dir[2100], dir2[2100], cow[2200], a[8192];
  snprintf(dir, sizeof dir, "%s/od-vol", scratch);
  snprintf(dir2, sizeof dir2, "%s/od-vol2", scratch);
  snprintf(cow, sizeof cow, "%s/s.cow", dir);
  static uint8_t buf[256 * KiB];

  /* 1. Autoextend from the manifest: 256 KiB of first writes fit only because the COW grows. */
  make_volume(dir, "60:100");
  cowsnap_volume *v = NULL;
  OK(cowsnap_volume_open_dir(dir, &v));
  uint32_t id = 99;
  OK(cowsnap_volume_dir_snapshot_id(v, "s", &id));
  ERR(cowsnap_volume_dir_snapshot_id(v, "nope", &id), COWSNAP_ERR_UNKNOWN_SNAPSHOT, "nope");
  memset(buf, 0x22, sizeof buf);
  OK(cowsnap_volume_write(v, 0, buf, sizeof buf));
  OK(cowsnap_volume_flush(v));
  struct cowsnap_snapshot_status st;
  OK(cowsnap_snapshot_status(v, id, &st));
  EXPECT(st.state == COWSNAP_STATE_ACTIVE);
  EXPECT(file_size(cow) > 64 * KiB);
  OK(cowsnap_snapshot_read(v, id, 0, buf, sizeof buf));
  int old = 1;
  for (size_t i = 0; i < sizeof buf; i++) old &= buf[i] == 0x11;
  EXPECT(old);

  /* 2. The manifest's snapshots stay the manifest's. */
  ERR(cowsnap_snapshot_delete(v, id), COWSNAP_ERR_INVALID_ARGUMENT, "manifest");
  ERR(cowsnap_snapshot_merge(v, id, NULL, NULL), COWSNAP_ERR_INVALID_ARGUMENT, "manifest");

  /* 3. The lock, held by this handle: a second open fails at once, a CLI writer waits. */
  cowsnap_volume *v2 = NULL;
  ERR(cowsnap_volume_open_dir(dir, &v2), COWSNAP_ERR_IO, "in use");
  EXPECT(v2 == NULL);
  snprintf(a, sizeof a, "-q write '%s' --offset 0 --fill 0x33 --len 4096", dir);
  char timed[10000];
  snprintf(timed, sizeof timed, "timeout 2 %s %s", cli, a);
  int stt = system(timed);
  EXPECT(WIFEXITED(stt) && WEXITSTATUS(stt) == 124); /* still waiting for the lock when killed */
  OK(cowsnap_volume_read(v, 0, buf, 4096));
  EXPECT(buf[0] == 0x22 && buf[4095] == 0x22);
  cowsnap_volume_free(v);
  EXPECT(run_cli(a) == 0); /* the lock is free again */

  /* 4. A CLI command holding the volume (a write waiting for its data): open_dir fails. */
  snprintf(a, sizeof a,
           "sh -c \"(sleep 3; head -c 4096 /dev/zero) | '%s' -q write '%s' --offset 8192 --from "
           "/dev/stdin --len 4096\" &",
           cli, dir);
  EXPECT(system(a) == 0);
  int refused = 0;
  for (int i = 0; i < 25 && !refused; i++) {
    sleep_ms(100);
    cowsnap_volume *t = NULL;
    int r = cowsnap_volume_open_dir(dir, &t);
    if (r == COWSNAP_ERR_IO && strstr(last_msg(), "in use")) refused = 1;
    cowsnap_volume_free(t);
  }
  EXPECT(refused);
  int reopened = 0;
  for (int i = 0; i < 100 && !reopened; i++) {
    sleep_ms(100);
    if (cowsnap_volume_open_dir(dir, &v) == COWSNAP_OK) reopened = 1;
  }
  EXPECT(reopened);
  if (reopened) {
    OK(cowsnap_volume_read(v, 0, buf, 12288));
    EXPECT(buf[0] == 0x33 && buf[4096] == 0x22 && buf[8192] == 0 && buf[12287] == 0);
    OK(cowsnap_volume_dir_snapshot_id(v, "s", &id));
    OK(cowsnap_snapshot_read(v, id, 0, buf, 4096));
    EXPECT(buf[0] == 0x11);
    cowsnap_volume_free(v);
  }

  /* 5. No autoextend in the manifest: the same writes overflow the 64 KiB COW (store P). */
  make_volume(dir2, NULL);
  OK(cowsnap_volume_open_dir(dir2, &v));
  OK(cowsnap_volume_dir_snapshot_id(v, "s", &id));
  memset(buf, 0x22, sizeof buf);
  OK(cowsnap_volume_write(v, 0, buf, sizeof buf));
  OK(cowsnap_snapshot_status(v, id, &st));
  EXPECT(st.state == COWSNAP_STATE_INVALID);
  cowsnap_volume_free(v);

  /* 6. Not a volume. */
  ERR(cowsnap_volume_open_dir(scratch, &v), COWSNAP_ERR_INVALID_ARGUMENT, "not a cowsnap volume");
  ERR(cowsnap_volume_open_dir(NULL, &v), COWSNAP_ERR_NULL_POINTER, "dir");

  snprintf(a, sizeof a, "rm -rf '%s' '%s'", dir, dir2);
  EXPECT(system(a) == 0);
  return finish("test_open_dir");
}
