#include "discord/gwhold.h"

#include <errno.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discord/drest.h"
#include "base/err.h"
#include "io/gw.h"
#include "discord/ingress.h"
#include "service/lease.h"
#include "base/log.h"
#include "base/mem.h"
#include "io/rds.h"

#define IDENTIFY_RESERVE 5     /* identifies kept back from the daily budget */
#define FATAL_TTL_S "3600"
#define RETRY_MS 5000

enum hold_state { HS_OFF, HS_CANDIDATE, HS_PREPARING, HS_CONNECTING, HS_CONNECTED, HS_STOPPED };
static const char *const state_names[] = {"off", "candidate", "connecting", "connecting", "connected", "stopped"};

struct gwhold {
    uv_loop_t *loop;
    const struct config *cfg;
    struct rds *redis;
    struct drest *rest;
    struct ingress *in;
    struct lease *lease;
    struct gw *gw;
    enum hold_state state;
    char lease_key[128], session_key[128], fatal_key[128], ident_key[128];
    char url[512];
    int remaining, max_concurrency;
    long reset_after_ms;
    char error[200];
    uv_timer_t timer;      /* retries and the identify gate */
    uv_timer_t info_timer; /* publishes latency for /핑 */
    int closing, busy;
    int resync_pending;    /* resume from Redis once it is reachable again */
    struct gw_resume pending_resume; /* read from Redis, used once the channels are loaded */
    unsigned generation;   /* bumps on every lease change: stale replies are ignored */
};

static void prepare(struct gwhold *h);
static void schedule_retry(struct gwhold *h);

static void set_state(struct gwhold *h, enum hold_state s)
{
    h->state = s;
}

/* ---- losing and stopping ------------------------------------------------ */

static void on_gw_closed(void *arg)
{
    (void)arg;
}

static void drop_connection(struct gwhold *h)
{
    h->resync_pending = 0;
    ingress_set_holder(h->in, NULL, NULL, NULL, NULL, NULL);
    if (h->gw) {
        struct gw *g = h->gw;
        h->gw = NULL;
        gw_close(g, on_gw_closed, h);
    }
}

static void stop_for_good(struct gwhold *h, const char *why)
{
    snprintf(h->error, sizeof(h->error), "%s", why);
    log_error("gateway stopped for good", LF_STR("reason", why));
    drop_connection(h);
    lease_release(h->lease);
    uv_timer_stop(&h->timer);
    set_state(h, HS_STOPPED);
}

/* ---- ingress trouble ------------------------------------------------------- */

static void on_trouble(enum ingress_trouble t, void *arg);

static void on_resync_timer(uv_timer_t *t)
{
    struct gwhold *h = t->data;
    if (!h->resync_pending || !h->gw) {
        uv_timer_stop(t);
        return;
    }
    if (rds_up(h->redis)) {
        uv_timer_stop(t);
        on_trouble(INGRESS_RESYNC, h);
    }
}

struct sess_ctx {
    struct gwhold *h;
    unsigned gen;
};

/* The context of a request made for this connection attempt. */
static struct sess_ctx *sess_new(struct gwhold *h)
{
    struct sess_ctx *c = mem_alloc(sizeof(*c));
    c->h = h;
    c->gen = h->generation;
    return c;
}

/* Its answer came (status 0 or an error): h when the answer is still for
 * the current attempt, NULL after shutdown, close or a newer attempt.
 * Frees the context either way. */
static struct gwhold *sess_back(void *arg, int status)
{
    struct sess_ctx *c = arg;
    struct gwhold *h = c->h;
    unsigned gen = c->gen;
    mem_free(c);
    return status == BC_ESHUTDOWN || h->closing || gen != h->generation ? NULL : h;
}

static void on_session(struct rds *r, int status, const redisReply *reply, void *arg);

static void read_session_and_connect(struct gwhold *h)
{
    struct sess_ctx *c = sess_new(h);
    const char *av[] = {"HGETALL", h->session_key};
    if (rds_cmd(h->redis, on_session, c, 2, av, NULL)) {
        mem_free(c);
        schedule_retry(h);
    }
}

