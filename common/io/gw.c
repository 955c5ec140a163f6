#include "io/gw.h"

#include <errno.h>
#include <json.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "parse/jscan.h"
#include "base/log.h"
#include "base/mem.h"
#include "parse/zstream.h"

#define GW_JSON_DEPTH 64
#define GW_HELLO_TIMEOUT_MS 20000
#define GW_CLOSE_GRACE_MS 1000      /* our close frame, then the socket goes */
#define GW_LWS_DRAIN_MS 5000        /* longest wait for lws' handles at teardown */
#define GW_LWS_POLL_MS 1
#define GW_BACKOFF_MIN_MS 1000
#define GW_BACKOFF_MAX_MS 60000
#define GW_INVALID_MIN_MS 1000      /* op 9 d=false: wait 1-5 s */
#define GW_INVALID_SPAN_MS 4000
#define GW_HB_MIN_MS 100
#define GW_HB_MAX_MS 600000
#define GW_LOG_EVERY_MS 10000
#define GW_LWS_MAX_FDS 65536
#define GW_MAX_MESSAGE_CAP (256u * 1024 * 1024)
#define GW_TOKEN_MAX 512
#define GW_MAX_STATIC 4

/* lws 4.1's public header hides LWS_WRITE_CLOSE ("handled by
 * lws_close_reason"), but lws_close_reason does not work on this build (see
 * gw_send_close), so we send the close frame ourselves with its value. */
#define GW_LWS_WRITE_CLOSE ((enum lws_write_protocol)4)

enum gw_phase {
    GW_IDLE,       /* created, gw_start not called */
    GW_WAIT,       /* no connection; t_conn starts the next one */
    GW_RESOLVING,  /* uv_getaddrinfo in flight */
    GW_CONNECTING, /* TCP, TLS and the WebSocket upgrade */
    GW_HELLO,      /* WebSocket up, waiting for op 10 */
    GW_GATE,       /* waiting for gw_identify_go */
    GW_IDENTIFY,   /* Identify sent or due, waiting for READY */
    GW_RESUME,     /* Resume sent or due, waiting for RESUMED (replay comes first) */
    GW_READY,      /* session live */
    GW_STOPPED,    /* fatal close code or gw_stop: never reconnects */
    GW_CLOSING     /* gw_close: tearing down */
};

static const char *const gw_phase_names[] = {"idle",     "wait",   "resolving", "connecting",
                                             "hello",    "gate",   "identify",  "resume",
                                             "ready",    "stopped", "closing"};

enum gw_next { GW_NEXT_RESUME, GW_NEXT_IDENTIFY, GW_NEXT_STOP };
enum gw_delay { GW_DELAY_NOW, GW_DELAY_BACKOFF, GW_DELAY_INVALID };

struct gw_msg {
    struct gw_msg *next;
    size_t len;
    unsigned char buf[]; /* LWS_PRE bytes of room, then the payload */
};

struct gw_loglimit {
    uint64_t last;
    unsigned dropped;
};

struct gw_url {
    int tls;
    int port;
    char host[256];
    char path[512];
};

struct gw {
    uv_loop_t *loop;
    struct gw_cbs cbs;
    void *arg;
    const struct secret *token;
    char *url; /* the base url (GET /gateway/bot) */
    char *ca_file;
    int intents, shard_id, shard_count, compress, hello_timeout_ms;

    /* libwebsockets */
    struct lws_context *ctx;
    struct lws_context *ctx_alive; /* lws sets it to NULL when ctx is freed */
    void *lws_static[GW_MAX_STATIC]; /* lws' own uv handles on our loop */
    int n_lws_static;
    struct lws *wsi;

    enum gw_phase phase;
    int started;

    /* the current connection */
    struct gw_url target;
    char addr[64];
    char req_path[640];
    uv_getaddrinfo_t dns;
    int dns_busy;
    int ended;       /* the wsi is gone; on_kick decides what comes next */
    int established; /* WebSocket upgrade done */
    int peer_close;  /* close code the server sent; 0 none */
    int close_code;  /* close frame we are about to send; 0 none */
    int intent;      /* we decided how this connection ends: */
    enum gw_next next;
    enum gw_delay delay;
    char last_err[128];
    int fails; /* connections since the last live session */
    int up;    /* a live session was reported to state() */

    /* protocol */
    struct zstream zs;
    struct json_tokener *tok;
    struct gw_resume sess;
    uint64_t hb_interval;
    int hb_acked, hb_due;
    uint64_t hb_sent_ns;
    double latency_ms;
    int identify_due, resume_due;
    int gate_asked;

    /* sending */
    struct gw_msg *q_head, *q_tail;
    int q_len;
    uint64_t sent_at[GW_SEND_LIMIT]; /* ring of send times (uv_now ms) */
    int sent_first, sent_n;
    unsigned char wbuf[LWS_PRE + GW_MAX_SEND + 64];

    /* timers: t_kick runs deferred work outside lws' callbacks */
    uv_timer_t t_kick, t_hb, t_conn, t_send, t_aux;
    int timers_open;

    /* teardown */
    void (*done)(void *arg);
    void *done_arg;
    int grace_over, lws_destroying, lws_gone, closing_handles;
    uint64_t drain_deadline;

    uint64_t rng;
    struct gw_loglimit ll_json, ll_op, ll_frame;
};

static int gw_lws_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len);

static const struct lws_protocols gw_protocols[] = {
    {"discord-gateway", gw_lws_cb, 0, 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Our heartbeats are the liveness check; lws' own idle PINGs stay off. */
static const lws_retry_bo_t gw_no_validity = {0};

static void conn_begin(struct gw *g);
static void conn_request_close(struct gw *g, int code);
static void on_kick(uv_timer_t *t);
static void send_more(struct gw *g);
static void teardown_step(struct gw *g);

/* ---- small helpers ------------------------------------------------------- */

static uint64_t gw_rand(struct gw *g)
{
    /* xorshift64*: jitter only, not security */
    g->rng ^= g->rng >> 12;
    g->rng ^= g->rng << 25;
    g->rng ^= g->rng >> 27;
    return g->rng * 2685821657736338717ull;
}

static double gw_rand01(struct gw *g)
{
    return (double)(gw_rand(g) >> 11) / 9007199254740992.0;
}

static int loglimit_ok(struct gw *g, struct gw_loglimit *l, unsigned *dropped)
{
    uint64_t now = uv_now(g->loop);
    if (l->last && now - l->last < GW_LOG_EVERY_MS) {
        l->dropped++;
        return 0;
    }
    *dropped = l->dropped;
    l->dropped = 0;
    l->last = now ? now : 1;
    return 1;
}

static void kick(struct gw *g)
{
    if (!g->closing_handles)
        uv_timer_start(&g->t_kick, on_kick, 0, 0);
}

static int resumable(const struct gw *g)
{
    return g->sess.session_id[0] != '\0';
}

static void forget_session(struct gw *g)
{
    g->sess.session_id[0] = '\0';
    g->sess.resume_url[0] = '\0';
    g->sess.seq = 0;
}

static void set_up(struct gw *g, int up)
{
    if (g->up == up)
        return;
    g->up = up;
    if (g->cbs.state && g->phase != GW_CLOSING)
        g->cbs.state(g, up, g->arg);
}

/* Escape s as a JSON string body into out. Returns the length, or -1 when
 * it does not fit. */
static int json_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char tmp[8];
        size_t k;
        if (c == '"' || c == '\\')
            k = (size_t)snprintf(tmp, sizeof tmp, "\\%c", c);
        else if (c < 0x20)
            k = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", c);
        else
            tmp[0] = (char)c, k = 1;
        if (n + k >= cap)
            return -1;
        memcpy(out + n, tmp, k);
        n += k;
    }
    out[n] = '\0';
    return (int)n;
}

