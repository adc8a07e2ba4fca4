/* The file edges of libcowsnap (issue 13): what the open and create functions do with paths that
 * are not what they should be. Every refused call must return its code AND leave every file as it
 * was: each case takes a signature (type, size, inode, content hash, link target) of the files in
 * play before the call and compares it after.
 * Usage: test_files <scratch-dir>. Root-only cases (tmpfs mounts, mknod) print why they are skipped
 * when not run as root. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "check.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

static char dir[4096];
static char mounted[4200]; /* a tmpfs this test mounted, unmounted at exit */

static const char *path_in(const char *name) {
  static char buf[32][4200];
  static int i = 0;
  i = (i + 1) % 32;
  snprintf(buf[i], sizeof buf[i], "%s/%s", dir, name);
  return buf[i];
}

/* ------------------------------------------------------------------------- file signatures */

struct sig {
  int exists;
  mode_t type;
  off_t size;
  ino_t ino;
  uint64_t hash; /* FNV-1a of the content (regular files) */
  char link[256];
};

static struct sig sig_of(const char *path) {
  struct sig s;
  struct stat st;
  memset(&s, 0, sizeof s);
  if (lstat(path, &st) != 0) return s;
  s.exists = 1;
  s.type = st.st_mode & S_IFMT;
  s.ino = st.st_ino;
  if (S_ISLNK(st.st_mode)) {
    ssize_t n = readlink(path, s.link, sizeof s.link - 1);
    if (n > 0) s.link[n] = 0;
  } else if (S_ISREG(st.st_mode)) {
    FILE *f = fopen(path, "rb");
    uint8_t buf[65536];
    size_t n;
    s.size = st.st_size;
    s.hash = 1469598103934665603ull;
    if (f == NULL) {
      s.hash = 0;
      return s;
    }
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
      size_t i;
      for (i = 0; i < n; i++) s.hash = (s.hash ^ buf[i]) * 1099511628211ull;
    }
    fclose(f);
  }
  return s;
}

static int same_sig(struct sig a, struct sig b) {
  return a.exists == b.exists && a.type == b.type && a.size == b.size && a.ino == b.ino &&
         a.hash == b.hash && strcmp(a.link, b.link) == 0;
}

#define MAX_WATCHED 6
struct watch {
  int n;
  const char *paths[MAX_WATCHED];
  struct sig before[MAX_WATCHED];
};

static struct watch watch(const char *a, const char *b, const char *c) {
  struct watch w;
  const char *all[3];
  int i;
  all[0] = a;
  all[1] = b;
  all[2] = c;
  w.n = 0;
  for (i = 0; i < 3; i++) {
    if (all[i] == NULL) continue;
    w.paths[w.n] = all[i];
    w.before[w.n] = sig_of(all[i]);
    w.n++;
  }
  return w;
}

#define UNCHANGED(w)                                                                          \
  do {                                                                                        \
    int i_;                                                                                   \
    for (i_ = 0; i_ < (w).n; i_++) {                                                          \
      if (!same_sig((w).before[i_], sig_of((w).paths[i_]))) {                                 \
        fprintf(stderr, "%s:%d: %s changed\n", __FILE__, __LINE__, (w).paths[i_]);           \
        check_failures++;                                                                     \
      }                                                                                       \
    }                                                                                         \
  } while (0)

/* --------------------------------------------------------------------------------- helpers */

static void write_file(const char *path, const void *data, size_t n, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  if (fd < 0 || (n > 0 && write(fd, data, n) != (ssize_t)n)) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    exit(1);
  }
  close(fd);
}

static int is_root(void) { return geteuid() == 0; }

static void skip(const char *what) {
  printf("test_files: SKIPPED (not root): %s\n", what);
}

static void unmount_at_exit(void) {
  if (mounted[0]) {
    umount2(mounted, MNT_DETACH);
    rmdir(mounted);
    mounted[0] = 0;
  }
}

/* Mounts a tmpfs of `size_opt` (e.g. "size=8m") at <dir>/<name>; root only. */
static const char *mount_tmpfs(const char *name, const char *size_opt) {
  const char *at = path_in(name);
  mkdir(at, 0755);
  if (mount("tmpfs", at, "tmpfs", 0, size_opt) != 0) {
    fprintf(stderr, "mount tmpfs at %s: %s\n", at, strerror(errno));
    exit(1);
  }
  snprintf(mounted, sizeof mounted, "%s", at);
  return mounted;
}

static uint64_t free_bytes(const char *path) {
  struct statvfs s;
  if (statvfs(path, &s) != 0) return 0;
  return (uint64_t)s.f_bavail * s.f_frsize;
}

