/* ut_thttp: a plain HTTP/1.1 peer on its own thread, for the cases about
 * big bodies, plus the two meters those cases read: the loop's lag and
 * the process's peak RSS.
 *
 * The fake of ut_fakehttp.h runs on the test's loop and keeps whole
 * bodies in memory; here the peer runs on a thread with blocking sockets
 * and never holds more than one read buffer, so what the process's RSS
 * shows is the client's doing, and a stalled loop cannot slow the peer.
 *
 * - A sink (utth_sink) reads each request (answering Expect: 100-continue),
 *   counts its body, finds the markers given to it in order (streamed, the
 *   body is never kept), keeps the first 4 KiB, and answers 200 "{}".
 * - A source (utth_source) answers every request with a body of n bytes of
 *   utth_byte(i), sent as fast as the client takes it.
 * One connection at a time, "Connection: close" after each answer;
 * utth_stop ends the thread. Header-only: every function is static and
 * marked unused. */
#ifndef UT_THTTP_H
#define UT_THTTP_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "ut.h"

#ifndef UT_UNUSED
#define UT_UNUSED __attribute__((unused))
#endif

#define UTTH_MARKERS 4
#define UTTH_MARKER_LEN 16
#define UTTH_HEAD 4096
#define UTTH_CHUNK (256 * 1024)

struct utth {
    int lfd, port, stop;
    pthread_t thread;
    int source;            /* 1: answer n bytes; 0: sink */
    size_t n;              /* source: body size */
    const char *markers[UTTH_MARKERS]; /* sink: to find in order, UTTH_MARKER_LEN bytes each */
    int nmarkers;
    /* what the sink saw of the last request (read after utth_stop) */
    int requests;
    size_t body_len;
    int found;             /* markers found, in order */
    char head[UTTH_HEAD + 1]; /* the body's first bytes */
    char ctype[200];
};

/* The byte at offset i of a source's body. */
static UT_UNUSED unsigned char utth_byte(size_t i)
{
    return (unsigned char)((i >> 12) * 31 + i);
}

static UT_UNUSED int utth__send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The request head into buf (NUL-terminated); extra bytes already read
 * past it are left at buf + *head_len, *have in all. -1 at EOF/error. */
static UT_UNUSED int utth__read_head(int fd, char *buf, size_t cap, size_t *head_len, size_t *have)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            *head_len = (size_t)(end + 4 - buf);
            *have = n;
            return 0;
        }
        if (n >= cap - 1)
            return -1;
    }
}

static UT_UNUSED const char *utth__header(const char *head, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n"))
        if (!strncasecmp(p + 2, name, nl) && p[2 + nl] == ':') {
            const char *v = p + 3 + nl;
            while (*v == ' ')
                v++;
            return v;
        }
    return NULL;
}

/* Feed body bytes to the sink's counters and marker search. win keeps the
 * last UTTH_MARKER_LEN - 1 bytes of the previous chunk in front. */
static UT_UNUSED void utth__feed(struct utth *s, char *win, size_t *carry, const char *p, size_t n)
{
    if (s->body_len < UTTH_HEAD) {
        size_t k = n < UTTH_HEAD - s->body_len ? n : UTTH_HEAD - s->body_len;
        memcpy(s->head + s->body_len, p, k);
        s->head[s->body_len + k] = '\0';
    }
    s->body_len += n;
    memcpy(win + *carry, p, n);
    size_t len = *carry + n, from = 0;
    while (s->found < s->nmarkers) {
        char *hit = memmem(win + from, len - from, s->markers[s->found], UTTH_MARKER_LEN);
        if (!hit)
            break;
        s->found++;
        from = (size_t)(hit - win) + UTTH_MARKER_LEN;
    }
    size_t keep = UTTH_MARKER_LEN - 1;
    if (keep > len - from)
        keep = len - from;
    memmove(win, win + len - keep, keep);
    *carry = keep;
}

static UT_UNUSED void utth__serve_sink(struct utth *s, int fd)
{
    char *buf = malloc(UTTH_CHUNK + 1), *win = malloc(UTTH_CHUNK + UTTH_MARKER_LEN);
    size_t head_len, have, carry = 0;
    if (utth__read_head(fd, buf, 16384, &head_len, &have))
        goto out;
    s->requests++;
    s->body_len = 0;
    s->found = 0;
    s->head[0] = '\0';
    const char *ct = utth__header(buf, "Content-Type"), *cl = utth__header(buf, "Content-Length");
    snprintf(s->ctype, sizeof s->ctype, "%.*s", ct ? (int)strcspn(ct, "\r") : 0, ct ? ct : "");
    size_t want = cl ? strtoull(cl, NULL, 10) : 0;
    const char *ex = utth__header(buf, "Expect");
    if (ex && !strncasecmp(ex, "100-continue", 12) && utth__send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25))
        goto out;
    utth__feed(s, win, &carry, buf + head_len, have - head_len);
    while (s->body_len < want) {
        size_t k = want - s->body_len < UTTH_CHUNK ? want - s->body_len : UTTH_CHUNK;
        ssize_t r = recv(fd, buf, k, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            goto out;
        utth__feed(s, win, &carry, buf, (size_t)r);
    }
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                             "Connection: close\r\n\r\n{}";
    utth__send_all(fd, ok, sizeof ok - 1);
out:
    free(buf);
    free(win);
}