/* ---- URLs ------------------------------------------------------------------ */

static int url_parse(const char *url, struct gw_url *u)
{
    memset(u, 0, sizeof *u);
    const char *p;
    if (!strncmp(url, "wss://", 6))
        u->tls = 1, u->port = 443, p = url + 6;
    else if (!strncmp(url, "ws://", 5))
        u->port = 80, p = url + 5;
    else
        return -EINVAL;
    const char *h = p, *he;
    if (*p == '[') {
        he = strchr(p, ']');
        if (!he)
            return -EINVAL;
        h = p + 1;
        p = he + 1;
    } else {
        p += strcspn(p, ":/?#");
        he = p;
    }
    if (he == h || (size_t)(he - h) >= sizeof u->host)
        return -EINVAL;
    memcpy(u->host, h, (size_t)(he - h));
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535)
            return -EINVAL;
        u->port = (int)port;
        p = end;
    }
    size_t plen = strcspn(p, "?#");
    if (plen && *p != '/')
        return -EINVAL;
    if (plen >= sizeof u->path)
        return -EINVAL;
    if (plen)
        memcpy(u->path, p, plen);
    else
        strcpy(u->path, "/");
    return 0;
}

static int is_ip_literal(const char *host)
{
    unsigned char tmp[16];
    return uv_inet_pton(AF_INET, host, tmp) == 0 || uv_inet_pton(AF_INET6, host, tmp) == 0;
}

/* ---- the send window: at most GW_SEND_LIMIT sends per GW_SEND_WINDOW_MS --- */

static void window_prune(struct gw *g, uint64_t now)
{
    while (g->sent_n && g->sent_at[g->sent_first] + GW_SEND_WINDOW_MS <= now) {
        g->sent_first = (g->sent_first + 1) % GW_SEND_LIMIT;
        g->sent_n--;
    }
}

static void window_push(struct gw *g, uint64_t now)
{
    if (g->sent_n == GW_SEND_LIMIT) /* cannot happen: callers check first */
        return;
    g->sent_at[(g->sent_first + g->sent_n) % GW_SEND_LIMIT] = now;
    g->sent_n++;
}

/* ms until the oldest send leaves the window */
static uint64_t window_wait(const struct gw *g, uint64_t now)
{
    uint64_t free_at = g->sent_at[g->sent_first] + GW_SEND_WINDOW_MS;
    return free_at > now ? free_at - now : 0;
}

/* ---- libwebsockets on our loop -------------------------------------------- */

static void gw_lws_log(int level, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    char text[512];
    snprintf(text, sizeof text, "%.*s", (int)n, line);
    if (level & LLL_ERR)
        log_warn("libwebsockets", LF_STR("detail", text));
    else
        log_info("libwebsockets", LF_STR("detail", text));
}

struct handle_set {
    void **h;
    int n, cap;
};

static void walk_collect(uv_handle_t *h, void *arg)
{
    struct handle_set *s = arg;
    if (s->n < s->cap)
        s->h[s->n++] = h;
}

static void walk_count(uv_handle_t *h, void *arg)
{
    (void)h;
    ++*(int *)arg;
}

/* lws_create_context puts lws' per-thread handles (an idle and a timer) on
 * our loop. They are embedded in the context, and lws 4.1 never finishes
 * destroying a context on a foreign loop by itself: the owner must call
 * lws_context_destroy a second time once those handles have closed. So we
 * remember which handles appeared during creation (see docs/gateway.md). */
static void track_lws_handles(struct gw *g, struct handle_set *before)
{
    int count = 0;
    uv_walk(g->loop, walk_count, &count);
    struct handle_set after = {mem_alloc(sizeof(void *) * (size_t)(count + 1)), 0, count + 1};
    uv_walk(g->loop, walk_collect, &after);
    for (int i = 0; i < after.n; i++) {
        int seen = 0;
        for (int j = 0; j < before->n && !seen; j++)
            seen = after.h[i] == before->h[j];
        uv_handle_t *h = after.h[i];
        /* uv_poll handles belong to connections (freed as they close) */
        if (!seen && h->type != UV_POLL && g->n_lws_static < GW_MAX_STATIC)
            g->lws_static[g->n_lws_static++] = h;
    }
    mem_free(after.h);
}

struct alive_check {
    const struct gw *g;
    int alive;
};

static void walk_alive(uv_handle_t *h, void *arg)
{
    struct alive_check *c = arg;
    for (int i = 0; i < c->g->n_lws_static; i++)
        if (c->g->lws_static[i] == (void *)h)
            c->alive++;
}

static int lws_handles_alive(const struct gw *g)
{
    struct alive_check c = {g, 0};
    uv_walk(g->loop, walk_alive, &c);
    return c.alive;
}

static int lws_start(struct gw *g)
{
    lws_set_log_level(LLL_ERR | LLL_WARN, gw_lws_log);
    void *loops[1] = {g->loop};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = gw_protocols;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.foreign_loops = loops;
    info.pcontext = &g->ctx_alive;
    info.user = g;
    info.gid = -1;
    info.uid = -1;
    info.timeout_secs = 15;
    info.connect_timeout_secs = 10;
    info.pt_serv_buf_size = 32768;
    info.client_ssl_ca_filepath = g->ca_file;
    /* lws sizes a table by the highest fd it may see; keep it sane when the
     * process limit is huge (fds above this would be refused) */
    if (getdtablesize() > GW_LWS_MAX_FDS)
        info.fd_limit_per_thread = GW_LWS_MAX_FDS;

    int count = 0;
    uv_walk(g->loop, walk_count, &count);
    struct handle_set before = {mem_alloc(sizeof(void *) * (size_t)(count + 1)), 0, count + 1};
    uv_walk(g->loop, walk_collect, &before);
    g->ctx = lws_create_context(&info);
    if (g->ctx) {
        g->ctx_alive = g->ctx;
        track_lws_handles(g, &before);
    }
    mem_free(before.h);
    return g->ctx ? 0 : BC_EPROTO;
}

