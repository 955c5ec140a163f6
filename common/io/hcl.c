/* hcl: libcurl's multi interface driven by the libuv loop. See hcl.h for the
 * contract and docs/http.md for the design.
 *
 * Re-entrancy rules kept here:
 *  - curl_multi_* is never called from inside a curl callback. curl's socket
 *    and timer callbacks only start/stop uv handles; work happens later in
 *    uv callbacks.
 *  - User callbacks (done) run only from uv callbacks, after
 *    curl_multi_socket_action has returned. hcl_cancel and hcl_close only
 *    mark transfers and arm the "reap" timer, which completes them on the
 *    next loop iteration; so they are safe from anywhere on the loop thread.
 *  - Nothing is freed while its function is on the stack: a socket context
 *    is freed from its uv_close callback, the client from the last one. */
#include "io/hcl.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"

#ifndef BC_VERSION
#define BC_VERSION "0"
#endif

struct hcl_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct hcl *c;
    struct hcl_sock *prev, *next;
};

struct hcl_xfer {
    struct hcl *c;
    CURL *easy;
    struct curl_slist *hdrs;
    curl_mime *mime;  /* a form body, or NULL */
    char *body;
    hcl_done_cb *cb;
    void *arg;
    int (*on_data)(const char *data, size_t len, void *arg);
    struct buf resp;  /* body, capped at max_response */
    struct buf hbuf;  /* response headers as "name\0value\0" pairs */
    size_t nhdr;
    int werr;         /* error raised by our write/header callback */
    int stop_err;     /* -ECANCELED or BC_ESHUTDOWN once cancelled/closing */
    int paused;       /* on_data answered HCL_PAUSE */
    struct hcl_xfer *prev, *next;
    char errbuf[CURL_ERROR_SIZE];
};

struct hcl {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer; /* curl's timeout */
    uv_timer_t reap;  /* completes cancelled transfers; finishes close */
    char *ua;
    struct hcl_xfer *xfers;
    struct hcl_sock *socks;
    unsigned open_handles;
    unsigned closing : 1;
    unsigned finishing : 1; /* curl is being torn down */
    void (*done)(void *arg);
    void *done_arg;
};

#define LIST_PUSH(head, e)                                                                         \
    do {                                                                                           \
        (e)->prev = NULL;                                                                          \
        (e)->next = (head);                                                                        \
        if (head)                                                                                  \
            (head)->prev = (e);                                                                    \
        (head) = (e);                                                                              \
    } while (0)
#define LIST_UNLINK(head, e)                                                                       \
    do {                                                                                           \
        if ((e)->prev)                                                                             \
            (e)->prev->next = (e)->next;                                                           \
        else                                                                                       \
            (head) = (e)->next;                                                                    \
        if ((e)->next)                                                                             \
            (e)->next->prev = (e)->prev;                                                           \
        (e)->prev = (e)->next = NULL;                                                              \
    } while (0)

static void on_reap(uv_timer_t *t);

static void hcl_kick_reap(struct hcl *c)
{
    uv_timer_start(&c->reap, on_reap, 0, 0);
}

/* ---- completing a transfer ------------------------------------------------ */

static int map_curl_error(struct hcl_xfer *x, CURLcode rc)
{
    if (x->stop_err)
        return x->stop_err;
    if (rc == CURLE_OK)
        return 0;
    if (x->werr)
        return x->werr;
    long oserr = 0;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return -EHOSTUNREACH;
    case CURLE_COULDNT_CONNECT:
        curl_easy_getinfo(x->easy, CURLINFO_OS_ERRNO, &oserr);
        return oserr > 0 && oserr < 4096 ? (int)-oserr : -ECONNREFUSED;
    case CURLE_FILESIZE_EXCEEDED:
        return BC_ETOOBIG;
    case CURLE_ABORTED_BY_CALLBACK:
        return -ECANCELED;
    default:
        return BC_EHTTP;
    }
}

/* The text for r->errstr: curl's own message when curl failed, our fixed
 * text when we stopped the transfer. Never anything from the request. */
