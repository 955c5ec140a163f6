/* httpd: libmicrohttpd driven by the libuv loop. See httpd.h for the contract
 * and docs/http.md for the design.
 *
 * Ownership of a request: MHD holds one claim on it from the first call of the
 * access handler until the "request completed" notification (r->conn set),
 * and the route handler holds one from dispatch until httpd_respond()
 * (r->held). The req is freed when both claims are gone, so neither side can
 * free it from under the other. */
#include "io/httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"

/* How long httpd_close waits for the 503s it queued to be written. */
#define HTTPD_CLOSE_GRACE_MS 2000
/* How much of an oversized body we read and throw away so that the client,
 * which may still be sending, can read its 413. Answering and closing at once
 * would make the kernel reset the connection under unread data, and the
 * client would see a reset instead of the 413. Matches curl's threshold for
 * "Expect: 100-continue", above which clients wait for our verdict anyway. */
#define HTTPD_MAX_DISCARD (1024 * 1024)

enum req_state {
    REQ_RECEIVING,  /* collecting the body */
    REQ_IN_HANDLER, /* the route handler is on the stack */
    REQ_SUSPENDED,  /* handler returned without answering; MHD suspended */
    REQ_ANSWERED,   /* an answer was built (maybe not yet queued) */
};

struct httpd_route_ent {
    struct httpd_route_ent *next;
    char *method;
    char *path;
    httpd_handler *fn;
    void *arg;
};

struct httpd_req {
    struct httpd *h;               /* NULL once MHD is done with it */
    struct MHD_Connection *conn;   /* NULL once MHD is done with it */
    struct httpd_req *prev, *next; /* h->reqs, while MHD holds it */
    const struct httpd_route_ent *route;
    char *method;
    char *path;
    struct buf body;
    struct buf hdrs;           /* response headers as "name\0value\0" pairs */
    struct MHD_Response *resp; /* built but not yet queued */
    unsigned status;
    enum req_state state;
    unsigned held : 1;    /* the route handler still owns it */
    unsigned queued : 1;  /* MHD has taken the answer */
    unsigned too_big : 1; /* the body passed max_body: discard, then 413 */
    size_t received;      /* body bytes seen, kept or not */
    uint64_t t0;          /* uv_hrtime at arrival */
};

struct httpd {
    uv_loop_t *loop;
    struct MHD_Daemon *d;
    uv_poll_t poll;   /* MHD's epoll fd */
    uv_timer_t timer; /* MHD's timeout, and "run MHD soon" */
    uv_timer_t grace; /* bounds httpd_close */
    int listen_fd;
    int port;
    size_t max_body;
    unsigned nconns; /* connections after the last MHD_run */
    struct httpd_route_ent *routes;
    struct httpd_req *reqs; /* every request MHD currently holds */
    unsigned nreqs;
    unsigned open_handles;
    unsigned in_run : 1;   /* MHD_run is on the stack */
    unsigned kick : 1;     /* run MHD again as soon as possible */
    unsigned starting : 1; /* MHD errors are start failures: log them loudly */
    unsigned closing : 1;
    unsigned finishing : 1; /* handles are being closed */
    void (*done)(void *arg);
    void *done_arg;
};

static const char JSON[] = "application/json";

/* ---- requests ---------------------------------------------------------- */

static void req_maybe_free(struct httpd_req *r)
{
    if (r->conn || r->held)
        return;
    if (r->resp)
        MHD_destroy_response(r->resp);
    buf_free(&r->body);
    buf_free(&r->hdrs);
    mem_free(r->method);
    mem_free(r->path);
    mem_free(r);
}

static void hdrs_add(struct buf *b, const char *name, const char *value)
{
    if (!name || !value || !*name || strpbrk(name, "\r\n:") || strpbrk(value, "\r\n")) {
        log_warn("httpd: response header dropped (invalid)", LF_STR("name", name ? name : ""));
        return;
    }
    size_t mark = b->len;
    if (buf_append(b, name, strlen(name) + 1) || buf_append(b, value, strlen(value) + 1)) {
        b->len = mark; /* keep the pair list whole */
        log_warn("httpd: response header dropped (too many)", LF_STR("name", name));
    }
}

/* Build the MHD response for r; status, content type and extra headers. */
static struct MHD_Response *resp_build(struct httpd_req *r, unsigned status, const char *ctype,
                                       const void *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)(len ? body : ""), MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return NULL;
    MHD_add_response_header(resp, "Content-Type", ctype ? ctype : JSON);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    for (size_t off = 0; off < r->hdrs.len;) {
        const char *name = r->hdrs.p + off;
        const char *value = name + strlen(name) + 1;
        MHD_add_response_header(resp, name, value);
        off = (size_t)(value + strlen(value) + 1 - r->hdrs.p);
    }
    if (r->h && r->h->closing)
        MHD_add_response_header(resp, "Connection", "close");
    r->status = status;
    return resp;
}

