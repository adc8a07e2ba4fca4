/*
 * bench.c: the measuring half of benches/run.sh. Each sub-command does one measured run (or one
 * untimed preparation) and prints one line; the driver repeats them in interleaved rounds and turns
 * them into ratios. Everything cowsnap is called through the C ABI (cowsnap.h), as C users call it.
 *
 *   bench prefill FILE MIB                  file of MIB MiB of non-zero bytes, fsynced (untimed)
 *   bench write ENGINE DIR ORIGIN MODE PATTERN THREADS OPS SNAPS
 *       ENGINE  raw | floor | floor-dm | cowsnap
 *       MODE    nf  (no per-request flush: one flush at the end, inside the timed span)
 *               dur (every request durable before the next one starts)
 *       PATTERN rand4k (distinct random 4 KiB chunks) | seq64k (sequential 64 KiB requests)
 *       THREADS writers, each in its own equal region of the origin; OPS requests in all
 *       SNAPS   snapshots taken before the writes (cowsnap); copy files written per request (floor,
 *               floor-dm: the floor of SNAPS snapshots); 1 for raw
 *     prints "MIBS SECONDS BYTES"
 *   bench qemu-cmds PATTERN OPS ORIGIN_MIB   the same requests as qemu-io commands (1 thread)
 *   bench merge-prep ORIGIN COW PATTERN CHUNKS   CHUNKS first writes after a snapshot (untimed)
 *   bench merge ORIGIN COW                  cowsnap_snapshot_merge + flush; prints "MIBS SECONDS BYTES"
 *   bench merge-floor ORIGIN COW PATTERN CHUNKS   the data movement of that merge alone: the COW's
 *       data chunks pread in order and pwritten to the same origin offsets (last written first, as a
 *       merge takes trailing records), then one fdatasync; no metadata
 *   bench craft-cow COW EXCEPTIONS ORIGIN_CHUNKS   a kernel-format COW with EXCEPTIONS records at
 *       random distinct origin chunks (data chunks left as holes): what activation has to load
 *   bench activate ORIGIN COW               seconds for cowsnap_volume_open_file
 *   bench pread-meta COW EXCEPTIONS         seconds to pread the COW's metadata areas (the I/O floor
 *       of activation)
 *   bench create ORIGIN COW                 seconds for cowsnap_snapshot_create (64 MiB file COW) on
 *       an existing origin file (sparse: creation must not depend on the origin's size)
 *
 * The floor (per request): pread the old chunk(s) of the origin, pwrite them to the next free place
 * of a second file, then pwrite the new data. Durable: fdatasync the copy before the new data is
 * written (a crash must not lose the old data) and the origin after it: two fdatasyncs per request,
 * no metadata at all. Raw: pwrite only (durable: one fdatasync per request).
 * Floor-dm: the floor plus what the kernel's COW format orders on top of it: after the copy is
 * durable, a 512-byte metadata block (the exception record's area) is written and made durable
 * before the new data may reach the origin: three fdatasyncs per durable request. No engine that
 * keeps the kernel's format and its crash guarantee can do fewer; cowsnap / floor-dm says how close
 * cowsnap is to that bound, floor-dm / floor what the format itself costs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cowsnap.h"

#define CHUNK 4096u
#define MIB (1024.0 * 1024.0)
#define MAX_THREADS 16
#define MAX_SNAPS 16

static void die(const char *what) {
    fprintf(stderr, "bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void check(cowsnap_result r, const char *what) {
    if (r != COWSNAP_OK) {
        char msg[512];
        cowsnap_last_error(msg, sizeof msg);
        fprintf(stderr, "bench: %s: %s (%s)\n", what, cowsnap_error_name(r), msg);
        exit(1);
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t parse_u64(const char *s) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s) {
        fprintf(stderr, "bench: not a number: %s\n", s);
        exit(2);
    }
    return v;
}

static uint64_t file_size(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) die(path);
    return (uint64_t)st.st_size;
}

/* xorshift64*: the same seed gives every engine the same offsets. */
static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/*
 * Byte offsets of thread `t`'s requests: `n` requests of `len` bytes inside region
 * [t * region, (t + 1) * region) of the origin; distinct random chunks, or sequential.
 */