static const char *xfer_errstr(struct hcl_xfer *x, CURLcode rc, int err)
{
    if (!err)
        return "";
    if (x->stop_err || x->werr)
        return bc_strerror(err);
    size_t n = strlen(x->errbuf);
    while (n && (x->errbuf[n - 1] == '\n' || x->errbuf[n - 1] == '\r'))
        x->errbuf[--n] = '\0';
    return n ? x->errbuf : curl_easy_strerror(rc);
}

static void xfer_free(struct hcl_xfer *x)
{
    curl_easy_cleanup(x->easy);
    curl_mime_free(x->mime);
    curl_slist_free_all(x->hdrs);
    mem_free(x->body);
    buf_free(&x->resp);
    buf_free(&x->hbuf);
    mem_free(x);
}

/* Detach x from curl and the client, run its callback, free it. */
static void xfer_complete(struct hcl_xfer *x, CURLcode rc)
{
    struct hcl *c = x->c;
    curl_multi_remove_handle(c->multi, x->easy);
    LIST_UNLINK(c->xfers, x);

    struct hcl_header hv[HCL_MAX_HEADERS];
    size_t nh = 0;
    for (size_t off = 0; off < x->hbuf.len && nh < HCL_MAX_HEADERS; nh++) {
        hv[nh].name = x->hbuf.p + off;
        hv[nh].value = hv[nh].name + strlen(hv[nh].name) + 1;
        off = (size_t)(hv[nh].value + strlen(hv[nh].value) + 1 - x->hbuf.p);
    }
    struct hcl_response r = {.body = buf_str(&x->resp), .body_len = x->resp.len};
    r.err = map_curl_error(x, rc);
    r.errstr = xfer_errstr(x, rc, r.err);
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r.status);
    curl_off_t us = 0;
    curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME_T, &us);
    r.total_ms = (double)us / 1000.0;
    r.headers = hv;
    r.nheaders = nh;
    if (r.err)
        log_debug("hcl: transfer failed", LF_ERR(r.err), LF_EXT("detail", r.errstr),
                  LF_INT("status", r.status));
    x->cb(&r, x->arg);
    xfer_free(x);
}