/* Record an answer on r. It is queued by the access handler (if we are in
 * it) or right here (if the connection is suspended, which MHD allows from
 * anywhere), and then the connection is resumed. */
static void req_answer(struct httpd_req *r, unsigned status, const char *ctype, const void *body,
                       size_t len)
{
    enum req_state prev = r->state;
    r->state = REQ_ANSWERED;
    if (!r->conn)
        return; /* MHD already finished with it: nobody to answer */
    r->resp = resp_build(r, status, ctype, body, len);
    if (!r->resp)
        log_error("httpd: cannot build response", LF_INT("status", status));
    if (prev != REQ_SUSPENDED)
        return; /* on_access will queue it */
    if (r->resp && MHD_queue_response(r->conn, status, r->resp) == MHD_YES) {
        MHD_destroy_response(r->resp);
        r->resp = NULL;
        r->queued = 1;
    }
    /* If queueing failed, on_access queues r->resp when MHD calls it again
     * after the resume; with no response at all it answers 500 there. */
    MHD_resume_connection(r->conn);
}

static void req_error(struct httpd_req *r, unsigned status, const char *json)
{
    req_answer(r, status, JSON, json, strlen(json));
}

/* ---- loop glue ----------------------------------------------------------- */

static void httpd_finish(struct httpd *h);

static void on_timer(uv_timer_t *t);

/* Ask for MHD_run on the next loop iteration (never re-entrantly). */
static void httpd_kick(struct httpd *h)
{
    h->kick = 1;
    if (!h->in_run && !h->finishing)
        uv_timer_start(&h->timer, on_timer, 0, 0);
}

static void httpd_rearm(struct httpd *h)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (h->kick) {
        uv_timer_start(&h->timer, on_timer, 0, 0);
    } else if (MHD_get_timeout(h->d, &ms) == MHD_YES) {
        uv_timer_start(&h->timer, on_timer, (uint64_t)ms, 0);
    } else {
        uv_timer_stop(&h->timer);
    }
}

/* At conn_limit (or when accept() hits EMFILE) MHD takes the listen socket
 * out of its epoll set, and puts it back only at the start of a later
 * MHD_run once a connection has gone. Nothing would wake us for that: the
 * epoll fd no longer sees the backlog and MHD_get_timeout knows nothing of
 * it. So whenever connections went away we run MHD once more ourselves. */
static void httpd_check_conns(struct httpd *h)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    if (!i)
        return;
    if (i->num_connections < h->nconns)
        h->kick = 1;
    h->nconns = i->num_connections;
}

/* The only place MHD_run is called; only ever from a libuv callback. */
static void httpd_run(struct httpd *h)
{
    if (h->finishing)
        return;
    h->in_run = 1;
    h->kick = 0;
    MHD_run(h->d);
    httpd_check_conns(h);
    h->in_run = 0;
    if (h->closing && h->nreqs == 0)
        httpd_finish(h);
    else
        httpd_rearm(h);
}

static void on_timer(uv_timer_t *t)
{
    httpd_run(t->data);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    (void)events;
    if (status < 0)
        log_warn("httpd: poll error", LF_ERR(status));
    httpd_run(p->data);
}

static void on_grace(uv_timer_t *t)
{
    struct httpd *h = t->data;
    log_warn("httpd: close grace period over", LF_INT("requests", h->nreqs));
    httpd_finish(h);
}

static void on_handle_closed(uv_handle_t *hd)
{
    struct httpd *h = hd->data;
    if (--h->open_handles)
        return;
    void (*done)(void *) = h->done;
    void *arg = h->done_arg;
    for (struct httpd_route_ent *e = h->routes, *n; e; e = n) {
        n = e->next;
        mem_free(e->method);
        mem_free(e->path);
        mem_free(e);
    }
    mem_free(h);
    if (done)
        done(arg);
}

/* Tear down: called from a loop callback with MHD not on the stack. */
static void httpd_finish(struct httpd *h)
{
    if (h->finishing)
        return;
    h->finishing = 1;
    /* libuv must forget the epoll fd before MHD closes it. */
    uv_close((uv_handle_t *)&h->poll, on_handle_closed);
    uv_close((uv_handle_t *)&h->timer, on_handle_closed);
    uv_close((uv_handle_t *)&h->grace, on_handle_closed);
    /* Requests MHD still holds are reported completed from in here. */
    MHD_stop_daemon(h->d);
    h->d = NULL;
    if (h->listen_fd >= 0)
        close(h->listen_fd);
    h->listen_fd = -1;
}

