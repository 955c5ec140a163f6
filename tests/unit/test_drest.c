/* test_drest: the Discord REST client against a fake Discord.
 *
 * The fake is our httpd on 127.0.0.1 (port 0). Each registered route answers
 * like Discord does: rate-limit headers with a bucket hash, per (bucket,
 * major parameter) state that refills a short window after its first use,
 * 429 bodies, and scripted error statuses. It records every arrival (time,
 * headers, body) and counts "violations": requests that arrived while their
 * bucket had nothing left. Cases that need Redis use TEST_REDIS_URL (the
 * runner's shared server) with a key prefix of their own. A guard timer
 * fails a hung case; at the end everything is closed and the loop must close
 * cleanly, so the sanitizers see any leak. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "discord/drest.h"
#include "base/err.h"
#include "io/hcl.h"
#include "io/httpd.h"
#include "base/log.h"
#include "base/mem.h"
#include "io/rds.h"
#include "base/secret.h"
#include "ut.h"
#include "ut_sys.h"
#include "ut_thttp.h"

#define GUARD_MS 40000
#define TOKEN "MTIzNDU2Nzg5.bot-SECRET-token_Zx9"
#define MAX_HITS 600

/* ---- the fake Discord ------------------------------------------------------------ */

struct fake;

struct froute {
    struct fake *fk;
    const char *method, *path;
    const char *bucket;   /* NULL: no rate-limit headers */
    const char *major;    /* state key with the bucket; NULL = the path */
    int limit, window_ms;
    int seq[8];           /* status for the first hits; 0 = normal answer */
    const char *err_body; /* body of a scripted non-429 status */
    const char *scope;    /* of a scripted 429 */
    double retry_after;   /* of a scripted 429, seconds */
    int hold;             /* never answer (until shutdown) */
    int hits;
};

struct hit {
    struct froute *rt;
    char auth[160], ua[160], ctype[200];
    int has_auth, has_ctype;
    char *body;
    size_t len;
    uint64_t t_us;
    int violation;
};

struct fbucket {
    char key[200];
    int remaining;
    uint64_t end_us;
};

struct fake {
    struct httpd *h;
    int port;
    struct froute routes[40];
    int nroutes;
    struct fbucket b[64];
    int nb;
    struct hit hits[MAX_HITS];
    int nhits;
    int violations;
    struct httpd_req *held[16];
    int nheld;
    void (*on_hit)(struct froute *rt, struct hit *h);
};

struct fx {
    uv_loop_t loop;
    struct fake fk;
    struct hcl *http;
    struct drest *d[2];
    int nd, nd_closed;
    struct rds *r[2];
    int nr;
    uv_timer_t guard;
    int pending;  /* callbacks still expected */
    int no_auto;  /* do not shut down when pending reaches 0 */
    int shut, h_closed, c_closed;
    uint64_t t0_us;
    int done_seq;
    char prefix[96];
    struct secret token;
    int logpipe[2];
    uv_poll_t logpoll;
    int capturing;
    struct buf logs;
};

static struct fx F;

static uint64_t now_us(void)
{
    return uv_hrtime() / 1000;
}

