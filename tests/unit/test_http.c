/* test_http: hcl (client) against httpd (server), both real, on 127.0.0.1.
 *
 * Each case builds its own loop, starts the server on port 0, makes requests
 * with the client, and runs the loop under a guard timer so that a broken
 * case fails instead of hanging. At the end both sides are closed and the
 * loop runs until every handle is closed, so the sanitizers see any leak. */
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "base/err.h"
#include "io/hcl.h"
#include "io/httpd.h"
#include "base/log.h"
#include "base/mem.h"
#include "ut.h"
#include "ut_sys.h"

#define GUARD_MS 15000
#define BIG_LEN (1024 * 1024 + 17)

struct fx {
    uv_loop_t loop;
    struct httpd *h;
    struct hcl *c;
    uv_timer_t guard;
    int port;
    int pending;             /* client callbacks still expected */
    int shut;                /* fx_shutdown ran */
    int h_closing, c_closing; /* httpd_close / hcl_close called */
    int h_closed, c_closed;  /* done callbacks ran */
    int handler_calls;
    struct httpd_req *held;  /* a request a handler keeps unanswered */
    void (*on_held)(struct fx *fx);
    char *big;               /* BIG_LEN bytes served by /big */
};

struct got {
    struct fx *fx;
    int calls;
    int err;
    long status;
    char *body;
    size_t body_len;
    char *ctype, *xtest, *allow, *cache, *errstr;
    double ms;
};

/* ---- fixture ---------------------------------------------------------------- */

static void on_guard(uv_timer_t *t)
{
    (void)t;
    UT_FAIL("guard timer fired: the case hung");
}

static void on_httpd_closed(void *arg)
{
    ((struct fx *)arg)->h_closed++;
}

static void on_hcl_closed(void *arg)
{
    ((struct fx *)arg)->c_closed++;
}

static char *dup_or_null(const char *s)
{
    return s ? mem_strdup(s) : NULL;
}

static void got_free(struct got *g)
{
    mem_free(g->body);
    mem_free(g->ctype);
    mem_free(g->xtest);
    mem_free(g->allow);
    mem_free(g->cache);
    mem_free(g->errstr);
}

static void big_fill(char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)('a' + (i * 7 + i / 1000) % 26);
}

static void fx_shutdown(struct fx *fx)
{
    if (fx->shut)
        return;
    fx->shut = 1;
    if (fx->c && !fx->c_closing)
        hcl_close(fx->c, on_hcl_closed, fx);
    if (!fx->h_closing)
        httpd_close(fx->h, on_httpd_closed, fx);
    fx->c_closing = fx->h_closing = 1;
    /* The server has answered 503 on the wire; release our claim too. */
    if (fx->held)
        httpd_respond(fx->held, 200, "text/plain", "late", 4);
    fx->held = NULL;
    uv_close((uv_handle_t *)&fx->guard, NULL);
}

static void fx_done_one(struct fx *fx)
{
    if (--fx->pending == 0)
        fx_shutdown(fx);
}

static void fx_init_opts(struct fx *fx, const struct httpd_opts *o)
{
    memset(fx, 0, sizeof *fx);
    if (getenv("UT_DEBUG"))
        log_set_level(LOG_DEBUG);
    UT_EQ_INT(uv_loop_init(&fx->loop), 0);
    UT_EQ_INT(httpd_start(&fx->loop, o, &fx->h), 0);
    fx->port = httpd_port(fx->h);
    UT_ASSERT(fx->port > 0);
    UT_EQ_INT(hcl_new(&fx->loop, &(struct hcl_opts){.user_agent = "test_http"}, &fx->c), 0);
    uv_timer_init(&fx->loop, &fx->guard);
    uv_timer_start(&fx->guard, on_guard, GUARD_MS, 0);
    fx->big = mem_alloc(BIG_LEN);
    big_fill(fx->big, BIG_LEN);
}

static void fx_init(struct fx *fx)
{
    fx_init_opts(fx, &(struct httpd_opts){.bind = "127.0.0.1", .port = 0});
}

/* Run until everything is closed, then check nothing is left behind. */
static void fx_run(struct fx *fx)
{
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    UT_ASSERT(fx->shut);
    UT_EQ_INT(fx->h_closed, 1);
    UT_EQ_INT(fx->c_closed, fx->c ? 1 : 0);
    UT_EQ_INT(uv_loop_close(&fx->loop), 0);
    mem_free(fx->big);
}

static const char *fx_url(const struct fx *fx, const char *path)
{
    static char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", fx->port, path);
    return url;
}

/* ---- handlers ---------------------------------------------------------------- */