static cowsnap_snapshot_options file_opts(const char *path, uint64_t cow_size) {
  cowsnap_snapshot_options o;
  OK(cowsnap_snapshot_options_init(&o));
  o.cow_size = cow_size;
  o.cow_path = path;
  return o;
}

/* An origin file of 1 MiB (first chunk zero, like a fresh disk) with one persistent COW file of
 * 256 KiB that holds the origin's old data for the first 64 KiB. */
static void make_volume(const char *origin, const char *cow) {
  cowsnap_volume *v;
  cowsnap_snapshot_options o = file_opts(cow, 256 * KiB);
  uint8_t *buf = malloc(MiB);
  uint32_t id;
  unlink(origin);
  unlink(cow);
  memset(buf, 0x41, MiB);
  memset(buf, 0, 4096);
  OK(cowsnap_volume_create_file(origin, MiB, &v));
  OK(cowsnap_volume_write(v, 0, buf, MiB));
  OK(cowsnap_snapshot_create(v, &o, &id));
  memset(buf, 0x42, 64 * KiB);
  OK(cowsnap_volume_write(v, 4096, buf, 64 * KiB));
  cowsnap_volume_free(v);
  free(buf);
}

static void zero_range(const char *path, off_t at, size_t n) {
  uint8_t zeros[4096] = {0};
  int fd = open(path, O_WRONLY);
  EXPECT(fd >= 0 && n <= sizeof zeros && pwrite(fd, zeros, n, at) == (ssize_t)n);
  if (fd >= 0) close(fd);
}

/* ---------------------------------------------------------- 1. opening never formats a COW */

static void test_open_never_formats(void) {
  const char *origin = path_in("nf-origin.img"), *cow = path_in("nf-s1.cow");
  const char *cows[1];
  cowsnap_volume *v = NULL;
  struct watch w;

  make_volume(origin, cow);
  cows[0] = cow;
  OK(cowsnap_volume_open_file(origin, cows, 1, &v)); /* the intact pair opens */
  cowsnap_volume_free(v);

  /* Zeroed magic: corruption, not "new". */
  zero_range(cow, 0, 4);
  w = watch(origin, cow, NULL);
  v = (cowsnap_volume *)&v;
  ERR(cowsnap_volume_open_file(origin, cows, 1, &v), COWSNAP_ERR_CORRUPT_METADATA, "nf-s1.cow");
  EXPECT(v == NULL);
  UNCHANGED(w);

  /* Truncated to 0 and grown back (all zeros). */
  EXPECT(truncate(cow, 0) == 0 && truncate(cow, 256 * KiB) == 0);
  w = watch(origin, cow, NULL);
  ERR(cowsnap_volume_open_file(origin, cows, 1, &v), COWSNAP_ERR_CORRUPT_METADATA, "cow_paths[0]");
  UNCHANGED(w);

  /* An empty COW file. */
  EXPECT(truncate(cow, 0) == 0);
  w = watch(origin, cow, NULL);
  ERR(cowsnap_volume_open_file(origin, cows, 1, &v), COWSNAP_ERR_CORRUPT_METADATA, "nf-s1.cow");
  UNCHANGED(w);
  unlink(origin);
  unlink(cow);
}

/* --------------------------------------------------------- 5. one file as two devices */

