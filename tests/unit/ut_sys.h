/* ut_sys: small system helpers shared by the unit tests.
 *
 * A free TCP port of 127.0.0.1 (for a server a case starts, or for an
 * address where nothing listens), the directory for temporary files, the
 * monotonic clock, a plain sleep, and the runner's --timeout-scale
 * (ut_scale_ms): every upper bound a case puts on time is scaled with it,
 * while lower bounds (the code's own timers) are not. Header-only: every function is static
 * and marked unused, so a test includes the header whatever it needs of it
 * (warnings are errors).
 * A failing system call fails the case (ut.h). */
#ifndef UT_SYS_H
#define UT_SYS_H

#include <arpa/inet.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ut.h"

#ifndef UT_UNUSED
#define UT_UNUSED __attribute__((unused))
#endif

/* A TCP port of 127.0.0.1 that was free a moment ago: bound, read back and
 * let go, so nothing listens there now. A server started on it right after
 * gets it unless another process races for it (the kernel hands ports out in
 * turn, so that is rare). */
static UT_UNUSED int utsys_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    UT_ASSERT(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    UT_EQ_INT(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    UT_EQ_INT(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* $TMPDIR (tests/run.py gives each test its own), else /tmp. The string is
 * the environment's: do not free or keep it past a setenv. */
static UT_UNUSED const char *utsys_tmp_dir(void)
{
    const char *t = getenv("TMPDIR");
    return t && t[0] ? t : "/tmp";
}

/* Milliseconds of the monotonic clock, for durations and deadlines. */
static UT_UNUSED uint64_t utsys_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The runner's --timeout-scale (BOT_TIMEOUT_SCALE), 1.0 when unset or not
 * a positive number. */
static UT_UNUSED double ut_timeout_scale(void)
{
    const char *s = getenv("BOT_TIMEOUT_SCALE");
    char *end;
    double v = s && *s ? strtod(s, &end) : 1.0;
    return s && *s && (*end || !(v > 0) || v > 1000) ? 1.0 : v;
}

/* ms times the runner's --timeout-scale: the upper bound of a wait, or of a
 * "within N ms" a case asserts, on a slow machine. */
static UT_UNUSED int ut_scale_ms(int ms)
{
    return (int)((double)ms * ut_timeout_scale() + 0.5);
}

/* Blocks the whole process, loop included: for waits outside the loop. */
static UT_UNUSED void utsys_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

#endif