/* Hand every finished transfer to its callback. */
static void hcl_check_info(struct hcl *c)
{
    CURLMsg *m;
    int left;
    while (!c->finishing && (m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        CURLcode rc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        xfer_complete((struct hcl_xfer *)(void *)priv, rc);
    }
}

/* ---- curl <-> libuv ---------------------------------------------------------- */

static void hcl_action(struct hcl *c, curl_socket_t fd, int flags)
{
    int running;
    curl_multi_socket_action(c->multi, fd, flags, &running);
    hcl_check_info(c);
}

static void on_sock_event(uv_poll_t *p, int status, int events)
{
    struct hcl_sock *k = p->data;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    /* k may be closed by curl in here; it is freed only from uv_close's
     * callback, later, so reading k->c first is all the care needed. */
    hcl_action(k->c, k->fd, flags);
}

static void on_curl_timer(uv_timer_t *t)
{
    hcl_action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

static void hcl_maybe_free(struct hcl *c);

static void on_handle_closed(uv_handle_t *h)
{
    struct hcl *c = h->data;
    c->open_handles--;
    hcl_maybe_free(c);
}

static void on_sock_closed(uv_handle_t *h)
{
    struct hcl_sock *k = h->data;
    struct hcl *c = k->c;
    mem_free(k);
    c->open_handles--;
    hcl_maybe_free(c);
}

static void sock_close(struct hcl *c, struct hcl_sock *k)
{
    LIST_UNLINK(c->socks, k);
    /* uv_close stops watching the fd now, so curl may close the fd and
     * reuse its number at once; the context dies in on_sock_closed. */
    uv_close((uv_handle_t *)&k->poll, on_sock_closed);
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop watching one socket. */
static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    struct hcl *c = userp;
    struct hcl_sock *k = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (k) {
            sock_close(c, k);
            if (!c->finishing)
                curl_multi_assign(c->multi, s, NULL);
        }
        return 0;
    }
    if (!k) { /* a socket we do not track yet; known ones just get new events */
        k = mem_calloc(1, sizeof *k);
        int rc = uv_poll_init_socket(c->loop, &k->poll, s);
        if (rc) {
            log_error("hcl: cannot watch socket", LF_ERR(rc), LF_INT("fd", s));
            mem_free(k);
            return -1;
        }
        k->fd = s;
        k->c = c;
        k->poll.data = k;
        c->open_handles++;
        LIST_PUSH(c->socks, k);
        curl_multi_assign(c->multi, s, k);
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&k->poll, events, on_sock_event);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: -1 stops the timer, 0 means "soon", which a
 * zero-delay uv timer gives us without calling curl re-entrantly. */
static int on_curl_timerfn(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct hcl *c = userp;
    if (c->finishing)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_curl_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- curl data callbacks ---------------------------------------------------- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct hcl_xfer *x = ud;
    size_t n = size * nmemb;
    if (x->stop_err)
        return CURL_WRITEFUNC_ERROR;
    if (x->on_data) {
        int rc = x->on_data(ptr, n, x->arg);
        if (rc == HCL_PAUSE && !x->stop_err) {
            x->paused = 1;
            return CURL_WRITEFUNC_PAUSE;
        }
        if (rc) {
            x->werr = -ECANCELED;
            return CURL_WRITEFUNC_ERROR;
        }
        /* on_data may have cancelled this transfer or closed the client. */
        return x->stop_err ? CURL_WRITEFUNC_ERROR : n;
    }
    if (buf_append(&x->resp, ptr, n)) {
        x->werr = BC_ETOOBIG;
        return CURL_WRITEFUNC_ERROR;
    }
    return n;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *ud)
{
    struct hcl_xfer *x = ud;
    size_t n = size * nmemb, len = n;
    if (len >= 5 && !memcmp(line, "HTTP/", 5)) {
        /* A new status line: headers of an interim (1xx) answer are dropped. */
        buf_reset(&x->hbuf);
        x->nhdr = 0;
        return n;
    }
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    const char *colon = memchr(line, ':', len);
    if (!colon || colon == line)
        return n; /* blank line ending the block, or junk we do not keep */
    const char *v = colon + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t mark = x->hbuf.len;
    if (x->nhdr >= HCL_MAX_HEADERS || buf_append(&x->hbuf, line, (size_t)(colon - line)) ||
        buf_append(&x->hbuf, "", 1) || buf_append(&x->hbuf, v, (size_t)(end - v)) ||
        buf_append(&x->hbuf, "", 1)) {
        x->hbuf.len = mark;
        x->werr = BC_ETOOBIG;
        return CURL_WRITEFUNC_ERROR;
    }
    x->nhdr++;
    return n;
}

/* ---- setting a transfer up ---------------------------------------------------- */

/* The form as a curl_mime: curl writes the boundary and part headers and
 * reads file parts as it sends them. */
static int xfer_set_form(struct hcl_xfer *x, const struct hcl_part *parts, int n)
{
    x->mime = curl_mime_init(x->easy);
    if (!x->mime)
        return BC_EHTTP;
    for (int i = 0; i < n; i++) {
        const struct hcl_part *p = &parts[i];
        if (!p->name || !*p->name || (!p->path == !p->data && (p->path || p->len)))
            return -EINVAL;
        curl_mimepart *mp = curl_mime_addpart(x->mime);
        CURLcode rc = mp ? curl_mime_name(mp, p->name) : CURLE_OUT_OF_MEMORY;
        if (!rc && p->filename)
            rc = curl_mime_filename(mp, p->filename);
        if (!rc && p->content_type)
            rc = curl_mime_type(mp, p->content_type);
        if (!rc && p->path) {
            /* curl stats the file here; a file it cannot read is our error,
             * not a transfer that fails later */
            rc = curl_mime_filedata(mp, p->path);
            if (rc == CURLE_READ_ERROR)
                return -ENOENT;
            /* curl_mime_filedata also set the file's base name */
            if (!rc)
                rc = curl_mime_filename(mp, p->filename);
        } else if (!rc) {
            rc = curl_mime_data(mp, p->data ? p->data : "", p->len);
        }
        if (rc)
            return BC_EHTTP;
    }
    return curl_easy_setopt(x->easy, CURLOPT_MIMEPOST, x->mime) ? BC_EHTTP : 0;
}

static int xfer_set_method(struct hcl_xfer *x, const struct hcl_request *rq)
{
    const char *m = rq->method ? rq->method : "GET";
    int is_get = !strcmp(m, "GET"), is_post = !strcmp(m, "POST");
    int is_del = !strcmp(m, "DELETE");
    if (!is_get && !is_post && !is_del && strcmp(m, "PUT") && strcmp(m, "PATCH"))
        return -EINVAL;
    if (rq->body_len && (!rq->body || is_get))
        return -EINVAL;
    if (rq->nparts < 0 || (rq->nparts && (is_get || is_del || rq->body || !rq->parts)))
        return -EINVAL;
    if (is_get)
        return curl_easy_setopt(x->easy, CURLOPT_HTTPGET, 1L) ? BC_EHTTP : 0;
    CURLcode rc = CURLE_OK;
    if (!is_post)
        rc = curl_easy_setopt(x->easy, CURLOPT_CUSTOMREQUEST, m);
    if (rq->nparts)
        return rc ? BC_EHTTP : xfer_set_form(x, rq->parts, rq->nparts);
    /* POST, PUT and PATCH always send a Content-Length (0 when empty);
     * DELETE only when it has a body. */
    if (!rc && (!is_del || rq->body_len)) {
        x->body = mem_alloc(rq->body_len + 1);
        if (rq->body_len)
            memcpy(x->body, rq->body, rq->body_len);
        rc = curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
        if (!rc)
            rc = curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body);
    }
    return rc ? BC_EHTTP : 0;
}

static int xfer_set_headers(struct hcl_xfer *x, const char *const *h)
{
    for (; h && *h; h++) {
        const char *colon = strchr(*h, ':');
        if (!colon || colon == *h || strpbrk(*h, "\r\n"))
            return -EINVAL; /* no header injection through a value */
        struct curl_slist *n = curl_slist_append(x->hdrs, *h);
        if (!n)
            return BC_EHTTP;
        x->hdrs = n;
    }
    if (x->hdrs && curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs))
        return BC_EHTTP;
    return 0;
}