static void test_identity(void) {
  const char *origin = path_in("id-origin.img"), *cow = path_in("id-s1.cow");
  const char *hard = path_in("id-hard.cow"), *soft = path_in("id-soft.cow");
  const char *to_origin = path_in("id-origin-link.cow"), *hard_origin = path_in("id-origin-hard.cow");
  const char *dotdot = path_in("id-sub/../id-s1.cow");
  const char *cows[2];
  cowsnap_volume *v = NULL;
  struct watch w;

  make_volume(origin, cow);
  mkdir(path_in("id-sub"), 0755);
  EXPECT(link(cow, hard) == 0 && symlink(cow, soft) == 0);
  EXPECT(symlink(origin, to_origin) == 0 && link(origin, hard_origin) == 0);
  w = watch(origin, cow, NULL);

  cows[0] = cow;
  cows[1] = cow;
  ERR(cowsnap_volume_open_file(origin, cows, 2, &v), COWSNAP_ERR_INVALID_ARGUMENT,
      "cow_paths[1]");
  EXPECT(v == NULL);
  EXPECT(strstr(last_msg(), "is the same file as cow_paths[0]") != NULL);
  cows[1] = hard;
  ERR(cowsnap_volume_open_file(origin, cows, 2, &v), COWSNAP_ERR_INVALID_ARGUMENT, "same file");
  cows[1] = soft;
  ERR(cowsnap_volume_open_file(origin, cows, 2, &v), COWSNAP_ERR_INVALID_ARGUMENT, "same file");
  cows[1] = dotdot;
  ERR(cowsnap_volume_open_file(origin, cows, 2, &v), COWSNAP_ERR_INVALID_ARGUMENT, "same file");
  /* The origin as its own COW: by the same path, a symlink, a hard link. */
  cows[0] = origin;
  ERR(cowsnap_volume_open_file(origin, cows, 1, &v), COWSNAP_ERR_INVALID_ARGUMENT,
      "is the same file as origin_path");
  cows[0] = to_origin;
  ERR(cowsnap_volume_open_file(origin, cows, 1, &v), COWSNAP_ERR_INVALID_ARGUMENT, "same file");
  cows[0] = hard_origin;
  ERR(cowsnap_volume_open_file(origin, cows, 1, &v), COWSNAP_ERR_INVALID_ARGUMENT, "same file");
  UNCHANGED(w);

  /* A bind mount of the COW over another file: the same inode under a second name (root). */
  if (is_root()) {
    const char *bind = path_in("id-bind.cow");
    write_file(bind, "", 0, 0644);
    /* The type is ignored for MS_BIND, but valgrind checks that it is a string. */
    if (mount(cow, bind, "none", MS_BIND, NULL) != 0) {
      fprintf(stderr, "bind mount %s: %s\n", bind, strerror(errno));
      check_failures++;
    } else {
      cows[0] = cow;
      cows[1] = bind;
      ERR(cowsnap_volume_open_file(origin, cows, 2, &v), COWSNAP_ERR_INVALID_ARGUMENT, "same file");
      EXPECT(umount2(bind, MNT_DETACH) == 0);
    }
    unlink(bind);
    UNCHANGED(w);
  } else {
    skip("a bind mount of a COW under a second name (mount --bind)");
  }

  /* The pair still opens and reads the snapshot's data after all that. */
  cows[0] = soft;
  OK(cowsnap_volume_open_file(origin, cows, 1, &v));
  {
    uint8_t b[4];
    size_t n;
    uint32_t id;
    OK(cowsnap_volume_snapshot_ids(v, &id, 1, &n));
    OK(cowsnap_snapshot_read(v, id, 4096, b, 4));
    EXPECT(b[0] == 0x41 && b[3] == 0x41);
  }
  cowsnap_volume_free(v);
  unlink(hard);
  unlink(soft);
  unlink(to_origin);
  unlink(hard_origin);
  rmdir(path_in("id-sub"));
  unlink(origin);
  unlink(cow);
}

/* ------------------------------------------------- paths of the wrong kind, for an open */

static void test_open_wrong_kinds(void) {
  const char *origin = path_in("ok-origin.img"), *cow = path_in("ok-s1.cow");
  const char *d = path_in("ok-dir"), *fifo = path_in("ok-fifo"), *ro = path_in("ok-ro.cow");
  const char *cows[1];
  cowsnap_volume *v = NULL;
  struct watch w;

  make_volume(origin, cow);
  mkdir(d, 0755);
  EXPECT(mkfifo(fifo, 0644) == 0);
  w = watch(origin, cow, fifo);

  ERR(cowsnap_volume_open_file(d, NULL, 0, &v), COWSNAP_ERR_INVALID_ARGUMENT, "is a directory");
  cows[0] = d;
  ERR(cowsnap_volume_open_file(origin, cows, 1, &v), COWSNAP_ERR_INVALID_ARGUMENT, "is a directory");
  ERR(cowsnap_volume_open_file("/dev/null", NULL, 0, &v), COWSNAP_ERR_INVALID_ARGUMENT,
      "is a character device");
  cows[0] = "/dev/zero";
  ERR(cowsnap_volume_open_file(origin, cows, 1, &v), COWSNAP_ERR_INVALID_ARGUMENT,
      "is a character device");
  cows[0] = fifo; /* must not block */
  ERR(cowsnap_volume_open_file(origin, cows, 1, &v), COWSNAP_ERR_INVALID_ARGUMENT, "is a FIFO");
  cows[0] = path_in("ok-missing.cow");
  ERR(cowsnap_volume_open_file(origin, cows, 1, &v), COWSNAP_ERR_IO, "No such file");
  EXPECT(access(path_in("ok-missing.cow"), F_OK) != 0); /* opening created nothing */
  UNCHANGED(w);

  /* A read-only COW: refused (for root too, whose open(2) would succeed), nothing written. */
  EXPECT(rename(cow, ro) == 0 && chmod(ro, 0444) == 0);
  w = watch(origin, ro, NULL);
  cows[0] = ro;
  ERR(cowsnap_volume_open_file(origin, cows, 1, &v), COWSNAP_ERR_IO, "read-only");
  EXPECT(v == NULL);
  EXPECT(chmod(origin, 0444) == 0);
  ERR(cowsnap_volume_open_file(origin, NULL, 0, &v), COWSNAP_ERR_IO, "read-only");
  UNCHANGED(w);
  chmod(origin, 0644);
  unlink(origin);
  unlink(ro);
  unlink(fifo);
  rmdir(d);
}