static void on_trouble(enum ingress_trouble t, void *arg)
{
    struct gwhold *h = arg;
    if (t == INGRESS_FENCED) {
        drop_connection(h);
        lease_release(h->lease);
        lease_start(h->lease);
        set_state(h, HS_CANDIDATE);
        return;
    }
    /* RESYNC: a batch was lost; resume from what Redis has, so Discord
     * replays the rest. While Redis is away the connection stays (the
     * ingress holds events and acknowledges interactions meanwhile), and
     * the resync waits for it. */
    if (h->state != HS_CONNECTED && h->state != HS_CONNECTING)
        return;
    if (!rds_up(h->redis)) {
        if (!h->resync_pending)
            log_warn("redis away: gateway events are not stored; resuming from the stored sequence when it returns");
        h->resync_pending = 1;
        uv_timer_start(&h->timer, on_resync_timer, 250, 250);
        return;
    }
    h->resync_pending = 0;
    drop_connection(h);
    set_state(h, HS_PREPARING);
    uv_timer_stop(&h->timer);
    read_session_and_connect(h);
}

/* ---- gateway callbacks ------------------------------------------------------ */

static void on_dispatch(struct gw *g, const struct gw_event *ev, void *arg)
{
    (void)g;
    ingress_gateway_event(((struct gwhold *)arg)->in, ev);
}