/* ---- sending ------------------------------------------------------------- */

static int write_text(struct gw *g, struct lws *wsi, unsigned char *payload, size_t len)
{
    int n = lws_write(wsi, payload, len, LWS_WRITE_TEXT);
    if (n < 0) {
        snprintf(g->last_err, sizeof g->last_err, "write failed");
        return -1;
    }
    window_push(g, uv_now(g->loop));
    return 0;
}

static int send_heartbeat(struct gw *g, struct lws *wsi)
{
    char *p = (char *)g->wbuf + LWS_PRE;
    int n = g->sess.seq > 0
                ? snprintf(p, GW_MAX_SEND, "{\"op\":1,\"d\":%lld}", (long long)g->sess.seq)
                : snprintf(p, GW_MAX_SEND, "{\"op\":1,\"d\":null}");
    g->hb_due = 0;
    g->hb_sent_ns = uv_hrtime();
    return write_text(g, wsi, (unsigned char *)p, (size_t)n);
}

/* Identify and Resume carry the token: built in wbuf, wiped after writing. */
static int send_with_token(struct gw *g, struct lws *wsi, int resume)
{
    char tok[GW_TOKEN_MAX * 6 + 1], sid[sizeof g->sess.session_id * 6];
    char *p = (char *)g->wbuf + LWS_PRE;
    int n = -1;
    if (json_escape(tok, sizeof tok, g->token->value) >= 0 &&
        json_escape(sid, sizeof sid, g->sess.session_id) >= 0) {
        if (resume)
            n = snprintf(p, GW_MAX_SEND,
                         "{\"op\":6,\"d\":{\"token\":\"%s\",\"session_id\":\"%s\",\"seq\":%lld}}",
                         tok, sid, (long long)g->sess.seq);
        else
            n = snprintf(p, GW_MAX_SEND,
                         "{\"op\":2,\"d\":{\"token\":\"%s\",\"intents\":%d,\"properties\":"
                         "{\"os\":\"linux\",\"browser\":\"discordbot-c\",\"device\":"
                         "\"discordbot-c\"},\"shard\":[%d,%d]}}",
                         tok, g->intents, g->shard_id, g->shard_count);
    }
    explicit_bzero(tok, sizeof tok);
    g->identify_due = g->resume_due = 0;
    if (n < 0 || n >= GW_MAX_SEND) {
        log_error("gateway: Identify/Resume payload too large", LF_INT("shard", g->shard_id));
        return -1;
    }
    int rc = write_text(g, wsi, (unsigned char *)p, (size_t)n);
    explicit_bzero(p, (size_t)n);
    log_info(resume ? "gateway resume sent" : "gateway identify sent",
             LF_INT("shard", g->shard_id), LF_INT("seq", g->sess.seq),
             LF_SECRET("token", g->token));
    return rc;
}

static int send_queued(struct gw *g, struct lws *wsi)
{
    struct gw_msg *m = g->q_head;
    g->q_head = m->next;
    if (!g->q_head)
        g->q_tail = NULL;
    g->q_len--;
    int rc = write_text(g, wsi, m->buf + LWS_PRE, m->len);
    mem_free(m);
    return rc;
}

static void drop_queue(struct gw *g)
{
    while (g->q_head) {
        struct gw_msg *m = g->q_head;
        g->q_head = m->next;
        mem_free(m);
    }
    g->q_tail = NULL;
    g->q_len = 0;
}

static int control_due(const struct gw *g)
{
    return g->hb_due || g->identify_due || g->resume_due;
}

static int user_due(const struct gw *g)
{
    return g->q_head && g->phase == GW_READY;
}

/* lws 4.1.6 as Debian builds it (with _DEBUG) closes a connection twice
 * when a callback returns -1, and the second close kills the socket before
 * the close frame lws_close_reason prepared is sent. So the close frame is
 * written here, then -1 lets lws drop the connection. */
static int gw_send_close(struct gw *g, struct lws *wsi)
{
    unsigned char *p = g->wbuf + LWS_PRE;
    p[0] = (unsigned char)(g->close_code >> 8);
    p[1] = (unsigned char)(g->close_code & 0xff);
    lws_write(wsi, p, 2, GW_LWS_WRITE_CLOSE);
    return -1;
}

static int on_writable(struct gw *g, struct lws *wsi)
{
    if (wsi != g->wsi)
        return -1;
    if (g->close_code)
        return gw_send_close(g, wsi);
    if (!g->established)
        return 0;
    uint64_t now = uv_now(g->loop);
    window_prune(g, now);
    int rc = 0;
    if (control_due(g) && g->sent_n < GW_SEND_LIMIT) {
        if (g->hb_due)
            rc = send_heartbeat(g, wsi);
        else
            rc = send_with_token(g, wsi, g->resume_due);
    } else if (user_due(g) && g->sent_n < GW_SEND_LIMIT - GW_SEND_RESERVE) {
        rc = send_queued(g, wsi);
    }
    if (rc)
        return -1;
    send_more(g);
    return 0;
}

static void on_send_timer(uv_timer_t *t)
{
    send_more(t->data);
}

/* Ask for a writable callback when something may go out now, or wake up
 * when the send window makes room. */
static void send_more(struct gw *g)
{
    if (!g->wsi || !g->established || g->close_code)
        return;
    uint64_t now = uv_now(g->loop);
    window_prune(g, now);
    if ((control_due(g) && g->sent_n < GW_SEND_LIMIT) ||
        (user_due(g) && g->sent_n < GW_SEND_LIMIT - GW_SEND_RESERVE)) {
        lws_callback_on_writable(g->wsi);
        return;
    }
    if (control_due(g) || user_due(g))
        uv_timer_start(&g->t_send, on_send_timer, window_wait(g, now) + 1, 0);
}

/* ---- connection lifecycle ------------------------------------------------ */