static int xfer_set_common(struct hcl_xfer *x, const struct hcl_request *rq)
{
    CURL *e = x->easy;
    long to = rq->timeout_ms > 0 ? rq->timeout_ms : HCL_DEFAULT_TIMEOUT_MS;
    long cto = rq->connect_timeout_ms > 0 ? rq->connect_timeout_ms : HCL_DEFAULT_CONNECT_TIMEOUT_MS;
    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                              \
    if (!rc)                                                                                       \
    rc = curl_easy_setopt(e, opt, val)
    SET(CURLOPT_ERRORBUFFER, x->errbuf);
    SET(CURLOPT_PRIVATE, (void *)x);
    SET(CURLOPT_URL, rq->url);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_TIMEOUT_MS, to);
    SET(CURLOPT_CONNECTTIMEOUT_MS, cto);
    SET(CURLOPT_USERAGENT, x->c->ua);
    SET(CURLOPT_ACCEPT_ENCODING, "");
#if LIBCURL_VERSION_NUM >= 0x073e00 /* 7.62.0: HTTP/2 over TLS when the server offers it */
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
#endif
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, (void *)x);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)x);
    if (!rq->on_data)
        SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)x->resp.max);
    if (rq->recv_buffer)
        SET(CURLOPT_BUFFERSIZE, (long)(rq->recv_buffer < 1024 ? 1024 : rq->recv_buffer > (1 << 20) ? 1 << 20
                                                                                              : rq->recv_buffer));
#undef SET
    return rc ? BC_EHTTP : 0;
}

/* ---- public API ---------------------------------------------------------- */

int hcl_new(uv_loop_t *loop, const struct hcl_opts *o, struct hcl **out)
{
    if (!loop || !out)
        return -EINVAL;
    /* curl allocates through our wrapper too (first initialiser wins). */
    if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, mem_alloc, mem_free, mem_realloc, mem_strdup,
                             mem_calloc))
        return BC_EHTTP;
    struct hcl *c = mem_calloc(1, sizeof *c);
    c->loop = loop;
    c->multi = curl_multi_init();
    if (!c->multi) {
        mem_free(c);
        curl_global_cleanup();
        return BC_EHTTP;
    }
    c->ua = mem_strdup(o && o->user_agent ? o->user_agent : "botcore/" BC_VERSION);
    long per_host = o && o->max_host_connections > 0 ? o->max_host_connections : HCL_DEFAULT_MAX_HOST_CONNECTIONS;
    long total = o && o->max_total_connections > 0 ? o->max_total_connections : HCL_DEFAULT_MAX_TOTAL_CONNECTIONS;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timerfn);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, per_host);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, total);
    /* Many streams share one HTTP/2 connection where the server speaks it
     * (https, negotiated by ALPN); HTTP/1.1 servers get a connection each. */
