/* Tiny assertion helpers for the C tests of libcowsnap. */
#ifndef COWSNAP_TEST_CHECK_H
#define COWSNAP_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cowsnap.h"

static int check_failures = 0;

static const char *last_msg(void) {
  static char buf[1024];
  cowsnap_last_error(buf, sizeof buf);
  return buf;
}

/* The call must succeed; aborts the test on failure (later steps would be meaningless). */
#define OK(call)                                                                            \
  do {                                                                                      \
    int r_ = (call);                                                                        \
    if (r_ != COWSNAP_OK) {                                                                 \
      fprintf(stderr, "%s:%d: %s returned %d (%s): %s\n", __FILE__, __LINE__, #call, r_,    \
              cowsnap_error_name(r_), last_msg());                                          \
      exit(1);                                                                              \
    }                                                                                       \
  } while (0)

/* The call must fail with `code`, and the thread's message must contain `text`. */
#define ERR(call, code, text)                                                               \
  do {                                                                                      \
    int r_ = (call);                                                                        \
    const char *m_ = last_msg();                                                            \
    if (r_ != (code)) {                                                                     \
      fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s); message: %s\n",        \
              __FILE__, __LINE__, #call, r_, cowsnap_error_name(r_), (int)(code),           \
              cowsnap_error_name(code), m_);                                                \
      check_failures++;                                                                     \
    } else if (strstr(m_, (text)) == NULL) {                                                \
      fprintf(stderr, "%s:%d: %s: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,      \
              #call, m_, (text));                                                           \
      check_failures++;                                                                     \
    }                                                                                       \
  } while (0)

#define EXPECT(cond)                                                                        \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);                   \
      check_failures++;                                                                     \
    }                                                                                       \
  } while (0)

static int finish(const char *name) {
  if (check_failures) {
    fprintf(stderr, "%s: %d check(s) failed\n", name, check_failures);
    return 1;
  }
  printf("%s: ok\n", name);
  return 0;
}

#endif
