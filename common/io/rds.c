#include "io/rds.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"

#define RDS_BACKOFF_MIN_MS 100
#define RDS_BACKOFF_MAX_MS 5000
#define RDS_POOL_MAX 1024

enum rds_state { RS_IDLE, RS_RESOLVING, RS_CONNECTING, RS_HANDSHAKE, RS_UP, RS_CLOSING };

/* One outstanding command; recycled through a small free list so a busy
 * connection does not allocate per command. */
struct rds_op {
    struct rds *r;
    rds_reply_cb *cb;
    void *arg;
    struct rds_op *next;
};

struct rds {
    uv_loop_t *loop;
    redisAsyncContext *ac;
    enum rds_state state;
    char name[16];
    char *host, *unix_path, *user, *pass;
    int port, db;
    int connect_timeout_ms, stall_timeout_ms;
    int backoff_ms;
    int was_up, down_logged;
    unsigned outstanding;
    uint64_t last_reply_ms;
    uv_timer_t timer;     /* connect timeout / retry */
    uv_timer_t watchdog;  /* stall detection */
    uv_getaddrinfo_t gai;
    int gai_busy;
    int handles_open;
    rds_state_cb *state_cb;
    void *state_arg;
    void (*close_done)(void *);
    void *close_arg;
    struct rds_op *pool;
    unsigned pool_len;
    char errstr[160];
};

static void rds_connect(struct rds *r);
static void rds_free(struct rds *r);
static void rds_schedule_retry(struct rds *r);

static uint64_t now_ms(struct rds *r)
{
    return uv_now(r->loop);
}

/* ---- URL ---------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* Percent-decode n bytes of a URL part into a new string. */
static int pct_decode(const char *s, size_t n, char **out)
{
    char *d = mem_alloc(n + 1), *o = d;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        int h = i + 2 < n ? hexval(s[i + 1]) : -1;
        int l = i + 2 < n ? hexval(s[i + 2]) : -1;
        if (h < 0 || l < 0) {
            mem_free(d);
            return -EINVAL;
        }
        *o++ = (char)(h * 16 + l);
        i += 2;
    }
    *o = '\0';
    *out = d;
    return 0;
}

static int parse_db(const char *s, int *db)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < 0 || v > 1000)
        return -EINVAL;
    *db = (int)v;
    return 0;
}

static int rds_parse_url(struct rds *r, const char *url, char *err, size_t errlen)
{
    if (!strncmp(url, "unix://", 7)) {
        const char *path = url + 7, *q = strchr(path, '?');
        r->unix_path = q ? mem_strndup(path, (size_t)(q - path)) : mem_strdup(path);
        if (q && (strncmp(q, "?db=", 4) || parse_db(q + 4, &r->db))) {
            snprintf(err, errlen, "REDIS_URL: only ?db=N is understood after a unix socket path");
            return BC_ECONFIG;
        }
        if (!*r->unix_path) {
            snprintf(err, errlen, "REDIS_URL: unix:// needs a socket path");
            return BC_ECONFIG;
        }
        return 0;
    }
    if (strncmp(url, "redis://", 8)) {
        snprintf(err, errlen, "REDIS_URL: must start with redis:// or unix://");
        return BC_ECONFIG;
    }
    const char *h = url + 8, *at = NULL;
    const char *end = h + strcspn(h, "/?#");
    for (const char *p = h; p < end; p++)
        if (*p == '@')
            at = p;
    if (at) {
        const char *colon = memchr(h, ':', (size_t)(at - h));
        const char *ue = colon ? colon : at;
        if (ue > h && pct_decode(h, (size_t)(ue - h), &r->user))
            goto bad;
        if (colon && pct_decode(colon + 1, (size_t)(at - colon - 1), &r->pass))
            goto bad;
        h = at + 1;
    }
    const char *hend = end, *portp = NULL;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb)
            goto bad;
        r->host = mem_strndup(h + 1, (size_t)(rb - h - 1));
        if (rb + 1 < end && rb[1] == ':')
            portp = rb + 2;
        else if (rb + 1 != end)
            goto bad;
    } else {
        const char *colon = memchr(h, ':', (size_t)(end - h));
        if (colon) {
            hend = colon;
            portp = colon + 1;
        }
        r->host = mem_strndup(h, (size_t)(hend - h));
    }
    r->port = 6379;
    if (portp) {
        char tmp[8];
        size_t n = (size_t)(end - portp);
        char *pe;
        if (n == 0 || n >= sizeof(tmp))
            goto bad;
        memcpy(tmp, portp, n);
        tmp[n] = '\0';
        long v = strtol(tmp, &pe, 10);
        if (*pe || v < 1 || v > 65535)
            goto bad;
        r->port = (int)v;
    }
    if (!*r->host)
        goto bad;
    if (*end == '/' && end[1] && parse_db(end + 1, &r->db))
        goto bad;
    return 0;