static void h_hello(struct httpd_req *r, void *arg)
{
    struct fx *fx = arg;
    fx->handler_calls++;
    const char *who = httpd_req_query(r, "name");
    const char *hdr = httpd_req_header(r, "x-ping"); /* case-insensitive */
    char body[128];
    int n = snprintf(body, sizeof body, "hello %s%s", who ? who : "world", hdr ? hdr : "");
    httpd_req_add_header(r, "X-Test", "yes");
    httpd_respond(r, 200, "text/plain; charset=utf-8", body, (size_t)n);
}

static void h_echo(struct httpd_req *r, void *arg)
{
    struct fx *fx = arg;
    fx->handler_calls++;
    size_t len;
    const char *body = httpd_req_body(r, &len);
    httpd_respond(r, 200, httpd_req_header(r, "Content-Type"), body, len);
}

static void h_big(struct httpd_req *r, void *arg)
{
    struct fx *fx = arg;
    httpd_respond(r, 200, "application/octet-stream", fx->big, BIG_LEN);
}

static void h_hold(struct httpd_req *r, void *arg)
{
    struct fx *fx = arg;
    fx->handler_calls++;
    UT_ASSERT(!fx->held);
    fx->held = r;
    if (fx->on_held)
        fx->on_held(fx);
}

struct later {
    uv_timer_t t;
    struct httpd_req *r;
};

static void on_later_closed(uv_handle_t *h)
{
    mem_free(h->data);
}

static void on_later(uv_timer_t *t)
{
    struct later *l = t->data;
    httpd_respond(l->r, 200, "text/plain", "later", 5);
    uv_close((uv_handle_t *)&l->t, on_later_closed);
}

/* Answers 50 ms after the request, from a timer: the connection is suspended
 * in between and resumed by httpd_respond. */
static void h_later(struct httpd_req *r, void *arg)
{
    struct fx *fx = arg;
    struct later *l = mem_calloc(1, sizeof *l);
    l->r = r;
    uv_timer_init(&fx->loop, &l->t);
    l->t.data = l;
    uv_timer_start(&l->t, on_later, 50, 0);
}

static void routes(struct fx *fx)
{
    UT_EQ_INT(httpd_route(fx->h, "GET", "/hello", h_hello, fx), 0);
    UT_EQ_INT(httpd_route(fx->h, "POST", "/echo", h_echo, fx), 0);
    UT_EQ_INT(httpd_route(fx->h, "GET", "/big", h_big, fx), 0);
    UT_EQ_INT(httpd_route(fx->h, "GET", "/hold", h_hold, fx), 0);
    UT_EQ_INT(httpd_route(fx->h, "GET", "/later", h_later, fx), 0);
    UT_EQ_INT(httpd_route(fx->h, "GET", "/hello", h_hello, fx), -EEXIST);
    UT_EQ_INT(httpd_route(fx->h, "GET", "nope", h_hello, fx), -EINVAL);
}

/* ---- client side ---------------------------------------------------------------- */

static void on_got(const struct hcl_response *r, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->err = r->err;
    g->status = r->status;
    g->body = mem_strndup(r->body, r->body_len);
    g->body_len = r->body_len;
    g->ctype = dup_or_null(hcl_response_header(r, "content-type"));
    g->xtest = dup_or_null(hcl_response_header(r, "X-TEST"));
    g->allow = dup_or_null(hcl_response_header(r, "Allow"));
    g->cache = dup_or_null(hcl_response_header(r, "Cache-Control"));
    g->ms = r->total_ms;
    UT_ASSERT(r->errstr);
    g->errstr = mem_strdup(r->errstr);
    if (r->err)
        UT_ASSERT(r->errstr[0]);
    fx_done_one(g->fx);
}

static void get(struct fx *fx, const char *path, struct got *g)
{
    g->fx = fx;
    fx->pending++;
    struct hcl_request rq = {.method = "GET", .url = fx_url(fx, path)};
    UT_EQ_INT(hcl_request(fx->c, &rq, on_got, g, NULL), 0);
}

/* ---- cases ---------------------------------------------------------------------- */

static void test_get_200(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    struct got g = {0};
    g.fx = &fx;
    fx.pending = 1;
    const char *hdrs[] = {"X-Ping: !", "Authorization: Bot s3cr3t", NULL};
    struct hcl_request rq = {.url = fx_url(&fx, "/hello?name=bot&x=1"), .headers = hdrs};
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &g, NULL), 0);
    fx_run(&fx);
    UT_EQ_INT(g.calls, 1);
    UT_EQ_INT(g.err, 0);
    UT_EQ_INT(g.status, 200);
    UT_EQ_STR(g.body, "hello bot!");
    UT_EQ_STR(g.xtest, "yes");
    UT_EQ_STR(g.ctype, "text/plain; charset=utf-8");
    UT_EQ_STR(g.cache, "no-store");
    got_free(&g);
}