static double wall_now(void)
{
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static struct fbucket *fk_bucket(struct fake *fk, const char *bucket, const char *major)
{
    char key[200];
    snprintf(key, sizeof key, "%s|%s", bucket, major);
    for (int i = 0; i < fk->nb; i++)
        if (!strcmp(fk->b[i].key, key))
            return &fk->b[i];
    UT_ASSERT(fk->nb < 64);
    struct fbucket *b = &fk->b[fk->nb++];
    snprintf(b->key, sizeof b->key, "%s", key);
    return b;
}

static void add_rl_headers(struct httpd_req *r, struct froute *rt, int remaining, uint64_t left_us)
{
    char v[64];
    httpd_req_add_header(r, "X-RateLimit-Bucket", rt->bucket);
    snprintf(v, sizeof v, "%d", rt->limit);
    httpd_req_add_header(r, "X-RateLimit-Limit", v);
    snprintf(v, sizeof v, "%d", remaining);
    httpd_req_add_header(r, "X-RateLimit-Remaining", v);
    snprintf(v, sizeof v, "%.3f", wall_now() + (double)left_us / 1e6);
    httpd_req_add_header(r, "X-RateLimit-Reset", v);
    snprintf(v, sizeof v, "%.3f", (double)left_us / 1e6);
    httpd_req_add_header(r, "X-RateLimit-Reset-After", v);
}

static void answer_429(struct httpd_req *r, const char *scope, double retry_after)
{
    char body[160], v[32];
    int global = !strcmp(scope, "global");
    int n = snprintf(body, sizeof body,
                     "{\"message\":\"You are being rate limited.\",\"retry_after\":%.3f,\"global\":%s}",
                     retry_after, global ? "true" : "false");
    httpd_req_add_header(r, "X-RateLimit-Scope", scope);
    if (global)
        httpd_req_add_header(r, "X-RateLimit-Global", "true");
    snprintf(v, sizeof v, "%d", (int)(retry_after + 0.999));
    httpd_req_add_header(r, "Retry-After", v);
    httpd_respond(r, 429, "application/json", body, (size_t)n);
}

static struct hit *record(struct froute *rt, struct httpd_req *r)
{
    struct fake *fk = rt->fk;
    UT_ASSERT(fk->nhits < MAX_HITS);
    struct hit *h = &fk->hits[fk->nhits++];
    memset(h, 0, sizeof *h);
    h->rt = rt;
    h->t_us = now_us();
    const char *a = httpd_req_header(r, "Authorization");
    const char *ua = httpd_req_header(r, "User-Agent");
    const char *ct = httpd_req_header(r, "Content-Type");
    h->has_auth = a != NULL;
    h->has_ctype = ct != NULL;
    snprintf(h->auth, sizeof h->auth, "%s", a ? a : "");
    snprintf(h->ua, sizeof h->ua, "%s", ua ? ua : "");
    snprintf(h->ctype, sizeof h->ctype, "%s", ct ? ct : "");
    size_t len;
    const char *body = httpd_req_body(r, &len);
    h->body = mem_alloc(len + 1);
    memcpy(h->body, body, len);
    h->body[len] = '\0';
    h->len = len;
    return h;
}

static void fk_handler(struct httpd_req *r, void *arg)
{
    struct froute *rt = arg;
    struct fake *fk = rt->fk;
    struct hit *h = record(rt, r);
    int i = rt->hits++;
    if (fk->on_hit)
        fk->on_hit(rt, h);
    if (rt->hold) {
        UT_ASSERT(fk->nheld < 16);
        fk->held[fk->nheld++] = r;
        return;
    }
    int st = i < 8 ? rt->seq[i] : 0;
    if (st == 429) {
        answer_429(r, rt->scope ? rt->scope : "user", rt->retry_after);
        return;
    }
    if (st) {
        const char *b = rt->err_body ? rt->err_body : "{\"message\":\"scripted\",\"code\":0}";
        httpd_respond(r, st, "application/json", b, strlen(b));
        return;
    }
    if (rt->bucket) {
        uint64_t now = now_us();
        struct fbucket *b = fk_bucket(fk, rt->bucket, rt->major ? rt->major : rt->path);
        if (now >= b->end_us) {
            b->remaining = rt->limit;
            b->end_us = now + (uint64_t)rt->window_ms * 1000;
        }
        if (b->remaining == 0) {
            fk->violations++;
            h->violation = 1;
            add_rl_headers(r, rt, 0, b->end_us - now);
            answer_429(r, "user", (double)(b->end_us - now) / 1e6);
            return;
        }
        b->remaining--;
        add_rl_headers(r, rt, b->remaining, b->end_us - now);
    }
    char body[64];
    int n = snprintf(body, sizeof body, "{\"id\":\"%d\",\"hit\":%d}", fk->nhits, i);
    httpd_respond(r, 200, "application/json", body, (size_t)n);
}

static struct froute *fk_route(const char *method, const char *path, const char *bucket,
                               const char *major, int limit, int window_ms)
{
    struct fake *fk = &F.fk;
    UT_ASSERT(fk->nroutes < 40);
    struct froute *rt = &fk->routes[fk->nroutes++];
    memset(rt, 0, sizeof *rt);
    rt->fk = fk;
    rt->method = method;
    rt->path = path;
    rt->bucket = bucket;
    rt->major = major;
    rt->limit = limit;
    rt->window_ms = window_ms;
    UT_EQ_INT(httpd_route(fk->h, method, path, fk_handler, rt), 0);
    return rt;
}

/* Most arrivals within any one-second window, over every hit. */
static int max_per_second(void)
{
    int best = 0;
    for (int j = 0, i = 0; j < F.fk.nhits; j++) {
        while (F.fk.hits[j].t_us - F.fk.hits[i].t_us >= 1000000)
            i++;
        if (j - i + 1 > best)
            best = j - i + 1;
    }
    return best;
}

/* ---- fixture ------------------------------------------------------------------------ */

static void on_guard(uv_timer_t *t)
{
    (void)t;
    UT_FAIL("guard timer fired: the case hung (pending %d)", F.pending);
}

static void on_httpd_closed(void *arg)
{
    (void)arg;
    F.h_closed++;
}

static void on_hcl_closed(void *arg)
{
    (void)arg;
    F.c_closed++;
}

static void log_drain(void)
{
    char tmp[4096];
    ssize_t n;
    while ((n = read(F.logpipe[0], tmp, sizeof tmp)) > 0)
        UT_EQ_INT(buf_append(&F.logs, tmp, (size_t)n), 0);
}

static void on_log_readable(uv_poll_t *p, int status, int events)
{
    (void)p;
    (void)status;
    (void)events;
    log_drain();
}

/* Log lines go to a pipe drained by the loop (a full pipe would block the
 * writer, which is this very thread). */
static void capture_logs(void)
{
    UT_EQ_INT(pipe(F.logpipe), 0);
    fcntl(F.logpipe[0], F_SETFL, O_NONBLOCK);
    fcntl(F.logpipe[1], F_SETPIPE_SZ, 1 << 20);
    buf_init(&F.logs, 8u << 20);
    UT_EQ_INT(uv_poll_init(&F.loop, &F.logpoll, F.logpipe[0]), 0);
    UT_EQ_INT(uv_poll_start(&F.logpoll, UV_READABLE, on_log_readable), 0);
    log_setup("ut-1", "chat", LOG_DEBUG, F.logpipe[1]);
    F.capturing = 1;
}

static void all_closed(void)
{
    hcl_close(F.http, on_hcl_closed, NULL);
    for (int i = 0; i < F.nr; i++)
        rds_close(F.r[i], NULL, NULL);
    httpd_close(F.fk.h, on_httpd_closed, NULL);
    for (int i = 0; i < F.fk.nheld; i++)
        httpd_respond(F.fk.held[i], 200, "application/json", "{}", 2);
    F.fk.nheld = 0;
    uv_close((uv_handle_t *)&F.guard, NULL);
    if (F.capturing)
        uv_close((uv_handle_t *)&F.logpoll, NULL);
}

static void on_drest_closed(void *arg)
{
    (void)arg;
    if (++F.nd_closed == F.nd)
        all_closed();
}

static void fx_shutdown(void)
{
    if (F.shut)
        return;
    F.shut = 1;
    if (!F.nd)
        all_closed();
    for (int i = 0; i < F.nd; i++)
        drest_close(F.d[i], on_drest_closed, NULL);
}

static void fx_init(const char *name)
{
    memset(&F, 0, sizeof F);
    if (getenv("UT_DEBUG"))
        log_set_level(LOG_DEBUG);
    UT_EQ_INT(uv_loop_init(&F.loop), 0);
    UT_EQ_INT(httpd_start(&F.loop, &(struct httpd_opts){.bind = "127.0.0.1"}, &F.fk.h), 0);
    F.fk.port = httpd_port(F.fk.h);
    UT_EQ_INT(hcl_new(&F.loop, &(struct hcl_opts){.user_agent = "curl-default"}, &F.http), 0);
    uv_timer_init(&F.loop, &F.guard);
    uv_timer_start(&F.guard, on_guard, GUARD_MS, 0);
    snprintf(F.prefix, sizeof F.prefix, "drest-ut:%d:%s", (int)getpid(), name);
    secret_set(&F.token, TOKEN);
}

static const char *fx_base(void)
{
    static char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api/v10", F.fk.port);
    return url;
}

static void on_rds_state(struct rds *r, int up, void *arg)
{
    (void)r;
    (void)up;
    (void)arg;
}

/* n Redis connections to TEST_REDIS_URL, waited for until up. */
static void fx_redis(int n)
{
    const char *url = getenv("TEST_REDIS_URL");
    if (!url)
        UT_FAIL("TEST_REDIS_URL is not set");
    char err[160];
    for (int i = 0; i < n; i++)
        UT_EQ_INT(rds_new(&F.loop, &(struct rds_opts){.url = url, .name = "drest-ut"}, on_rds_state,
                          NULL, &F.r[F.nr++], err, sizeof err),
                  0);
    for (;;) {
        int up = 0;
        for (int i = 0; i < F.nr; i++)
            up += rds_up(F.r[i]);
        if (up == F.nr)
            break;
        uv_run(&F.loop, UV_RUN_ONCE);
    }
}

static struct drest *fx_drest(struct drest_opts o)
{
    if (!o.api_base)
        o.api_base = fx_base();
    if (!o.token)
        o.token = &F.token;
    if (!o.version)
        o.version = "9.9.9";
    o.http = F.http;
    if (!o.redis_prefix)
        o.redis_prefix = F.prefix;
    UT_ASSERT(F.nd < 2);
    UT_EQ_INT(drest_new(&F.loop, &o, &F.d[F.nd]), 0);
    return F.d[F.nd++];
}

static void fx_run(void)
{
    F.t0_us = F.t0_us ? F.t0_us : now_us();
    if (!F.pending && !F.no_auto)
        fx_shutdown();
    uv_run(&F.loop, UV_RUN_DEFAULT);
    UT_ASSERT(F.shut);
    UT_EQ_INT(F.nd_closed, F.nd);
    UT_EQ_INT(F.h_closed, 1);
    UT_EQ_INT(F.c_closed, 1);
    UT_EQ_INT(uv_loop_close(&F.loop), 0);
    if (F.capturing) {
        log_drain();
        log_setup("ut-1", "chat", LOG_INFO, STDERR_FILENO);
        close(F.logpipe[0]);
        close(F.logpipe[1]);
    }
}

static void fx_free(void)
{
    for (int i = 0; i < F.fk.nhits; i++)
        mem_free(F.fk.hits[i].body);
    buf_free(&F.logs);
    secret_clear(&F.token);
}

/* ---- client side --------------------------------------------------------------------- */

/* Stats are read in every callback (d is freed by the close that follows
 * the last one), so this holds them as of the last completion. */
static struct drest_stats last_stats;

struct got {
    int calls, err, code, attempts, order;
    long status;
    char errstr[256], message[256], detail[320], body[256];
    uint64_t t_us;
    void (*then)(struct got *g);
};

static void on_got(const struct drest_resp *r, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->err = r->err;
    g->status = r->status;
    g->code = r->code;
    g->attempts = r->attempts;
    g->order = ++F.done_seq;
    g->t_us = now_us();
    UT_ASSERT(r->errstr && r->message && r->detail && r->body);
    UT_ASSERT(!r->err == !r->errstr[0]);
    snprintf(g->errstr, sizeof g->errstr, "%s", r->errstr);
    snprintf(g->message, sizeof g->message, "%s", r->message);
    snprintf(g->detail, sizeof g->detail, "%s", r->detail);
    snprintf(g->body, sizeof g->body, "%.*s", (int)(r->body_len < 255 ? r->body_len : 255), r->body);
    if (F.nd)
        drest_stats(F.d[0], &last_stats);
    if (g->then)
        g->then(g);
    if (--F.pending == 0 && !F.no_auto)
        fx_shutdown();
}

static void send_rq(struct drest *d, const struct drest_req *rq, struct got *g)
{
    UT_EQ_INT(drest_request(d, rq, on_got, g), 0);
    F.pending++;
}

static void dsend(struct drest *d, const char *m, const char *path, const char *json, int bot,
                 struct got *g)
{
    struct drest_req rq = {.method = m, .path = path, .json = json, .bot_auth = bot};
    send_rq(d, &rq, g);
}

static double since_t0_ms(uint64_t t_us)
{
    return (double)(t_us - F.t0_us) / 1000.0;
}

/* Hits of one route, in arrival order. */
static int hits_of(struct froute *rt, struct hit **out, int max)
{
    int n = 0;
    for (int i = 0; i < F.fk.nhits && n < max; i++)
        if (F.fk.hits[i].rt == rt)
            out[n++] = &F.fk.hits[i];
    return n;
}

/* ---- cases ------------------------------------------------------------------------------ */

static void test_headers_and_auth(void)
{
    fx_init("headers");
    struct froute *msg = fk_route("POST", "/api/v10/channels/100/messages", "b-msg", "c100", 5, 1000);
    struct froute *cb =
        fk_route("POST", "/api/v10/interactions/900/itok-SECRET/callback", NULL, NULL, 0, 0);
    struct froute *me = fk_route("GET", "/api/v10/users/@me", "b-me", "", 5, 1000);
    struct froute *react = fk_route(
        "PUT", "/api/v10/channels/100/messages/5/reactions/\xF0\x9F\x91\x8D/@me", "b-re", "c100", 1, 250);
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1});
    struct got g[4] = {0};
    dsend(d, "POST", "/channels/100/messages", "{\"content\":\"안녕하세요\"}", 1, &g[0]);
    dsend(d, "POST", "/interactions/900/itok-SECRET/callback", "{\"type\":5}", 0, &g[1]);
    dsend(d, "GET", "/users/@me", NULL, 1, &g[2]);
    dsend(d, "PUT", "/channels/100/messages/5/reactions/%F0%9F%91%8D/@me", NULL, 1, &g[3]);
    fx_run();
    for (int i = 0; i < 4; i++) {
        UT_EQ_INT(g[i].calls, 1);
        UT_EQ_INT(g[i].err, 0);
        UT_EQ_INT(g[i].status, 200);
        UT_CONTAINS(g[i].body, "\"id\"");
    }
    UT_EQ_INT(F.fk.nhits, 4);
    struct hit *h;
    UT_EQ_INT(hits_of(msg, &h, 1), 1);
    UT_EQ_STR(h->auth, "Bot " TOKEN);
    UT_EQ_STR(h->ua, "DiscordBot (https://github.com/discord-ai-bot-cluster, 9.9.9)");
    UT_EQ_STR(h->ctype, "application/json");
    UT_EQ_STR(h->body, "{\"content\":\"안녕하세요\"}");
    UT_EQ_INT(hits_of(cb, &h, 1), 1);
    UT_ASSERT(!h->has_auth); /* interaction callbacks carry no bot token */
    UT_EQ_STR(h->ua, "DiscordBot (https://github.com/discord-ai-bot-cluster, 9.9.9)");
    UT_EQ_STR(h->ctype, "application/json");
    UT_EQ_STR(h->body, "{\"type\":5}");
    UT_EQ_INT(hits_of(me, &h, 1), 1);
    UT_EQ_STR(h->auth, "Bot " TOKEN);
    UT_ASSERT(!h->has_ctype || !h->ctype[0]); /* no body, no content type */
    UT_EQ_INT(hits_of(react, &h, 1), 1);
    UT_EQ_INT(h->len, 0);
    UT_ASSERT(!h->has_ctype || !h->ctype[0]); /* not curl's form-urlencoded */
    fx_free();
}