static const char ready_lua[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end\n"
    "redis.call('HSET', KEYS[2], 'session_id', ARGV[2], 'resume_url', ARGV[3], 'seq', ARGV[4])\n"
    "return 1\n";

static void on_ready_stored(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct gwhold *h = sess_back(arg, status);
    if (!h)
        return;
    if (status || rds_reply_error(reply))
        on_trouble(INGRESS_RESYNC, h);
    else if (reply->type == REDIS_REPLY_INTEGER && reply->integer < 0)
        on_trouble(INGRESS_FENCED, h);
}

static void on_ready(struct gw *g, const struct gw_resume *res, struct json_object *d, void *arg)
{
    (void)g;
    struct gwhold *h = arg;
    struct json_object *user, *id, *app;
    if (json_object_object_get_ex(d, "user", &user) && json_object_object_get_ex(user, "id", &id))
        ingress_set_bot_user(h->in, json_object_get_string(id));
    if (json_object_object_get_ex(d, "application", &app) && json_object_object_get_ex(app, "id", &id)) {
        char key[128];
        snprintf(key, sizeof(key), "%s:discord:app_id", h->cfg->redis_prefix);
        const char *av[] = {"SET", key, json_object_get_string(id)};
        rds_cmd(h->redis, NULL, NULL, 3, av, NULL);
    }
    /* The new session starts its sequence afresh: the stored sequence is
     * reset under the fencing token, in order before the READY's batch. */
    char seq[24];
    snprintf(seq, sizeof(seq), "%lld", (long long)res->seq);
    struct sess_ctx *c = sess_new(h);
    const char *av[] = {"EVAL", ready_lua, "2", h->lease_key, h->session_key, lease_token(h->lease),
                        res->session_id, res->resume_url, seq};
    if (rds_cmd(h->redis, on_ready_stored, c, 9, av, NULL)) {
        mem_free(c);
        on_trouble(INGRESS_RESYNC, h);
        return;
    }
    set_state(h, HS_CONNECTED);
    log_info("gateway session ready", LF_STR("session", res->session_id));
}

static void on_resumed(struct gw *g, void *arg)
{
    (void)g;
    struct gwhold *h = arg;
    set_state(h, HS_CONNECTED);
    log_info("gateway session resumed");
}

static void on_gate_timer(uv_timer_t *t);

static void on_gate_reply(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct gwhold *h = sess_back(arg, status);
    if (!h || !h->gw)
        return;
    if (!status && reply && reply->type == REDIS_REPLY_STATUS) {
        h->remaining--;
        log_info("identifying", LF_INT("budget_left", h->remaining));
        gw_identify_go(h->gw);
        return;
    }
    uv_timer_start(&h->timer, on_gate_timer, 1000, 0); /* another shard or instance identified */
}

static void try_gate(struct gwhold *h)
{
    if (h->remaining <= IDENTIFY_RESERVE) {
        snprintf(h->error, sizeof(h->error), "identify budget nearly spent (%d left); waiting for its reset",
                 h->remaining);
        log_error("gateway identify budget nearly spent: waiting for the daily reset",
                  LF_INT("remaining", h->remaining), LF_INT("reset_after_ms", h->reset_after_ms));
        uv_timer_start(&h->timer, on_gate_timer, (uint64_t)(h->reset_after_ms > 0 ? h->reset_after_ms : 60000), 0);
        h->remaining = 1000; /* assume the reset happened when the timer fires */
        return;
    }
    struct sess_ctx *c = sess_new(h);
    const char *av[] = {"SET", h->ident_key, h->cfg->name, "NX", "PX", "5000"};
    if (rds_cmd(h->redis, on_gate_reply, c, 6, av, NULL)) {
        mem_free(c);
        uv_timer_start(&h->timer, on_gate_timer, 1000, 0);
    }
}

static void on_gate_timer(uv_timer_t *t)
{
    struct gwhold *h = t->data;
    if (h->gw)
        try_gate(h);
}

static void on_identify_gate(struct gw *g, void *arg)
{
    (void)g;
    try_gate(arg);
}

static void on_gw_state(struct gw *g, int connected, void *arg)
{
    (void)g;
    struct gwhold *h = arg;
    if (!connected && h->state == HS_CONNECTED)
        set_state(h, HS_CONNECTING);
}

static void on_fatal(struct gw *g, int code, const char *why, void *arg)
{
    (void)g;
    struct gwhold *h = arg;
    char text[200];
    snprintf(text, sizeof(text), "close code %d: %s", code, why);
    /* keep the other instances from burning identifies on the same cause */
    const char *av[] = {"SET", h->fatal_key, text, "EX", FATAL_TTL_S};
    rds_cmd(h->redis, NULL, NULL, 5, av, NULL);
    stop_for_good(h, text);
}

static const struct gw_cbs gw_callbacks = {
    .dispatch = on_dispatch,
    .ready = on_ready,
    .resumed = on_resumed,
    .identify_gate = on_identify_gate,
    .state = on_gw_state,
    .fatal = on_fatal,
};

/* ---- taking over ------------------------------------------------------------ */

static void connect_gw(struct gwhold *h, const struct gw_resume *resume)
{
    struct gw_opts o = {.token = &h->cfg->discord_token,
                        .url = h->url,
                        .intents = h->cfg->gateway_intents,
                        .shard_id = 0,
                        .shard_count = 1,
                        .compress = h->cfg->gateway_compress};
    int rc = gw_new(h->loop, &o, &gw_callbacks, h, &h->gw);
    if (!rc)
        rc = gw_start(h->gw, resume);
    if (rc) {
        log_error("cannot start the gateway connection", LF_ERR(rc));
        drop_connection(h);
        schedule_retry(h);
        return;
    }
    ingress_set_holder(h->in, h->lease_key, h->session_key, lease_token(h->lease), on_trouble, h);
    set_state(h, HS_CONNECTING);
    log_info("gateway connecting", LF_STR("url", h->url), LF_BOOL("resume", resume != NULL),
             LF_INT("seq", resume ? resume->seq : 0));
}

static void on_channels_loaded(int status, void *arg)
{
    struct gwhold *h = sess_back(arg, status);
    if (!h || !lease_held(h->lease))
        return;
    if (status) {
        on_trouble(INGRESS_FENCED, h); /* cannot route without names: give the lease back */
        return;
    }
    struct gw_resume *res = &h->pending_resume;
    connect_gw(h, res->session_id[0] && res->resume_url[0] ? res : NULL);
}

static void on_session(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct gwhold *h = sess_back(arg, status);
    if (!h || !lease_held(h->lease))
        return;
    if (status || !reply || reply->type != REDIS_REPLY_ARRAY) {
        on_trouble(INGRESS_FENCED, h); /* cannot read it: give the lease back */
        return;
    }
    struct gw_resume res = {0};
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const char *k = reply->element[i]->str, *v = reply->element[i + 1]->str;
        if (!strcmp(k, "session_id"))
            snprintf(res.session_id, sizeof(res.session_id), "%s", v);
        else if (!strcmp(k, "resume_url"))
            snprintf(res.resume_url, sizeof(res.resume_url), "%s", v);
        else if (!strcmp(k, "seq"))
            res.seq = strtoll(v, NULL, 10);
    }
    h->pending_resume = res;
    struct sess_ctx *n = sess_new(h);
    if (ingress_load_channels(h->in, on_channels_loaded, n)) {
        mem_free(n);
        on_trouble(INGRESS_FENCED, h);
    }
}