static void test_post_echo_korean(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    static const char body[] = "{\"text\":\"안녕하세요, 세계! 봇이 답합니다 🤖\"}";
    struct got g = {.fx = &fx};
    fx.pending = 1;
    const char *hdrs[] = {"Content-Type: application/json; charset=utf-8", NULL};
    struct hcl_request rq = {.method = "POST",
                             .url = fx_url(&fx, "/echo"),
                             .headers = hdrs,
                             .body = body,
                             .body_len = sizeof body - 1};
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &g, NULL), 0);
    fx_run(&fx);
    UT_EQ_INT(g.calls, 1);
    UT_EQ_INT(g.status, 200);
    UT_EQ_INT(g.body_len, sizeof body - 1);
    UT_ASSERT(!memcmp(g.body, body, sizeof body - 1));
    UT_EQ_STR(g.ctype, "application/json; charset=utf-8");
    got_free(&g);
}

static void test_404_405(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    struct got g404 = {0}, g405 = {0};
    get(&fx, "/nope", &g404);
    g405.fx = &fx;
    fx.pending++;
    struct hcl_request rq = {.method = "DELETE", .url = fx_url(&fx, "/hello")};
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &g405, NULL), 0);
    fx_run(&fx);
    UT_EQ_INT(g404.calls, 1);
    UT_EQ_INT(g404.err, 0); /* an HTTP status is not an error */
    UT_EQ_INT(g404.status, 404);
    UT_EQ_STR(g404.body, "{\"error\":\"not found\"}");
    UT_EQ_STR(g404.ctype, "application/json");
    UT_EQ_STR(g404.cache, "no-store");
    UT_EQ_INT(g405.calls, 1);
    UT_EQ_INT(g405.status, 405);
    UT_CONTAINS(g405.allow, "GET");
    UT_EQ_INT(fx.handler_calls, 0);
    got_free(&g404);
    got_free(&g405);
}

static void test_answer_later(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    struct got g = {0};
    get(&fx, "/later", &g);
    fx_run(&fx);
    UT_EQ_INT(g.calls, 1);
    UT_EQ_INT(g.status, 200);
    UT_EQ_STR(g.body, "later");
    /* The timer fires at 50 ms; "promptly" means no wait for an MHD timeout. */
    UT_ASSERT(g.ms >= 45.0);
    UT_ASSERT(g.ms < ut_scale_ms(500));
    got_free(&g);
}

static void test_timeout(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    struct got g = {.fx = &fx};
    fx.pending = 1;
    struct hcl_request rq = {.url = fx_url(&fx, "/hold"), .timeout_ms = 200};
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &g, NULL), 0);
    fx_run(&fx);
    UT_EQ_INT(g.calls, 1);
    UT_EQ_INT(g.err, -ETIMEDOUT);
    UT_ASSERT(g.ms >= 190.0 && g.ms < ut_scale_ms(2000));
    UT_EQ_INT(fx.handler_calls, 1);
    got_free(&g);
}

static void test_max_response(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    struct got g = {.fx = &fx};
    fx.pending = 1;
    struct hcl_request rq = {.url = fx_url(&fx, "/big"), .max_response = 1000};
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &g, NULL), 0);
    fx_run(&fx);
    UT_EQ_INT(g.calls, 1);
    UT_EQ_INT(g.err, BC_ETOOBIG);
    UT_ASSERT(g.body_len <= 1000);
    got_free(&g);
}

static void test_conn_refused(void)
{
    int port = utsys_free_port(); /* nobody listens there */
    struct fx fx;
    fx_init(&fx);
    struct got g = {.fx = &fx};
    fx.pending = 1;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    const char *hdrs[] = {"Authorization: Bot sekrit-token-123", NULL};
    struct hcl_request rq = {.url = url, .headers = hdrs};
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &g, NULL), 0);
    fx_run(&fx);
    UT_EQ_INT(g.calls, 1);
    UT_EQ_INT(g.err, -ECONNREFUSED);
    UT_EQ_INT(g.status, 0);
    UT_ASSERT(g.errstr[0]); /* curl's own message */
    UT_NOT_CONTAINS(g.errstr, "sekrit");
    got_free(&g);
}

#define HUGE_LEN (3 * 1024 * 1024)

static void post_big(struct fx *fx, struct got *g, const char *extra_header, const char *data,
                     size_t len)
{
    const char *hdrs[] = {"Content-Type: text/plain", extra_header, NULL};
    g->fx = fx;
    fx->pending++;
    struct hcl_request rq = {.method = "POST",
                             .url = fx_url(fx, "/echo"),
                             .headers = hdrs,
                             .body = data,
                             .body_len = len};
    UT_EQ_INT(hcl_request(fx->c, &rq, on_got, g, NULL), 0);
}