/* ---- MHD callbacks --------------------------------------------------------- */

static const struct httpd_route_ent *route_find(const struct httpd *h, const char *method,
                                                const char *path, int *path_known)
{
    *path_known = 0;
    for (const struct httpd_route_ent *e = h->routes; e; e = e->next) {
        if (strcmp(e->path, path))
            continue;
        *path_known = 1;
        if (!strcmp(e->method, method))
            return e;
    }
    if (*path_known && !strcmp(method, "HEAD"))
        return route_find(h, "GET", path, path_known);
    return NULL;
}

static void answer_405(struct httpd_req *r)
{
    struct buf allow;
    buf_init(&allow, 512);
    for (const struct httpd_route_ent *e = r->h->routes; e; e = e->next) {
        if (strcmp(e->path, r->path))
            continue;
        if (allow.len)
            buf_puts(&allow, ", ");
        buf_puts(&allow, e->method);
        if (!strcmp(e->method, "GET"))
            buf_puts(&allow, ", HEAD");
    }
    hdrs_add(&r->hdrs, "Allow", buf_str(&allow));
    buf_free(&allow);
    req_error(r, 405, "{\"error\":\"method not allowed\"}");
}

/* First call for a request: headers are in. Decide whether it can go on. */
static void req_begin(struct httpd_req *r)
{
    struct httpd *h = r->h;
    if (h->closing) {
        req_error(r, 503, "{\"error\":\"shutting down\"}");
        return;
    }
    int path_known;
    r->route = route_find(h, r->method, r->path, &path_known);
    if (!r->route) {
        if (path_known)
            answer_405(r);
        else
            req_error(r, 404, "{\"error\":\"not found\"}");
        return;
    }
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    if (!cl)
        return;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(cl, &end, 10);
    int bad = errno || end == cl; /* MHD has vetted it; be safe anyway */
    if (!bad && n <= h->max_body)
        return;
    /* Too big. A client that waits for "100 Continue", or one that would
     * send more than we are willing to discard, gets its answer now and
     * the connection closed; any other is drained, then answered. */
    const char *expect = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Expect");
    if (bad || (expect && strcasestr(expect, "100-continue")) ||
        n - h->max_body > HTTPD_MAX_DISCARD)
        req_error(r, 413, "{\"error\":\"body too large\"}");
    else
        r->too_big = 1;
}

static enum MHD_Result req_queue(struct httpd_req *r)
{
    if (r->queued)
        return MHD_YES;
    r->queued = 1;
    if (!r->resp) { /* building the answer failed: say so without allocating */
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!resp)
            return MHD_NO;
        enum MHD_Result ok = MHD_queue_response(r->conn, 500, resp);
        MHD_destroy_response(resp);
        return ok;
    }
    enum MHD_Result ok = MHD_queue_response(r->conn, r->status, r->resp);
    MHD_destroy_response(r->resp);
    r->resp = NULL;
    return ok;
}

static struct httpd_req *req_new(struct httpd *h, struct MHD_Connection *conn, const char *url,
                                 const char *method)
{
    struct httpd_req *r = mem_calloc(1, sizeof *r);
    r->h = h;
    r->conn = conn;
    r->method = mem_strdup(method);
    r->path = mem_strdup(url);
    r->state = REQ_RECEIVING;
    r->t0 = uv_hrtime();
    buf_init(&r->body, h->max_body);
    buf_init(&r->hdrs, HTTPD_MAX_RESP_HEADER_BYTES);
    r->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = r;
    h->reqs = r;
    h->nreqs++;
    return r;
}

/* The request is complete: run the route handler. */
static enum MHD_Result req_dispatch(struct httpd_req *r)
{
    if (r->too_big || r->h->closing) {
        if (r->too_big)
            req_error(r, 413, "{\"error\":\"body too large\"}");
        else
            req_error(r, 503, "{\"error\":\"shutting down\"}");
        return req_queue(r);
    }
    r->state = REQ_IN_HANDLER;
    r->held = 1;
    r->route->fn(r, r->route->arg);
    if (r->state == REQ_ANSWERED)
        return req_queue(r);
    r->state = REQ_SUSPENDED;
    MHD_suspend_connection(r->conn);
    return MHD_YES;
}

/* A piece of the body. Past the cap the bytes are dropped (MHD cannot take
 * an answer in the middle of an upload): the client gets its 413 once it
 * has finished sending, or the connection is cut if it sends far too much. */