static void on_grace(uv_timer_t *t)
{
    struct gw *g = t->data;
    g->grace_over = 1;
    if (g->wsi) /* the close frame did not get out in time: just drop it */
        lws_set_timeout(g->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    if (g->phase == GW_CLOSING)
        kick(g);
}

/* End the current connection from our side with a close frame (or, when
 * the WebSocket is not up yet, by dropping it). */
static void conn_request_close(struct gw *g, int code)
{
    uv_timer_stop(&g->t_hb);
    if (!g->wsi || g->close_code)
        return;
    if (!g->established) {
        lws_set_timeout(g->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    g->close_code = code;
    g->grace_over = 0;
    lws_callback_on_writable(g->wsi);
    uv_timer_start(&g->t_aux, on_grace, GW_CLOSE_GRACE_MS, 0);
}

/* We decided this connection ends and what comes next. */
static void conn_end_by_us(struct gw *g, enum gw_next next, enum gw_delay delay, int code)
{
    if (g->intent)
        return;
    g->intent = 1;
    g->next = next;
    g->delay = delay;
    conn_request_close(g, code);
}

static void on_hello_timeout(uv_timer_t *t)
{
    struct gw *g = t->data;
    if (g->phase != GW_HELLO)
        return;
    log_warn("gateway sent no Hello; reconnecting", LF_INT("shard", g->shard_id),
             LF_INT("waited_ms", g->hello_timeout_ms));
    conn_end_by_us(g, GW_NEXT_RESUME, GW_DELAY_BACKOFF, 4000);
}

static void conn_reset_state(struct gw *g)
{
    zstream_reset(&g->zs);
    json_tokener_reset(g->tok);
    uv_timer_stop(&g->t_hb);
    uv_timer_stop(&g->t_send);
    uv_timer_stop(&g->t_aux);
    g->hb_acked = 1;
    g->hb_due = g->identify_due = g->resume_due = 0;
    g->ended = g->established = g->peer_close = g->close_code = g->intent = 0;
    g->sent_first = g->sent_n = 0;
    g->last_err[0] = '\0';
}

static void conn_connect(struct gw *g, const char *addr)
{
    conn_reset_state(g);
    snprintf(g->addr, sizeof g->addr, "%s", addr);
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof ci);
    ci.context = g->ctx;
    ci.address = g->addr;
    ci.port = g->target.port;
    ci.ssl_connection = g->target.tls ? LCCSCF_USE_SSL : 0;
    ci.path = g->req_path;
    ci.host = g->target.host; /* Host header, TLS SNI and certificate name */
    ci.local_protocol_name = gw_protocols[0].name;
    ci.alpn = "http/1.1";
    ci.pwsi = &g->wsi;
    ci.retry_and_idle_policy = &gw_no_validity;
    g->phase = GW_CONNECTING;
    struct lws *wsi = lws_client_connect_via_info(&ci);
    if (!wsi) {
        g->wsi = NULL;
        if (!g->ended) {
            snprintf(g->last_err, sizeof g->last_err, "connect failed");
            g->ended = 1;
            kick(g);
        }
    }
}

static void on_dns(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct gw *g = req->data;
    g->dns_busy = 0;
    char name[64] = "";
    if (!status) {
        const struct addrinfo *pick = NULL;
        for (const struct addrinfo *a = res; a && !pick; a = a->ai_next)
            if (a->ai_family == AF_INET)
                pick = a;
        if (!pick)
            pick = res;
        if (pick && pick->ai_family == AF_INET)
            uv_ip4_name((const struct sockaddr_in *)pick->ai_addr, name, sizeof name);
        else if (pick && pick->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)pick->ai_addr, name, sizeof name);
    }
    uv_freeaddrinfo(res);
    if (g->phase != GW_RESOLVING) { /* stopped or closing meanwhile */
        kick(g);
        return;
    }
    if (!name[0]) {
        snprintf(g->last_err, sizeof g->last_err, "cannot resolve %.64s: %s", g->target.host,
                 status ? uv_strerror(status) : "no address");
        g->ended = 1;
        kick(g);
        return;
    }
    conn_connect(g, name);
}

/* Start the next connection: to the resume url when resuming. */
static void conn_begin(struct gw *g)
{
    const char *url = g->url;
    if (resumable(g) && g->sess.resume_url[0])
        url = g->sess.resume_url;
    if (url_parse(url, &g->target)) {
        log_warn("gateway resume url unusable; using the gateway url",
                 LF_INT("shard", g->shard_id));
        g->sess.resume_url[0] = '\0';
        url_parse(g->url, &g->target); /* checked in gw_new */
    }
    snprintf(g->req_path, sizeof g->req_path, "%s?v=10&encoding=json%s", g->target.path,
             g->compress ? "&compress=zlib-stream" : "");
    char shown[1200];
    snprintf(shown, sizeof shown, "%s://%s:%d%s", g->target.tls ? "wss" : "ws", g->target.host,
             g->target.port, g->req_path);
    log_info("gateway connecting", LF_URL("url", shown), LF_INT("shard", g->shard_id),
             LF_BOOL("resume", resumable(g)), LF_INT("attempt", g->fails + 1));
    if (is_ip_literal(g->target.host)) {
        conn_connect(g, g->target.host);
        return;
    }
    g->phase = GW_RESOLVING;
    g->dns.data = g;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(g->loop, &g->dns, on_dns, g->target.host, NULL, &hints);
    if (rc) {
        snprintf(g->last_err, sizeof g->last_err, "resolver: %s", uv_strerror(rc));
        g->ended = 1;
        kick(g);
        return;
    }
    g->dns_busy = 1;
}

static void on_conn_timer(uv_timer_t *t)
{
    struct gw *g = t->data;
    if (g->phase == GW_WAIT)
        conn_begin(g);
    else if (g->phase == GW_HELLO)
        on_hello_timeout(t);
}

static uint64_t reconnect_delay(struct gw *g, enum gw_delay kind)
{
    if (kind == GW_DELAY_INVALID)
        return GW_INVALID_MIN_MS + (uint64_t)(gw_rand01(g) * GW_INVALID_SPAN_MS);
    if (kind == GW_DELAY_NOW && g->fails == 0)
        return 0;
    int shift = g->fails < 6 ? g->fails : 6;
    uint64_t base = (uint64_t)GW_BACKOFF_MIN_MS << shift;
    if (base > GW_BACKOFF_MAX_MS)
        base = GW_BACKOFF_MAX_MS;
    return base / 2 + (uint64_t)(gw_rand01(g) * (double)(base / 2));
}

static void schedule_reconnect(struct gw *g, enum gw_delay kind)
{
    uint64_t ms = reconnect_delay(g, kind);
    g->fails++;
    g->phase = GW_WAIT;
    log_info("gateway reconnecting", LF_INT("shard", g->shard_id), LF_INT("in_ms", ms),
             LF_BOOL("resume", resumable(g)));
    uv_timer_start(&g->t_conn, on_conn_timer, ms, 0);
}

/* ---- close codes ------------------------------------------------------------ */

struct close_rule {
    int code;
    enum gw_next next;
    const char *why;
};

static const struct close_rule close_rules[] = {
    {1000, GW_NEXT_IDENTIFY, "normal closure: the session ended"},
    {1001, GW_NEXT_IDENTIFY, "going away: the session ended"},
    {4000, GW_NEXT_RESUME, "unknown error"},
    {4001, GW_NEXT_RESUME, "unknown opcode"},
    {4002, GW_NEXT_RESUME, "decode error"},
    {4003, GW_NEXT_RESUME, "not authenticated"},
    {4004, GW_NEXT_STOP, "authentication failed: check DISCORD_TOKEN"},
    {4005, GW_NEXT_RESUME, "already authenticated"},
    {4007, GW_NEXT_IDENTIFY, "invalid seq"},
    {4008, GW_NEXT_RESUME, "rate limited"},
    {4009, GW_NEXT_IDENTIFY, "session timed out"},
    {4010, GW_NEXT_STOP, "invalid shard: check the shard id and count"},
    {4011, GW_NEXT_STOP, "sharding required: the bot needs more shards"},
    {4012, GW_NEXT_STOP, "invalid API version: this build speaks gateway v10"},
    {4013, GW_NEXT_STOP, "invalid intents: check the configured intents value"},
    {4014, GW_NEXT_STOP,
     "disallowed intents: enable the privileged intents (MESSAGE_CONTENT) for the bot "
     "in the Discord developer portal, or stop asking for them"},
};

static const struct close_rule *close_rule_for(int code)
{
    for (size_t i = 0; i < sizeof close_rules / sizeof close_rules[0]; i++)
        if (close_rules[i].code == code)
            return &close_rules[i];
    return NULL;
}

static void stop_fatal(struct gw *g, int code, const char *why)
{
    g->phase = GW_STOPPED;
    drop_queue(g);
    log_error("gateway closed for good; not reconnecting", LF_INT("close_code", code),
              LF_STR("reason", why), LF_INT("shard", g->shard_id));
    set_up(g, 0);
    if (g->cbs.fatal && g->phase == GW_STOPPED)
        g->cbs.fatal(g, code, why, g->arg);
}

/* The connection is gone; decide what comes next. Runs from t_kick. */
static void conn_after_end(struct gw *g)
{
    uv_timer_stop(&g->t_hb);
    uv_timer_stop(&g->t_send);
    uv_timer_stop(&g->t_aux);
    uv_timer_stop(&g->t_conn);
    enum gw_next next = GW_NEXT_RESUME;
    enum gw_delay delay = GW_DELAY_BACKOFF;
    const struct close_rule *rule = NULL;
    if (g->intent) {
        next = g->next, delay = g->delay;
    } else if (g->peer_close && (rule = close_rule_for(g->peer_close))) {
        next = rule->next;
        log_warn("gateway closed by Discord", LF_INT("close_code", g->peer_close),
                 LF_STR("reason", rule->why), LF_INT("shard", g->shard_id));
    } else {
        log_warn("gateway connection lost",
                 LF_INT("close_code", g->peer_close ? g->peer_close : 1006),
                 LF_STR("error", g->last_err[0] ? g->last_err : "connection closed"),
                 LF_INT("shard", g->shard_id));
    }
    if (next == GW_NEXT_STOP) {
        stop_fatal(g, g->peer_close, rule->why);
        return;
    }
    if (next == GW_NEXT_IDENTIFY)
        forget_session(g);
    set_up(g, 0);
    if (g->phase == GW_CLOSING || g->phase == GW_STOPPED)
        return; /* the state callback closed or stopped us */
    schedule_reconnect(g, delay);
}

/* ---- gateway messages ------------------------------------------------------- */

static void on_hb_timer(uv_timer_t *t)
{
    struct gw *g = t->data;
    if (!g->wsi || !g->established || g->intent) {
        uv_timer_stop(t);
        return;
    }
    if (!g->hb_acked) {
        log_warn("gateway zombie connection: no heartbeat ACK; reconnecting",
                 LF_INT("shard", g->shard_id), LF_INT("interval_ms", g->hb_interval));
        conn_end_by_us(g, GW_NEXT_RESUME, GW_DELAY_NOW, 4000);
        return;
    }
    g->hb_acked = 0;
    g->hb_due = 1;
    send_more(g);
}

static void ask_gate(struct gw *g)
{
    g->phase = GW_GATE;
    if (g->gate_asked)
        return; /* an answer is still outstanding: it serves this connection */
    g->gate_asked = 1;
    g->cbs.identify_gate(g, g->arg);
}

static void op_hello(struct gw *g, struct json_object *d)
{
    struct json_object *v;
    if (g->phase != GW_HELLO) {
        log_warn("gateway sent an unexpected Hello; ignored",
                 LF_STR("phase", gw_phase_names[g->phase]));
        return;
    }
    int64_t ms = d && json_object_object_get_ex(d, "heartbeat_interval", &v)
                     ? json_object_get_int64(v)
                     : 0;
    if (ms <= 0) {
        log_warn("gateway Hello without heartbeat_interval; reconnecting",
                 LF_INT("shard", g->shard_id));
        conn_end_by_us(g, GW_NEXT_RESUME, GW_DELAY_BACKOFF, 4000);
        return;
    }
    if (ms < GW_HB_MIN_MS)
        ms = GW_HB_MIN_MS;
    if (ms > GW_HB_MAX_MS)
        ms = GW_HB_MAX_MS;
    g->hb_interval = (uint64_t)ms;
    uv_timer_stop(&g->t_conn);
    g->hb_acked = 1;
    uv_timer_start(&g->t_hb, on_hb_timer, (uint64_t)(gw_rand01(g) * (double)g->hb_interval),
                   g->hb_interval);
    if (resumable(g)) {
        g->phase = GW_RESUME;
        g->resume_due = 1;
        send_more(g);
        return;
    }
    ask_gate(g);
}

static void copy_str(char *dst, size_t cap, struct json_object *o, const char *key)
{
    struct json_object *v;
    dst[0] = '\0';
    if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return;
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    if (n && n < cap && strlen(s) == n)
        memcpy(dst, s, n + 1);
}

static void on_ready(struct gw *g, struct json_object *d)
{
    copy_str(g->sess.session_id, sizeof g->sess.session_id, d, "session_id");
    copy_str(g->sess.resume_url, sizeof g->sess.resume_url, d, "resume_gateway_url");
    struct gw_url u;
    if (g->sess.resume_url[0] && url_parse(g->sess.resume_url, &u))
        g->sess.resume_url[0] = '\0';
    if (!g->sess.session_id[0])
        log_warn("gateway READY without a usable session_id: this session cannot be resumed",
                 LF_INT("shard", g->shard_id));
    g->phase = GW_READY;
    g->fails = 0;
    log_info("gateway session ready", LF_INT("shard", g->shard_id),
             LF_STR("session", g->sess.session_id), LF_INT("seq", g->sess.seq));
    set_up(g, 1);
    if (g->cbs.ready && g->phase == GW_READY)
        g->cbs.ready(g, &g->sess, d, g->arg);
    send_more(g);
}

static void on_resumed(struct gw *g)
{
    g->phase = GW_READY;
    g->fails = 0;
    log_info("gateway session resumed", LF_INT("shard", g->shard_id), LF_INT("seq", g->sess.seq));
    set_up(g, 1);
    if (g->cbs.resumed && g->phase == GW_READY)
        g->cbs.resumed(g, g->arg);
    send_more(g);
}

static void log_bad_message(struct gw *g, const char *what, size_t len)
{
    unsigned dropped;
    if (loglimit_ok(g, &g->ll_json, &dropped))
        log_warn("gateway message skipped", LF_STR("problem", what), LF_INT("bytes", len),
                 LF_INT("suppressed", dropped), LF_INT("shard", g->shard_id));
}

/* One dispatch, from either path: the scanned one (dobj NULL) or the
 * parsed one (READY, RESUMED: dobj is d parsed). */
static void op_dispatch(struct gw *g, const char *type, int has_s, int64_t s, const struct jscan_val *d,
                        struct json_object *dobj, const char *raw, size_t len)
{
    if (has_s && s <= 0) {
        log_bad_message(g, "dispatch with an invalid sequence", len);
        return;
    }
    /* Discord numbers every dispatch; one without a number is delivered
     * under the current one (routing then treats it as already seen). */
    int64_t seq = has_s ? s : g->sess.seq;
    if (g->sess.seq > 0 && seq > g->sess.seq + 1) {
        /* Sequences grow by one. A jump means events were lost on the way
         * (or the peer is confused): do not trust it, resume from the last
         * good sequence so the gap is replayed. */
        log_warn("gateway sequence gap: resuming from the last good sequence", LF_INT("expected", g->sess.seq + 1),
                 LF_INT("got", seq), LF_INT("shard", g->shard_id));
        conn_end_by_us(g, GW_NEXT_RESUME, GW_DELAY_NOW, 4000);
        return;
    }
    if (seq > g->sess.seq)
        g->sess.seq = seq; /* an older one is a replay overlap: routing skips it */
    if (g->phase == GW_IDENTIFY && !strcmp(type, "READY") && dobj)
        on_ready(g, dobj);
    else if (g->phase == GW_RESUME && !strcmp(type, "RESUMED"))
        on_resumed(g);
    if (g->cbs.dispatch && g->phase != GW_CLOSING && g->phase != GW_STOPPED) {
        int has_d = d->type != JSCAN_ABSENT && d->type != JSCAN_NULL;
        struct gw_event ev = {.seq = seq,
                              .type = type,
                              .d = has_d ? d->p : "null",
                              .d_len = has_d ? d->n : 4,
                              .raw = raw,
                              .raw_len = len,
                              .dobj = dobj};
        g->cbs.dispatch(g, &ev, g->arg);
    }
}

static void op_invalid_session(struct gw *g, struct json_object *d)
{
    int can_resume = d && json_object_is_type(d, json_type_boolean) && json_object_get_boolean(d);
    log_warn("gateway session invalid", LF_BOOL("resumable", can_resume),
             LF_INT("shard", g->shard_id));
    if (can_resume && resumable(g)) {
        conn_end_by_us(g, GW_NEXT_RESUME, GW_DELAY_NOW, 4000);
        return;
    }
    forget_session(g);
    conn_end_by_us(g, GW_NEXT_IDENTIFY, GW_DELAY_INVALID, 4000);
}

static void op_heartbeat_ack(struct gw *g)
{
    g->hb_acked = 1;
    if (g->hb_sent_ns)
        g->latency_ms = (double)(uv_hrtime() - g->hb_sent_ns) / 1e6;
}

static void handle_op(struct gw *g, int op, struct json_object *d)
{
    unsigned dropped;
    switch (op) {
    case 0: /* handled in handle_message */
        break;
    case 1: /* the server wants a beat now; the timer keeps its rhythm */
        g->hb_due = 1;
        send_more(g);
        break;
    case 7:
        log_info("gateway asked for a reconnect", LF_INT("shard", g->shard_id));
        conn_end_by_us(g, GW_NEXT_RESUME, GW_DELAY_NOW, 4000);
        break;
    case 9:
        op_invalid_session(g, d);
        break;
    case 10:
        op_hello(g, d);
        break;
    case 11:
        op_heartbeat_ack(g);
        break;
    default:
        if (loglimit_ok(g, &g->ll_op, &dropped))
            log_warn("gateway sent an unknown opcode; ignored", LF_INT("op", op),
                     LF_INT("suppressed", dropped), LF_INT("shard", g->shard_id));
    }
}

static const char *const envelope_keys[] = {"op", "t", "s", "d"};

int gw__decode(const char *msg, size_t len, struct gw__frame *f, const char **why)
{
    struct jscan_val env[4];
    int64_t op;
    memset(f, 0, sizeof(*f));
    *why = NULL;
    if (jscan_object(msg, len, envelope_keys, 4, env)) {
        *why = "not one JSON object";
        return -EINVAL;
    }
    if (jscan_int64(&env[0], &op) || op < INT32_MIN || op > INT32_MAX) {
        *why = "no op";
        return -EINVAL;
    }
    f->op = (int)op;
    int has_d = env[3].type != JSCAN_ABSENT && env[3].type != JSCAN_NULL;
    f->d = has_d ? env[3].p : "null";
    f->d_len = has_d ? env[3].n : 4;
    if (op != 0)
        return 0;
    if (env[1].type != JSCAN_STRING || !env[1].n || env[1].n >= sizeof(f->type) ||
        memchr(env[1].p, '\\', env[1].n) || memchr(env[1].p, '\0', env[1].n)) {
        *why = "dispatch without a type";
        return -EINVAL;
    }
    memcpy(f->type, env[1].p, env[1].n);
    f->type[env[1].n] = '\0';
    f->has_seq = env[2].type != JSCAN_ABSENT && env[2].type != JSCAN_NULL;
    if (f->has_seq && (jscan_int64(&env[2], &f->seq) || f->seq <= 0)) {
        *why = "dispatch with an invalid sequence";
        return -EINVAL;
    }
    return 0;
}

/* d of a message parsed with json-c, for the rare messages the client
 * reads itself (Hello, Invalid Session, READY); NULL for null or bad JSON. */
static struct json_object *parse_d(struct gw *g, const struct gw__frame *f)
{
    /* a bare literal or number is complete only at the end of the input:
     * give json-c a terminated copy */
    char small[64];
    const char *p = f->d;
    size_t n = f->d_len;
    if (n < sizeof(small) && *p != '{' && *p != '[') {
        memcpy(small, p, n);
        small[n] = '\0';
        p = small;
    }
    json_tokener_reset(g->tok);
    struct json_object *d = json_tokener_parse_ex(g->tok, p, (int)n + (p == small));
    if (d && (json_tokener_get_parse_end(g->tok) < n || json_object_is_type(d, json_type_null))) {
        json_object_put(d);
        d = NULL;
    }
    return d;
}

/* One complete message. Dispatches, which are nearly all of the traffic,
 * are scanned, not parsed: the envelope's four members are found in place
 * and d is handed on as bytes (see jscan.h). Only what the client reads
 * itself (READY, Hello, Invalid Session) is parsed, d alone. */
static void handle_message(struct gw *g, const char *msg, size_t len)
{
    struct gw__frame f;
    const char *why;
    if (gw__decode(msg, len, &f, &why)) {
        log_bad_message(g, why, len);
        return;
    }
    struct jscan_val d = {JSCAN_NULL, f.d, f.d_len};
    if (strcmp(f.d, "null") || f.d_len != 4)
        d.type = JSCAN_OBJECT; /* anything but null: op_dispatch passes it on as bytes */
    if (f.op == 0) {
        struct json_object *dobj = !strcmp(f.type, "READY") ? parse_d(g, &f) : NULL;
        op_dispatch(g, f.type, f.has_seq, f.seq, &d, dobj, msg, len);
        json_object_put(dobj);
        return;
    }
    struct json_object *dobj = f.op == 9 || f.op == 10 ? parse_d(g, &f) : NULL;
    handle_op(g, f.op, dobj);
    json_object_put(dobj);
}

/* ---- lws callbacks ------------------------------------------------------------- */

static int on_established(struct gw *g, struct lws *wsi)
{
    if (wsi != g->wsi)
        return -1;
    g->established = 1;
    if (g->phase == GW_CLOSING || g->phase == GW_STOPPED) {
        conn_request_close(g, g->phase == GW_STOPPED ? 1000 : 4000);
        return 0;
    }
    g->phase = GW_HELLO;
    log_info("gateway connected", LF_INT("shard", g->shard_id), LF_STR("addr", g->addr));
    uv_timer_start(&g->t_conn, on_conn_timer, (uint64_t)g->hello_timeout_ms, 0);
    return 0;
}

static int on_receive(struct gw *g, struct lws *wsi, const void *in, size_t len)
{
    if (wsi != g->wsi || g->close_code || g->intent || g->phase >= GW_STOPPED)
        return 0; /* closing: whatever still arrives is dropped */
    const char *msg;
    size_t ml;
    int rc = zstream_feed(&g->zs, in, len, lws_is_final_fragment(wsi), &msg, &ml);
    if (rc == 1) {
        handle_message(g, msg, ml);
    } else if (rc < 0) {
        unsigned dropped;
        if (loglimit_ok(g, &g->ll_frame, &dropped))
            log_warn("gateway message unreadable; resetting the connection",
                     LF_STR("problem", rc == BC_ETOOBIG ? "message over max_message"
                                                        : "corrupt compressed stream"),
                     LF_INT("suppressed", dropped), LF_INT("shard", g->shard_id));
        snprintf(g->last_err, sizeof g->last_err, "%s", bc_strerror(rc));
        conn_end_by_us(g, GW_NEXT_RESUME, GW_DELAY_BACKOFF, 4000);
    }
    return 0;
}

static void on_peer_close(struct gw *g, struct lws *wsi, const unsigned char *in, size_t len)
{
    if (wsi != g->wsi || len < 2)
        return;
    g->peer_close = (in[0] << 8) | in[1];
    char reason[124];
    size_t n = len - 2 < sizeof reason - 1 ? len - 2 : sizeof reason - 1;
    memcpy(reason, in + 2, n);
    reason[n] = '\0';
    log_info("gateway close frame received", LF_INT("close_code", g->peer_close),
             LF_STR("text", reason), LF_INT("shard", g->shard_id));
}

static void on_conn_gone(struct gw *g, struct lws *wsi, const char *err, size_t errlen)
{
    if (wsi != g->wsi || g->ended)
        return;
    g->wsi = NULL;
    g->ended = 1;
    if (err && !g->last_err[0])
        snprintf(g->last_err, sizeof g->last_err, "%.*s", (int)(errlen < 120 ? errlen : 120), err);
    kick(g);
}

static int add_user_agent(struct lws *wsi, void *in, size_t len)
{
    static const char ua[] = "DiscordBot (https://discord.com/developers, " BC_VERSION ")";
    unsigned char **p = in, *end = *p + len;
    return lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_USER_AGENT, (const unsigned char *)ua,
                                        (int)sizeof ua - 1, p, end)
               ? -1
               : 0;
}