bad:
    snprintf(err, errlen, "REDIS_URL: malformed (expected redis://[:password@]host[:port][/db])");
    return BC_ECONFIG;
}

/* ---- the loop adapter ----------------------------------------------------- */

/* hiredis 0.14's own libuv adapter (adapters/libuv.h) returns early when
 * uv_poll reports an error, so a reset connection can go unnoticed until a
 * command stalls; it also leaks on a failed attach. This one has the same
 * shape but hands an error to hiredis as a readable event: the read then
 * fails and hiredis disconnects at once. */
struct rds_ev {
    redisAsyncContext *ac;
    uv_poll_t poll;
    int events;
};

static void ev_cb(uv_poll_t *h, int status, int events)
{
    struct rds_ev *e = h->data;
    if (status < 0)
        events = UV_READABLE;
    if (e->ac && (events & UV_READABLE))
        redisAsyncHandleRead(e->ac);
    if (e->ac && (events & UV_WRITABLE))
        redisAsyncHandleWrite(e->ac);
}

static void ev_update(struct rds_ev *e, int add, int del)
{
    e->events = (e->events | add) & ~del;
    if (e->events)
        uv_poll_start(&e->poll, e->events, ev_cb);
    else
        uv_poll_stop(&e->poll);
}

static void ev_add_read(void *p)
{
    ev_update(p, UV_READABLE, 0);
}

static void ev_del_read(void *p)
{
    ev_update(p, 0, UV_READABLE);
}

static void ev_add_write(void *p)
{
    ev_update(p, UV_WRITABLE, 0);
}

static void ev_del_write(void *p)
{
    ev_update(p, 0, UV_WRITABLE);
}

static void ev_closed(uv_handle_t *h)
{
    mem_free(h->data);
}

static void ev_cleanup(void *p)
{
    struct rds_ev *e = p;
    e->ac = NULL; /* hiredis is freeing the context */
    uv_close((uv_handle_t *)&e->poll, ev_closed);
}

static int ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    struct rds_ev *e = mem_calloc(1, sizeof(*e));
    if (uv_poll_init(loop, &e->poll, ac->c.fd) != 0) {
        mem_free(e);
        return REDIS_ERR;
    }
    e->ac = ac;
    e->poll.data = e;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    ac->ev.data = e;
    return REDIS_OK;
}

/* ---- ops ---------------------------------------------------------------- */

static struct rds_op *op_get(struct rds *r)
{
    struct rds_op *op = r->pool;
    if (op) {
        r->pool = op->next;
        r->pool_len--;
    } else {
        op = mem_alloc(sizeof(*op));
    }
    op->r = r;
    return op;
}

static void op_put(struct rds *r, struct rds_op *op)
{
    if (r->pool_len >= RDS_POOL_MAX) {
        mem_free(op);
        return;
    }
    op->next = r->pool;
    r->pool = op;
    r->pool_len++;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct rds_op *op = privdata;
    struct rds *r = op->r;
    int status = 0;
    if (!reply)
        status = r->state == RS_CLOSING ? BC_ESHUTDOWN : -ENOTCONN;
    else
        r->last_reply_ms = now_ms(r);
    r->outstanding--;
    rds_reply_cb *cb = op->cb;
    void *arg = op->arg;
    op_put(r, op);
    if (cb)
        cb(r, status, reply, arg);
}