/* Split a multipart body the way a server would, and check each part. */
struct part {
    char disp[300], ctype[120];
    const char *data;
    size_t len;
};

static int multipart_parse(const char *body, size_t len, const char *ctype, struct part *parts, int max)
{
    const char *bp = strstr(ctype, "boundary=");
    UT_ASSERT(bp);
    char delim[128];
    snprintf(delim, sizeof delim, "--%s", bp + 9);
    size_t dl = strlen(delim);
    UT_ASSERT(len > dl && !memcmp(body, delim, dl));
    const char *p = body + dl, *end = body + len;
    int n = 0;
    for (;;) {
        if (end - p >= 4 && !memcmp(p, "--\r\n", 4)) {
            UT_ASSERT(p + 4 == end); /* closing delimiter ends the body */
            return n;
        }
        UT_ASSERT(end - p >= 2 && !memcmp(p, "\r\n", 2));
        p += 2;
        UT_ASSERT(n < max);
        struct part *pt = &parts[n++];
        memset(pt, 0, sizeof *pt);
        const char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        UT_ASSERT(hend);
        for (const char *l = p; l < hend;) {
            const char *le = memmem(l, (size_t)(hend + 2 - l), "\r\n", 2);
            size_t ll = (size_t)(le - l);
            if (ll > 20 && !strncasecmp(l, "Content-Disposition: ", 21))
                snprintf(pt->disp, sizeof pt->disp, "%.*s", (int)(ll - 21), l + 21);
            else if (ll > 14 && !strncasecmp(l, "Content-Type: ", 14))
                snprintf(pt->ctype, sizeof pt->ctype, "%.*s", (int)(ll - 14), l + 14);
            else
                UT_FAIL("unexpected part header %.*s", (int)ll, l);
            l = le + 2;
        }
        pt->data = hend + 4;
        char next[132];
        snprintf(next, sizeof next, "\r\n%s", delim);
        const char *de = memmem(pt->data, (size_t)(end - pt->data), next, strlen(next));
        UT_ASSERT(de);
        pt->len = (size_t)(de - pt->data);
        p = de + strlen(next);
    }
}

static void test_multipart_upload(void)
{
    fx_init("multipart");
    struct froute *msg = fk_route("POST", "/api/v10/channels/100/messages", "b-msg", "c100", 5, 1000);
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1});
    static const char json[] =
        "{\"content\":\"파일\",\"attachments\":[{\"id\":0,\"filename\":\"a.txt\"},{\"id\":1,\"filename\":\"음성.ogg\"}]}";
    static const char bin[] = "OggS\0\0\r\n--not-a-boundary\r\n\xff\xfe\0tail";
    struct drest_file files[2] = {
        {.name = "a.txt", .content_type = "text/plain", .data = "hello\n", .len = 6},
        {.name = "음성.ogg", .content_type = "audio/ogg", .data = bin, .len = sizeof bin - 1},
    };
    struct got g = {0};
    struct drest_req rq = {.method = "POST",
                           .path = "/channels/100/messages",
                           .json = json,
                           .files = files,
                           .nfiles = 2,
                           .bot_auth = 1};
    send_rq(d, &rq, &g);
    fx_run();
    UT_EQ_INT(g.err, 0);
    struct hit *h;
    UT_EQ_INT(hits_of(msg, &h, 1), 1);
    UT_ASSERT(!strncmp(h->ctype, "multipart/form-data; boundary=", 30));
    struct part p[4];
    UT_EQ_INT(multipart_parse(h->body, h->len, h->ctype, p, 4), 3);
    UT_EQ_STR(p[0].disp, "form-data; name=\"payload_json\"");
    UT_EQ_STR(p[0].ctype, "application/json");
    UT_EQ_INT(p[0].len, sizeof json - 1);
    UT_ASSERT(!memcmp(p[0].data, json, sizeof json - 1));
    UT_EQ_STR(p[1].disp, "form-data; name=\"files[0]\"; filename=\"a.txt\"");
    UT_EQ_STR(p[1].ctype, "text/plain");
    UT_EQ_INT(p[1].len, 6);
    UT_ASSERT(!memcmp(p[1].data, "hello\n", 6));
    UT_EQ_STR(p[2].disp, "form-data; name=\"files[1]\"; filename=\"음성.ogg\"");
    UT_EQ_STR(p[2].ctype, "audio/ogg");
    UT_EQ_INT(p[2].len, sizeof bin - 1);
    UT_ASSERT(!memcmp(p[2].data, bin, sizeof bin - 1));
    fx_free();
}

/* ---- a 200 MiB video ------------------------------------------------------------------- */

#define BIG_MB 200 /* VIDEO_MAX_MB's default: the largest video the bot keeps */

static struct utlag big_lag;

static void big_done(struct got *g)
{
    (void)g;
    utlag_stop(&big_lag);
}

/* A sparse file of BIG_MB MiB with three markers: at the start, in the
 * middle and at the very end. */
static void big_file(char *path, size_t n, const char *const *marks)
{
    snprintf(path, n, "%s/big_XXXXXX", utsys_tmp_dir());
    int fd = mkstemp(path);
    UT_ASSERT(fd >= 0);
    off_t size = (off_t)BIG_MB << 20;
    UT_EQ_INT(ftruncate(fd, size), 0);
    off_t at[3] = {0, size / 2, size - UTTH_MARKER_LEN};
    for (int i = 0; i < 3; i++)
        UT_EQ_INT(pwrite(fd, marks[i], UTTH_MARKER_LEN, at[i]), UTTH_MARKER_LEN);
    close(fd);
}

