/* ut_dsim.h: the Discord simulator (tests/sim/discord_sim.py) as a child
 * process of a unit test, and its control API (/_sim/...) through small
 * blocking HTTP calls made between loop turns. The child dies with the
 * test (PR_SET_PDEATHSIG); its log goes to $TMPDIR/<name>.<pid>.log, or to
 * the test's stderr with UT_DEBUG. Header-only: every function is static
 * and marked unused. */
#ifndef UT_DSIM_H
#define UT_DSIM_H

#include <errno.h>
#include <fcntl.h>
#include <json.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/mem.h"
#include "ut.h"
#include "ut_sys.h"

#ifndef UT_UNUSED
#define UT_UNUSED __attribute__((unused))
#endif

struct utdsim {
    pid_t pid;
    int port;
    int out_fd;
};

static UT_UNUSED void utdsim_root(char *out, size_t cap)
{
    const char *r = getenv("BOT_ROOT");
    if (r && *r) {
        snprintf(out, cap, "%s", r);
        return;
    }
    /* <root>/build/<variant>/tests/unit/test_x: drop the file and four dirs */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        for (int i = 0; i < 5; i++) {
            char *slash = strrchr(exe, '/');
            if (!slash)
                break;
            *slash = '\0';
        }
        snprintf(out, cap, "%s", exe);
        return;
    }
    snprintf(out, cap, ".");
}

/* Start argv[0] with stdout on a pipe and stderr in $TMPDIR/<logname>.log
 * (or the test's stderr with UT_DEBUG), and wait for a first line
 * "<ready> port=N". */
static UT_UNUSED void utdsim_child_start(struct utdsim *s, char *const argv[], const char *logname, const char *ready)
{
    char logpath[PATH_MAX];
    snprintf(logpath, sizeof logpath, "%s/%s.%d.log", utsys_tmp_dir(), logname, (int)getpid());
    int p[2];
    UT_EQ_INT(pipe(p), 0);
    pid_t pid = fork();
    UT_ASSERT(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed case exits: so does its helper */
        dup2(p[1], 1);
        int lf = open(getenv("UT_DEBUG") ? "/dev/stderr" : logpath,
                      O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (lf >= 0)
            dup2(lf, 2);
        close(p[0]);
        close(p[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    s->pid = pid;
    s->out_fd = p[0];
    char line[256] = "", want[64];
    size_t got = 0;
    uint64_t deadline = utsys_mono_ms() + (uint64_t)ut_scale_ms(15000);
    while (!strchr(line, '\n')) {
        struct pollfd pfd = {.fd = p[0], .events = POLLIN};
        int left = (int)(deadline - utsys_mono_ms());
        if (left <= 0 || poll(&pfd, 1, left) <= 0)
            UT_FAIL("%s did not start (log: %s)", logname, logpath);
        ssize_t n = read(p[0], line + got, sizeof line - 1 - got);
        if (n <= 0)
            UT_FAIL("%s exited at start (log: %s)", logname, logpath);
        got += (size_t)n;
        line[got] = '\0';
    }
    snprintf(want, sizeof want, "%s port=", ready);
    const char *at = strstr(line, want);
    s->port = at ? atoi(at + strlen(want)) : 0;
    if (s->port <= 0)
        UT_FAIL("%s said: %s", logname, line);
}

static UT_UNUSED void utdsim_start(struct utdsim *s, const char *token)
{
    char root[PATH_MAX], script[PATH_MAX + 64];
    utdsim_root(root, sizeof root);
    snprintf(script, sizeof script, "%s/tests/sim/discord_sim.py", root);
    struct stat st;
    if (stat(script, &st))
        UT_FAIL("simulator not found at %s", script);
    char *argv[] = {"/usr/bin/python3", script, "--port", "0", "--token", (char *)token,
                    "--application-id", "1", NULL};
    utdsim_child_start(s, argv, "discord_sim", "SIM READY");
}

static UT_UNUSED void utdsim_stop(struct utdsim *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 300; i++) {
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
            s->pid = 0;
            break;
        }
        usleep(10000);
    }
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
    }
    close(s->out_fd);
}

/* A tiny blocking HTTP/1.1 client for the control API. Returns the parsed
 * JSON body (json_object_put it), failing the case on any error. */
static UT_UNUSED struct json_object *utdsim_http(const struct utdsim *s, const char *method, const char *path,
                                    const char *body)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    UT_ASSERT(fd >= 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    UT_EQ_INT(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    size_t blen = body ? strlen(body) : 0;
    char head[512];
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      method, path, blen);
    UT_EQ_INT(write(fd, head, (size_t)hn), hn);
    if (blen)
        UT_EQ_INT(write(fd, body, blen), (ssize_t)blen);
    size_t cap = 65536, len = 0;
    char *resp = mem_alloc(cap);
    for (;;) {
        if (len + 4096 > cap)
            resp = mem_realloc(resp, cap *= 2);
        ssize_t n = read(fd, resp + len, cap - len - 1);
        if (n < 0)
            UT_FAIL("control request %s %s: %s", method, path, strerror(errno));
        if (n == 0)
            break;
        len += (size_t)n;
        resp[len] = '\0';
        char *hend = strstr(resp, "\r\n\r\n");
        const char *cl = hend ? strcasestr(resp, "\r\nContent-Length:") : NULL;
        if (hend && cl && cl < hend &&
            len >= (size_t)(hend + 4 - resp) + strtoul(cl + 17, NULL, 10))
            break;
    }
    close(fd);
    resp[len] = '\0';
    int status = 0;
    sscanf(resp, "HTTP/1.%*d %d", &status);
    char *b = strstr(resp, "\r\n\r\n");
    if (status != 200 || !b)
        UT_FAIL("control request %s %s: status %d: %s", method, path, status, b ? b + 4 : resp);
    struct json_object *o = json_tokener_parse(b + 4);
    if (!o)
        UT_FAIL("control request %s %s: bad JSON", method, path);
    mem_free(resp);
    return o;
}

static UT_UNUSED void utdsim_post(const struct utdsim *s, const char *path, const char *body)
{
    json_object_put(utdsim_http(s, "POST", path, body));
}

/* Field access by a dotted path with array indexes: "connections.-1.heartbeats". */
static UT_UNUSED struct json_object *utdsim_jget(struct json_object *o, const char *path)
{
    char key[128];
    while (o && *path) {
        size_t n = strcspn(path, ".");
        snprintf(key, sizeof key, "%.*s", (int)n, path);
        path += n + (path[n] == '.');
        if (json_object_is_type(o, json_type_array)) {
            long i = strtol(key, NULL, 10);
            long len = (long)json_object_array_length(o);
            if (i < 0)
                i += len;
            o = i >= 0 && i < len ? json_object_array_get_idx(o, (size_t)i) : NULL;
        } else if (!json_object_object_get_ex(o, key, &o)) {
            o = NULL;
        }
    }
    return o;
}

static UT_UNUSED int64_t utdsim_jint(struct json_object *o, const char *path)
{
    struct json_object *v = utdsim_jget(o, path);
    return v ? json_object_get_int64(v) : -1;
}

/* One number from the simulator's gateway state. */
static UT_UNUSED int64_t utdsim_gw_int(const struct utdsim *s, const char *path)
{
    struct json_object *o = utdsim_http(s, "GET", "/_sim/gateway", NULL);
    int64_t v = utdsim_jint(o, path);
    json_object_put(o);
    return v;
}

#endif