static uint64_t *offsets(int random, uint64_t len, uint64_t region, int t, uint64_t n) {
    uint64_t slots = region / len;
    if (n > slots) {
        fprintf(stderr, "bench: %" PRIu64 " requests do not fit in a region of %" PRIu64 "\n", n,
                slots);
        exit(2);
    }
    uint64_t *off = malloc(n * sizeof *off);
    if (!off) die("malloc");
    if (random) {
        uint64_t *perm = malloc(slots * sizeof *perm);
        if (!perm) die("malloc");
        for (uint64_t i = 0; i < slots; i++) perm[i] = i;
        uint64_t seed = 0x9e3779b97f4a7c15ull ^ ((uint64_t)t + 1) * 0x100000001b3ull;
        for (uint64_t i = 0; i < n; i++) { /* partial Fisher-Yates */
            uint64_t j = i + rng_next(&seed) % (slots - i);
            uint64_t tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
            off[i] = (uint64_t)t * region + perm[i] * len;
        }
        free(perm);
    } else {
        for (uint64_t i = 0; i < n; i++) off[i] = (uint64_t)t * region + i * len;
    }
    return off;
}

static void fill(uint8_t *buf, size_t len, uint8_t seed) {
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)(seed + i * 7 + (i >> 12));
}

/* ---- prefill ------------------------------------------------------------------------------ */

static int cmd_prefill(const char *path, uint64_t mib) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die(path);
    size_t len = 1 << 20;
    uint8_t *buf = malloc(len);
    if (!buf) die("malloc");
    for (uint64_t i = 0; i < mib; i++) {
        fill(buf, len, (uint8_t)(0x5a + i));
        if (pwrite(fd, buf, len, (off_t)(i * len)) != (ssize_t)len) die("prefill pwrite");
    }
    if (fsync(fd) != 0) die("prefill fsync");
    close(fd);
    free(buf);
    return 0;
}

/* ---- write runs --------------------------------------------------------------------------- */

enum engine { RAW, FLOOR, FLOOR_DM, COWSNAP };

struct run {
    enum engine engine;
    int durable;
    uint64_t len;      /* request size */
    int origin_fd;     /* raw, floor */
    int copy_fd[MAX_SNAPS]; /* floor, floor-dm: one copy file per snapshot */
    int copies;        /* how many (SNAPS) */
    uint64_t copy_region; /* bytes of the copy file per thread */
    uint64_t meta_off; /* floor-dm: first metadata block of the copy file (one per thread) */
    cowsnap_volume *vol;
    pthread_barrier_t start;
};

struct worker {
    struct run *run;
    int t;
    uint64_t n;
    uint64_t *off;
};

static void *write_thread(void *arg) {
    struct worker *w = arg;
    struct run *r = w->run;
    uint8_t *data = malloc(r->len), *old = malloc(r->len);
    if (!data || !old) die("malloc");
    fill(data, r->len, (uint8_t)(0xa5 + w->t));
    pthread_barrier_wait(&r->start);
    for (uint64_t i = 0; i < w->n; i++) {
        off_t off = (off_t)w->off[i];
        switch (r->engine) {
        case RAW:
            if (pwrite(r->origin_fd, data, r->len, off) != (ssize_t)r->len) die("pwrite");
            if (r->durable && fdatasync(r->origin_fd) != 0) die("fdatasync");
            break;
        case FLOOR:
        case FLOOR_DM: {
            off_t copy_off = (off_t)((uint64_t)w->t * r->copy_region + i * r->len);
            if (pread(r->origin_fd, old, r->len, off) != (ssize_t)r->len) die("pread");
            for (int c = 0; c < r->copies; c++)
                if (pwrite(r->copy_fd[c], old, r->len, copy_off) != (ssize_t)r->len) die("pwrite copy");
            for (int c = 0; c < r->copies; c++)
                if (r->durable && fdatasync(r->copy_fd[c]) != 0) die("fdatasync copy");
            if (r->engine == FLOOR_DM) {
                /* The record: a 16-byte entry in the thread's metadata block, written as a sector. */
                memcpy(old, &off, sizeof off);
                off_t meta = (off_t)(r->meta_off + (uint64_t)w->t * CHUNK + (i % 8) * 512);
                for (int c = 0; c < r->copies; c++)
                    if (pwrite(r->copy_fd[c], old, 512, meta) != 512) die("pwrite record");
                for (int c = 0; c < r->copies; c++)
                    if (r->durable && fdatasync(r->copy_fd[c]) != 0) die("fdatasync record");
            }
            if (pwrite(r->origin_fd, data, r->len, off) != (ssize_t)r->len) die("pwrite");
            if (r->durable && fdatasync(r->origin_fd) != 0) die("fdatasync");
            break;
        }
        case COWSNAP:
            check(cowsnap_volume_write(r->vol, (uint64_t)off, data, r->len), "cowsnap_volume_write");
            if (r->durable) check(cowsnap_volume_flush(r->vol), "cowsnap_volume_flush");
            break;
        }
    }
    free(data);
    free(old);
    return NULL;
}