static void on_gateway_info(const struct drest_resp *r, void *arg)
{
    struct gwhold *h = sess_back(arg, r->err);
    if (!h || !lease_held(h->lease))
        return;
    if (r->status == 401) {
        on_fatal(NULL, 4004, "GET /gateway/bot answered 401: check DISCORD_TOKEN", h);
        return;
    }
    struct json_object *o = r->err || r->status != 200 ? NULL : json_tokener_parse(r->body), *v, *lim;
    if (!o || !json_object_object_get_ex(o, "url", &v) || !json_object_is_type(v, json_type_string)) {
        log_warn("GET /gateway/bot failed; retrying", LF_INT("status", r->status),
                 LF_STR("error", r->err ? r->errstr : ""));
        json_object_put(o);
        drop_connection(h);
        lease_release(h->lease);
        set_state(h, HS_CANDIDATE);
        schedule_retry(h);
        return;
    }
    snprintf(h->url, sizeof(h->url), "%s", json_object_get_string(v));
    if (json_object_object_get_ex(o, "session_start_limit", &lim)) {
        if (json_object_object_get_ex(lim, "remaining", &v))
            h->remaining = json_object_get_int(v);
        if (json_object_object_get_ex(lim, "reset_after", &v))
            h->reset_after_ms = (long)json_object_get_int64(v);
        if (json_object_object_get_ex(lim, "max_concurrency", &v))
            h->max_concurrency = json_object_get_int(v);
    }
    json_object_put(o);
    read_session_and_connect(h);
}

static void on_fatal_key(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct gwhold *h = sess_back(arg, status);
    if (!h)
        return;
    if (!status && reply && reply->type == REDIS_REPLY_STRING) {
        stop_for_good(h, reply->str);
        return;
    }
    struct sess_ctx *n = sess_new(h);
    struct drest_req rq = {.method = "GET", .path = "/gateway/bot", .bot_auth = 1};
    if (drest_request(h->rest, &rq, on_gateway_info, n)) {
        mem_free(n);
        on_trouble(INGRESS_FENCED, h);
    }
}

static void prepare(struct gwhold *h)
{
    set_state(h, HS_PREPARING);
    struct sess_ctx *c = sess_new(h);
    const char *av[] = {"GET", h->fatal_key};
    if (rds_cmd(h->redis, on_fatal_key, c, 2, av, NULL)) {
        mem_free(c);
        on_trouble(INGRESS_FENCED, h);
    }
}

static void on_lease(struct lease *l, int held, void *arg)
{
    (void)l;
    struct gwhold *h = arg;
    h->generation++;
    if (held) {
        prepare(h);
        return;
    }
    log_warn("gateway lease lost: closing the connection, the session stays resumable");
    drop_connection(h);
    if (h->state != HS_STOPPED)
        set_state(h, HS_CANDIDATE);
}

/* ---- retries, status, lifecycle ------------------------------------------- */