/* With a Content-Length over the cap the handler never runs and nothing is
 * buffered. A client waiting for "100 Continue" (curl does above 1 MiB) is
 * answered at once; one that is already sending is drained first so that it
 * reads a clean 413 instead of a connection reset. */
static void test_body_too_large(void)
{
    struct fx fx;
    fx_init_opts(&fx, &(struct httpd_opts){.port = 0, .max_body = 1024});
    routes(&fx);
    char *data = mem_alloc(HUGE_LEN);
    memset(data, 'x', HUGE_LEN);
    struct got g[5] = {0};
    post_big(&fx, &g[0], NULL, data, 1024);                          /* at the cap: fine */
    post_big(&fx, &g[1], NULL, data, 4096);                          /* drained */
    post_big(&fx, &g[2], NULL, data, 512 * 1024);                    /* drained */
    post_big(&fx, &g[3], "Expect: 100-continue", data, 64 * 1024);   /* refused at once */
    post_big(&fx, &g[4], NULL, data, HUGE_LEN);                      /* curl expects 100 */
    fx_run(&fx);
    UT_EQ_INT(g[0].status, 200);
    UT_EQ_INT(g[0].body_len, 1024);
    for (int i = 1; i < 5; i++) {
        UT_EQ_INT(g[i].calls, 1);
        UT_EQ_INT(g[i].err, 0);
        UT_EQ_INT(g[i].status, 413);
        UT_EQ_STR(g[i].body, "{\"error\":\"body too large\"}");
    }
    UT_EQ_INT(fx.handler_calls, 1); /* only the first */
    for (int i = 0; i < 5; i++)
        got_free(&g[i]);
    mem_free(data);
}

/* No Content-Length (chunked upload): collection stops at the cap, the rest
 * is discarded and answered 413; a stream that goes on far beyond the cap
 * has its connection cut. */
static void test_body_too_large_chunked(void)
{
    struct fx fx;
    fx_init_opts(&fx, &(struct httpd_opts){.port = 0, .max_body = 1024});
    routes(&fx);
    char *data = mem_alloc(HUGE_LEN);
    memset(data, 'y', HUGE_LEN);
    struct got ok = {0}, big = {0}, huge = {0};
    post_big(&fx, &ok, "Transfer-Encoding: chunked", data, 1000);
    post_big(&fx, &big, "Transfer-Encoding: chunked", data, 200 * 1024);
    post_big(&fx, &huge, "Transfer-Encoding: chunked", data, HUGE_LEN);
    fx_run(&fx);
    UT_EQ_INT(ok.status, 200);
    UT_EQ_INT(ok.body_len, 1000);
    UT_EQ_INT(big.calls, 1);
    UT_EQ_INT(big.status, 413);
    UT_EQ_INT(huge.calls, 1);
    UT_ASSERT(huge.err < 0); /* cut off: no answer at all */
    UT_EQ_INT(fx.handler_calls, 1);
    got_free(&ok);
    got_free(&big);
    got_free(&huge);
    mem_free(data);
}

struct stream {
    struct got g;
    size_t off;
    int chunks;
    int bad;
    size_t largest; /* chunk */
};

static int on_chunk(const char *data, size_t len, void *arg)
{
    struct stream *s = arg;
    s->chunks++;
    if (s->off + len > BIG_LEN || memcmp(data, s->g.fx->big + s->off, len))
        s->bad++;
    s->off += len;
    if (len > s->largest)
        s->largest = len;
    return 0;
}

/* recv_buffer bounds what curl reads at a time (and keeps per transfer):
 * a 2 KiB buffer hands the body over in chunks of at most 2 KiB, where
 * curl's default gives 16 KiB ones. */
static void test_small_receive_buffer(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    struct stream s = {.g.fx = &fx}, d = {.g.fx = &fx};
    fx.pending = 2;
    struct hcl_request rq = {.url = fx_url(&fx, "/big"), .on_data = on_chunk, .recv_buffer = 2048};
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &s, NULL), 0);
    rq.recv_buffer = 0;
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &d, NULL), 0);
    fx_run(&fx);
    UT_EQ_INT(s.g.err, 0);
    UT_EQ_INT(s.off, BIG_LEN);
    UT_EQ_INT(s.bad, 0);
    UT_ASSERT(s.largest <= 2048);
    UT_EQ_INT(d.off, BIG_LEN);
    UT_ASSERT(d.largest > 2048);
    got_free(&s.g);
    got_free(&d.g);
}