static int gw_lws_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    (void)user;
    struct lws_context *cx = wsi ? lws_get_context(wsi) : NULL;
    struct gw *g = cx ? lws_context_user(cx) : NULL;
    if (!g)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        return add_user_agent(wsi, in, len);
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        return on_established(g, wsi);
    case LWS_CALLBACK_CLIENT_RECEIVE:
        return on_receive(g, wsi, in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return on_writable(g, wsi);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        on_peer_close(g, wsi, in, len);
        return 0;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        on_conn_gone(g, wsi, in ? in : "connection failed", in ? strnlen(in, len ? len : 120) : 17);
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        on_conn_gone(g, wsi, NULL, 0);
        return 0;
    default:
        return 0;
    }
}

/* ---- deferred work and teardown ------------------------------------------------- */

static void on_kick(uv_timer_t *t)
{
    struct gw *g = t->data;
    if (g->ended && g->phase != GW_CLOSING && g->phase != GW_STOPPED) {
        g->ended = 0;
        conn_after_end(g);
    } else if (g->ended && g->phase == GW_STOPPED) {
        g->ended = 0;
    }
    if (g->phase == GW_CLOSING)
        teardown_step(g);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct gw *g = h->data;
    if (--g->timers_open)
        return;
    void (*done)(void *) = g->done;
    void *arg = g->done_arg;
    drop_queue(g);
    zstream_free(&g->zs);
    json_tokener_free(g->tok);
    mem_free(g->url);
    mem_free(g->ca_file);
    mem_free(g);
    if (done)
        done(arg);
}