/* ---------------------------------------------- paths of the wrong kind, for a creation */

static void test_create_wrong_kinds(void) {
  const char *origin = path_in("ck-origin.img"), *cow = path_in("ck-s1.cow");
  const char *d = path_in("ck-dir"), *dangling = path_in("ck-dangling.cow");
  const char *target = path_in("ck-target.cow"), *to_empty = path_in("ck-to-empty.cow");
  const char *empty = path_in("ck-empty.cow"), *ro = path_in("ck-ro.cow");
  cowsnap_volume *v = NULL, *mem = NULL;
  cowsnap_snapshot_options o;
  uint32_t id;
  struct watch w;
  struct stat st;

  make_volume(origin, cow);
  mkdir(d, 0755);
  EXPECT(symlink(target, dangling) == 0);
  write_file(empty, "", 0, 0644);
  EXPECT(symlink(empty, to_empty) == 0);
  write_file(ro, "", 0, 0444);
  OK(cowsnap_volume_create_mem(MiB, &mem));

  /* A new COW. */
  w = watch(origin, cow, d);
  o = file_opts(d, 64 * KiB);
  ERR(cowsnap_snapshot_create(mem, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "is a directory");
  o = file_opts("/dev/null", 64 * KiB);
  ERR(cowsnap_snapshot_create(mem, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "is a character device");
  EXPECT(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode));
  o = file_opts(cow, 64 * KiB); /* another volume's COW */
  ERR(cowsnap_snapshot_create(mem, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "refusing to overwrite");
  o = file_opts(origin, 64 * KiB);
  ERR(cowsnap_snapshot_create(mem, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "not empty");
  UNCHANGED(w);
  w = watch(dangling, to_empty, empty);
  o = file_opts(dangling, 64 * KiB); /* would create the link's target */
  ERR(cowsnap_snapshot_create(mem, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "symbolic link");
  EXPECT(access(target, F_OK) != 0);
  o = file_opts(to_empty, 64 * KiB);
  ERR(cowsnap_snapshot_create(mem, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "symbolic link");
  UNCHANGED(w);
  w = watch(ro, NULL, NULL);
  o = file_opts(ro, 64 * KiB);
  ERR(cowsnap_snapshot_create(mem, &o, &id), COWSNAP_ERR_IO, "read-only");
  UNCHANGED(w);
  o = file_opts(path_in("ck-missing-dir/s.cow"), 64 * KiB);
  ERR(cowsnap_snapshot_create(mem, &o, &id), COWSNAP_ERR_IO, "ck-missing-dir");

  /* A new origin: the same rules (an existing file is never truncated). */
  w = watch(origin, cow, ro);
  ERR(cowsnap_volume_create_file(origin, MiB, &v), COWSNAP_ERR_INVALID_ARGUMENT, "not empty");
  ERR(cowsnap_volume_create_file(cow, MiB, &v), COWSNAP_ERR_INVALID_ARGUMENT, "not empty");
  ERR(cowsnap_volume_create_file(d, MiB, &v), COWSNAP_ERR_INVALID_ARGUMENT, "is a directory");
  ERR(cowsnap_volume_create_file("/dev/null", MiB, &v), COWSNAP_ERR_INVALID_ARGUMENT,
      "is a character device");
  ERR(cowsnap_volume_create_file(ro, MiB, &v), COWSNAP_ERR_IO, "read-only");
  ERR(cowsnap_volume_create_file(dangling, MiB, &v), COWSNAP_ERR_INVALID_ARGUMENT, "symbolic link");
  ERR(cowsnap_volume_create_file(path_in("ck-huge.img"), UINT64_MAX, &v),
      COWSNAP_ERR_INVALID_ARGUMENT, "larger than any file");
  EXPECT(v == NULL);
  EXPECT(access(target, F_OK) != 0 && access(path_in("ck-huge.img"), F_OK) != 0);
  UNCHANGED(w);

  /* An existing empty regular file (a mkstemp file) is what a caller may hand over. */
  o = file_opts(empty, 64 * KiB);
  OK(cowsnap_snapshot_create(mem, &o, &id));
  EXPECT(stat(empty, &st) == 0 && st.st_size == 64 * KiB);
  EXPECT(st.st_blocks * 512 >= 64 * KiB); /* reserved, not sparse */

  /* A device node where a new COW should go (root: mknod a block device). */
  if (is_root()) {
    const char *node = path_in("ck-blockdev");
    EXPECT(mknod(node, S_IFBLK | 0600, makedev(7, 250)) == 0);
    o = file_opts(node, 64 * KiB);
    ERR(cowsnap_snapshot_create(mem, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "is a block device");
    ERR(cowsnap_volume_create_file(node, MiB, &v), COWSNAP_ERR_INVALID_ARGUMENT, "is a block device");
    ERR(cowsnap_volume_open_file(node, NULL, 0, &v), COWSNAP_ERR_INVALID_ARGUMENT, "is a block device");
    EXPECT(lstat(node, &st) == 0 && S_ISBLK(st.st_mode) && major(st.st_rdev) == 7);
    unlink(node);
  } else {
    skip("a block-device node as a new COW (mknod)");
  }

  cowsnap_volume_free(mem);
  unlink(origin);
  unlink(cow);
  unlink(dangling);
  unlink(to_empty);
  unlink(empty);
  chmod(ro, 0644);
  unlink(ro);
  rmdir(d);
}

/* ---------------------------------------- a creation the volume refuses leaves no file */

static int stop_at_once(void *user, uint64_t merged, uint64_t total, bool done) {
  (void)user;
  (void)merged;
  (void)total;
  return done ? 0 : 1;
}

static void test_refused_creation_leaves_nothing(void) {
  const char *cow = path_in("rc-new.cow"), *empty = path_in("rc-empty.cow");
  cowsnap_volume *v;
  cowsnap_snapshot_options o;
  uint32_t id, id2;
  uint8_t b[4096];
  struct stat st;
  OK(cowsnap_volume_create_mem(MiB, &v));
  o = file_opts(NULL, 64 * KiB);
  o.cow_path = NULL;
  OK(cowsnap_snapshot_create(v, &o, &id));
  memset(b, 7, sizeof b);
  OK(cowsnap_volume_write(v, 0, b, sizeof b));
  OK(cowsnap_volume_write(v, 8192, b, sizeof b));
  ERR(cowsnap_snapshot_merge(v, id, stop_at_once, NULL), COWSNAP_ERR_MERGING, "stopped");
  /* Merging: a new snapshot is refused after its COW file was made; the file goes again. */
  o = file_opts(cow, 64 * KiB);
  ERR(cowsnap_snapshot_create(v, &o, &id2), COWSNAP_ERR_MERGING, "merg");
  EXPECT(access(cow, F_OK) != 0);
  write_file(empty, "", 0, 0644);
  o = file_opts(empty, 64 * KiB);
  ERR(cowsnap_snapshot_create(v, &o, &id2), COWSNAP_ERR_MERGING, "merg");
  EXPECT(stat(empty, &st) == 0 && st.st_size == 0); /* the caller's empty file stays empty */
  OK(cowsnap_snapshot_merge(v, id, NULL, NULL));
  cowsnap_volume_free(v);
  unlink(empty);
}

/* ----------------------------------------------------- 12. minimum COW, extend bounds */

static void test_sizes(void) {
  const char *cow = path_in("sz-s.cow");
  cowsnap_volume *v;
  cowsnap_snapshot_options o;
  uint32_t id;
  struct stat st;
  uint8_t b[8];
  OK(cowsnap_volume_create_mem(MiB, &v));
  /* The header says 3 chunks (header, metadata area, one data chunk), as lvcreate requires. */
  o = file_opts(NULL, 2 * 4096);
  o.cow_path = NULL;
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_NO_SPACE, "needs 3 chunks");
  o.chunk_size = 65536;
  o.cow_size = 3 * 65536 - 512;
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_NO_SPACE, "196608 bytes");
  o = file_opts(cow, 2 * 4096);
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_NO_SPACE, "needs 3 chunks");
  EXPECT(access(cow, F_OK) != 0); /* refused before the file was made */
  o.cow_size = 3 * 4096;
  OK(cowsnap_snapshot_create(v, &o, &id));
  memset(b, 1, sizeof b);
  OK(cowsnap_volume_write(v, 0, b, sizeof b)); /* the one data chunk */
  OK(cowsnap_snapshot_read(v, id, 0, b, sizeof b));
  EXPECT(b[0] == 0);

  /* extend(UINT64_MAX): a clear refusal, nothing changed. */
  ERR(cowsnap_snapshot_extend(v, id, UINT64_MAX), COWSNAP_ERR_INVALID_ARGUMENT, "out of range");
  EXPECT(strstr(last_msg(), "too small") == NULL);
  EXPECT(stat(cow, &st) == 0 && st.st_size == 3 * 4096);
  ERR(cowsnap_snapshot_extend(v, id, (uint64_t)INT64_MAX + 1), COWSNAP_ERR_INVALID_ARGUMENT,
      "out of range");
  OK(cowsnap_snapshot_read(v, id, 0, b, sizeof b));
  EXPECT(b[0] == 0);
  cowsnap_volume_free(v);
  unlink(cow);

  /* A memory COW that cannot grow that far: out of memory, said so. */
  OK(cowsnap_volume_create_mem(MiB, &v));
  o = file_opts(NULL, 64 * KiB);
  o.cow_path = NULL;
  OK(cowsnap_snapshot_create(v, &o, &id));
  ERR(cowsnap_snapshot_extend(v, id, UINT64_MAX), COWSNAP_ERR_INVALID_ARGUMENT, "out of range");
  ERR(cowsnap_snapshot_extend(v, id, (uint64_t)1 << 62), COWSNAP_ERR_NO_SPACE, "out of memory");
  OK(cowsnap_snapshot_read(v, id, 0, b, sizeof b));
  cowsnap_volume_free(v);
}

/* ---------------------------------------- 2. COW space is reserved; ENOSPC fails cleanly */

static void test_reservation_on_small_tmpfs(void) {
  const char *fs, *cow;
  char cow_buf[4300], fill_buf[4300];
  cowsnap_volume *v;
  cowsnap_snapshot_options o;
  uint32_t id;
  uint64_t before;
  struct stat st;
  struct cowsnap_snapshot_status status;
  uint8_t *buf;
  int fd;

  if (!is_root()) {
    skip("COW reservation and ENOSPC on an 8 MiB tmpfs (mount)");
    return;
  }
  fs = mount_tmpfs("tmpfs-8m", "size=8m");
  snprintf(cow_buf, sizeof cow_buf, "%s/s1.cow", fs);
  snprintf(fill_buf, sizeof fill_buf, "%s/filler", fs);
  cow = cow_buf;
  OK(cowsnap_volume_create_mem(4 * MiB, &v));

  /* More than the file system holds: refused, no file left, no space used. */
  before = free_bytes(fs);
  o = file_opts(cow, 16 * MiB);
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_IO, "No space left on device");
  EXPECT(access(cow, F_OK) != 0);
  EXPECT(free_bytes(fs) == before);

  /* The caller's empty file: refused the same way, and left empty (not removed). */
  {
    char empty[4300];
    snprintf(empty, sizeof empty, "%s/empty.cow", fs);
    write_file(empty, "", 0, 0644);
    before = free_bytes(fs);
    o = file_opts(empty, 16 * MiB);
    ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_IO, "No space left on device");
    EXPECT(stat(empty, &st) == 0 && st.st_size == 0 && st.st_blocks == 0);
    EXPECT(free_bytes(fs) == before);
    unlink(empty);
    before = free_bytes(fs);
  }

  /* 4 MiB fits and is taken at once. */
  o = file_opts(cow, 4 * MiB);
  OK(cowsnap_snapshot_create(v, &o, &id));
  EXPECT(before - free_bytes(fs) >= 4 * MiB);
  EXPECT(stat(cow, &st) == 0 && st.st_blocks * 512 >= 4 * MiB);

  /* Growing past the free space: refused, the COW as it was, the snapshot still good. */
  ERR(cowsnap_snapshot_extend(v, id, 64 * MiB), COWSNAP_ERR_IO, "No space left on device");
  EXPECT(stat(cow, &st) == 0 && st.st_size == 4 * MiB);

  /* Fill the disk, then change the whole origin: the snapshot lives on its reserved space. */
  buf = malloc(MiB);
  memset(buf, 0x5A, MiB);
  fd = open(fill_buf, O_WRONLY | O_CREAT, 0644);
  while (fd >= 0 && write(fd, buf, MiB) > 0) {
  }
  if (fd >= 0) close(fd);
  memset(buf, 0x33, MiB);
  OK(cowsnap_volume_write(v, 0, buf, MiB)); /* 256 chunks copied: fits in the 4 MiB reserved */
  OK(cowsnap_snapshot_status(v, id, &status));
  EXPECT(status.state == COWSNAP_STATE_ACTIVE);
  OK(cowsnap_snapshot_read(v, id, 0, buf, MiB));
  EXPECT(buf[0] == 0 && buf[MiB - 1] == 0);
  cowsnap_volume_free(v);
  free(buf);
  unmount_at_exit();
}

/* --------------------------------------------------------------- a read-only mount */

static void test_read_only_mount(void) {
  const char *fs;
  char origin[4300], cow[4300];
  const char *cows[1];
  cowsnap_volume *v = NULL;
  cowsnap_snapshot_options o;
  uint32_t id;
  struct watch w;

  if (!is_root()) {
    skip("files on a read-only mount (mount -o remount,ro)");
    return;
  }
  fs = mount_tmpfs("tmpfs-ro", "size=4m");
  snprintf(origin, sizeof origin, "%s/origin.img", fs);
  snprintf(cow, sizeof cow, "%s/s1.cow", fs);
  make_volume(origin, cow);
  EXPECT(mount("tmpfs", fs, "tmpfs", MS_REMOUNT | MS_RDONLY, "size=4m") == 0);
  w = watch(origin, cow, NULL);
  cows[0] = cow;
  ERR(cowsnap_volume_open_file(origin, cows, 1, &v), COWSNAP_ERR_IO, "Read-only file system");
  EXPECT(v == NULL);
  OK(cowsnap_volume_create_mem(MiB, &v));
  o = file_opts(path_in("tmpfs-ro/s2.cow"), 64 * KiB);
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_IO, "Read-only file system");
  cowsnap_volume_free(v);
  UNCHANGED(w);
  unmount_at_exit();
}