/* The video's upload (PATCH of the deferred response, payload_json and
 * the file) streams the file from disk: the loop keeps its pace and the
 * process does not grow by the file's size. */
static void test_upload_200mib_file_streams(void)
{
    static const char *const marks[3] = {"<<first-marker>>", "<<middle-mark>>>", "<<the-last-one>>"};
    char path[600];
    big_file(path, sizeof path, marks);
    struct utth sink;
    utth_sink(&sink, marks, 3);
    fx_init("big");
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/api/v10", sink.port);
    /* default limits: a file sent from disk is not held in memory */
    struct drest *d = fx_drest((struct drest_opts){.api_base = base, .cluster_size = 1});
    size_t size = (size_t)BIG_MB << 20;
    long rss0 = utmem_kb("VmRSS");
    utmem_reset_peak();
    utlag_start(&big_lag, &F.loop, 5);
    uv_update_time(&F.loop);
    struct drest_file file = {.name = "video.mp4", .content_type = "video/mp4", .path = path};
    struct got g = {.then = big_done};
    struct drest_req rq = {.method = "PATCH", .path = "/webhooks/1/tok/messages/@original",
                           .json = "{\"content\":\"ready\",\"attachments\":[{\"id\":0,\"filename\":\"video.mp4\"}]}",
                           .files = &file, .nfiles = 1, .timeout_ms = 120000};
    send_rq(d, &rq, &g);
    fx_run();
    long grown_mb = (utmem_kb("VmHWM") - rss0) / 1024;
    utth_stop(&sink);
    unlink(path);
    fprintf(stderr, "upload: err %d, lag %.1f ms, peak RSS +%ld MiB, body %zu\n", g.err, big_lag.max_ms, grown_mb,
            sink.body_len);
    UT_EQ_INT(g.err, 0);
    UT_EQ_INT(sink.requests, 1);
    UT_EQ_INT(sink.found, 3);
    UT_ASSERT(sink.body_len > size && sink.body_len < size + 4096);
    UT_CONTAINS(sink.head, "name=\"payload_json\"");
    UT_CONTAINS(sink.head, "name=\"files[0]\"; filename=\"video.mp4\"");
    UT_ASSERT(!strncmp(sink.ctype, "multipart/form-data; boundary=", 30));
    if (grown_mb > 48)
        UT_FAIL("the process grew by %ld MiB for a %d MiB upload", grown_mb, BIG_MB);
    if (big_lag.max_ms > 200 * ut_scale()) /* before streaming: seconds */
        UT_FAIL("the loop stalled %.0f ms during the upload", big_lag.max_ms);
    fx_free();
}

static void test_burst_one_channel_never_exhausted(void)
{
    fx_init("burst");
    struct froute *msg = fk_route("POST", "/api/v10/channels/100/messages", "b-msg", "c100", 5, 250);
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1});
    static struct got g[40];
    memset(g, 0, sizeof g);
    char json[40][48];
    for (int i = 0; i < 40; i++) {
        snprintf(json[i], sizeof json[i], "{\"content\":\"message %02d\"}", i);
        dsend(d, "POST", "/channels/100/messages", json[i], 1, &g[i]);
    }
    F.t0_us = now_us();
    fx_run();
    UT_EQ_INT(F.fk.violations, 0);
    UT_EQ_INT(F.fk.nhits, 40);
    struct hit *h[40];
    UT_EQ_INT(hits_of(msg, h, 40), 40);
    for (int i = 0; i < 40; i++) {
        UT_EQ_INT(g[i].err, 0);
        UT_EQ_INT(g[i].attempts, 1);
        UT_EQ_INT(g[i].order, i + 1);  /* callbacks in order */
        UT_EQ_STR(h[i]->body, json[i]); /* and Discord saw them in order */
    }
    /* 8 windows of 5: at least 7 full waits of 250 ms. */
    UT_ASSERT(since_t0_ms(g[39].t_us) >= 7 * 250);
    fx_free();
}

static void test_burst_stats(void)
{
    fx_init("burststats");
    fk_route("POST", "/api/v10/channels/100/messages", "b-msg", "c100", 3, 200);
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1});
    struct got g[7] = {0};
    for (int i = 0; i < 7; i++)
        dsend(d, "POST", "/channels/100/messages", "{\"content\":\"x\"}", 1, &g[i]);
    fx_run();
    UT_EQ_INT(F.fk.violations, 0);
    UT_EQ_INT(last_stats.sent, 7);
    UT_EQ_INT(last_stats.status_2xx, 7);
    UT_EQ_INT(last_stats.rl429_user + last_stats.rl429_global + last_stats.rl429_shared, 0);
    UT_ASSERT(last_stats.rl_waits >= 2);     /* two windows waited for */
    UT_ASSERT(last_stats.rl_wait_ms >= 300); /* each nearly 200 ms */
    UT_EQ_INT(last_stats.queued, 0);
    UT_EQ_INT(last_stats.invalid_10min, 0);
    UT_EQ_INT(last_stats.global_fallback, 1); /* no redis here */
    fx_free();
}

static void test_two_channels_independent(void)
{
    fx_init("twochan");
    fk_route("POST", "/api/v10/channels/100/messages", "b-msg", "c100", 2, 1500);
    fk_route("POST", "/api/v10/channels/200/messages", "b-msg", "c200", 2, 1500);
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1});
    struct got a[6] = {0}, b[2] = {0};
    for (int i = 0; i < 6; i++)
        dsend(d, "POST", "/channels/100/messages", "{\"content\":\"a\"}", 1, &a[i]);
    for (int i = 0; i < 2; i++)
        dsend(d, "POST", "/channels/200/messages", "{\"content\":\"b\"}", 1, &b[i]);
    F.t0_us = now_us();
    fx_run();
    UT_EQ_INT(F.fk.violations, 0);
    for (int i = 0; i < 6; i++)
        UT_EQ_INT(a[i].err, 0);
    /* Channel 200 did not wait for channel 100's exhausted bucket. */
    UT_ASSERT(since_t0_ms(b[1].t_us) < ut_scale_ms(1000));
    UT_ASSERT(b[1].t_us < a[2].t_us);
    UT_ASSERT(since_t0_ms(a[2].t_us) >= 1400);
    UT_ASSERT(since_t0_ms(a[5].t_us) >= 2900);
    fx_free();
}

static struct got cb2;

static void second_interaction(struct got *g)
{
    (void)g;
    dsend(F.d[0], "POST", "/interactions/901/jtok/callback", "{\"type\":5}", 0, &cb2);
}

static void test_interaction_not_delayed(void)
{
    fx_init("interaction");
    fk_route("POST", "/api/v10/channels/100/messages", "b-msg", "c100", 1, 2000);
    /* One bucket for the callback route, one state per interaction. */
    fk_route("POST", "/api/v10/interactions/900/itok/callback", "b-cb", "i900", 1, 2000);
    fk_route("POST", "/api/v10/interactions/901/jtok/callback", "b-cb", "i901", 1, 2000);
    fk_route("PATCH", "/api/v10/webhooks/800/itok/messages/@original", "b-wh", "w800", 5, 5000);
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1});
    struct got m[3] = {0}, cb[2] = {0}, edit = {0};
    memset(&cb2, 0, sizeof cb2);
    for (int i = 0; i < 3; i++)
        dsend(d, "POST", "/channels/100/messages", "{\"content\":\"m\"}", 1, &m[i]);
    for (int i = 0; i < 2; i++)
        dsend(d, "POST", "/interactions/900/itok/callback", "{\"type\":5}", 0, &cb[i]);
    cb[0].then = second_interaction; /* sent once the bucket is known */
    dsend(d, "PATCH", "/webhooks/800/itok/messages/@original", "{\"content\":\"done\"}", 0, &edit);
    F.t0_us = now_us();
    fx_run();
    UT_EQ_INT(F.fk.violations, 0);
    UT_EQ_INT(cb[0].err + cb[1].err + cb2.err + edit.err, 0);
    /* Not delayed by the exhausted channel lane, nor by another token's. */
    UT_ASSERT(since_t0_ms(cb[0].t_us) < ut_scale_ms(500));
    UT_ASSERT(since_t0_ms(cb2.t_us) < ut_scale_ms(500));
    UT_ASSERT(since_t0_ms(edit.t_us) < ut_scale_ms(500));
    UT_ASSERT(since_t0_ms(cb[1].t_us) >= 1900); /* its own lane is limited, though */
    UT_ASSERT(since_t0_ms(m[1].t_us) >= 1900);  /* the channel lane really was exhausted */
    fx_free();
}