static UT_UNUSED void utth__serve_source(struct utth *s, int fd)
{
    char *buf = malloc(UTTH_CHUNK);
    size_t head_len, have;
    if (utth__read_head(fd, buf, 16384, &head_len, &have))
        goto out;
    s->requests++;
    char head[200];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      s->n);
    if (utth__send_all(fd, head, (size_t)hl))
        goto out;
    for (size_t off = 0; off < s->n && !s->stop;) {
        size_t k = s->n - off < UTTH_CHUNK ? s->n - off : UTTH_CHUNK;
        for (size_t i = 0; i < k; i++)
            buf[i] = (char)utth_byte(off + i);
        if (utth__send_all(fd, buf, k))
            break;
        off += k;
    }
out:
    free(buf);
}

static UT_UNUSED void *utth__main(void *arg)
{
    struct utth *s = arg;
    for (;;) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0 && errno == EINTR)
            continue;
        if (fd < 0 || s->stop) {
            if (fd >= 0)
                close(fd);
            return NULL;
        }
        if (s->source)
            utth__serve_source(s, fd);
        else
            utth__serve_sink(s, fd);
        shutdown(fd, SHUT_WR);
        close(fd);
    }
}

static UT_UNUSED void utth__start(struct utth *s)
{
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    UT_ASSERT(s->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    UT_EQ_INT(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
    UT_EQ_INT(listen(s->lfd, 8), 0);
    UT_EQ_INT(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    UT_EQ_INT(pthread_create(&s->thread, NULL, utth__main, s), 0);
}

/* A sink that looks for markers (each UTTH_MARKER_LEN bytes, borrowed) in order. */
static UT_UNUSED void utth_sink(struct utth *s, const char *const *markers, int n)
{
    memset(s, 0, sizeof *s);
    UT_ASSERT(n <= UTTH_MARKERS);
    for (int i = 0; i < n; i++)
        s->markers[i] = markers[i];
    s->nmarkers = n;
    utth__start(s);
}

static UT_UNUSED void utth_source(struct utth *s, size_t n)
{
    memset(s, 0, sizeof *s);
    s->source = 1;
    s->n = n;
    utth__start(s);
}

/* End the thread (after its current connection). */
static UT_UNUSED void utth_stop(struct utth *s)
{
    s->stop = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    connect(fd, (struct sockaddr *)&a, sizeof a); /* wakes accept */
    pthread_join(s->thread, NULL);
    close(fd);
    close(s->lfd);
}

/* ---- the loop's lag ------------------------------------------------------------ */

/* A timer every period ms; lag is the worst lateness seen, in ms. */
struct utlag {
    uv_timer_t t;
    uint64_t period_ms, due_ns;
    double max_ms;
    unsigned long ticks;
};

static UT_UNUSED void utlag__tick(uv_timer_t *t)
{
    struct utlag *l = t->data;
    uint64_t now = uv_hrtime();
    l->ticks++;
    double late = now > l->due_ns ? (double)(now - l->due_ns) / 1e6 : 0;
    if (late > l->max_ms)
        l->max_ms = late;
    l->due_ns = now + l->period_ms * 1000000;
}

static UT_UNUSED void utlag_start(struct utlag *l, uv_loop_t *loop, uint64_t period_ms)
{
    memset(l, 0, sizeof *l);
    l->period_ms = period_ms;
    uv_timer_init(loop, &l->t);
    l->t.data = l;
    l->due_ns = uv_hrtime() + period_ms * 1000000;
    uv_timer_start(&l->t, utlag__tick, period_ms, period_ms);
}

/* Stop; a tick that is overdue now counts too (the stall may end with the
 * very event the case waited for). */
static UT_UNUSED void utlag_stop(struct utlag *l)
{
    utlag__tick(&l->t);
    uv_close((uv_handle_t *)&l->t, NULL);
}

/* ---- memory ---------------------------------------------------------------------- */

/* A field of /proc/self/status in KiB (VmRSS, VmHWM). */
static UT_UNUSED long utmem_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    UT_ASSERT(f);
    char line[256];
    long kb = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':')
            kb = strtol(line + n + 1, NULL, 10);
    fclose(f);
    UT_ASSERT(kb >= 0);
    return kb;
}

/* Reset VmHWM (the peak RSS) to the current RSS. */
static UT_UNUSED void utmem_reset_peak(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    UT_ASSERT(f);
    fputs("5", f);
    fclose(f);
}

/* The runner's --timeout-scale (BOT_TIMEOUT_SCALE), 1.0 when unset. */
static UT_UNUSED double ut_scale(void)
{
    const char *s = getenv("BOT_TIMEOUT_SCALE");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

#endif