/* ------------------------------------------------- direct I/O (COWSNAP_OPEN_DIRECT) */

/* A volume with COWSNAP_OPEN_DIRECT reads and writes what a buffered one does (its COW files
 * are direct too: a COW size that is not whole blocks is refused), refuses misaligned caller I/O
 * with the rule and changes nothing, refuses sizes and flags it cannot serve before creating
 * anything, and reopens (direct or not) with the same contents. */
static void test_direct(void) {
  const char *origin = path_in("dio-origin.img"), *cow = path_in("dio-s1.cow");
  const char *odd = path_in("dio-odd.img"), *ro = path_in("dio-ro.img");
  const char *cows[1];
  cowsnap_volume *v = NULL;
  cowsnap_snapshot_options o;
  uint32_t id;
  struct watch w;
  uint8_t *mem = malloc(MiB + 1), *buf = mem + 1; /* deliberately misaligned memory */
  uint8_t *back = malloc(MiB);
  unlink(origin);
  unlink(cow);

  ERR(cowsnap_volume_create_file_ex(origin, MiB, 2, &v), COWSNAP_ERR_INVALID_ARGUMENT,
      "unknown flags");
  EXPECT(v == NULL && access(origin, F_OK) != 0);
  ERR(cowsnap_volume_create_file_ex(origin, MiB + 512, COWSNAP_OPEN_DIRECT, &v),
      COWSNAP_ERR_INVALID_ARGUMENT, "multiple of 4096");
  EXPECT(v == NULL && access(origin, F_OK) != 0);

  OK(cowsnap_volume_create_file_ex(origin, MiB, COWSNAP_OPEN_DIRECT, &v));
  memset(buf, 0x41, MiB);
  OK(cowsnap_volume_write(v, 0, buf, MiB));
  o = file_opts(cow, 256 * KiB + 512);
  ERR(cowsnap_snapshot_create(v, &o, &id), COWSNAP_ERR_INVALID_ARGUMENT, "multiple of 4096");
  EXPECT(access(cow, F_OK) != 0);
  o = file_opts(cow, 256 * KiB);
  OK(cowsnap_snapshot_create(v, &o, &id));
  memset(buf, 0x42, 64 * KiB);
  OK(cowsnap_volume_write(v, 8192, buf, 64 * KiB));
  OK(cowsnap_volume_flush(v));

  /* Misaligned offsets and lengths: refused with the rule, nothing written. */
  w = watch(origin, cow, NULL);
  ERR(cowsnap_volume_write(v, 512, buf, 4096), COWSNAP_ERR_INVALID_ARGUMENT, "multiples of 4096");
  ERR(cowsnap_volume_write(v, 4096, buf, 4000), COWSNAP_ERR_INVALID_ARGUMENT, "multiples of 4096");
  ERR(cowsnap_volume_read(v, 100, back, 4096), COWSNAP_ERR_INVALID_ARGUMENT, "multiples of 4096");
  ERR(cowsnap_snapshot_read(v, id, 0, back, 10), COWSNAP_ERR_INVALID_ARGUMENT,
      "multiples of 4096");
  ERR(cowsnap_snapshot_write(v, id, 2048, buf, 4096), COWSNAP_ERR_INVALID_ARGUMENT,
      "multiples of 4096");
  OK(cowsnap_volume_flush(v));
  UNCHANGED(w);

  OK(cowsnap_snapshot_read(v, id, 0, back, MiB));
  EXPECT(back[0] == 0x41 && back[8192] == 0x41 && back[MiB - 1] == 0x41);
  OK(cowsnap_volume_read(v, 4096, back, 8192));
  EXPECT(back[0] == 0x41 && back[4096] == 0x42);
  cowsnap_volume_free(v);

  /* Reopened direct, and buffered: the same bytes. */
  cows[0] = cow;
  OK(cowsnap_volume_open_file_ex(origin, cows, 1, COWSNAP_OPEN_DIRECT, &v));
  OK(cowsnap_snapshot_read(v, 0, 8192, back, 4096));
  EXPECT(back[0] == 0x41);
  ERR(cowsnap_volume_read(v, 1, back, 4096), COWSNAP_ERR_INVALID_ARGUMENT, "multiples of 4096");
  cowsnap_volume_free(v);
  OK(cowsnap_volume_open_file(origin, cows, 1, &v));
  OK(cowsnap_volume_read(v, 8193, back, 1)); /* buffered: any range */
  EXPECT(back[0] == 0x42);
  cowsnap_volume_free(v);

  /* An origin whose size is not whole blocks, a read-only file: refused, unchanged. */
  write_file(odd, buf, 5000, 0644);
  write_file(ro, buf, 8192, 0444);
  w = watch(odd, ro, NULL);
  ERR(cowsnap_volume_open_file_ex(odd, NULL, 0, COWSNAP_OPEN_DIRECT, &v),
      COWSNAP_ERR_INVALID_ARGUMENT, "multiple of 4096");
  EXPECT(v == NULL);
  ERR(cowsnap_volume_open_file_ex(ro, NULL, 0, COWSNAP_OPEN_DIRECT, &v), COWSNAP_ERR_IO,
      "read-only");
  EXPECT(v == NULL);
  UNCHANGED(w);
  unlink(odd);
  unlink(ro);
  unlink(origin);
  unlink(cow);
  free(mem);
  free(back);
}

