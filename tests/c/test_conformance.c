/* The conformance table (tests/conformance/cases.json) through the C ABI: the same inputs must give
 * the same answers as in Rust, Python, JavaScript and the CLI (same status fields, or the same error
 * code name). scripts/test-ffi.sh turns the table into conformance_cases.h (tests/conformance/to_c.py)
 * and runs this under valgrind.
 *
 * Usage: test_conformance SCRATCH_DIR */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cowsnap.h"

struct patch {
  uint64_t at;
  const char *hex;
};
struct image {
  uint64_t size;
  int n_patches;
  const struct patch *patches;
};
struct step {
  const char *op, *expect;
  int target, snap;
  uint64_t offset, len;
  int fill;
  uint64_t size, cow;
  uint32_t chunk;
  const char *store;
  int has_policy;
  uint32_t threshold, percent;
  const char *state, *dm_status, *lvs_attr;
  int64_t exceptions;
  int data_percent_kind; /* 0: not checked, 1: the value, 2: none (invalid snapshot) */
  double data_percent;
  int64_t count;
  const char *value;
  const struct image *images;
  int n_images;
};
struct test_case {
  const char *name;
  int n_steps;
  const struct step *steps;
};

#include "conformance_cases.h"

static const char *scratch;
static int failures = 0;

#define MAX_SNAPS 16
struct run {
  cowsnap_volume *vol;
  uint32_t snaps[MAX_SNAPS];
  int n_snaps;
};

static const char *last(void) {
  static char buf[512];
  cowsnap_last_error(buf, sizeof buf);
  return buf;
}

/* A check on a value: reported with the case and step, the case goes on. */
static void fail(const char *name, int si, const char *what) {
  fprintf(stderr, "case \"%s\", step %d: %s\n", name, si, what);
  failures++;
}

static int write_image(const char *path, const struct image *img) {
  uint8_t *b = calloc(img->size ? img->size : 1, 1);
  if (!b) return -1;
  for (int i = 0; i < img->n_patches; i++) {
    const char *h = img->patches[i].hex;
    for (size_t k = 0; h[2 * k]; k++) {
      unsigned v;
      sscanf(h + 2 * k, "%2x", &v);
      b[img->patches[i].at + k] = (uint8_t)v;
    }
  }
  FILE *f = fopen(path, "wb");
  int ok = f && fwrite(b, 1, img->size, f) == img->size;
  if (f) fclose(f);
  free(b);
  return ok ? 0 : -1;
}

struct stopper {
  bool stop, stopped;
};

static int32_t on_progress(void *user, uint64_t merged, uint64_t total, bool done) {
  struct stopper *s = user;
  (void)merged;
  (void)total;
  if (s->stop && !done) {
    s->stopped = true;
    return 1;
  }
  return 0;
}

static const char *const STATES[] = {"active", "overflow", "invalid", "merging"};

