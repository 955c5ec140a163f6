/* ut_redis: Redis for the unit tests, always a real redis-server.
 *
 * - The shared server that tests/run.py starts and names in TEST_REDIS_URL:
 *   utredis_shared reads it; cases run in parallel on it, so each keeps its
 *   keys under a prefix of its own and utredis_del_prefix deletes them.
 * - Blocking hiredis calls for the checks a case makes from outside the code
 *   under test (fine in test code): utredis_connect, utredis_cmd.
 * - Private servers, for a case that has to break Redis (kill, stop,
 *   restart it, give it a password or a unix socket): utredis_start runs a
 *   redis-server on a free port of 127.0.0.1, without persistence, logging to
 *   $TMPDIR/redis-<tag>-<port>.log, and waits until it answers. Every server
 *   started is killed by utredis_kill_all, which also runs at exit, whatever
 *   happened to the case.
 * Header-only: every function is static and marked unused. */
#ifndef UT_REDIS_H
#define UT_REDIS_H

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include "ut.h"
#include "ut_sys.h"

#ifndef UT_UNUSED
#define UT_UNUSED __attribute__((unused))
#endif

#define UTREDIS_MAX 4   /* private servers per process */
#define UTREDIS_ARGS 16 /* extra arguments per server, the NULL included */

/* ---- the shared server ----------------------------------------------------- */

/* TEST_REDIS_URL, split into host (a buffer of at least 256 bytes) and
 * port; fails the case when it is missing or not redis://host:port/db.
 * Returns the URL (the environment's string). */
static UT_UNUSED const char *utredis_shared(char *host, int *port)
{
    const char *url = getenv("TEST_REDIS_URL");
    if (!url || !url[0])
        UT_FAIL("TEST_REDIS_URL is not set (tests/run.py sets it)");
    if (sscanf(url, "redis://%255[^:/]:%d", host, port) != 2)
        UT_FAIL("TEST_REDIS_URL must look like redis://host:port/db, not %s", url);
    return url;
}

/* ---- blocking client ---------------------------------------------------------- */

/* A blocking connection to host:port; ms bounds the connect and each
 * command. Fails the case when it cannot connect. The caller redisFree's. */
static UT_UNUSED redisContext *utredis_connect(const char *host, int port, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err)
        UT_FAIL("raw connect %s:%d: %s", host, port, c ? c->errstr : "out of memory");
    redisSetTimeout(c, tv);
    return c;
}

/* A command from a NULL-terminated list of strings (at most 32); fails the
 * case when the connection breaks. An error reply is returned as such. The
 * caller frees the reply. */
static UT_UNUSED redisReply *utredis_cmd(redisContext *c, ...)
{
    const char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, c);
    for (const char *a = va_arg(ap, const char *); a && argc < 32; a = va_arg(ap, const char *))
        argv[argc++] = a;
    va_end(ap);
    UT_ASSERT(argc > 0);
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    if (!r)
        UT_FAIL("raw %s: %s", argv[0], c->errstr);
    return r;
}

/* Deletes every key that starts with prefix in each database whose bit is
 * set in dbs (bit 0: db 0), on host:port. Never fails the case (it runs at
 * exit too): a server that does not answer within 2 s is left alone. */
static UT_UNUSED void utredis_del_prefix(const char *host, int port, unsigned dbs, const char *prefix)
{
    if (!prefix[0] || port <= 0 || !dbs)
        return;
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return;
    }
    redisSetTimeout(c, tv);
    char match[128];
    snprintf(match, sizeof(match), "%s*", prefix);
    for (int db = 0; db < 16; db++) {
        if (!(dbs & (1u << db)))
            continue;
        redisReply *r = redisCommand(c, "SELECT %d", db);
        if (r)
            freeReplyObject(r);
        char cursor[32] = "0";
        do {
            r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, match);
            if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
                if (r)
                    freeReplyObject(r);
                break;
            }
            snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
            for (size_t i = 0; i < r->element[1]->elements; i++) {
                redisReply *d = redisCommand(c, "DEL %b", r->element[1]->element[i]->str,
                                             r->element[1]->element[i]->len);
                if (d)
                    freeReplyObject(d);
            }
            freeReplyObject(r);
        } while (strcmp(cursor, "0"));
    }
    redisFree(c);
}

/* ---- private servers ---------------------------------------------------------- */

struct utredis_srv {
    pid_t pid; /* 0 while not running */
    int port;
    const char *extra[UTREDIS_ARGS]; /* string literals or static buffers */
    char log[256];
};

static struct utredis_srv utredis_srvs[UTREDIS_MAX];
static int utredis_nsrvs;