static enum MHD_Result req_collect(struct httpd_req *r, const char *data, size_t *len)
{
    size_t n = *len;
    *len = 0;
    r->received = r->received + n < r->received ? SIZE_MAX : r->received + n;
    if (r->too_big) {
        size_t limit = r->h->max_body + HTTPD_MAX_DISCARD;
        if (limit < r->h->max_body || r->received <= limit)
            return MHD_YES;
        log_info("httpd: oversized body, closing", LF_STR("path", r->path),
                 LF_INT("bytes", r->received));
        return MHD_NO;
    }
    if (buf_append(&r->body, data, n)) {
        r->too_big = 1;
        buf_free(&r->body);
    }
    return MHD_YES;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    (void)version;
    struct httpd_req *r = *con_cls;
    if (!r) {
        r = *con_cls = req_new(cls, conn, url, method);
        req_begin(r);
        return r->state == REQ_ANSWERED ? req_queue(r) : MHD_YES;
    }
    if (r->state == REQ_ANSWERED)
        return req_queue(r); /* resumed after an answer MHD did not take */
    if (r->state != REQ_RECEIVING)
        return MHD_YES; /* not reached: a suspended request is not called */
    if (*upload_size)
        return req_collect(r, upload, upload_size);
    return req_dispatch(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    struct httpd *h = cls;
    struct httpd_req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    log_debug("http request", LF_STR("method", r->method), LF_STR("path", r->path),
              LF_INT("status", r->status), LF_INT("toe", toe),
              LF_DBL("ms", (double)(uv_hrtime() - r->t0) / 1e6));
    if (r->prev)
        r->prev->next = r->next;
    else
        h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    h->nreqs--;
    r->conn = NULL;
    r->h = NULL;
    req_maybe_free(r);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct httpd *h = cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    if (h->starting)
        log_warn("httpd: libmicrohttpd", LF_STR("detail", line));
    else
        log_debug("httpd: libmicrohttpd", LF_STR("detail", line));
}

/* ---- public API ---------------------------------------------------------- */

/* Create, bind and listen; on success *fd_out is a non-blocking socket. */
static int listen_socket(const char *addr, int port, int *fd_out, int *port_out)
{
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        struct sockaddr_storage ss;
    } a;
    memset(&a, 0, sizeof a);
    socklen_t alen;
    if (inet_pton(AF_INET, addr, &a.in4.sin_addr) == 1) {
        a.in4.sin_family = AF_INET;
        a.in4.sin_port = htons((uint16_t)port);
        alen = sizeof a.in4;
    } else if (inet_pton(AF_INET6, addr, &a.in6.sin6_addr) == 1) {
        a.in6.sin6_family = AF_INET6;
        a.in6.sin6_port = htons((uint16_t)port);
        alen = sizeof a.in6;
    } else {
        return -EINVAL;
    }
    int fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1, rc = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, &a.sa, alen) < 0 || listen(fd, SOMAXCONN) < 0 ||
        getsockname(fd, &a.sa, &(socklen_t){sizeof a}) < 0)
        rc = -errno;
    if (rc) {
        close(fd);
        return rc;
    }
    *fd_out = fd;
    *port_out = ntohs(a.sa.sa_family == AF_INET ? a.in4.sin_port : a.in6.sin6_port);
    return 0;
}

/* MHD may or may not close a listen socket it was given when it fails to
 * start; close ours only if the fd still names the same socket. */
static void close_if_same(int fd, const struct stat *before)
{
    struct stat now;
    if (fstat(fd, &now) == 0 && now.st_ino == before->st_ino && now.st_dev == before->st_dev)
        close(fd);
}