static int rds_send(struct rds *r, rds_reply_cb *cb, void *arg, int argc, const char **argv,
                    const size_t *lens, int handshake)
{
    if (!r->ac || (r->state != RS_UP && !(handshake && r->state == RS_HANDSHAKE)))
        return -ENOTCONN;
    struct rds_op *op = op_get(r);
    op->cb = cb;
    op->arg = arg;
    if (redisAsyncCommandArgv(r->ac, on_reply, op, argc, argv, lens) != REDIS_OK) {
        op_put(r, op);
        return -ENOTCONN;
    }
    if (r->outstanding++ == 0)
        r->last_reply_ms = now_ms(r); /* stall clock starts with the first outstanding command */
    return 0;
}

int rds_cmd(struct rds *r, rds_reply_cb *cb, void *arg, int argc, const char **argv, const size_t *lens)
{
    return rds_send(r, cb, arg, argc, argv, lens, 0);
}

const char *rds_reply_error(const redisReply *reply)
{
    return (reply && reply->type == REDIS_REPLY_ERROR) ? reply->str : NULL;
}

/* ---- state -------------------------------------------------------------- */

static void set_up(struct rds *r, int up)
{
    if (up) {
        uv_timer_stop(&r->timer); /* the connect timeout */
        r->state = RS_UP;
        r->backoff_ms = 0;
        r->errstr[0] = '\0';
        if (r->was_up || r->down_logged)
            log_info("redis connection restored", LF_STR("conn", r->name));
        else
            log_info("redis connected", LF_STR("conn", r->name));
        r->was_up = 1;
        r->down_logged = 0;
    } else if (!r->down_logged) {
        log_warn("redis unavailable, retrying in the background", LF_STR("conn", r->name),
                 LF_STR("reason", r->errstr));
        r->down_logged = 1;
    }
    if (r->state_cb)
        r->state_cb(r, up, r->state_arg);
}

static void on_handshake(struct rds *r, int status, const redisReply *reply, void *arg)
{
    int last = (int)(intptr_t)arg;
    if (r->state != RS_HANDSHAKE || status)
        return; /* lost or timed out: what dropped the connection says why */
    const char *e = rds_reply_error(reply);
    if (e) {
        /* an AUTH error text names no secret; keep only its first word */
        snprintf(r->errstr, sizeof(r->errstr), "handshake failed: %.60s", e);
        if (r->ac)
            redisAsyncDisconnect(r->ac);
        return;
    }
    if (last)
        set_up(r, 1);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rds *r = ac->data;
    if (status != REDIS_OK) {
        snprintf(r->errstr, sizeof(r->errstr), "connect failed: %s", ac->errstr);
        r->ac = NULL; /* hiredis frees it after this callback */
        if (r->state != RS_CLOSING) {
            r->state = RS_IDLE;
            set_up(r, 0);
            rds_schedule_retry(r);
        }
        return;
    }
    if (r->state == RS_CLOSING)
        return;
    /* The connect timer keeps running: it also bounds the handshake, which a
     * server that accepted but hangs would never answer. */
    r->state = RS_HANDSHAKE;
    /* TCP keepalive options fail on a unix socket, and hiredis then marks
     * the context broken. */
    if (!r->unix_path)
        redisEnableKeepAlive((redisContext *)&ac->c);
    /* AUTH, SELECT and a PING are pipelined; the last reply marks it up. */
    char dbs[12];
    snprintf(dbs, sizeof(dbs), "%d", r->db);
    if (r->pass) {
        const char *av[3] = {"AUTH", r->user ? r->user : r->pass, r->pass};
        rds_send(r, on_handshake, (void *)0, r->user ? 3 : 2, av, NULL, 1);
    }
    if (r->db) {
        const char *av[2] = {"SELECT", dbs};
        rds_send(r, on_handshake, (void *)0, 2, av, NULL, 1);
    }
    const char *ping[1] = {"PING"};
    rds_send(r, on_handshake, (void *)1, 1, ping, NULL, 1);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rds *r = ac->data;
    r->ac = NULL; /* freed by hiredis after this callback */
    if (r->state == RS_CLOSING)
        return;
    int was_up = r->state == RS_UP;
    if (status != REDIS_OK && ac->errstr[0])
        snprintf(r->errstr, sizeof(r->errstr), "connection lost: %s", ac->errstr);
    else if (!r->errstr[0])
        snprintf(r->errstr, sizeof(r->errstr), "connection closed");
    r->state = RS_IDLE;
    if (was_up)
        r->down_logged = 0;
    set_up(r, 0);
    rds_schedule_retry(r);
}