static int cmd_write(char **a) {
    const char *eng = a[0], *dir = a[1], *origin = a[2], *mode = a[3], *pattern = a[4];
    int threads = (int)parse_u64(a[5]);
    uint64_t ops = parse_u64(a[6]);
    int snaps = (int)parse_u64(a[7]);
    struct run r = {0};
    if (!strcmp(eng, "raw")) r.engine = RAW;
    else if (!strcmp(eng, "floor")) r.engine = FLOOR;
    else if (!strcmp(eng, "floor-dm")) r.engine = FLOOR_DM;
    else if (!strcmp(eng, "cowsnap")) r.engine = COWSNAP;
    else { fprintf(stderr, "bench: unknown engine %s\n", eng); return 2; }
    if (strcmp(mode, "nf") && strcmp(mode, "dur")) { fprintf(stderr, "bench: mode nf|dur\n"); return 2; }
    r.durable = !strcmp(mode, "dur");
    int random = !strcmp(pattern, "rand4k");
    if (!random && strcmp(pattern, "seq64k")) { fprintf(stderr, "bench: pattern rand4k|seq64k\n"); return 2; }
    r.len = random ? 4096 : 65536;
    if (threads < 1 || threads > MAX_THREADS || ops % (uint64_t)threads || snaps < 1 || snaps > MAX_SNAPS ||
        (snaps > 1 && r.engine == RAW)) {
        fprintf(stderr, "bench: bad threads/ops/snaps\n");
        return 2;
    }
    uint64_t size = file_size(origin);
    uint64_t region = size / (uint64_t)threads / r.len * r.len;
    uint64_t per = ops / (uint64_t)threads;
    uint64_t bytes = ops * r.len;
    /* What a copy needs: the written chunks, one metadata chunk per 256, header, spare areas. */
    uint64_t chunks = bytes / CHUNK;
    uint64_t cow_size = (chunks + chunks / 256 + 8) * CHUNK;
    char copy_paths[MAX_SNAPS][4096], cow_paths[MAX_SNAPS][4096];

    if (r.engine == COWSNAP) {
        check(cowsnap_volume_open_file(origin, NULL, 0, &r.vol), "cowsnap_volume_open_file");
        for (int s = 0; s < snaps; s++) {
            snprintf(cow_paths[s], sizeof cow_paths[s], "%s/bench-cow-%d", dir, s);
            unlink(cow_paths[s]);
            cowsnap_snapshot_options o;
            check(cowsnap_snapshot_options_init(&o), "options_init");
            o.chunk_size = CHUNK;
            o.cow_size = cow_size;
            o.cow_path = cow_paths[s];
            uint32_t id;
            check(cowsnap_snapshot_create(r.vol, &o, &id), "cowsnap_snapshot_create");
        }
        check(cowsnap_volume_flush(r.vol), "cowsnap_volume_flush (setup)");
    } else {
        r.origin_fd = open(origin, O_RDWR);
        if (r.origin_fd < 0) die(origin);
        if (r.engine == FLOOR || r.engine == FLOOR_DM) {
            /* floor-dm's metadata blocks (one per thread) after the copies, inside the spare chunks. */
            r.meta_off = bytes;
            r.copies = snaps;
            for (int c = 0; c < snaps; c++) {
                char *copy_path = copy_paths[c];
                snprintf(copy_path, sizeof copy_paths[c], "%s/bench-copy-%d", dir, c);
                unlink(copy_path);
                r.copy_fd[c] = open(copy_path, O_RDWR | O_CREAT | O_EXCL, 0644);
                if (r.copy_fd[c] < 0) die(copy_path);
                /* Reserved up front, as cowsnap reserves its COW file at snapshot creation. */
                if ((errno = posix_fallocate(r.copy_fd[c], 0, (off_t)cow_size)) != 0) die("posix_fallocate");
                if (fsync(r.copy_fd[c]) != 0) die("fsync copy");
            }
            r.copy_region = per * r.len;
        }
    }

    struct worker w[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    if (pthread_barrier_init(&r.start, NULL, (unsigned)threads + 1) != 0) die("barrier");
    for (int t = 0; t < threads; t++) {
        w[t] = (struct worker){.run = &r, .t = t, .n = per, .off = offsets(random, r.len, region, t, per)};
        if (pthread_create(&tid[t], NULL, write_thread, &w[t]) != 0) die("pthread_create");
    }
    pthread_barrier_wait(&r.start);
    double t0 = now();
    for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
    /* The one flush at the end (a no-op cost when every request was already durable). */
    if (r.engine == COWSNAP) {
        check(cowsnap_volume_flush(r.vol), "cowsnap_volume_flush");
    } else {
        for (int c = 0; c < r.copies; c++)
            if (fdatasync(r.copy_fd[c]) != 0) die("fdatasync copy");
        if (fdatasync(r.origin_fd) != 0) die("fdatasync");
    }
    double secs = now() - t0;

    if (r.engine == COWSNAP) {
        cowsnap_volume_free(r.vol);
        for (int s = 0; s < snaps; s++) unlink(cow_paths[s]);
    } else {
        close(r.origin_fd);
        if (r.engine != RAW) {
            for (int c = 0; c < r.copies; c++) {
                close(r.copy_fd[c]);
                unlink(copy_paths[c]);
            }
        }
    }
    for (int t = 0; t < threads; t++) free(w[t].off);
    printf("%.3f %.6f %" PRIu64 "\n", (double)bytes / MIB / secs, secs, bytes);
    return 0;
}

/* ---- qemu-io commands --------------------------------------------------------------------- */

static int cmd_qemu_cmds(const char *pattern, uint64_t ops, uint64_t origin_mib) {
    int random = !strcmp(pattern, "rand4k");
    uint64_t len = random ? 4096 : 65536;
    uint64_t size = origin_mib << 20;
    uint64_t *off = offsets(random, len, size / len * len, 0, ops);
    for (uint64_t i = 0; i < ops; i++)
        printf("write -P 0x%02x %" PRIu64 " %" PRIu64 "\n", (unsigned)(0xa5 + i % 64), off[i], len);
    printf("flush\n");
    free(off);
    return 0;
}

/* ---- merge -------------------------------------------------------------------------------- */

static int cmd_merge_prep(const char *origin, const char *cow, const char *pattern, uint64_t chunks) {
    int random = !strcmp(pattern, "scattered");
    if (!random && strcmp(pattern, "sequential")) {
        fprintf(stderr, "bench: merge pattern scattered|sequential\n");
        return 2;
    }
    uint64_t size = file_size(origin);
    cowsnap_volume *vol;
    check(cowsnap_volume_open_file(origin, NULL, 0, &vol), "cowsnap_volume_open_file");
    unlink(cow);
    struct cowsnap_snapshot_options o;
    check(cowsnap_snapshot_options_init(&o), "options_init");
    o.chunk_size = CHUNK;
    o.cow_size = (chunks + chunks / 256 + 8) * CHUNK;
    o.cow_path = cow;
    uint32_t id;
    check(cowsnap_snapshot_create(vol, &o, &id), "cowsnap_snapshot_create");
    uint64_t *off = offsets(random, CHUNK, size / CHUNK * CHUNK, 0, chunks);
    uint8_t buf[CHUNK];
    fill(buf, sizeof buf, 0x33);
    for (uint64_t i = 0; i < chunks; i++)
        check(cowsnap_volume_write(vol, off[i], buf, sizeof buf), "cowsnap_volume_write");
    check(cowsnap_volume_flush(vol), "cowsnap_volume_flush");
    cowsnap_volume_free(vol);
    free(off);
    return 0;
}

static int cmd_merge(const char *origin, const char *cow) {
    cowsnap_volume *vol;
    const char *cows[1] = {cow};
    check(cowsnap_volume_open_file(origin, cows, 1, &vol), "cowsnap_volume_open_file");
    uint32_t id;
    size_t n;
    check(cowsnap_volume_snapshot_ids(vol, &id, 1, &n), "cowsnap_volume_snapshot_ids");
    struct cowsnap_snapshot_status st;
    check(cowsnap_snapshot_status(vol, id, &st), "cowsnap_snapshot_status");
    double t0 = now();
    check(cowsnap_snapshot_merge(vol, id, NULL, NULL), "cowsnap_snapshot_merge");
    check(cowsnap_volume_flush(vol), "cowsnap_volume_flush");
    double secs = now() - t0;
    cowsnap_volume_free(vol);
    /* Data bytes copied back: every exception's chunk. */
    uint64_t bytes = st.exceptions * CHUNK;
    printf("%.3f %.6f %" PRIu64 "\n", (double)bytes / MIB / secs, secs, bytes);
    return 0;
}

static int cmd_merge_floor(const char *origin, const char *cow, const char *pattern, uint64_t chunks) {
    int random = !strcmp(pattern, "scattered");
    uint64_t size = file_size(origin);
    uint64_t *off = offsets(random, CHUNK, size / CHUNK * CHUNK, 0, chunks);
    int ofd = open(origin, O_RDWR), cfd = open(cow, O_RDONLY);
    if (ofd < 0) die(origin);
    if (cfd < 0) die(cow);
    uint8_t buf[CHUNK];
    double t0 = now();
    for (uint64_t k = chunks; k-- > 0;) {
        /* Data chunk k of the COW: after the header and the metadata area before it. */
        off_t src = (off_t)((2 + k + k / (CHUNK / 16)) * CHUNK);
        if (pread(cfd, buf, CHUNK, src) != CHUNK) die("pread COW");
        if (pwrite(ofd, buf, CHUNK, (off_t)off[k]) != CHUNK) die("pwrite origin");
    }
    if (fdatasync(ofd) != 0) die("fdatasync");
    double secs = now() - t0;
    close(ofd);
    close(cfd);
    free(off);
    uint64_t bytes = chunks * CHUNK;
    printf("%.3f %.6f %" PRIu64 "\n", (double)bytes / MIB / secs, secs, bytes);
    return 0;
}

/* ---- activation --------------------------------------------------------------------------- */

#define PER_AREA (CHUNK / 16)

/* Chunk index of metadata area `a` (4 KiB chunks: 256 records per area, stride 257). */
static uint64_t area_chunk(uint64_t a) { return 1 + a * (PER_AREA + 1); }

static int cmd_craft_cow(const char *path, uint64_t n, uint64_t origin_chunks) {
    /* A bijection on [0, 2^k) scatters the records: odd multiply, then xor-shift. */
    uint64_t k = 0;
    while ((1ull << k) < origin_chunks) k++;
    if ((1ull << k) != origin_chunks || n > origin_chunks || k < 8) {
        fprintf(stderr, "bench: origin chunks must be a power of two >= exceptions\n");
        return 2;
    }
    uint64_t mask = origin_chunks - 1;
    uint64_t areas = (n + PER_AREA - 1) / PER_AREA;
    /* One more (empty) area after the last full one, as the store keeps it zeroed. */
    uint64_t size = (area_chunk(areas) + PER_AREA + 1) * CHUNK;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die(path);
    if (ftruncate(fd, (off_t)size) != 0) die("ftruncate");
    uint8_t hdr[CHUNK] = {0};
    uint32_t h[4] = {0x70416E53u, 1, 1, CHUNK / 512};
    memcpy(hdr, h, sizeof h);
    if (pwrite(fd, hdr, CHUNK, 0) != CHUNK) die("pwrite header");
    uint64_t rec[PER_AREA * 2];
    uint64_t i = 0;
    for (uint64_t a = 0; a < areas; a++) {
        memset(rec, 0, sizeof rec);
        for (uint64_t j = 0; j < PER_AREA && i < n; j++, i++) {
            uint64_t x = (i * 0x9E3779B1ull) & mask;
            x ^= x >> (k / 2);
            rec[2 * j] = x;                          /* old_chunk */
            rec[2 * j + 1] = area_chunk(a) + 1 + j;  /* new_chunk: the area's own data chunks */
        }
        if (pwrite(fd, rec, CHUNK, (off_t)(area_chunk(a) * CHUNK)) != CHUNK) die("pwrite area");
    }
    if (fsync(fd) != 0) die("fsync");
    close(fd);
    return 0;
}

static int cmd_activate(const char *origin, const char *cow) {
    cowsnap_volume *vol;
    const char *cows[1] = {cow};
    double t0 = now();
    check(cowsnap_volume_open_file(origin, cows, 1, &vol), "cowsnap_volume_open_file");
    double secs = now() - t0;
    uint32_t id;
    size_t n;
    struct cowsnap_snapshot_status st;
    check(cowsnap_volume_snapshot_ids(vol, &id, 1, &n), "cowsnap_volume_snapshot_ids");
    check(cowsnap_snapshot_status(vol, id, &st), "cowsnap_snapshot_status");
    cowsnap_volume_free(vol);
    printf("%.6f %" PRIu64 "\n", secs, (uint64_t)st.exceptions);
    return 0;
}

static int cmd_pread_meta(const char *cow, uint64_t n) {
    int fd = open(cow, O_RDONLY);
    if (fd < 0) die(cow);
    uint8_t buf[CHUNK];
    uint64_t areas = (n + PER_AREA - 1) / PER_AREA + 1, sum = 0;
    double t0 = now();
    for (uint64_t a = 0; a < areas; a++) {
        if (pread(fd, buf, CHUNK, (off_t)(area_chunk(a) * CHUNK)) != CHUNK) die("pread");
        sum += buf[0];
    }
    double secs = now() - t0;
    close(fd);
    printf("%.6f %" PRIu64 "\n", secs, sum & 1);
    return 0;
}

/* ---- snapshot creation -------------------------------------------------------------------- */

static int cmd_create(const char *origin, const char *cow) {
    cowsnap_volume *vol;
    check(cowsnap_volume_open_file(origin, NULL, 0, &vol), "cowsnap_volume_open_file");
    unlink(cow);
    struct cowsnap_snapshot_options o;
    check(cowsnap_snapshot_options_init(&o), "options_init");
    o.chunk_size = CHUNK;
    o.cow_size = 64u << 20;
    o.cow_path = cow;
    uint32_t id;
    double t0 = now();
    check(cowsnap_snapshot_create(vol, &o, &id), "cowsnap_snapshot_create");
    double secs = now() - t0;
    cowsnap_volume_free(vol);
    unlink(cow);
    printf("%.6f 0\n", secs);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "prefill")) return cmd_prefill(argv[2], parse_u64(argv[3]));
    if (argc == 10 && !strcmp(argv[1], "write")) return cmd_write(argv + 2);
    if (argc == 5 && !strcmp(argv[1], "qemu-cmds"))
        return cmd_qemu_cmds(argv[2], parse_u64(argv[3]), parse_u64(argv[4]));
    if (argc == 6 && !strcmp(argv[1], "merge-prep"))
        return cmd_merge_prep(argv[2], argv[3], argv[4], parse_u64(argv[5]));
    if (argc == 4 && !strcmp(argv[1], "merge")) return cmd_merge(argv[2], argv[3]);
    if (argc == 6 && !strcmp(argv[1], "merge-floor"))
        return cmd_merge_floor(argv[2], argv[3], argv[4], parse_u64(argv[5]));
    if (argc == 5 && !strcmp(argv[1], "craft-cow"))
        return cmd_craft_cow(argv[2], parse_u64(argv[3]), parse_u64(argv[4]));
    if (argc == 4 && !strcmp(argv[1], "activate")) return cmd_activate(argv[2], argv[3]);
    if (argc == 4 && !strcmp(argv[1], "create")) return cmd_create(argv[2], argv[3]);
    if (argc == 4 && !strcmp(argv[1], "pread-meta")) return cmd_pread_meta(argv[2], parse_u64(argv[3]));
    fprintf(stderr, "usage: see the comment at the top of benches/c/bench.c\n");
    return 2;
}