/* Runs one step; returns the cowsnap_result. Value checks are reported through fail(). */
static int step(struct run *r, const struct step *s, const char *name, int si) {
  const char *op = s->op;
  if (!strcmp(op, "volume")) return cowsnap_volume_create_mem(s->size, &r->vol);
  if (!strcmp(op, "images")) {
    char origin[4096], cows[8][4096];
    const char *paths[8];
    snprintf(origin, sizeof origin, "%s/origin.img", scratch);
    struct image o = {s->size, 0, NULL};
    if (write_image(origin, &o)) return fail(name, si, "cannot write the origin"), -100;
    for (int i = 0; i < s->n_images && i < 8; i++) {
      snprintf(cows[i], sizeof cows[i], "%s/cow%d.img", scratch, i);
      if (write_image(cows[i], &s->images[i])) return fail(name, si, "cannot write a COW"), -100;
      paths[i] = cows[i];
    }
    int rc = cowsnap_volume_open_file(origin, paths, (size_t)s->n_images, &r->vol);
    if (rc == COWSNAP_OK) {
      size_t n = 0;
      rc = cowsnap_volume_snapshot_ids(r->vol, r->snaps + r->n_snaps, MAX_SNAPS - r->n_snaps, &n);
      r->n_snaps += (int)n;
    }
    return rc;
  }
  if (!strcmp(op, "snapshot")) {
    cowsnap_snapshot_options o;
    int rc = cowsnap_snapshot_options_init(&o);
    if (rc) return rc;
    o.cow_size = s->cow;
    o.chunk_size = s->chunk;
    o.store = s->store[0] == 'P' ? COWSNAP_STORE_PERSISTENT : COWSNAP_STORE_TRANSIENT;
    o.overflow = s->store[strlen(s->store) - 1] == 'O' ? COWSNAP_OVERFLOW_REPORT : COWSNAP_OVERFLOW_INVALIDATE;
    if (s->has_policy) {
      o.autoextend_threshold = s->threshold;
      o.autoextend_percent = s->percent;
    }
    uint32_t id;
    rc = cowsnap_snapshot_create(r->vol, &o, &id);
    if (rc == COWSNAP_OK && r->n_snaps < MAX_SNAPS) r->snaps[r->n_snaps++] = id;
    return rc;
  }
  if (!strcmp(op, "write") || !strcmp(op, "read")) {
    size_t n = (size_t)s->len;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return fail(name, si, "out of memory"), -100;
    int rc;
    if (!strcmp(op, "write")) {
      memset(buf, s->fill, n);
      rc = s->target < 0 ? cowsnap_volume_write(r->vol, s->offset, buf, n)
                         : cowsnap_snapshot_write(r->vol, r->snaps[s->target], s->offset, buf, n);
    } else {
      memset(buf, 0xEE, n);
      rc = s->target < 0 ? cowsnap_volume_read(r->vol, s->offset, buf, n)
                         : cowsnap_snapshot_read(r->vol, r->snaps[s->target], s->offset, buf, n);
      if (rc == COWSNAP_OK && s->fill >= 0)
        for (size_t i = 0; i < n; i++)
          if (buf[i] != (uint8_t)s->fill) {
            fail(name, si, "read bytes differ from the fill");
            break;
          }
    }
    free(buf);
    return rc;
  }
  if (!strcmp(op, "status")) {
    struct cowsnap_snapshot_status st;
    memset(&st, 0, sizeof st);
    int rc = cowsnap_snapshot_status(r->vol, r->snaps[s->snap], &st);
    if (rc) return rc;
    if (s->state && (st.state < 0 || st.state > 3 || strcmp(STATES[st.state], s->state)))
      fail(name, si, "state");
    if (s->dm_status && strcmp(st.dm_status, s->dm_status)) fail(name, si, "dm_status");
    if (s->lvs_attr && strcmp(st.lvs_attr, s->lvs_attr)) fail(name, si, "lvs_attr");
    if (s->exceptions >= 0 && st.exceptions != (uint64_t)s->exceptions) fail(name, si, "exceptions");
    if (s->data_percent_kind == 1 && st.data_percent != s->data_percent) fail(name, si, "data_percent");
    if (s->data_percent_kind == 2 && st.data_percent >= 0) fail(name, si, "data_percent should be none");
    return rc;
  }
  if (!strcmp(op, "delete")) return cowsnap_snapshot_delete(r->vol, r->snaps[s->snap]);
  if (!strcmp(op, "merge") || !strcmp(op, "merge_start")) {
    struct stopper st = {!strcmp(op, "merge_start"), false};
    int rc = cowsnap_snapshot_merge(r->vol, r->snaps[s->snap], on_progress, &st);
    /* Stopped as asked: the snapshot stays merging. */
    return rc == COWSNAP_ERR_MERGING && st.stopped ? COWSNAP_OK : rc;
  }
  if (!strcmp(op, "extend")) return cowsnap_snapshot_extend(r->vol, r->snaps[s->snap], s->size);
  if (!strcmp(op, "autoextend"))
    return cowsnap_snapshot_set_autoextend(r->vol, r->snaps[s->snap], s->threshold, s->percent);
  if (!strcmp(op, "origin_attr")) {
    char attr[16];
    int rc = cowsnap_volume_lvs_attr(r->vol, attr, sizeof attr);
    if (rc == COWSNAP_OK && strcmp(attr, s->value)) fail(name, si, "origin lvs_attr");
    return rc;
  }
  if (!strcmp(op, "count")) {
    size_t n = 0;
    int rc = cowsnap_volume_snapshot_ids(r->vol, NULL, 0, &n);
    if (rc == COWSNAP_OK && (int64_t)n != s->count) fail(name, si, "snapshot count");
    return rc;
  }
  fprintf(stderr, "unknown op %s\n", op);
  exit(2);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
    return 2;
  }
  scratch = argv[1];
  int ran = 0, skipped = 0;
  for (int c = 0; c < N_CASES; c++) {
    const struct test_case *tc = &cases[c];
    bool skip = false;
    /* A C handle is never used after cowsnap_volume_free (that is undefined behaviour in C). */
    for (int i = 0; i < tc->n_steps; i++) skip |= !strcmp(tc->steps[i].op, "close");
    if (skip) {
      printf("skipped (no use after free in C): %s\n", tc->name);
      skipped++;
      continue;
    }
    /* A chunk size of 0 is C's "not given" (a zeroed options struct means the defaults). */
    for (int i = 0; i < tc->n_steps; i++)
      skip |= !strcmp(tc->steps[i].op, "snapshot") && tc->steps[i].chunk == 0;
    if (skip) {
      printf("skipped (chunk size 0 is the default in C): %s\n", tc->name);
      skipped++;
      continue;
    }
    struct run r = {NULL, {0}, 0};
    for (int i = 0; i < tc->n_steps; i++) {
      const struct step *s = &tc->steps[i];
      int rc = step(&r, s, tc->name, i);
      const char *got = rc == -100 ? "RUNNER" : cowsnap_error_name(rc);
      if (strcmp(got, s->expect)) {
        char what[1024];
        snprintf(what, sizeof what, "%s returned %s, expected %s (%s)", s->op, got, s->expect,
                 rc ? last() : "");
        fail(tc->name, i, what);
      }
    }
    cowsnap_volume_free(r.vol);
    ran++;
  }
  if (ran < 40 || ran + skipped != N_CASES) {
    fprintf(stderr, "only %d of %d cases ran\n", ran, N_CASES);
    failures++;
  }
  printf("conformance: %d cases, %d skipped, %d failure(s)\n", ran, skipped, failures);
  return failures ? 1 : 0;
}