static void on_drain_poll(uv_timer_t *t)
{
    teardown_step(t->data);
}

/* Steps of gw_close, each waiting for what the previous one started: our
 * close frame, lws' first destroy and its handles, the resolver, our own
 * timers. */
static void teardown_step(struct gw *g)
{
    if (g->closing_handles)
        return;
    if (g->wsi && g->close_code && !g->grace_over)
        return; /* the close frame is on its way (on_grace bounds the wait) */
    if (!g->lws_destroying) {
        g->lws_destroying = 1;
        lws_context_destroy(g->ctx); /* closes what is left; lws' handles close on the loop */
        g->drain_deadline = uv_now(g->loop) + GW_LWS_DRAIN_MS;
        uv_timer_start(&g->t_aux, on_drain_poll, GW_LWS_POLL_MS, GW_LWS_POLL_MS);
    }
    if (!g->lws_gone) {
        int alive = lws_handles_alive(g);
        if (alive && uv_now(g->loop) < g->drain_deadline)
            return;
        g->lws_gone = 1;
        uv_timer_stop(&g->t_aux);
        if (alive)
            log_error("libwebsockets did not release its handles; leaking its context");
        else
            lws_context_destroy(g->ctx); /* lws 4.1: the second call frees it */
        if (g->ctx_alive)
            log_error("libwebsockets context still alive after destroy");
    }
    if (g->dns_busy)
        return; /* on_dns kicks us */
    g->closing_handles = 1;
    uv_timer_t *timers[] = {&g->t_kick, &g->t_hb, &g->t_conn, &g->t_send, &g->t_aux};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
        uv_close((uv_handle_t *)timers[i], on_timer_closed);
}