static void test_429_user_waits_retry_after(void)
{
    fx_init("429user");
    struct froute *u = fk_route("POST", "/api/v10/channels/100/messages", "b-msg", "c100", 5, 1000);
    u->seq[0] = 429;
    u->scope = "user";
    u->retry_after = 0.4;
    struct froute *s = fk_route("POST", "/api/v10/channels/200/messages", "b-msg", "c200", 5, 1000);
    s->seq[0] = 429;
    s->scope = "shared";
    s->retry_after = 0.3;
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1});
    struct got a = {0}, b = {0};
    dsend(d, "POST", "/channels/100/messages", "{\"content\":\"u\"}", 1, &a);
    dsend(d, "POST", "/channels/200/messages", "{\"content\":\"s\"}", 1, &b);
    fx_run();
    UT_EQ_INT(a.err, 0);
    UT_EQ_INT(a.attempts, 2);
    UT_EQ_INT(b.err, 0);
    UT_EQ_INT(b.attempts, 2);
    struct hit *h[2];
    UT_EQ_INT(hits_of(u, h, 2), 2);
    UT_ASSERT(h[1]->t_us - h[0]->t_us >= 400000);
    UT_EQ_INT(hits_of(s, h, 2), 2);
    UT_ASSERT(h[1]->t_us - h[0]->t_us >= 300000);
    UT_EQ_INT(last_stats.rl429_user, 1);
    UT_EQ_INT(last_stats.rl429_shared, 1);
    UT_EQ_INT(last_stats.invalid_10min, 1); /* shared 429s do not count */
    fx_free();
}

/* ---- global 429: one instance is told, both pause --------------------------------------- */

static redisContext *redis_sync(void)
{
    const char *url = getenv("TEST_REDIS_URL");
    UT_ASSERT(url);
    char host[64];
    int port = 6379;
    UT_ASSERT(sscanf(url, "redis://%63[^:/]:%d", host, &port) >= 1);
    redisContext *c = redisConnect(host, port);
    UT_ASSERT(c && !c->err);
    return c;
}

static long long redis_int(redisContext *c, const char *fmt, const char *key)
{
    redisReply *r = redisCommand(c, fmt, key);
    UT_ASSERT(r && r->type == REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static struct {
    uint64_t t429_us;
    long long pttl;
    uv_timer_t t;
    struct got b, c, dd;
} G;

static void on_global_later(uv_timer_t *t)
{
    (void)t;
    char key[160];
    snprintf(key, sizeof key, "%s:rl:global:pause", F.prefix);
    redisContext *c = redis_sync();
    G.pttl = redis_int(c, "PTTL %s", key);
    redisFree(c);
    dsend(F.d[1], "GET", "/channels/200", NULL, 1, &G.b);               /* other process */
    dsend(F.d[0], "GET", "/channels/300", NULL, 1, &G.dd);              /* other lane */
    dsend(F.d[0], "POST", "/interactions/900/itok/callback", "{\"type\":4}", 0, &G.c); /* exempt */
    uv_close((uv_handle_t *)&G.t, NULL);
}

static void global_hook(struct froute *rt, struct hit *h)
{
    if (rt->seq[0] == 429 && rt->hits == 1) {
        G.t429_us = h->t_us;
        uv_timer_init(&F.loop, &G.t);
        uv_timer_start(&G.t, on_global_later, 150, 0);
    }
}

static void test_global_429_pauses_cluster(void)
{
    fx_init("global429");
    memset(&G, 0, sizeof G);
    struct froute *a = fk_route("POST", "/api/v10/channels/100/messages", "b-msg", "c100", 5, 1000);
    a->seq[0] = 429;
    a->scope = "global";
    a->retry_after = 0.6;
    struct froute *b = fk_route("GET", "/api/v10/channels/200", "b-ch", "c200", 5, 1000);
    struct froute *dd = fk_route("GET", "/api/v10/channels/300", "b-ch", "c300", 5, 1000);
    struct froute *c = fk_route("POST", "/api/v10/interactions/900/itok/callback", NULL, NULL, 0, 0);
    F.fk.on_hit = global_hook;
    fx_redis(2);
    fx_drest((struct drest_opts){.redis = F.r[0]});
    fx_drest((struct drest_opts){.redis = F.r[1]});
    struct got ga = {0};
    dsend(F.d[0], "POST", "/channels/100/messages", "{\"content\":\"a\"}", 1, &ga);
    F.no_auto = 1;
    /* Until all four callbacks ran (a, and b, c, dd sent 150 ms after the 429). */
    while (!(ga.calls && G.b.calls && G.c.calls && G.dd.calls))
        uv_run(&F.loop, UV_RUN_ONCE);
    fx_shutdown();
    fx_run();
    UT_EQ_INT(ga.err, 0);
    UT_EQ_INT(ga.attempts, 2);
    UT_EQ_INT(G.b.err, 0);
    UT_EQ_INT(G.c.err, 0);
    UT_EQ_INT(G.dd.err, 0);
    /* The pause was shared through Redis... */
    UT_ASSERT(G.pttl > 0 && G.pttl <= 620);
    struct hit *h[2];
    UT_EQ_INT(hits_of(a, h, 2), 2);
    UT_ASSERT(h[1]->t_us - G.t429_us >= 590000);
    /* ...so the other instance and the other lane waited it out, */
    UT_EQ_INT(hits_of(b, h, 1), 1);
    UT_ASSERT(h[0]->t_us - G.t429_us >= 550000);
    UT_EQ_INT(hits_of(dd, h, 1), 1);
    UT_ASSERT(h[0]->t_us - G.t429_us >= 550000);
    /* while interaction traffic, exempt from the global limit, did not. */
    UT_EQ_INT(hits_of(c, h, 1), 1);
    UT_ASSERT(h[0]->t_us - G.t429_us < 450000);
    fx_free();
}

/* ---- the global limit, shared by two instances through Redis ----------------------------- */

static void test_global_limit_shared(void)
{
    fx_init("global50");
    static char paths[12][48], fpaths[12][64];
    for (int i = 0; i < 12; i++) {
        snprintf(paths[i], sizeof paths[i], "/channels/%d", 1000 + i);
        snprintf(fpaths[i], sizeof fpaths[i], "/api/v10/channels/%d", 1000 + i);
        fk_route("GET", fpaths[i], "b-chan", paths[i], 100, 10000);
    }
    fx_redis(2);
    fx_drest((struct drest_opts){.redis = F.r[0]});
    fx_drest((struct drest_opts){.redis = F.r[1]});
    static struct got g[120];
    memset(g, 0, sizeof g);
    F.t0_us = now_us();
    for (int i = 0; i < 120; i++)
        dsend(F.d[i % 2], "GET", paths[i % 12], NULL, 1, &g[i]);
    fx_run();
    uint64_t last = 0;
    for (int i = 0; i < 120; i++) {
        UT_EQ_INT(g[i].err, 0);
        if (g[i].t_us > last)
            last = g[i].t_us;
    }
    UT_EQ_INT(F.fk.nhits, 120);
    UT_EQ_INT(F.fk.violations, 0);
    int peak = max_per_second();
    if (peak > 50)
        UT_FAIL("the fake saw %d requests within one second", peak);
    UT_ASSERT(since_t0_ms(last) >= 2000);
    UT_EQ_INT(last_stats.global_fallback, 0);
    fx_free();
}

/* ---- Redis down: the local share ---------------------------------------------------------- */

static void count_lines(const char *hay, const char *needle, int *n)
{
    *n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        (*n)++;
}

static void test_redis_down_local_share(void)
{
    fx_init("redisdown");
    capture_logs();
    static char paths[12][48], fpaths[12][64];
    for (int i = 0; i < 12; i++) {
        snprintf(paths[i], sizeof paths[i], "/channels/%d", 2000 + i);
        snprintf(fpaths[i], sizeof fpaths[i], "/api/v10/channels/%d", 2000 + i);
        fk_route("GET", fpaths[i], "b-chan", paths[i], 100, 10000);
    }
    char url[64], err[160];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", utsys_free_port());
    UT_EQ_INT(rds_new(&F.loop, &(struct rds_opts){.url = url, .name = "down"}, on_rds_state, NULL,
                      &F.r[F.nr++], err, sizeof err),
              0);
    /* 50/s shared by 10 processes: 5 per second here. */
    struct drest *d = fx_drest((struct drest_opts){.redis = F.r[0], .cluster_size = 10});
    struct got g[12] = {0};
    F.t0_us = now_us();
    for (int i = 0; i < 12; i++)
        dsend(d, "GET", paths[i], NULL, 1, &g[i]);
    fx_run();
    for (int i = 0; i < 12; i++)
        UT_EQ_INT(g[i].err, 0);
    UT_ASSERT(max_per_second() <= 5);
    UT_ASSERT(since_t0_ms(g[11].t_us) >= 2000); /* 5 + 5 + 2 */
    UT_EQ_INT(last_stats.global_fallback, 1);
    int n;
    count_lines(buf_str(&F.logs), "redis unavailable for the global rate limit", &n);
    UT_EQ_INT(n, 1); /* logged once, not per request */
    fx_free();
}

/* ---- retries ------------------------------------------------------------------------------- */

static void test_5xx_retry_policy(void)
{
    fx_init("retry");
    struct froute *p500 = fk_route("POST", "/api/v10/channels/100/messages", "b-msg", "c100", 5, 1000);
    p500->seq[0] = 500;
    struct froute *p502 = fk_route("POST", "/api/v10/channels/300/messages", "b-msg", "c300", 5, 1000);
    p502->seq[0] = 502;
    struct froute *patch = fk_route("PATCH", "/api/v10/channels/100/messages/5", "b-edit", "c100", 5, 1000);
    patch->seq[0] = patch->seq[1] = 502;
    struct froute *safe = fk_route("POST", "/api/v10/channels/200/messages", "b-msg", "c200", 5, 1000);
    safe->seq[0] = 503;
    struct froute *give_up = fk_route("DELETE", "/api/v10/channels/400/messages/6", "b-del", "c400", 5, 1000);
    give_up->seq[0] = give_up->seq[1] = give_up->seq[2] = 504;
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1, .retry_base_ms = 20});
    struct got a = {0}, b = {0}, c = {0}, e = {0}, f = {0};
    dsend(d, "POST", "/channels/100/messages", "{\"content\":\"x\"}", 1, &a);
    dsend(d, "POST", "/channels/300/messages", "{\"content\":\"x\"}", 1, &f);
    dsend(d, "PATCH", "/channels/100/messages/5", "{\"content\":\"y\"}", 1, &b);
    struct drest_req rq = {.method = "POST", .path = "/channels/200/messages", .json = "{}",
                           .bot_auth = 1, .retry_safe = 1};
    send_rq(d, &rq, &c);
    dsend(d, "DELETE", "/channels/400/messages/6", NULL, 1, &e);
    fx_run();
    UT_EQ_INT(a.err, BC_EHTTP); /* a POST that failed with 500 is reported */
    UT_EQ_INT(a.status, 500);
    UT_EQ_INT(p500->hits, 1);
    UT_EQ_INT(f.status, 502); /* and so is one with 502: it may have posted */
    UT_EQ_INT(p502->hits, 1);
    UT_EQ_INT(b.err, 0); /* PATCH: 502, 502, then 200 */
    UT_EQ_INT(b.attempts, 3);
    UT_EQ_INT(patch->hits, 3);
    UT_EQ_INT(c.err, 0); /* POST marked retry_safe */
    UT_EQ_INT(safe->hits, 2);
    UT_EQ_INT(e.err, BC_EHTTP); /* max_attempts (3) reached */
    UT_EQ_INT(e.status, 504);
    UT_EQ_INT(give_up->hits, 3);
    UT_EQ_INT(last_stats.retries, 2 + 1 + 2);
    UT_EQ_INT(last_stats.status_5xx, 1 + 1 + 2 + 1 + 3);
    fx_free();
}