static void test_streaming(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    struct stream s = {.g.fx = &fx};
    fx.pending = 1;
    struct hcl_request rq = {.url = fx_url(&fx, "/big"), .on_data = on_chunk, .max_response = 10};
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &s, NULL), 0);
    fx_run(&fx);
    UT_EQ_INT(s.g.calls, 1);
    UT_EQ_INT(s.g.err, 0);
    UT_EQ_INT(s.g.status, 200);
    UT_EQ_INT(s.g.body_len, 0); /* streamed, not buffered */
    UT_EQ_INT(s.off, BIG_LEN);
    UT_EQ_INT(s.bad, 0);
    UT_ASSERT(s.chunks > 1);
    got_free(&s.g);
}

static int on_chunk_stop(const char *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    struct stream *s = arg;
    return ++s->chunks >= 2;
}

static struct hcl_xfer *self_cancel;

static int on_chunk_cancel(const char *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    struct stream *s = arg;
    if (++s->chunks == 2)
        hcl_cancel(self_cancel); /* from inside curl: completes later */
    return 0;
}

/* on_data stops a stream by returning nonzero, or by cancelling it. */
static void test_streaming_abort(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    struct stream s = {.g.fx = &fx}, s2 = {.g.fx = &fx};
    fx.pending = 2;
    struct hcl_request rq = {.url = fx_url(&fx, "/big"), .on_data = on_chunk_stop};
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &s, NULL), 0);
    rq.on_data = on_chunk_cancel;
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &s2, &self_cancel), 0);
    fx_run(&fx);
    UT_EQ_INT(s.g.calls, 1);
    UT_EQ_INT(s.g.err, -ECANCELED);
    UT_EQ_INT(s.chunks, 2);
    UT_EQ_INT(s2.g.calls, 1);
    UT_EQ_INT(s2.g.err, -ECANCELED);
    UT_EQ_INT(s2.chunks, 2);
    got_free(&s.g);
    got_free(&s2.g);
}

static int on_chunk_close(const char *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    struct stream *s = arg;
    if (++s->chunks == 1) {
        hcl_close(s->g.fx->c, on_hcl_closed, s->g.fx); /* from inside curl */
        s->g.fx->c_closing = 1;
    }
    return 0;
}

/* hcl_close from inside on_data: the stream ends with BC_ESHUTDOWN, once. */
static void test_close_from_on_data(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    struct stream s = {.g.fx = &fx};
    fx.pending = 1;
    struct hcl_request rq = {.url = fx_url(&fx, "/big"), .on_data = on_chunk_close};
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &s, NULL), 0);
    fx_run(&fx);
    UT_EQ_INT(s.g.calls, 1);
    UT_EQ_INT(s.g.err, BC_ESHUTDOWN);
    UT_EQ_INT(s.chunks, 1);
    got_free(&s.g);
}

#define NCONC 200

static void test_concurrent(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    struct got *g = mem_calloc(NCONC, sizeof *g);
    for (int i = 0; i < NCONC; i++) {
        if (i % 2) {
            get(&fx, "/hello", &g[i]);
        } else {
            char body[32];
            int n = snprintf(body, sizeof body, "req-%d", i);
            g[i].fx = &fx;
            fx.pending++;
            struct hcl_request rq = {
                .method = "POST", .url = fx_url(&fx, "/echo"), .body = body, .body_len = (size_t)n};
            UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &g[i], NULL), 0);
        }
    }
    fx_run(&fx);
    for (int i = 0; i < NCONC; i++) {
        UT_EQ_INT(g[i].calls, 1);
        UT_EQ_INT(g[i].err, 0);
        UT_EQ_INT(g[i].status, 200);
        if (i % 2 == 0) {
            char want[32];
            snprintf(want, sizeof want, "req-%d", i);
            UT_EQ_STR(g[i].body, want);
        }
        got_free(&g[i]);
    }
    UT_EQ_INT(fx.handler_calls, NCONC);
    mem_free(g);
}

static struct hcl_xfer *cancel_me;

static void cancel_on_held(struct fx *fx)
{
    (void)fx;
    hcl_cancel(cancel_me);
    hcl_cancel(cancel_me); /* twice is harmless */
}

static void test_cancel(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    fx.on_held = cancel_on_held; /* cancel once the server has the request */
    struct got g = {.fx = &fx};
    fx.pending = 1;
    struct hcl_request rq = {.url = fx_url(&fx, "/hold")};
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &g, &cancel_me), 0);
    fx_run(&fx);
    UT_EQ_INT(g.calls, 1);
    UT_EQ_INT(g.err, -ECANCELED);
    UT_EQ_INT(fx.handler_calls, 1);
    got_free(&g);
}