/* ---- public API ------------------------------------------------------------------ */

static int check_opts(const struct gw_opts *o, const struct gw_cbs *cbs)
{
    struct gw_url u;
    if (!o || !cbs || !cbs->identify_gate || !o->token || !secret_isset(o->token) || !o->url)
        return -EINVAL;
    if (strlen(o->token->value) > GW_TOKEN_MAX || url_parse(o->url, &u))
        return -EINVAL;
    int count = o->shard_count ? o->shard_count : 1;
    if (count < 1 || o->shard_id < 0 || o->shard_id >= count)
        return -EINVAL;
    if (o->max_message > GW_MAX_MESSAGE_CAP)
        return -EINVAL;
    return 0;
}

int gw_new(uv_loop_t *loop, const struct gw_opts *o, const struct gw_cbs *cbs, void *arg,
           struct gw **out)
{
    int rc = check_opts(o, cbs);
    if (rc)
        return rc;
    struct gw *g = mem_calloc(1, sizeof *g);
    g->loop = loop;
    g->cbs = *cbs;
    g->arg = arg;
    g->token = o->token;
    g->url = mem_strdup(o->url);
    g->ca_file = o->ca_file ? mem_strdup(o->ca_file) : NULL;
    g->intents = o->intents;
    g->shard_id = o->shard_id;
    g->shard_count = o->shard_count ? o->shard_count : 1;
    g->compress = !!o->compress;
    g->hello_timeout_ms = o->hello_timeout_ms > 0 ? o->hello_timeout_ms : GW_HELLO_TIMEOUT_MS;
    g->latency_ms = -1;
    g->rng = uv_hrtime() ^ ((uint64_t)(uintptr_t)g << 17) ^ (uint64_t)getpid();
    if (!g->rng)
        g->rng = 0x9e3779b97f4a7c15ull;
    g->tok = json_tokener_new_ex(GW_JSON_DEPTH);
    /* Discord sends strict JSON; strict mode also compares literals with
     * strncmp instead of strncasecmp, a measurable share of parsing */
    if (g->tok)
        json_tokener_set_flags(g->tok, JSON_TOKENER_STRICT);
    if (!g->tok || zstream_init(&g->zs, g->compress, o->max_message ? o->max_message
                                                                    : GW_DEFAULT_MAX_MESSAGE) ||
        lws_start(g)) {
        if (g->tok)
            json_tokener_free(g->tok);
        zstream_free(&g->zs);
        mem_free(g->url);
        mem_free(g->ca_file);
        mem_free(g);
        return BC_EPROTO;
    }
    uv_timer_t *timers[] = {&g->t_kick, &g->t_hb, &g->t_conn, &g->t_send, &g->t_aux};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
        uv_timer_init(loop, timers[i]);
        timers[i]->data = g;
        g->timers_open++;
    }
    *out = g;
    return 0;
}