static void test_401_403_never_retried(void)
{
    fx_init("invalid");
    struct froute *a = fk_route("GET", "/api/v10/channels/100", "b-ch", "c100", 5, 1000);
    a->seq[0] = 401;
    a->err_body = "{\"message\":\"401: Unauthorized\",\"code\":0}";
    struct froute *b = fk_route("POST", "/api/v10/channels/200/messages", "b-msg", "c200", 5, 1000);
    b->seq[0] = 403;
    b->err_body = "{\"message\":\"Missing Access\",\"code\":50001}";
    struct froute *c = fk_route("PUT", "/api/v10/channels/300/pins/7", "b-pin", "c300", 5, 1000);
    c->seq[0] = 403;
    c->err_body = "{\"message\":\"Missing Permissions\",\"code\":50013}";
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1, .retry_base_ms = 10});
    struct got ga = {0}, gb = {0}, gc = {0};
    dsend(d, "GET", "/channels/100", NULL, 1, &ga);
    dsend(d, "POST", "/channels/200/messages", "{}", 1, &gb);
    struct drest_req rq = {.method = "PUT", .path = "/channels/300/pins/7", .bot_auth = 1,
                           .retry_safe = 1};
    send_rq(d, &rq, &gc);
    fx_run();
    UT_EQ_INT(ga.status, 401);
    UT_EQ_INT(gb.status, 403);
    UT_EQ_INT(gb.code, 50001);
    UT_EQ_STR(gb.message, "Missing Access");
    UT_EQ_INT(gc.status, 403);
    UT_EQ_INT(gc.code, 50013);
    UT_EQ_INT(a->hits + b->hits + c->hits, 3); /* once each, even the idempotent PUT */
    UT_EQ_INT(last_stats.invalid_10min, 3);
    UT_EQ_INT(last_stats.retries, 0);
    UT_EQ_INT(last_stats.status_4xx, 3);
    fx_free();
}

static void test_discord_error_surfaced(void)
{
    fx_init("errors");
    struct froute *a = fk_route("POST", "/api/v10/channels/100/messages", "b-msg", "c100", 5, 1000);
    a->seq[0] = 400;
    a->err_body = "{\"code\":50035,\"errors\":{\"embeds\":{\"0\":{\"description\":{\"_errors\":"
                  "[{\"code\":\"BASE_TYPE_MAX_LENGTH\",\"message\":\"Must be 4096 or fewer in "
                  "length.\"}]}}}},\"message\":\"Invalid Form Body\"}";
    struct froute *b = fk_route("POST", "/api/v10/interactions/900/itok/callback", NULL, NULL, 0, 0);
    b->seq[0] = 404;
    b->err_body = "{\"message\":\"Unknown interaction\",\"code\":10062}";
    struct froute *c = fk_route("GET", "/api/v10/channels/300", "b-ch", "c300", 5, 1000);
    c->seq[0] = 502;
    c->seq[1] = 502;
    c->err_body = "<html>bad gateway</html>";
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1, .retry_base_ms = 10,
                                                   .max_attempts = 2});
    struct got ga = {0}, gb = {0}, gc = {0};
    dsend(d, "POST", "/channels/100/messages", "{\"embeds\":[{}]}", 1, &ga);
    dsend(d, "POST", "/interactions/900/itok/callback", "{\"type\":4}", 0, &gb);
    dsend(d, "GET", "/channels/300", NULL, 1, &gc);
    fx_run();
    UT_EQ_INT(ga.err, BC_EHTTP);
    UT_EQ_INT(ga.status, 400);
    UT_EQ_INT(ga.code, 50035);
    UT_EQ_STR(ga.message, "Invalid Form Body");
    UT_EQ_STR(ga.detail, "embeds.0.description: Must be 4096 or fewer in length. (BASE_TYPE_MAX_LENGTH)");
    UT_CONTAINS(ga.errstr, "HTTP 400");
    UT_CONTAINS(ga.errstr, "50035");
    UT_EQ_INT(gb.err, BC_EHTTP);
    UT_EQ_INT(gb.status, 404);
    UT_EQ_INT(gb.code, 10062);
    UT_EQ_STR(gb.message, "Unknown interaction");
    UT_EQ_STR(gb.detail, "");
    UT_EQ_INT(gc.status, 502); /* not JSON: status alone */
    UT_EQ_INT(gc.code, 0);
    UT_EQ_STR(gc.message, "");
    UT_EQ_INT(gc.attempts, 2);
    fx_free();
}