static void on_timer(uv_timer_t *t)
{
    struct rds *r = t->data;
    if (r->state == RS_IDLE) {
        rds_connect(r);
    } else if (r->state == RS_CONNECTING || r->state == RS_HANDSHAKE) {
        snprintf(r->errstr, sizeof(r->errstr), "connect timed out after %d ms", r->connect_timeout_ms);
        rds_reset(r);
    }
}

static void on_watchdog(uv_timer_t *t)
{
    struct rds *r = t->data;
    if (r->state == RS_UP && r->outstanding && now_ms(r) - r->last_reply_ms > (uint64_t)r->stall_timeout_ms) {
        snprintf(r->errstr, sizeof(r->errstr), "no reply for %d ms", r->stall_timeout_ms);
        rds_reset(r);
    }
}

static void rds_schedule_retry(struct rds *r)
{
    if (r->state == RS_CLOSING)
        return;
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : RDS_BACKOFF_MIN_MS;
    if (r->backoff_ms > RDS_BACKOFF_MAX_MS)
        r->backoff_ms = RDS_BACKOFF_MAX_MS;
    int delay = r->backoff_ms / 2 + (int)(random() % (r->backoff_ms / 2 + 1));
    log_debug("redis reconnect scheduled", LF_STR("conn", r->name), LF_INT("delay_ms", delay));
    uv_timer_start(&r->timer, on_timer, (uint64_t)delay, 0);
}