int gw_start(struct gw *g, const struct gw_resume *resume)
{
    if (g->phase == GW_CLOSING || g->phase == GW_STOPPED)
        return BC_ESHUTDOWN;
    if (g->started)
        return -EALREADY;
    g->started = 1;
    if (resume && resume->session_id[0]) {
        snprintf(g->sess.session_id, sizeof g->sess.session_id, "%s", resume->session_id);
        snprintf(g->sess.resume_url, sizeof g->sess.resume_url, "%s", resume->resume_url);
        g->sess.seq = resume->seq > 0 ? resume->seq : 0;
    }
    g->phase = GW_WAIT;
    uv_timer_start(&g->t_conn, on_conn_timer, 0, 0);
    return 0;
}

void gw_identify_go(struct gw *g)
{
    if (g->phase == GW_CLOSING || g->phase == GW_STOPPED)
        return;
    g->gate_asked = 0;
    if (g->phase != GW_GATE || !g->wsi) {
        log_info("gateway identify permission arrived with no connection waiting; "
                 "the gate will be asked again",
                 LF_INT("shard", g->shard_id), LF_STR("phase", gw_phase_names[g->phase]));
        return;
    }
    g->phase = GW_IDENTIFY;
    g->identify_due = 1;
    send_more(g);
}

int gw_send(struct gw *g, const char *json, size_t len)
{
    if (g->phase == GW_CLOSING || g->phase == GW_STOPPED)
        return BC_ESHUTDOWN;
    if (!json || !len || len > GW_MAX_SEND)
        return -EMSGSIZE;
    if (g->q_len >= GW_SEND_QUEUE_MAX)
        return -ENOBUFS;
    struct gw_msg *m = mem_alloc(sizeof *m + LWS_PRE + len);
    m->next = NULL;
    m->len = len;
    memcpy(m->buf + LWS_PRE, json, len);
    if (g->q_tail)
        g->q_tail->next = m;
    else
        g->q_head = m;
    g->q_tail = m;
    g->q_len++;
    send_more(g);
    return 0;
}

void gw_get_resume(const struct gw *g, struct gw_resume *out)
{
    *out = g->sess;
}

double gw_latency_ms(const struct gw *g)
{
    return g->latency_ms;
}

int gw_connected(const struct gw *g)
{
    return g->up;
}

void gw_stop(struct gw *g)
{
    if (g->phase == GW_CLOSING || g->phase == GW_STOPPED)
        return;
    log_info("gateway stopping: ending the session", LF_INT("shard", g->shard_id));
    g->phase = GW_STOPPED;
    g->up = 0;
    drop_queue(g);
    uv_timer_stop(&g->t_conn);
    uv_timer_stop(&g->t_send);
    conn_request_close(g, 1000);
}

void gw_close(struct gw *g, void (*done)(void *arg), void *arg)
{
    if (g->phase == GW_CLOSING)
        return;
    enum gw_phase was = g->phase;
    g->phase = GW_CLOSING;
    g->done = done;
    g->done_arg = arg;
    drop_queue(g);
    uv_timer_stop(&g->t_hb);
    uv_timer_stop(&g->t_conn);
    uv_timer_stop(&g->t_send);
    if (g->dns_busy)
        uv_cancel((uv_req_t *)&g->dns);
    if (was != GW_STOPPED) /* a stopped gw already sent its 1000 */
        conn_request_close(g, 4000);
    kick(g);
}