static void close_client_on_held(struct fx *fx)
{
    /* Every transfer must end with BC_ESHUTDOWN; those callbacks drive
     * pending to 0, which closes the server too. */
    hcl_close(fx->c, on_hcl_closed, fx);
    fx->c_closing = 1;
    struct got unused = {0};
    UT_EQ_INT(hcl_request(fx->c, &(struct hcl_request){.url = "http://127.0.0.1:1/"}, on_got,
                          &unused, NULL),
              BC_ESHUTDOWN);
}

static void test_hcl_close_inflight(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    struct got g[4] = {0};
    get(&fx, "/hold", &g[0]); /* held by the server */
    get(&fx, "/later", &g[1]);
    get(&fx, "/later", &g[2]);
    get(&fx, "/later", &g[3]);
    fx.on_held = close_client_on_held;
    fx_run(&fx);
    for (int i = 0; i < 4; i++) {
        UT_EQ_INT(g[i].calls, 1);
        UT_EQ_INT(g[i].err, BC_ESHUTDOWN);
        got_free(&g[i]);
    }
}

static void on_close_server(uv_timer_t *t)
{
    struct fx *fx = t->data;
    httpd_close(fx->h, on_httpd_closed, fx);
    fx->h_closing = 1;
    /* httpd_close answered the held request 503; we still release it. */
    httpd_respond(fx->held, 200, "text/plain", "too late", 8);
    fx->held = NULL;
    uv_close((uv_handle_t *)t, NULL);
}

static uv_timer_t close_timer;

static void close_server_on_held(struct fx *fx)
{
    uv_timer_init(&fx->loop, &close_timer);
    close_timer.data = fx;
    uv_timer_start(&close_timer, on_close_server, 20, 0);
}

static void test_httpd_close_suspended(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    fx.on_held = close_server_on_held;
    struct got g = {.fx = &fx};
    fx.pending = 1;
    struct hcl_request rq = {.url = fx_url(&fx, "/hold")};
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &g, NULL), 0);
    fx_run(&fx);
    UT_EQ_INT(g.calls, 1);
    UT_EQ_INT(g.err, 0);
    UT_EQ_INT(g.status, 503);
    UT_EQ_STR(g.body, "{\"error\":\"shutting down\"}");
    got_free(&g);
}

static void count_done(void *arg)
{
    ++*(int *)arg;
}

static void test_addr_in_use(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct httpd *a, *b = NULL;
    UT_EQ_INT(httpd_start(&loop, &(struct httpd_opts){.bind = "127.0.0.1"}, &a), 0);
    int port = httpd_port(a);
    UT_EQ_INT(httpd_start(&loop, &(struct httpd_opts){.bind = "127.0.0.1", .port = port}, &b),
              -EADDRINUSE);
    UT_ASSERT(!b);
    UT_EQ_INT(httpd_start(&loop, &(struct httpd_opts){.bind = "localhost"}, &b), -EINVAL);
    UT_EQ_INT(httpd_start(&loop, &(struct httpd_opts){.port = 70000}, &b), -EINVAL);
    int closed = 0;
    httpd_close(a, count_done, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    UT_EQ_INT(closed, 1);
    UT_EQ_INT(uv_loop_close(&loop), 0);
}

static void test_ipv6(void)
{
    struct fx fx;
    uv_loop_t probe;
    uv_loop_init(&probe);
    struct httpd *h;
    int rc = httpd_start(&probe, &(struct httpd_opts){.bind = "::1"}, &h);
    if (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT) {
        fprintf(stderr, "test_ipv6: no IPv6 loopback here, skipped\n");
        uv_loop_close(&probe);
        return;
    }
    UT_EQ_INT(rc, 0);
    httpd_close(h, NULL, NULL);
    uv_run(&probe, UV_RUN_DEFAULT);
    UT_EQ_INT(uv_loop_close(&probe), 0);

    fx_init_opts(&fx, &(struct httpd_opts){.bind = "::1"});
    routes(&fx);
    struct got g = {.fx = &fx};
    fx.pending = 1;
    char url[64];
    snprintf(url, sizeof url, "http://[::1]:%d/hello", fx.port);
    UT_EQ_INT(hcl_request(fx.c, &(struct hcl_request){.url = url}, on_got, &g, NULL), 0);
    fx_run(&fx);
    UT_EQ_INT(g.status, 200);
    UT_EQ_STR(g.body, "hello world");
    got_free(&g);
}

/* ---- raw garbage: the server must answer or drop it, and keep serving ---- */

struct raw {
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_write_t wr;
    struct fx *fx;
    const char *send;
    char reply[512];
    size_t reply_len;
    struct got g;
};

static void raw_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    struct raw *r = h->data;
    b->base = r->reply + r->reply_len;
    b->len = sizeof r->reply - 1 - r->reply_len;
}