/* Kills s (also when stopped with SIGSTOP) and reaps it. */
static UT_UNUSED void utredis_kill(struct utredis_srv *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGCONT); /* a stopped server must be able to die */
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

/* Kills every server started in this process and forgets them. */
static UT_UNUSED void utredis_kill_all(void)
{
    for (int i = 0; i < utredis_nsrvs; i++)
        utredis_kill(&utredis_srvs[i]);
    utredis_nsrvs = 0;
}

static UT_UNUSED void utredis__log_tail(const struct utredis_srv *s)
{
    char buf[2048];
    int fd = open(s->log, O_RDONLY);
    if (fd < 0)
        return;
    off_t end = lseek(fd, 0, SEEK_END);
    off_t from = end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    close(fd);
    if (n > 0) {
        buf[n] = '\0';
        fprintf(stderr, "--- redis-server log (%s) ---\n%s\n", s->log, buf);
    }
}

/* Answers PING (or at least NOAUTH) on 127.0.0.1:port. */
static UT_UNUSED int utredis_answers(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    int ok = 0;
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "PING");
        ok = r && (r->type == REDIS_REPLY_STATUS ||
                   (r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOAUTH", 6)));
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return ok;
}

/* Runs redis-server for s (its port, its extra arguments) and waits up to
 * 10 s until it answers; fails the case, with the tail of its log, when it
 * exits or does not answer. --bind 127.0.0.1 unless extra has a --bind. */
static UT_UNUSED void utredis__spawn(struct utredis_srv *s)
{
    char port[16];
    const char *argv[12 + UTREDIS_ARGS] = {"redis-server", "--port", port, "--save", "",
                                           "--appendonly", "no", "--dir"};
    int n = 8, bind = 0;
    snprintf(port, sizeof(port), "%d", s->port);
    argv[n++] = utsys_tmp_dir();
    for (int i = 0; i < UTREDIS_ARGS && s->extra[i]; i++) {
        bind |= !strcmp(s->extra[i], "--bind");
        argv[n++] = s->extra[i];
    }
    if (!bind) {
        argv[n++] = "--bind";
        argv[n++] = "127.0.0.1";
    }
    argv[n] = NULL;
    pid_t pid = fork();
    UT_ASSERT(pid >= 0);
    if (pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    uint64_t t0 = utsys_mono_ms();
    while (!utredis_answers(s->port)) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            s->pid = 0;
            utredis__log_tail(s);
            UT_FAIL("redis-server on port %d exited at start (log: %s)", s->port, s->log);
        }
        if (utsys_mono_ms() - t0 > (uint64_t)ut_scale_ms(10000)) {
            utredis__log_tail(s);
            UT_FAIL("redis-server on port %d does not answer (log: %s)", s->port, s->log);
        }
        utsys_sleep_ms(20);
    }
}

/* Starts a private redis-server on a free port; tag names its log file
 * (the case's key prefix, say), extra is a NULL-terminated list of more
 * arguments (NULL for none), kept for utredis_restart. The server belongs
 * to ut_redis: it is killed by utredis_kill_all, at the latest at exit. */
static UT_UNUSED struct utredis_srv *utredis_start(const char *tag, const char *const *extra)
{
    static int registered;
    if (!registered++)
        atexit(utredis_kill_all);
    UT_ASSERT(utredis_nsrvs < UTREDIS_MAX);
    struct utredis_srv *s = &utredis_srvs[utredis_nsrvs++];
    memset(s, 0, sizeof(*s));
    for (int i = 0; extra && extra[i] && i < UTREDIS_ARGS - 1; i++)
        s->extra[i] = extra[i];
    s->port = utsys_free_port();
    snprintf(s->log, sizeof(s->log), "%s/redis-%s-%d.log", utsys_tmp_dir(), tag, s->port);
    utredis__spawn(s);
    return s;
}

/* Kills s and starts it again: same port, same arguments, no data (no
 * persistence). */
static UT_UNUSED void utredis_restart(struct utredis_srv *s)
{
    utredis_kill(s);
    utredis__spawn(s);
}

/* Sends sig (SIGSTOP, SIGCONT, ...) to a running server. */
static UT_UNUSED void utredis_signal(struct utredis_srv *s, int sig)
{
    UT_ASSERT(s->pid > 0);
    UT_EQ_INT(kill(s->pid, sig), 0);
}

/* redis://[userinfo@]127.0.0.1:<port>/<db> */
static UT_UNUSED void utredis_url(const struct utredis_srv *s, const char *userinfo, int db, char *out,
                                  size_t len)
{
    snprintf(out, len, "redis://%s%s127.0.0.1:%d/%d", userinfo ? userinfo : "", userinfo ? "@" : "",
             s->port, db);
}

#endif