#ifdef CURLPIPE_MULTIPLEX
    curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
#endif
#if LIBCURL_VERSION_NUM >= 0x074300 /* 7.67.0 */
    curl_multi_setopt(c->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, HCL_MAX_CONCURRENT_STREAMS);
#endif
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    uv_timer_init(loop, &c->reap);
    c->reap.data = c;
    c->open_handles = 2;
    *out = c;
    return 0;
}

int hcl_request(struct hcl *c, const struct hcl_request *rq, hcl_done_cb *cb, void *arg,
                struct hcl_xfer **out)
{
    if (!c || !rq || !rq->url || !cb)
        return -EINVAL;
    if (c->closing)
        return BC_ESHUTDOWN;
    struct hcl_xfer *x = mem_calloc(1, sizeof *x);
    x->c = c;
    x->cb = cb;
    x->arg = arg;
    x->on_data = rq->on_data;
    buf_init(&x->resp, rq->max_response ? rq->max_response : HCL_DEFAULT_MAX_RESPONSE);
    buf_init(&x->hbuf, HCL_MAX_HEADER_BYTES);
    x->easy = curl_easy_init();
    int rc = x->easy ? 0 : BC_EHTTP;
    if (!rc)
        rc = xfer_set_common(x, rq);
    if (!rc)
        rc = xfer_set_method(x, rq);
    if (!rc)
        rc = xfer_set_headers(x, rq->headers);
    /* Adding fails only from inside a curl callback (see on_data in hcl.h). */
    if (!rc && curl_multi_add_handle(c->multi, x->easy))
        rc = BC_EHTTP;
    if (rc) {
        xfer_free(x);
        return rc;
    }
    LIST_PUSH(c->xfers, x);
    if (out)
        *out = x;
    return 0;
}

uv_loop_t *hcl_loop(const struct hcl *c)
{
    return c->loop;
}

const char *hcl_response_header(const struct hcl_response *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (!strcasecmp(r->headers[i].name, name))
            return r->headers[i].value;
    return NULL;
}

void hcl_resume(struct hcl_xfer *x)
{
    if (!x->paused || x->stop_err)
        return;
    x->paused = 0;
    /* curl may hand the held chunk to on_body from inside this call, and it
     * schedules the transfer on the multi handle's timer. */
    curl_easy_pause(x->easy, CURLPAUSE_CONT);
}

void hcl_cancel(struct hcl_xfer *x)
{
    if (x->stop_err)
        return;
    x->stop_err = -ECANCELED;
    hcl_kick_reap(x->c);
}

static void hcl_finish(struct hcl *c)
{
    c->finishing = 1;
    /* Cleanup may report sockets removed; on_curl_socket closes them. */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    while (c->socks)
        sock_close(c, c->socks);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->reap, on_handle_closed);
}

static void hcl_maybe_free(struct hcl *c)
{
    if (!c->finishing || c->open_handles)
        return;
    void (*done)(void *) = c->done;
    void *arg = c->done_arg;
    mem_free(c->ua);
    mem_free(c);
    curl_global_cleanup();
    if (done)
        done(arg);
}

/* Complete every stopped transfer, then finish a close. One at a time and
 * from the list head, because each callback may cancel or add others. */
static void on_reap(uv_timer_t *t)
{
    struct hcl *c = t->data;
    for (;;) {
        struct hcl_xfer *x = c->xfers;
        while (x && !x->stop_err)
            x = x->next;
        if (!x)
            break;
        xfer_complete(x, CURLE_OK);
    }
    if (c->closing && !c->xfers && !c->finishing)
        hcl_finish(c);
}

void hcl_close(struct hcl *c, void (*done)(void *arg), void *arg)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->done = done;
    c->done_arg = arg;
    for (struct hcl_xfer *x = c->xfers; x; x = x->next)
        if (!x->stop_err)
            x->stop_err = BC_ESHUTDOWN;
    hcl_kick_reap(c);
}