static void raw_closed(uv_handle_t *h)
{
    struct raw *r = h->data;
    get(r->fx, "/hello", &r->g); /* the server still works */
    r->fx->pending--;            /* already counted in test_malformed */
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    struct raw *r = s->data;
    if (n > 0)
        r->reply_len += (size_t)n;
    if (n < 0 || r->reply_len == sizeof r->reply - 1)
        uv_close((uv_handle_t *)s, raw_closed);
}

static void raw_written(uv_write_t *w, int status)
{
    (void)status;
    struct raw *r = w->data;
    uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
}

static void raw_connected(uv_connect_t *c, int status)
{
    struct raw *r = c->data;
    UT_EQ_INT(status, 0);
    uv_buf_t b = uv_buf_init((char *)r->send, (unsigned)strlen(r->send));
    r->wr.data = r;
    uv_write(&r->wr, (uv_stream_t *)&r->tcp, &b, 1, raw_written);
}

static void raw_start(struct fx *fx, struct raw *r, const char *send)
{
    r->fx = fx;
    r->send = send;
    uv_tcp_init(&fx->loop, &r->tcp);
    r->tcp.data = r;
    r->conn.data = r;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", fx->port, &a);
    UT_EQ_INT(uv_tcp_connect(&r->conn, &r->tcp, (struct sockaddr *)&a, raw_connected), 0);
}

static void test_malformed(void)
{
    struct fx fx;
    fx_init(&fx);
    routes(&fx);
    static struct raw r[4];
    memset(r, 0, sizeof r);
    fx.pending = 4; /* one /hello after each raw exchange */
    raw_start(&fx, &r[0], "GARBAGE\r\n\r\n");
    raw_start(&fx, &r[1],
              "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: -5\r\n\r\n");
    raw_start(&fx, &r[2], "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "zz\r\nhello\r\n0\r\n\r\n");
    raw_start(&fx, &r[3],
              "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\nBad header\r\n\r\n");
    fx_run(&fx);
    for (int i = 0; i < 4; i++) {
        UT_EQ_INT(r[i].g.status, 200);
        UT_EQ_STR(r[i].g.body, "hello world");
        UT_NOT_CONTAINS(r[i].reply, "HTTP/1.1 200"); /* none of them was served */
        got_free(&r[i].g);
    }
}

/* Name resolution failure maps to -EHOSTUNREACH (".invalid" never resolves;
 * a resolver that cannot even say so in time skips the case). */
static void test_dns_failure(void)
{
    struct fx fx;
    fx_init(&fx);
    struct got g = {.fx = &fx};
    fx.pending = 1;
    struct hcl_request rq = {.url = "http://no-such-host.invalid/", .timeout_ms = 3000};
    UT_EQ_INT(hcl_request(fx.c, &rq, on_got, &g, NULL), 0);
    fx_run(&fx);
    UT_EQ_INT(g.calls, 1);
    if (g.err == -ETIMEDOUT)
        fprintf(stderr, "test_dns_failure: resolver timed out, skipped\n");
    else
        UT_EQ_INT(g.err, -EHOSTUNREACH);
    got_free(&g);
}

static void h_many_headers(struct httpd_req *r, void *arg)
{
    (void)arg;
    for (int i = 0; i < HCL_MAX_HEADERS + 10; i++) {
        char name[32];
        snprintf(name, sizeof name, "X-H-%d", i);
        httpd_req_add_header(r, name, "v");
    }
    httpd_req_add_header(r, "X-Bad", "a\r\nInjected: 1"); /* dropped */
    httpd_respond(r, 200, NULL, "{}", 2);
}

static void h_few_headers(struct httpd_req *r, void *arg)
{
    (void)arg;
    httpd_req_add_header(r, "X-Bad", "a\r\nInjected: 1"); /* dropped */
    httpd_respond(r, 200, NULL, "{}", 2);
}

/* Response headers are capped in count: more is BC_ETOOBIG. Header values
 * with CR/LF never reach the wire. */
static void test_response_header_cap(void)
{
    struct fx fx;
    fx_init(&fx);
    UT_EQ_INT(httpd_route(fx.h, "GET", "/many", h_many_headers, &fx), 0);
    UT_EQ_INT(httpd_route(fx.h, "GET", "/few", h_few_headers, &fx), 0);
    struct got many = {0}, few = {0};
    get(&fx, "/many", &many);
    get(&fx, "/few", &few);
    fx_run(&fx);
    UT_EQ_INT(many.calls, 1);
    UT_EQ_INT(many.err, BC_ETOOBIG);
    UT_EQ_INT(few.err, 0);
    UT_EQ_INT(few.status, 200);
    UT_EQ_STR(few.ctype, "application/json");
    UT_ASSERT(!few.xtest);
    got_free(&many);
    got_free(&few);
}

/* A client that connects and never sends. */
struct idle {
    uv_tcp_t tcp;
    uv_connect_t conn;
    char buf[64];
    uint64_t t0, closed_at;
    int *left;
};

static void idle_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    struct idle *i = h->data;
    *b = uv_buf_init(i->buf, sizeof i->buf);
}