static void on_retry(uv_timer_t *t)
{
    struct gwhold *h = t->data;
    if (h->closing || h->state == HS_STOPPED)
        return;
    if (lease_held(h->lease) && !h->gw)
        prepare(h);
}

/* Try the whole take-over again later (a Redis or REST step failed). */
static void schedule_retry(struct gwhold *h)
{
    uv_timer_start(&h->timer, on_retry, RETRY_MS, 0);
}

/* The holder publishes its heartbeat latency for /핑 on other instances. */
static void on_info_timer(uv_timer_t *t)
{
    struct gwhold *h = t->data;
    if (!h->gw || h->state != HS_CONNECTED)
        return;
    char lat[32];
    snprintf(lat, sizeof(lat), "%.3f", gw_latency_ms(h->gw));
    const char *av[] = {"HSET", h->session_key, "latency_ms", lat, "holder", h->cfg->name};
    rds_cmd(h->redis, NULL, NULL, 6, av, NULL);
}

int gwhold_new(uv_loop_t *loop, const struct config *cfg, struct rds *redis, struct drest *rest,
               struct ingress *in, struct gwhold **out)
{
    struct gwhold *h = mem_calloc(1, sizeof(*h));
    h->loop = loop;
    h->cfg = cfg;
    h->redis = redis;
    h->rest = rest;
    h->in = in;
    h->remaining = 1000;
    h->max_concurrency = 1;
    snprintf(h->lease_key, sizeof(h->lease_key), "%s:gw:0:lease", cfg->redis_prefix);
    snprintf(h->session_key, sizeof(h->session_key), "%s:gw:0:session", cfg->redis_prefix);
    snprintf(h->fatal_key, sizeof(h->fatal_key), "%s:gw:fatal", cfg->redis_prefix);
    /* bucket = shard_id % max_concurrency; one shard: bucket 0 */
    snprintf(h->ident_key, sizeof(h->ident_key), "%s:gw:identify:0", cfg->redis_prefix);
    int rc = lease_new(loop, redis, h->lease_key, cfg->name, cfg->gateway_lease_ms, on_lease, h, &h->lease);
    if (rc) {
        mem_free(h);
        return rc;
    }
    uv_timer_init(loop, &h->timer);
    uv_timer_init(loop, &h->info_timer);
    h->timer.data = h->info_timer.data = h;
    h->state = HS_OFF;
    *out = h;
    return 0;
}

void gwhold_start(struct gwhold *h)
{
    if (h->cfg->gateway_mode == GATEWAY_OFF || h->state != HS_OFF)
        return;
    set_state(h, HS_CANDIDATE);
    lease_start(h->lease);
    uv_timer_start(&h->info_timer, on_info_timer, 2000, 2000);
    if (h->cfg->gateway_mode == GATEWAY_ON)
        log_info("gateway candidate (GATEWAY=on)");
}

void gwhold_stop(struct gwhold *h)
{
    h->generation++;
    if (lease_held(h->lease))
        log_info("handing the gateway session over");
    drop_connection(h);
    lease_release(h->lease);
    uv_timer_stop(&h->timer);
    uv_timer_stop(&h->info_timer);
    if (h->state != HS_STOPPED)
        set_state(h, HS_OFF);
}

void gwhold_status(const struct gwhold *h, struct gwhold_status *out)
{
    out->state = state_names[h->state];
    out->holder = lease_held(h->lease);
    out->latency_ms = h->gw ? gw_latency_ms(h->gw) : 0;
    out->error = h->error;
}

static void on_handle_closed(uv_handle_t *handle)
{
    struct gwhold *h = handle->data;
    if (++h->busy == 2)
        mem_free(h);
}

void gwhold_close(struct gwhold *h)
{
    h->closing = 1;
    drop_connection(h);
    lease_close(h->lease);
    h->busy = 0;
    uv_close((uv_handle_t *)&h->timer, on_handle_closed);
    uv_close((uv_handle_t *)&h->info_timer, on_handle_closed);
}
