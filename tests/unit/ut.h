/* ut: a minimal unit-test harness for the C modules.
 *
 * A test binary lists its cases with --list and runs one case when given its
 * name (all cases when given none). tests/run.py runs each case in its own
 * process with a timeout, so a crash or hang in one case fails that case
 * alone. A failed assertion prints file:line and exits 1. */
#ifndef UT_H
#define UT_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin-instance/commands.h"
#include "chat-instance/commands.h"
#include "image-instance/commands.h"
#include "process/core.h"
#include "video-instance/commands.h"

struct ut_case {
    const char *name;
    void (*fn)(void);
};

#define UT_CASE(fn) {#fn, fn}

#define UT_FAIL(...)                                                                               \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                           \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        exit(1);                                                                                   \
    } while (0)

#define UT_ASSERT(c)                                                                               \
    do {                                                                                           \
        if (!(c))                                                                                  \
            UT_FAIL("assertion failed: %s", #c);                                                   \
    } while (0)

#define UT_EQ_INT(a, b)                                                                            \
    do {                                                                                           \
        long long ut_a = (long long)(a), ut_b = (long long)(b);                                    \
        if (ut_a != ut_b)                                                                          \
            UT_FAIL("%s == %s: %lld != %lld", #a, #b, ut_a, ut_b);                                 \
    } while (0)

#define UT_EQ_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *ut_a = (a), *ut_b = (b);                                                       \
        if (!ut_a || !ut_b || strcmp(ut_a, ut_b) != 0)                                             \
            UT_FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, ut_a ? ut_a : "(null)",                  \
                    ut_b ? ut_b : "(null)");                                                       \
    } while (0)

#define UT_CONTAINS(hay, needle)                                                                   \
    do {                                                                                           \
        const char *ut_h = (hay), *ut_n = (needle);                                                \
        if (!ut_h || !strstr(ut_h, ut_n))                                                          \
            UT_FAIL("\"%s\" does not contain \"%s\"", ut_h ? ut_h : "(null)", ut_n);               \
    } while (0)

#define UT_NOT_CONTAINS(hay, needle)                                                               \
    do {                                                                                           \
        const char *ut_h = (hay), *ut_n = (needle);                                                \
        if (ut_h && strstr(ut_h, ut_n))                                                            \
            UT_FAIL("\"%s\" contains \"%s\"", ut_h, ut_n);                                         \
    } while (0)

/* Every role's row and command table, as a binary's main.c hands them to
 * core_main: ixjob, ingress and the roles look commands up in them. */
static const struct role_def *const ut_roles[] = {&chat_role, &image_role, &video_role, &admin_role, NULL};

static inline int ut_main(int argc, char **argv, const struct ut_case *cases)
{
    core_use_roles(ut_roles);
    if (argc > 1 && !strcmp(argv[1], "--list")) {
        for (const struct ut_case *c = cases; c->name; c++)
            printf("%s\n", c->name);
        return 0;
    }
    int ran = 0;
    for (const struct ut_case *c = cases; c->name; c++) {
        if (argc > 1 && strcmp(argv[1], c->name))
            continue;
        c->fn();
        ran++;
    }
    if (!ran) {
        fprintf(stderr, "no such case: %s\n", argc > 1 ? argv[1] : "(none)");
        return 2;
    }
    return 0;
}

#define UT_MAIN(cases)                                                                             \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        return ut_main(argc, argv, cases);                                                         \
    }

#endif