static void idle_closed(uv_handle_t *h)
{
    struct idle *i = h->data;
    i->closed_at = uv_now(h->loop);
    --*i->left;
}

static void idle_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    if (n < 0)
        uv_close((uv_handle_t *)s, idle_closed);
}

static void idle_connected(uv_connect_t *c, int status)
{
    struct idle *i = c->data;
    UT_EQ_INT(status, 0);
    uv_read_start((uv_stream_t *)&i->tcp, idle_alloc, idle_read);
}

struct limits {
    struct fx *fx;
    struct idle idle[2];
    int idle_left;
    struct got queued;
    uv_timer_t t;
    int sent;
};

static void on_limits_got(const struct hcl_response *r, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->err = r->err;
    g->status = r->status;
    g->ms = r->total_ms;
}

static void limits_step(uv_timer_t *t)
{
    struct limits *l = t->data;
    struct fx *fx = l->fx;
    if (!l->sent) { /* both idle connections are in: the server is full */
        struct hcl_request rq = {.url = fx_url(fx, "/hello")};
        UT_EQ_INT(hcl_request(fx->c, &rq, on_limits_got, &l->queued, NULL), 0);
        l->sent = 1;
    }
    if (l->idle_left || !l->queued.calls) {
        uv_timer_start(t, limits_step, 50, 0);
        return;
    }
    uv_close((uv_handle_t *)t, NULL);
    fx_shutdown(fx);
}

/* conn_limit and idle_timeout_s: two silent connections fill a server
 * limited to two, so a third waits in the listen backlog; after about a
 * second of silence the server drops the two and serves the third. */
static void test_limits(void)
{
    struct fx fx;
    fx_init_opts(&fx, &(struct httpd_opts){.conn_limit = 2, .idle_timeout_s = 1});
    routes(&fx);
    struct limits l = {.fx = &fx, .idle_left = 2};
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", fx.port, &a);
    for (int i = 0; i < 2; i++) {
        struct idle *id = &l.idle[i];
        uv_tcp_init(&fx.loop, &id->tcp);
        id->tcp.data = id->conn.data = id;
        id->left = &l.idle_left;
        id->t0 = uv_now(&fx.loop);
        UT_EQ_INT(uv_tcp_connect(&id->conn, &id->tcp, (struct sockaddr *)&a, idle_connected), 0);
    }
    uv_timer_init(&fx.loop, &l.t);
    l.t.data = &l;
    uv_timer_start(&l.t, limits_step, 100, 0);
    fx_run(&fx);
    for (int i = 0; i < 2; i++) {
        uint64_t idle_ms = l.idle[i].closed_at - l.idle[i].t0;
        UT_ASSERT(idle_ms >= 900 && idle_ms < (uint64_t)ut_scale_ms(3000));
    }
    UT_EQ_INT(l.queued.calls, 1);
    UT_EQ_INT(l.queued.err, 0);
    UT_EQ_INT(l.queued.status, 200);
    UT_ASSERT(l.queued.ms >= 700.0); /* it waited for a free slot */
}

static const struct ut_case cases[] = {
    UT_CASE(test_get_200),
    UT_CASE(test_post_echo_korean),
    UT_CASE(test_404_405),
    UT_CASE(test_answer_later),
    UT_CASE(test_timeout),
    UT_CASE(test_max_response),
    UT_CASE(test_conn_refused),
    UT_CASE(test_body_too_large),
    UT_CASE(test_body_too_large_chunked),
    UT_CASE(test_streaming),
    UT_CASE(test_streaming_abort),
    UT_CASE(test_close_from_on_data),
    UT_CASE(test_small_receive_buffer),
    UT_CASE(test_concurrent),
    UT_CASE(test_cancel),
    UT_CASE(test_hcl_close_inflight),
    UT_CASE(test_httpd_close_suspended),
    UT_CASE(test_addr_in_use),
    UT_CASE(test_ipv6),
    UT_CASE(test_malformed),
    UT_CASE(test_dns_failure),
    UT_CASE(test_response_header_cap),
    UT_CASE(test_limits),
    {0},
};
UT_MAIN(cases)