static void test_transport_error(void)
{
    fx_init("transport");
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/api/v10", utsys_free_port());
    struct drest *d = fx_drest((struct drest_opts){.api_base = base, .cluster_size = 1,
                                                   .retry_base_ms = 10, .max_attempts = 2});
    struct got g = {0}, p = {0};
    dsend(d, "GET", "/channels/1", NULL, 1, &g);
    dsend(d, "POST", "/channels/1/messages", "{}", 1, &p);
    fx_run();
    UT_EQ_INT(g.err, -ECONNREFUSED);
    UT_EQ_INT(g.status, 0);
    UT_ASSERT(g.errstr[0]);
    UT_EQ_INT(g.attempts, 2); /* a refused connection never reached Discord: safe to repeat */
    UT_EQ_INT(p.err, -ECONNREFUSED);
    UT_EQ_INT(p.attempts, 2);
    UT_EQ_INT(last_stats.transport_errors, 4);
    fx_free();
}

/* ---- buckets learned across routes ------------------------------------------------------------ */

static void test_routes_sharing_a_bucket(void)
{
    fx_init("shared");
    /* Two route templates that Discord says live in one bucket per channel. */
    struct froute *pin = fk_route("PUT", "/api/v10/channels/100/pins/7", "b-pins", "c100", 2, 600);
    struct froute *unpin = fk_route("DELETE", "/api/v10/channels/100/pins/7", "b-pins", "c100", 2, 600);
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1});
    struct got first[2] = {0};
    dsend(d, "PUT", "/channels/100/pins/7", NULL, 1, &first[0]);
    F.no_auto = 1;
    while (!first[0].calls)
        uv_run(&F.loop, UV_RUN_ONCE);
    dsend(d, "DELETE", "/channels/100/pins/7", NULL, 1, &first[1]);
    while (!first[1].calls)
        uv_run(&F.loop, UV_RUN_ONCE);
    /* Both routes are now known to be bucket b-pins; six more, interleaved. */
    struct got g[6] = {0};
    for (int i = 0; i < 6; i++)
        dsend(d, i % 2 ? "DELETE" : "PUT", "/channels/100/pins/7", NULL, 1, &g[i]);
    while (F.pending)
        uv_run(&F.loop, UV_RUN_ONCE);
    fx_shutdown();
    fx_run();
    UT_EQ_INT(F.fk.violations, 0);
    for (int i = 0; i < 6; i++) {
        UT_EQ_INT(g[i].err, 0);
        UT_EQ_INT(g[i].order, i + 3); /* one lane: in order */
    }
    UT_EQ_INT(pin->hits + unpin->hits, 8);
    fx_free();
}

/* ---- bounds and arguments ------------------------------------------------------------------------ */

static void test_queue_caps_and_arguments(void)
{
    fx_init("caps");
    fk_route("POST", "/api/v10/channels/100/messages", "b-msg", "c100", 5, 1000);
    fk_route("POST", "/api/v10/channels/200/messages", "b-msg", "c200", 5, 1000);
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1, .max_queue = 6,
                                                   .max_lane_queue = 3, .max_queue_bytes = 1000,
                                                   .max_body = 700});
    struct got g[6] = {0};
    struct drest_req rq = {.method = "POST", .path = "/channels/100/messages", .json = "{}",
                           .bot_auth = 1};
    for (int i = 0; i < 3; i++)
        send_rq(d, &rq, &g[i]);
    struct got never = {0};
    UT_EQ_INT(drest_request(d, &rq, on_got, &never), -ENOBUFS); /* lane full */
    rq.path = "/channels/200/messages";
    send_rq(d, &rq, &g[3]);
    /* 600 bytes fit max_body; two of them do not fit the 1000 bytes held. */
    static char big[601];
    memset(big, ' ', 600);
    big[0] = '{';
    big[599] = '}';
    rq.json = big;
    send_rq(d, &rq, &g[4]);
    UT_EQ_INT(drest_request(d, &rq, on_got, &never), -ENOBUFS); /* bytes held */
    rq.json = "{}";
    send_rq(d, &rq, &g[5]);
    UT_EQ_INT(drest_request(d, &rq, on_got, &never), -ENOBUFS); /* requests held */
    /* Arguments. */
    static char huge[801];
    memset(huge, 'x', 800);
    struct drest_req bad[] = {
        {.method = "FETCH", .path = "/channels/1"},
        {.method = "GET", .path = "channels/1"},
        {.method = "GET", .path = "/channels//1"},
        {.method = "GET", .path = "/channels/1 x"},
        {.method = "GET", .path = "/channels/1", .json = "{}"},
        {.method = "DELETE", .path = "/channels/1", .nfiles = 1,
         .files = &(struct drest_file){.name = "a", .data = "x", .len = 1}},
        {.method = "POST", .path = "/channels/1/messages", .nfiles = 1,
         .files = &(struct drest_file){.name = "a\"b", .data = "x", .len = 1}},
        {.method = "POST", .path = "/channels/1/messages", .nfiles = 11,
         .files = &(struct drest_file){.name = "a", .data = "x", .len = 1}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (drest_request(d, &bad[i], on_got, &never) != -EINVAL)
            UT_FAIL("bad request %zu was accepted", i);
    UT_EQ_INT(drest_request(d, NULL, on_got, &never), -EINVAL);
    fx_run();
    UT_EQ_INT(never.calls, 0);
    for (int i = 0; i < 6; i++)
        UT_EQ_INT(g[i].err, 0);
    fx_free();

    /* A body over max_body, and bot auth without a token. */
    fx_init("caps2");
    struct secret none = {0};
    secret_set(&none, NULL);
    d = fx_drest((struct drest_opts){.cluster_size = 1, .max_body = 700, .token = &none});
    struct drest_req r2 = {.method = "POST", .path = "/channels/1/messages", .json = huge};
    UT_EQ_INT(drest_request(d, &r2, on_got, &never), BC_ETOOBIG);
    r2.json = "{}";
    r2.bot_auth = 1;
    UT_EQ_INT(drest_request(d, &r2, on_got, &never), -EINVAL);
    fx_run();
    UT_EQ_INT(never.calls, 0);
    fx_free();
}

/* Route templates are kept until drest is freed, so they are capped: past
 * 4096 distinct ones (a bug: Discord has a few hundred) a new one is
 * refused, while a route already known still gets its lane. */
static void test_route_templates_are_capped(void)
{
    enum { MAX_ROUTES = 4096 };
    static struct got g[MAX_ROUTES + 1];
    memset(g, 0, sizeof g);
    fx_init("routecap");
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1, .max_queue = 2 * MAX_ROUTES});
    char path[32];
    struct drest_req rq = {.method = "GET", .path = path, .bot_auth = 1};
    for (int i = 0; i < MAX_ROUTES; i++) {
        snprintf(path, sizeof path, "/r%d", i);
        send_rq(d, &rq, &g[i]);
    }
    struct drest_stats st;
    drest_stats(d, &st);
    UT_EQ_INT(st.lanes, MAX_ROUTES);
    UT_EQ_INT(st.queued, MAX_ROUTES);
    struct got never = {0};
    snprintf(path, sizeof path, "/r%d", MAX_ROUTES);
    UT_EQ_INT(drest_request(d, &rq, on_got, &never), -ENOBUFS);
    snprintf(path, sizeof path, "/r%d", 7);
    send_rq(d, &rq, &g[MAX_ROUTES]);
    fx_shutdown(); /* before the pump sends any: all end with BC_ESHUTDOWN */
    fx_run();
    UT_EQ_INT(never.calls, 0);
    for (int i = 0; i <= MAX_ROUTES; i++)
        UT_EQ_INT(g[i].calls, 1);
    fx_free();
}

static void test_bad_options(void)
{
    fx_init("opts");
    struct drest *d = NULL;
    struct secret bad = {0};
    secret_set(&bad, "tok\r\nX-Evil: 1");
    UT_EQ_INT(drest_new(&F.loop, &(struct drest_opts){.http = F.http, .token = &bad}, &d), -EINVAL);
    UT_EQ_INT(drest_new(&F.loop, &(struct drest_opts){.http = F.http, .api_base = "ftp://x"}, &d),
              -EINVAL);
    UT_EQ_INT(drest_new(&F.loop, &(struct drest_opts){.api_base = "http://x"}, &d), -EINVAL);
    UT_ASSERT(!d);
    secret_clear(&bad);
    fx_run();
    fx_free();
}

