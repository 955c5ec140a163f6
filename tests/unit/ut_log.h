/* ut_log: a unit test's log, and capturing it to read it back.
 *
 * utlog_setup sets the log up for a case, honouring TEST_LOG_LEVEL.
 * utlog_start sends the process's log (log.h), at debug level, to a file: a
 * temporary one that is unlinked at once, or the given path, which stays
 * after the case so a failure can be looked into. A file, unlike a pipe,
 * never fills up and blocks the logging thread, which is the loop's. The
 * case reads everything logged so far with utlog_text or counts a string
 * with utlog_count, as often as it likes, and utlog_stop sends the log back
 * to stderr. One capture at a time per process (each case runs in a process
 * of its own). Header-only: every function is static and marked unused. */
#ifndef UT_LOG_H
#define UT_LOG_H

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "base/log.h"
#include "base/mem.h"
#include "ut.h"
#include "ut_sys.h"

#ifndef UT_UNUSED
#define UT_UNUSED __attribute__((unused))
#endif

static int utlog_fd = -1;          /* >= 0 while capturing */
static const char *utlog_instance; /* as given to utlog_start, for utlog_stop */
static const char *utlog_role;
static char *utlog_buf; /* utlog_text's answer; mem_ allocated, grows */
static size_t utlog_cap;

/* The log of a case that does not capture it: stderr, at the level that
 * TEST_LOG_LEVEL names (say debug, when chasing a failure), else dflt. */
static UT_UNUSED void utlog_setup(const char *instance, const char *role, enum log_level dflt)
{
    const char *lv = getenv("TEST_LOG_LEVEL");
    int level = lv ? log_level_parse(lv) : -1;
    log_setup(instance, role, level >= 0 ? (enum log_level)level : dflt, -1);
}

/* Start capturing: instance and role as log_setup takes them (string
 * literals: they are kept for utlog_stop), path NULL for an unlinked
 * temporary file, else a file created (or emptied) there. */
static UT_UNUSED void utlog_start(const char *instance, const char *role, const char *path)
{
    UT_ASSERT(utlog_fd < 0);
    if (path) {
        utlog_fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    } else {
        char tmpl[512];
        snprintf(tmpl, sizeof tmpl, "%s/ut_log_XXXXXX", utsys_tmp_dir());
        utlog_fd = mkstemp(tmpl);
        if (utlog_fd >= 0)
            unlink(tmpl);
    }
    UT_ASSERT(utlog_fd >= 0);
    utlog_instance = instance;
    utlog_role = role;
    log_setup(instance, role, LOG_DEBUG, utlog_fd);
}

static UT_UNUSED int utlog_active(void)
{
    return utlog_fd >= 0;
}

/* Everything logged since utlog_start, NUL-terminated; "" when not
 * capturing. The text belongs to ut_log and stays valid until the next
 * utlog_text, utlog_count or utlog_stop. */
static UT_UNUSED const char *utlog_text(void)
{
    if (utlog_fd < 0)
        return "";
    off_t end = lseek(utlog_fd, 0, SEEK_END);
    UT_ASSERT(end >= 0);
    size_t n = (size_t)end;
    if (n + 1 > utlog_cap) {
        utlog_cap = n + 1;
        utlog_buf = mem_realloc(utlog_buf, utlog_cap);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(utlog_fd, utlog_buf + got, n - got, (off_t)got);
        UT_ASSERT(r > 0);
        got += (size_t)r;
    }
    utlog_buf[got] = '\0';
    return utlog_buf;
}

/* How often needle occurs in hay (overlapping occurrences count). */
static UT_UNUSED int utlog_count_in(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *s = strstr(hay, needle); s; s = strstr(s + 1, needle))
        n++;
    return n;
}

/* How often needle occurs in what was logged so far. */
static UT_UNUSED int utlog_count(const char *needle)
{
    return utlog_count_in(utlog_text(), needle);
}

/* Stop capturing: the log goes back to stderr at level. A no-op when not
 * capturing. */
static UT_UNUSED void utlog_stop(enum log_level level)
{
    if (utlog_fd < 0)
        return;
    log_setup(utlog_instance, utlog_role, level, STDERR_FILENO);
    close(utlog_fd);
    utlog_fd = -1;
    mem_free(utlog_buf);
    utlog_buf = NULL;
    utlog_cap = 0;
}

#endif