static void connect_ip(struct rds *r, const char *ip)
{
    redisAsyncContext *ac = r->unix_path ? redisAsyncConnectUnix(r->unix_path) : redisAsyncConnect(ip, r->port);
    if (!ac || ac->err) {
        snprintf(r->errstr, sizeof(r->errstr), "connect failed: %s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        r->state = RS_IDLE;
        set_up(r, 0);
        rds_schedule_retry(r);
        return;
    }
    ac->data = r;
    if (ev_attach(ac, r->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        snprintf(r->errstr, sizeof(r->errstr), "cannot attach to the event loop");
        r->state = RS_IDLE;
        rds_schedule_retry(r);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->state = RS_CONNECTING;
    uv_timer_start(&r->timer, on_timer, (uint64_t)r->connect_timeout_ms, 0);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct rds *r = req->data;
    r->gai_busy = 0;
    if (r->state == RS_CLOSING) {
        uv_freeaddrinfo(res);
        if (!r->handles_open)
            rds_free(r);
        return;
    }
    if (status || !res) {
        snprintf(r->errstr, sizeof(r->errstr), "cannot resolve %s: %s", r->host, uv_strerror(status));
        uv_freeaddrinfo(res);
        r->state = RS_IDLE;
        set_up(r, 0);
        rds_schedule_retry(r);
        return;
    }
    char ip[INET6_ADDRSTRLEN] = "";
    if (res->ai_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, ip, sizeof(ip));
    else
        uv_ip4_name((struct sockaddr_in *)res->ai_addr, ip, sizeof(ip));
    uv_freeaddrinfo(res);
    connect_ip(r, ip);
}

static void rds_connect(struct rds *r)
{
    struct in6_addr a6;
    struct in_addr a4;
    if (r->unix_path || inet_pton(AF_INET, r->host, &a4) == 1 || inet_pton(AF_INET6, r->host, &a6) == 1) {
        connect_ip(r, r->host);
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    r->state = RS_RESOLVING;
    r->gai.data = r;
    int rc = uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->host, NULL, &hints);
    if (rc) {
        snprintf(r->errstr, sizeof(r->errstr), "cannot resolve %s: %s", r->host, uv_strerror(rc));
        r->state = RS_IDLE;
        rds_schedule_retry(r);
        return;
    }
    r->gai_busy = 1;
}

int rds_new(uv_loop_t *loop, const struct rds_opts *o, rds_state_cb *cb, void *arg, struct rds **out,
            char *errstr, size_t errlen)
{
    struct rds *r = mem_calloc(1, sizeof(*r));
    r->loop = loop;
    snprintf(r->name, sizeof(r->name), "%s", o->name ? o->name : "redis");
    r->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 3000;
    r->stall_timeout_ms = o->stall_timeout_ms > 0 ? o->stall_timeout_ms : 5000;
    int rc = rds_parse_url(r, o->url, errstr, errlen);
    if (rc) {
        mem_free(r->host);
        mem_free(r->unix_path);
        mem_free(r->user);
        mem_free(r->pass);
        mem_free(r);
        return rc;
    }
    r->state_cb = cb;
    r->state_arg = arg;
    uv_timer_init(loop, &r->timer);
    uv_timer_init(loop, &r->watchdog);
    r->timer.data = r->watchdog.data = r;
    r->handles_open = 2;
    uv_timer_start(&r->watchdog, on_watchdog, 1000, 1000);
    uv_unref((uv_handle_t *)&r->watchdog);
    snprintf(r->errstr, sizeof(r->errstr), "connecting");
    rds_connect(r);
    *out = r;
    return 0;
}

int rds_up(const struct rds *r)
{
    return r->state == RS_UP;
}

const char *rds_errstr(const struct rds *r)
{
    return r->errstr;
}

void rds_reset(struct rds *r)
{
    if (r->ac) {
        /* redisAsyncFree runs every pending callback with NULL (our ops turn
         * that into -ENOTCONN), then on_disconnect if it was connected. A
         * context that never connected gets no disconnect callback. */
        int connected = r->ac->c.flags & REDIS_CONNECTED;
        redisAsyncContext *ac = r->ac;
        redisAsyncFree(ac);
        if (!connected && r->state != RS_CLOSING) {
            r->ac = NULL;
            r->state = RS_IDLE;
            set_up(r, 0);
            rds_schedule_retry(r);
        }
    }
}

static void rds_free(struct rds *r)
{
    void (*done)(void *) = r->close_done;
    void *arg = r->close_arg;
    while (r->pool) {
        struct rds_op *op = r->pool;
        r->pool = op->next;
        mem_free(op);
    }
    mem_free(r->host);
    mem_free(r->unix_path);
    mem_free(r->user);
    if (r->pass) {
        memset(r->pass, 0, strlen(r->pass));
        mem_free(r->pass);
    }
    mem_free(r);
    if (done)
        done(arg);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct rds *r = h->data;
    if (--r->handles_open == 0 && !r->gai_busy)
        rds_free(r);
}

void rds_close(struct rds *r, void (*done)(void *arg), void *arg)
{
    if (r->state == RS_CLOSING)
        return;
    r->state = RS_CLOSING;
    r->state_cb = NULL;
    r->close_done = done;
    r->close_arg = arg;
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        redisAsyncFree(ac);
    }
    if (r->gai_busy)
        uv_cancel((uv_req_t *)&r->gai);
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->watchdog, on_handle_closed);
}