/* ---- close -------------------------------------------------------------------------------------- */

static struct {
    int oks, hold_seen;
    uv_timer_t t;
    struct got late;
} C;

static void close_later(uv_timer_t *t)
{
    (void)t;
    uv_close((uv_handle_t *)&C.t, NULL);
    fx_shutdown();
}

static void close_hook(struct froute *rt, struct hit *h)
{
    (void)h;
    if (rt->hold && !C.hold_seen++) {
        uv_timer_init(&F.loop, &C.t);
        uv_timer_start(&C.t, close_later, 150, 0);
    }
}

static void retry_in_callback(struct got *g)
{
    (void)g;
    struct drest_req rq = {.method = "GET", .path = "/channels/1"};
    if (g->err == BC_ESHUTDOWN)
        UT_EQ_INT(drest_request(F.d[0], &rq, on_got, &C.late), BC_ESHUTDOWN);
}

static void test_close_with_pending(void)
{
    fx_init("close");
    memset(&C, 0, sizeof C);
    struct froute *hold = fk_route("POST", "/api/v10/channels/100/messages", "b-msg", "c100", 5, 1000);
    hold->hold = 1;
    fk_route("POST", "/api/v10/channels/200/messages", "b-msg", "c200", 1, 10000);
    fk_route("GET", "/api/v10/channels/300", "b-ch", "c300", 5, 1000);
    fk_route("GET", "/api/v10/channels/400", "b-ch", "c400", 5, 1000);
    F.fk.on_hit = close_hook;
    /* A local share of 3 per second: the fourth lane waits for the limiter. */
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1, .global_limit = 3});
    struct got a[4] = {0}, b[3] = {0}, c = {0}, e = {0};
    for (int i = 0; i < 4; i++)
        dsend(d, "POST", "/channels/100/messages", "{}", 1, &a[i]); /* 1 held, 3 queued */
    for (int i = 0; i < 3; i++)
        dsend(d, "POST", "/channels/200/messages", "{}", 1, &b[i]); /* 1 ok, 2 rate-limited */
    dsend(d, "GET", "/channels/300", NULL, 1, &c);
    dsend(d, "GET", "/channels/400", NULL, 1, &e);                    /* global wait */
    for (int i = 0; i < 4; i++)
        a[i].then = retry_in_callback;
    F.no_auto = 1;
    fx_run();
    UT_EQ_INT(F.pending, 0); /* every callback ran... */
    for (int i = 0; i < 4; i++) {
        UT_EQ_INT(a[i].calls, 1); /* ...exactly once */
        UT_EQ_INT(a[i].err, BC_ESHUTDOWN);
    }
    UT_EQ_INT(b[0].err, 0);
    UT_EQ_INT(b[1].err, BC_ESHUTDOWN);
    UT_EQ_INT(b[2].err, BC_ESHUTDOWN);
    UT_EQ_INT(b[1].calls + b[2].calls, 2);
    int ok = !c.err + !e.err;
    UT_EQ_INT(ok, 1); /* one of them got the third global slot */
    UT_EQ_INT(c.calls + e.calls, 2);
    UT_EQ_INT(C.late.calls, 0);
    UT_EQ_INT(hold->hits, 1);
    fx_free();
}

/* Closing while a Redis admission is outstanding: the callback runs at
 * once with BC_ESHUTDOWN and d is freed only after the reply. */
static void close_now(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, NULL);
    fx_shutdown();
}

static void test_close_during_admission(void)
{
    fx_init("closeadmit");
    fk_route("GET", "/api/v10/channels/100", "b-ch", "c100", 5, 1000);
    fx_redis(1);
    struct drest *d = fx_drest((struct drest_opts){.redis = F.r[0]});
    struct got g = {0};
    dsend(d, "GET", "/channels/100", NULL, 1, &g);
    /* Started after drest's own 0 timer, so it runs right after the pump
     * sent the EVAL. */
    static uv_timer_t t;
    uv_timer_init(&F.loop, &t);
    uv_timer_start(&t, close_now, 0, 0);
    F.no_auto = 1;
    fx_run();
    UT_EQ_INT(g.calls, 1);
    UT_EQ_INT(g.err, BC_ESHUTDOWN);
    UT_EQ_INT(F.fk.nhits, 0);
    fx_free();
}

/* ---- secrets ------------------------------------------------------------------------------------- */

static void test_tokens_never_logged(void)
{
    fx_init("tokens");
    capture_logs();
    struct froute *wh = fk_route("POST", "/api/v10/webhooks/800/wh-SECRET-abc", NULL, NULL, 0, 0);
    wh->seq[0] = 401;
    struct froute *ed = fk_route("PATCH", "/api/v10/webhooks/800/wh-SECRET-abc/messages/@original",
                                 "b-wh", "w800", 5, 1000);
    ed->seq[0] = 502;
    struct froute *cb = fk_route("POST", "/api/v10/interactions/900/it-SECRET-def/callback", "b-cb",
                                 "i900", 5, 1000);
    cb->seq[0] = 429;
    cb->retry_after = 0.05;
    struct froute *ch = fk_route("GET", "/api/v10/channels/100", "b-ch", "c100", 5, 1000);
    ch->seq[0] = 403;
    struct drest *d = fx_drest((struct drest_opts){.cluster_size = 1, .retry_base_ms = 10});
    struct got g[4] = {0};
    dsend(d, "POST", "/webhooks/800/wh-SECRET-abc?wait=true", "{\"content\":\"hi\"}", 0, &g[0]);
    dsend(d, "PATCH", "/webhooks/800/wh-SECRET-abc/messages/@original", "{\"content\":\"e\"}", 0, &g[1]);
    dsend(d, "POST", "/interactions/900/it-SECRET-def/callback", "{\"type\":4}", 0, &g[2]);
    dsend(d, "GET", "/channels/100", NULL, 1, &g[3]);
    fx_run();
    UT_EQ_INT(g[0].status, 401);
    UT_EQ_INT(g[1].err, 0);
    UT_EQ_INT(g[2].err, 0);
    UT_EQ_INT(g[3].status, 403);
    /* The fake server's own access log shows the raw path; drest's lines
     * (and every other) must not. */
    struct buf mine;
    buf_init(&mine, 8u << 20);
    for (const char *l = buf_str(&F.logs); *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l + 1) : strlen(l);
        static const char fake_line[] = "\"msg\":\"http request\"";
        if (!memmem(l, n, fake_line, sizeof fake_line - 1))
            UT_EQ_INT(buf_append(&mine, l, n), 0);
        l += n;
    }
    const char *logs = buf_str(&mine);
    UT_NOT_CONTAINS(logs, "SECRET");
    UT_NOT_CONTAINS(logs, TOKEN);
    UT_CONTAINS(logs, "/webhooks/800/***?wait=true");
    UT_CONTAINS(logs, "/webhooks/800/***/messages/@original");
    UT_CONTAINS(logs, "/interactions/900/***/callback");
    UT_CONTAINS(logs, "429");
    for (int i = 0; i < 4; i++)
        UT_NOT_CONTAINS(g[i].errstr, "SECRET");
    buf_free(&mine);
    fx_free();
}

static const struct ut_case cases[] = {
    UT_CASE(test_headers_and_auth),
    UT_CASE(test_multipart_upload),
    UT_CASE(test_upload_200mib_file_streams),
    UT_CASE(test_burst_one_channel_never_exhausted),
    UT_CASE(test_burst_stats),
    UT_CASE(test_two_channels_independent),
    UT_CASE(test_interaction_not_delayed),
    UT_CASE(test_429_user_waits_retry_after),
    UT_CASE(test_global_429_pauses_cluster),
    UT_CASE(test_global_limit_shared),
    UT_CASE(test_redis_down_local_share),
    UT_CASE(test_5xx_retry_policy),
    UT_CASE(test_401_403_never_retried),
    UT_CASE(test_discord_error_surfaced),
    UT_CASE(test_transport_error),
    UT_CASE(test_routes_sharing_a_bucket),
    UT_CASE(test_queue_caps_and_arguments),
    UT_CASE(test_route_templates_are_capped),
    UT_CASE(test_bad_options),
    UT_CASE(test_close_with_pending),
    UT_CASE(test_close_during_admission),
    UT_CASE(test_tokens_never_logged),
    {0},
};
UT_MAIN(cases)