static int httpd_mhd_start(struct httpd *h, const struct httpd_opts *o)
{
    unsigned limit = o->conn_limit ? o->conn_limit : HTTPD_DEFAULT_CONN_LIMIT;
    unsigned idle = o->idle_timeout_s ? o->idle_timeout_s : HTTPD_DEFAULT_IDLE_TIMEOUT_S;
    struct stat st;
    fstat(h->listen_fd, &st);
    h->starting = 1;
    h->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0,
                            NULL, NULL, on_access, h,
                            /* first, so MHD reports option errors through it */
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
                            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->listen_fd,
                            MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_CONNECTION_TIMEOUT,
                            idle, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
    h->starting = 0;
    if (!h->d) {
        close_if_same(h->listen_fd, &st);
        return BC_EHTTP;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    if (!info) {
        MHD_stop_daemon(h->d);
        return BC_EHTTP;
    }
    int rc = uv_poll_init(h->loop, &h->poll, info->epoll_fd);
    if (rc) {
        MHD_stop_daemon(h->d);
        return rc;
    }
    return 0;
}

int httpd_start(uv_loop_t *loop, const struct httpd_opts *o, struct httpd **out)
{
    if (!loop || !o || !out || o->port < 0 || o->port > 65535)
        return -EINVAL;
    const char *addr = o->bind ? o->bind : "127.0.0.1";
    struct httpd *h = mem_calloc(1, sizeof *h);
    h->loop = loop;
    h->max_body = o->max_body ? o->max_body : HTTPD_DEFAULT_MAX_BODY;
    int rc = listen_socket(addr, o->port, &h->listen_fd, &h->port);
    if (!rc)
        rc = httpd_mhd_start(h, o);
    if (rc) {
        log_warn("httpd: cannot start", LF_STR("bind", addr), LF_INT("port", o->port),
                 LF_ERR(rc));
        mem_free(h);
        return rc;
    }
    h->poll.data = h;
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    uv_timer_init(loop, &h->grace);
    h->grace.data = h;
    h->open_handles = 3;
    uv_poll_start(&h->poll, UV_READABLE, on_poll);
    httpd_rearm(h);
    log_info("httpd: listening", LF_STR("bind", addr), LF_INT("port", h->port));
    *out = h;
    return 0;
}

int httpd_port(const struct httpd *h)
{
    return h->port;
}

int httpd_route(struct httpd *h, const char *method, const char *path, httpd_handler *fn,
                void *arg)
{
    if (!h || !method || !*method || !path || path[0] != '/' || !fn)
        return -EINVAL;
    if (h->closing)
        return BC_ESHUTDOWN;
    for (const struct httpd_route_ent *e = h->routes; e; e = e->next)
        if (!strcmp(e->method, method) && !strcmp(e->path, path))
            return -EEXIST;
    struct httpd_route_ent *e = mem_calloc(1, sizeof *e);
    e->method = mem_strdup(method);
    e->path = mem_strdup(path);
    e->fn = fn;
    e->arg = arg;
    /* Append, so Allow lists methods in registration order. */
    struct httpd_route_ent **pp = &h->routes;
    while (*pp)
        pp = &(*pp)->next;
    *pp = e;
    return 0;
}

const char *httpd_req_method(const struct httpd_req *r)
{
    return r->method;
}

const char *httpd_req_path(const struct httpd_req *r)
{
    return r->path;
}

const char *httpd_req_header(const struct httpd_req *r, const char *name)
{
    return r->conn ? MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name) : NULL;
}

const char *httpd_req_query(const struct httpd_req *r, const char *name)
{
    if (!r->conn)
        return NULL;
    const char *v = NULL;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name), &v,
                                      NULL) != MHD_YES)
        return NULL;
    return v ? v : "";
}

const char *httpd_req_body(const struct httpd_req *r, size_t *len)
{
    if (len)
        *len = r->body.len;
    return buf_str(&r->body);
}

void httpd_req_add_header(struct httpd_req *r, const char *name, const char *value)
{
    if (r->state == REQ_ANSWERED)
        return;
    hdrs_add(&r->hdrs, name, value);
}

void httpd_respond(struct httpd_req *r, int status, const char *content_type, const void *body,
                   size_t len)
{
    r->held = 0;
    if (r->state == REQ_IN_HANDLER || r->state == REQ_SUSPENDED) {
        unsigned st = status >= 200 && status <= 599 ? (unsigned)status : 500;
        int later = r->state == REQ_SUSPENDED;
        req_answer(r, st, content_type, body, len);
        if (later && r->h)
            httpd_kick(r->h);
    }
    /* Otherwise httpd_close already answered 503, or MHD is done with it. */
    req_maybe_free(r);
}

void httpd_close(struct httpd *h, void (*done)(void *arg), void *arg)
{
    if (h->closing)
        return;
    h->closing = 1;
    h->done = done;
    h->done_arg = arg;
    /* Stop accepting now; quiescing hands the listen socket back to us. */
    MHD_socket lfd = MHD_quiesce_daemon(h->d);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    h->listen_fd = -1;
    for (struct httpd_req *r = h->reqs; r; r = r->next) {
        if (r->state == REQ_IN_HANDLER || r->state == REQ_SUSPENDED)
            req_error(r, 503, "{\"error\":\"shutting down\"}");
    }
    uv_timer_start(&h->grace, on_grace, HTTPD_CLOSE_GRACE_MS, 0);
    httpd_kick(h);
}