/* A file system without direct I/O (ramfs): UNSUPPORTED naming it, no file left behind. */
static void test_direct_unsupported(void) {
  const char *at = path_in("ramfs");
  char origin[4300], made[4300];
  cowsnap_volume *v = NULL;
  uint8_t block[4096] = {0};
  if (!is_root()) {
    skip("direct I/O on a ramfs (mount -t ramfs)");
    return;
  }
  mkdir(at, 0755);
  if (mount("ramfs", at, "ramfs", 0, NULL) != 0) {
    fprintf(stderr, "mount ramfs at %s: %s\n", at, strerror(errno));
    exit(1);
  }
  snprintf(mounted, sizeof mounted, "%s", at);
  snprintf(origin, sizeof origin, "%s/origin.img", at);
  snprintf(made, sizeof made, "%s/new.img", at);
  write_file(origin, block, sizeof block, 0644);
  ERR(cowsnap_volume_open_file_ex(origin, NULL, 0, COWSNAP_OPEN_DIRECT, &v),
      COWSNAP_ERR_UNSUPPORTED, "does not support direct I/O");
  EXPECT(v == NULL);
  ERR(cowsnap_volume_create_file_ex(made, MiB, COWSNAP_OPEN_DIRECT, &v), COWSNAP_ERR_UNSUPPORTED,
      "does not support direct I/O");
  EXPECT(v == NULL && access(made, F_OK) != 0);
  /* A direct volume (on a disk) whose COW is to be created there: refused the same way, and the
   * COW file is removed again. */
  {
    const char *o2 = path_in("dio-ram-origin.img");
    char cowp[4300];
    cowsnap_snapshot_options so;
    uint32_t sid;
    unlink(o2);
    OK(cowsnap_volume_create_file_ex(o2, MiB, COWSNAP_OPEN_DIRECT, &v));
    snprintf(cowp, sizeof cowp, "%s/s.cow", at);
    so = file_opts(cowp, 256 * KiB);
    ERR(cowsnap_snapshot_create(v, &so, &sid), COWSNAP_ERR_UNSUPPORTED,
        "does not support direct I/O");
    EXPECT(access(cowp, F_OK) != 0);
    cowsnap_volume_free(v);
    unlink(o2);
  }
  unmount_at_exit();
}

int main(int argc, char **argv) {
  /* Absolute: the symlinks made here name their targets by this path. */
  if (realpath(argc > 1 ? argv[1] : ".", dir) == NULL) {
    fprintf(stderr, "test_files: no scratch directory %s\n", argc > 1 ? argv[1] : ".");
    return 1;
  }
  atexit(unmount_at_exit);
  test_open_never_formats();
  test_identity();
  test_open_wrong_kinds();
  test_create_wrong_kinds();
  test_refused_creation_leaves_nothing();
  test_sizes();
  test_reservation_on_small_tmpfs();
  test_read_only_mount();
  test_direct();
  test_direct_unsupported();
  return finish("test_files");
}
