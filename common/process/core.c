#include "process/core.h"

#include <errno.h>
#include <json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "discord/cmds.h"
#include "process/diag.h"
#include "process/failover.h"
#include "discord/drest.h"
#include "base/err.h"
#include "discord/gwhold.h"
#include "io/hcl.h"
#include "io/httpd.h"
#include "discord/ingress.h"
#include "base/log.h"
#include "base/mem.h"
#include "process/perf.h"
#include "io/rds.h"
#include "io/store.h"

#define CORE_HEARTBEAT_KEY "heartbeats"
#define CORE_LAG_TICK_MS 50
#define CORE_PERF_LOG_MS 60000

enum core_state { CS_RUNNING, CS_DRAINING, CS_CLOSING };

struct core {
    uv_loop_t *loop;
    struct config cfg;
    enum core_state state;
    struct rds *cmd;
    struct bus *bus;
    struct store *store;
    struct httpd *httpd;
    struct hcl *http;
    struct drest *rest;
    struct ingress *ingress;
    struct gwhold *gwhold;
    struct failover *failover;
    uv_timer_t reg_timer;   /* slash-command registration retries */
    int reg_done;
    struct {
        void (*fn)(void *);
        void *arg;
    } at_close[8];
    int nat_close;
    struct {
        struct core_hooks h;
        void *arg;
    } hooks[4]; /* the roles' */
    int nhooks;
    uv_timer_t beat_timer, drain_timer, lag_timer;
    struct perf *perf;      /* jobs and provider requests, for operators */
    uv_timer_t perf_timer;  /* the "performance" log line every 60 s */
    /* loop lag: how late a 50 ms timer fires; the worst of the current and
     * of the last heartbeat window. Proof that nothing blocks the loop. */
    uint64_t lag_expected_ns;
    double lag_cur_ms, lag_last_ms;
    uv_signal_t sigterm, sigint;
    uint64_t started_ms;
    /* redis latency from the last heartbeat round trip */
    uint64_t beat_sent_ms;
    int beat_outstanding;
    double redis_latency_ms;
    uint64_t beats_sent, beats_failed;
    int exit_code;
};

uv_loop_t *core_loop(struct core *c)
{
    return c->loop;
}

const struct config *core_config(const struct core *c)
{
    return &c->cfg;
}

struct bus *core_bus(struct core *c)
{
    return c->bus;
}

struct rds *core_redis(struct core *c)
{
    return c->cmd;
}

struct store *core_store(struct core *c)
{
    return c->store;
}

struct drest *core_rest(struct core *c)
{
    return c->rest;
}

struct hcl *core_http(struct core *c)
{
    return c->http;
}

struct perf *core_perf(struct core *c)
{
    return c->perf;
}

struct failover *core_failover(struct core *c)
{
    return c->failover;
}

void core_notify_takeover(struct core *c, enum role r, int on, const char *dead)
{
    for (int i = 0; i < c->nhooks; i++)
        if (c->hooks[i].h.takeover)
            c->hooks[i].h.takeover(r, on, dead, c->hooks[i].arg);
}

static void on_takeover(enum role r, int on, const char *dead, void *arg)
{
    core_notify_takeover(arg, r, on, dead);
}

static int start_failover(struct core *c)
{
    struct failover_opts fo = {.loop = c->loop, .redis = c->cmd, .bus = c->bus, .cfg = &c->cfg,
                               .takeover = on_takeover, .takeover_arg = c};
    return failover_new(&fo, &c->failover);
}

int core_add_hooks(struct core *c, const struct core_hooks *h, void *arg)
{
    if (c->nhooks == (int)(sizeof(c->hooks) / sizeof(c->hooks[0])))
        return -ENOSPC;
    c->hooks[c->nhooks].h = *h;
    c->hooks[c->nhooks++].arg = arg;
    return 0;
}

int core_at_close(struct core *c, void (*fn)(void *arg), void *arg)
{
    if (c->nat_close == (int)(sizeof(c->at_close) / sizeof(c->at_close[0])))
        return -ENOSPC;
    c->at_close[c->nat_close].fn = fn;
    c->at_close[c->nat_close++].arg = arg;
    return 0;
}

static uint64_t uptime_s(const struct core *c)
{
    return (uv_now(c->loop) - c->started_ms) / 1000;
}

static int redis_ok(const struct core *c)
{
    return rds_up(c->cmd) && bus_reader_up(c->bus);
}

static int pg_ok(const struct core *c)
{
    return c->store && store_up(c->store);
}

/* ---- heartbeat ------------------------------------------------------------ */

static void on_beat(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct core *c = arg;
    c->beat_outstanding = 0;
    if (status || rds_reply_error(reply)) {
        c->beats_failed++;
        return;
    }
    c->beats_sent++;
    c->redis_latency_ms = (double)(uv_hrtime() / 1000 - c->beat_sent_ms) / 1000.0;
}

static void send_beat(struct core *c)
{
    if (c->beat_outstanding || !rds_up(c->cmd))
        return;
    struct bus_stats st;
    bus_stats(c->bus, &st);
    char key[160], maxlen[16], pid[16], up[24], inflight[16], processed[24], failed[24];
    snprintf(key, sizeof(key), "%s:%s", c->cfg.redis_prefix, CORE_HEARTBEAT_KEY);
    snprintf(maxlen, sizeof(maxlen), "%d", c->cfg.heartbeat_maxlen);
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    snprintf(up, sizeof(up), "%llu", (unsigned long long)uptime_s(c));
    snprintf(inflight, sizeof(inflight), "%u", st.inflight);
    snprintf(processed, sizeof(processed), "%llu", (unsigned long long)st.processed);
    snprintf(failed, sizeof(failed), "%llu", (unsigned long long)(st.failed + st.dead));
    const char *state = c->state == CS_RUNNING ? "running" : "draining";
    const char *av[] = {"XADD", key, "MAXLEN", "~", maxlen, "*", "name", c->cfg.name, "role",
                        role_name(c->cfg.role), "pid", pid, "version", BC_VERSION, "uptime_s", up,
                        "inflight", inflight, "processed", processed, "failed", failed, "state", state,
                        "serving", NULL, "health_port", NULL};
    char port[8], serving[64];
    snprintf(port, sizeof(port), "%d", c->cfg.health_port);
    bus_roles(c->bus, serving, sizeof(serving));
    av[sizeof(av) / sizeof(av[0]) - 3] = serving;
    av[sizeof(av) / sizeof(av[0]) - 1] = port;
    c->beat_sent_ms = uv_hrtime() / 1000;
    if (rds_cmd(c->cmd, on_beat, c, (int)(sizeof(av) / sizeof(av[0])), av, NULL) == 0)
        c->beat_outstanding = 1;
}

static void on_beat_timer(uv_timer_t *t)
{
    struct core *c = t->data;
    c->lag_last_ms = c->lag_cur_ms;
    c->lag_cur_ms = 0;
    send_beat(c);
}

static void on_lag_timer(uv_timer_t *t)
{
    struct core *c = t->data;
    uint64_t now = uv_hrtime();
    if (c->lag_expected_ns && now > c->lag_expected_ns) {
        double lag = (double)(now - c->lag_expected_ns) / 1e6;
        if (lag > c->lag_cur_ms)
            c->lag_cur_ms = lag;
    }
    c->lag_expected_ns = now + (uint64_t)CORE_LAG_TICK_MS * 1000000;
}

static double loop_lag_ms(const struct core *c)
{
    return c->lag_cur_ms > c->lag_last_ms ? c->lag_cur_ms : c->lag_last_ms;
}

/* ---- dependency state ---------------------------------------------------- */

static void on_redis_state(struct rds *r, int up, void *arg)
{
    (void)r;
    struct core *c = arg;
    if (up) {
        bus_cmd_up(c->bus);
        send_beat(c);
        for (int i = 0; i < c->nhooks && c->state == CS_RUNNING; i++)
            if (c->hooks[i].h.redis_up)
                c->hooks[i].h.redis_up(c->hooks[i].arg);
    }
}

static void on_store_state(struct store *s, int up, void *arg)
{
    (void)s;
    struct core *c = arg;
    for (int i = 0; i < c->nhooks && up && c->state == CS_RUNNING; i++)
        if (c->hooks[i].h.store_up)
            c->hooks[i].h.store_up(c->hooks[i].arg);
}

/* ---- /health and /metrics ------------------------------------------------ */

static const char *health_status(const struct core *c, int *http)
{
    *http = 200;
    if (c->state != CS_RUNNING) {
        *http = 503;
        return "draining";
    }
    if (!redis_ok(c)) {
        *http = 503;
        return "unhealthy";
    }
    return pg_ok(c) ? "ok" : "degraded";
}

static void on_health(struct httpd_req *req, void *arg)
{
    struct core *c = arg;
    struct bus_stats st;
    bus_stats(c->bus, &st);
    int http;
    const char *status = health_status(c, &http);
    struct json_object *o = json_object_new_object(), *redis = json_object_new_object(),
                       *pg = json_object_new_object();
    json_object_object_add(o, "status", json_object_new_string(status));
    json_object_object_add(o, "instance", json_object_new_string(c->cfg.name));
    json_object_object_add(o, "role", json_object_new_string(role_name(c->cfg.role)));
    json_object_object_add(o, "version", json_object_new_string(BC_VERSION));
    json_object_object_add(o, "pid", json_object_new_int(getpid()));
    json_object_object_add(o, "uptime_s", json_object_new_int64((int64_t)uptime_s(c)));
    json_object_object_add(redis, "ok", json_object_new_boolean(redis_ok(c)));
    char lat[32];
    snprintf(lat, sizeof(lat), "%.3f", c->redis_latency_ms);
    json_object_object_add(redis, "latency_ms", json_object_new_double_s(c->redis_latency_ms, lat));
    if (!redis_ok(c))
        json_object_object_add(redis, "error", json_object_new_string(rds_errstr(c->cmd)));
    json_object_object_add(o, "redis", redis);
    json_object_object_add(pg, "ok", json_object_new_boolean(pg_ok(c)));
    json_object_object_add(pg, "configured", json_object_new_boolean(c->store != NULL));
    if (c->store && !pg_ok(c))
        json_object_object_add(pg, "error", json_object_new_string(store_errstr(c->store)));
    else if (!c->store)
        json_object_object_add(pg, "error", json_object_new_string("DATABASE_URL not set"));
    json_object_object_add(o, "postgres", pg);
    if (c->gwhold) {
        struct gwhold_status gs;
        gwhold_status(c->gwhold, &gs);
        struct json_object *gw = json_object_new_object();
        json_object_object_add(gw, "state", json_object_new_string(gs.state));
        json_object_object_add(gw, "holder", json_object_new_boolean(gs.holder));
        snprintf(lat, sizeof(lat), "%.3f", gs.latency_ms);
        /* null until the first heartbeat is acknowledged */
        json_object_object_add(gw, "latency_ms",
                               gs.latency_ms >= 0 ? json_object_new_double_s(gs.latency_ms, lat) : NULL);
        if (*gs.error)
            json_object_object_add(gw, "error", json_object_new_string(gs.error));
        json_object_object_add(o, "gateway", gw);
    }
    snprintf(lat, sizeof(lat), "%.3f", loop_lag_ms(c));
    json_object_object_add(o, "loop_lag_ms", json_object_new_double_s(loop_lag_ms(c), lat));
    json_object_object_add(o, "inflight", json_object_new_int64(st.inflight));
    json_object_object_add(o, "processed", json_object_new_int64((int64_t)st.processed));
    json_object_object_add(o, "failed", json_object_new_int64((int64_t)(st.failed + st.dead)));
    for (int i = 0; i < c->nhooks && c->state == CS_RUNNING; i++)
        if (c->hooks[i].h.health)
            c->hooks[i].h.health(o, c->hooks[i].arg);
    size_t len;
    const char *body = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    httpd_respond(req, http, "application/json", body, len);
    json_object_put(o);
}

/* Gateway, ingress and REST figures; only where Discord is configured. */
static void metrics_discord(struct core *c, struct buf *b)
{
    if (c->gwhold) {
        struct gwhold_status gs;
        gwhold_status(c->gwhold, &gs);
        buf_printf(b,
                   "# HELP discordbot_gateway_holder 1 while this instance holds the gateway session.\n"
                   "# TYPE discordbot_gateway_holder gauge\ndiscordbot_gateway_holder %d\n"
                   "# HELP discordbot_gateway_connected 1 while connected and identified or resumed.\n"
                   "# TYPE discordbot_gateway_connected gauge\ndiscordbot_gateway_connected %d\n"
                   "# HELP discordbot_gateway_latency_seconds Last gateway heartbeat round trip.\n"
                   "# TYPE discordbot_gateway_latency_seconds gauge\ndiscordbot_gateway_latency_seconds %.6f\n",
                   gs.holder, !strcmp(gs.state, "connected"), gs.latency_ms > 0 ? gs.latency_ms / 1000.0 : 0.0);
    }
    if (c->ingress) {
        struct ingress_stats is;
        ingress_stats(c->ingress, &is);
        buf_printf(b,
                   "# HELP discordbot_gateway_events_total Gateway events handled, and routed into role streams.\n"
                   "# TYPE discordbot_gateway_events_total counter\n"
                   "discordbot_gateway_events_total{result=\"received\"} %llu\n"
                   "discordbot_gateway_events_total{result=\"routed\"} %llu\n"
                   "# HELP discordbot_interactions_total Interactions received, and answered at once.\n"
                   "# TYPE discordbot_interactions_total counter\n"
                   "discordbot_interactions_total{result=\"received\"} %llu\n"
                   "discordbot_interactions_total{result=\"replied\"} %llu\n"
                   "discordbot_interactions_total{result=\"ack_failed\"} %llu\n",
                   (unsigned long long)is.events, (unsigned long long)is.routed,
                   (unsigned long long)is.interactions, (unsigned long long)is.replied,
                   (unsigned long long)is.ack_failed);
    }
    if (c->rest) {
        struct drest_stats ds;
        drest_stats(c->rest, &ds);
        buf_printf(b,
                   "# HELP discordbot_discord_requests_total Discord REST attempts by status class.\n"
                   "# TYPE discordbot_discord_requests_total counter\n"
                   "discordbot_discord_requests_total{status=\"2xx\"} %llu\n"
                   "discordbot_discord_requests_total{status=\"4xx\"} %llu\n"
                   "discordbot_discord_requests_total{status=\"5xx\"} %llu\n"
                   "discordbot_discord_requests_total{status=\"error\"} %llu\n"
                   "# HELP discordbot_discord_429_total Discord 429 answers by scope (each means a wrong guess).\n"
                   "# TYPE discordbot_discord_429_total counter\n"
                   "discordbot_discord_429_total{scope=\"global\"} %llu\n"
                   "discordbot_discord_429_total{scope=\"user\"} %llu\n"
                   "discordbot_discord_429_total{scope=\"shared\"} %llu\n"
                   "# HELP discordbot_discord_ratelimit_waits_total Requests that waited for a rate limit.\n"
                   "# TYPE discordbot_discord_ratelimit_waits_total counter\n"
                   "discordbot_discord_ratelimit_waits_total %llu\n"
                   "# HELP discordbot_discord_invalid_requests 401/403/429 answers in the last 10 minutes.\n"
                   "# TYPE discordbot_discord_invalid_requests gauge\n"
                   "discordbot_discord_invalid_requests %u\n"
                   "# HELP discordbot_discord_queued Discord requests accepted and not yet completed.\n"
                   "# TYPE discordbot_discord_queued gauge\ndiscordbot_discord_queued %zu\n",
                   ds.status_2xx, ds.status_4xx, ds.status_5xx, ds.transport_errors, ds.rl429_global,
                   ds.rl429_user, ds.rl429_shared, ds.rl_waits, ds.invalid_10min, ds.queued);
    }
}

static void on_metrics(struct httpd_req *req, void *arg)
{
    struct core *c = arg;
    struct bus_stats st;
    bus_stats(c->bus, &st);
    struct buf b;
    buf_init(&b, 64 << 10);
    buf_printf(&b,
               "# HELP discordbot_info Instance identity.\n# TYPE discordbot_info gauge\n"
               "discordbot_info{name=\"%s\",role=\"%s\",version=\"%s\"} 1\n"
               "# HELP discordbot_uptime_seconds Seconds since start.\n# TYPE discordbot_uptime_seconds gauge\n"
               "discordbot_uptime_seconds %llu\n"
               "# HELP discordbot_draining 1 while draining for shutdown.\n# TYPE discordbot_draining gauge\n"
               "discordbot_draining %d\n",
               c->cfg.name, role_name(c->cfg.role), BC_VERSION, (unsigned long long)uptime_s(c),
               c->state != CS_RUNNING);
    buf_printf(&b,
               "# HELP discordbot_jobs_inflight Jobs being processed now.\n# TYPE discordbot_jobs_inflight gauge\n"
               "discordbot_jobs_inflight %u\n"
               "# HELP discordbot_jobs_total Jobs finished, by result.\n# TYPE discordbot_jobs_total counter\n"
               "discordbot_jobs_total{result=\"done\"} %llu\n"
               "discordbot_jobs_total{result=\"failed\"} %llu\n"
               "discordbot_jobs_total{result=\"retry\"} %llu\n"
               "discordbot_jobs_total{result=\"dead_letter\"} %llu\n"
               "# HELP discordbot_jobs_reclaimed_total Idle jobs taken over from silent consumers.\n"
               "# TYPE discordbot_jobs_reclaimed_total counter\n"
               "discordbot_jobs_reclaimed_total %llu\n",
               st.inflight, (unsigned long long)st.processed, (unsigned long long)st.failed,
               (unsigned long long)st.retried, (unsigned long long)st.dead, (unsigned long long)st.reclaimed);
    buf_printf(&b,
               "# HELP discordbot_redis_up 1 when Redis is reachable.\n# TYPE discordbot_redis_up gauge\n"
               "discordbot_redis_up %d\n"
               "# HELP discordbot_redis_latency_seconds Last heartbeat round trip.\n"
               "# TYPE discordbot_redis_latency_seconds gauge\n"
               "discordbot_redis_latency_seconds %.6f\n"
               "# HELP discordbot_postgres_up 1 when PostgreSQL is reachable and migrated.\n"
               "# TYPE discordbot_postgres_up gauge\n"
               "discordbot_postgres_up %d\n"
               "# HELP discordbot_heartbeats_total Heartbeats written, by result.\n"
               "# TYPE discordbot_heartbeats_total counter\n"
               "discordbot_heartbeats_total{result=\"ok\"} %llu\n"
               "discordbot_heartbeats_total{result=\"error\"} %llu\n"
               "# HELP discordbot_loop_lag_seconds Worst event-loop stall in the last two heartbeat intervals.\n"
               "# TYPE discordbot_loop_lag_seconds gauge\n"
               "discordbot_loop_lag_seconds %.6f\n",
               redis_ok(c), c->redis_latency_ms / 1000.0, pg_ok(c), (unsigned long long)c->beats_sent,
               (unsigned long long)c->beats_failed, loop_lag_ms(c) / 1000.0);
    metrics_discord(c, &b);
    int rc = perf_metrics(c->perf, &b);
    if (c->failover)
        failover_metrics(c->failover, &b);
    /* appends are not checked one by one: a buf's failure is sticky, so
     * this one check says whether the text is whole (never serve it cut) */
    if (rc || (rc = buf_error(&b))) {
        log_error("metrics too large, not served", LF_INT("cap", b.max), LF_ERR(rc));
        static const char msg[] = "metrics too large for the exposition buffer (see the instance log)\n";
        httpd_respond(req, 500, "text/plain; charset=utf-8", msg, sizeof(msg) - 1);
    } else {
        httpd_respond(req, 200, "text/plain; version=0.0.4", b.p, b.len);
    }
    buf_free(&b);
}

/* ---- /performance and the performance log line ---------------------------- */

static void on_job_finished(const char *role, const char *type, enum bus_result r, uint64_t ms, void *arg)
{
    perf_job(arg, role, type, (int)r, ms);
}

static void on_performance(struct httpd_req *req, void *arg)
{
    struct core *c = arg;
    struct bus_stats st;
    bus_stats(c->bus, &st);
    struct buf b;
    buf_init(&b, 16 << 10);
    int rc = perf_json(c->perf, st.inflight, uptime_s(c), &b);
    if (rc) {
        log_error("performance too large, not served", LF_INT("cap", b.max), LF_ERR(rc));
        static const char msg[] = "{\"error\":\"performance figures too large (see the instance log)\"}";
        httpd_respond(req, 500, "application/json", msg, sizeof(msg) - 1);
    } else {
        httpd_respond(req, 200, "application/json", b.p, b.len);
    }
    buf_free(&b);
}

static void log_perf(struct core *c)
{
    struct bus_stats st;
    bus_stats(c->bus, &st);
    perf_log(c->perf, st.inflight);
}

static void on_perf_timer(uv_timer_t *t)
{
    log_perf(t->data);
}

/* ---- shutdown -------------------------------------------------------------- */

static void close_all(struct core *c);
static void close_owners(void *arg);

static void on_drained(void *arg)
{
    struct core *c = arg;
    log_info("drained: every job taken was finished and acked");
    close_all(c);
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct core *c = t->data;
    struct bus_stats st;
    bus_stats(c->bus, &st);
    log_warn("drain timeout: jobs still running stay pending in redis for a later reclaim",
             LF_INT("inflight", st.inflight), LF_INT("timeout_s", c->cfg.drain_timeout_sec));
    close_all(c);
}

static void begin_drain(struct core *c, const char *why)
{
    c->state = CS_DRAINING;
    log_info("shutdown requested: draining", LF_STR("signal", why), LF_INT("timeout_s", c->cfg.drain_timeout_sec));
    send_beat(c); /* tell the cluster this is a planned stop */
    log_perf(c); /* the totals of this run, whenever it ends */
    if (c->gwhold)
        gwhold_stop(c->gwhold); /* another instance resumes the session now */
    uv_timer_start(&c->drain_timer, on_drain_timeout, (uint64_t)c->cfg.drain_timeout_sec * 1000, 0);
    bus_drain(c->bus, on_drained, c);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct core *c = s->data;
    const char *name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
    if (c->state == CS_RUNNING) {
        begin_drain(c, name);
    } else if (c->state == CS_DRAINING) {
        log_warn("second signal: stopping now; running jobs stay pending", LF_STR("signal", name));
        close_all(c);
    }
}

static void close_all(struct core *c)
{
    if (c->state == CS_CLOSING)
        return;
    c->state = CS_CLOSING;
    uv_close((uv_handle_t *)&c->beat_timer, NULL);
    uv_close((uv_handle_t *)&c->drain_timer, NULL);
    uv_close((uv_handle_t *)&c->lag_timer, NULL);
    uv_close((uv_handle_t *)&c->perf_timer, NULL);
    uv_close((uv_handle_t *)&c->sigterm, NULL);
    uv_close((uv_handle_t *)&c->sigint, NULL);
    uv_close((uv_handle_t *)&c->reg_timer, NULL);
    if (c->failover)
        failover_close(c->failover);
    if (c->gwhold)
        gwhold_stop(c->gwhold);
    if (c->httpd)
        httpd_close(c->httpd, NULL, NULL);
    /* Connections close first: replies and transfers still owed to job
     * handlers and Discord modules arrive as BC_ESHUTDOWN while their
     * owners still exist (Redis at once, REST on later iterations); the
     * owners close in close_owners, once REST is done. */
    if (c->cmd)
        rds_close(c->cmd, NULL, NULL);
    if (c->rest)
        drest_close(c->rest, close_owners, c);
    else
        close_owners(c);
}

static void close_owners(void *arg)
{
    struct core *c = arg;
    c->rest = NULL;
    if (c->bus)
        bus_close(c->bus, NULL, NULL);
    /* roles release what they hold once their jobs were cancelled */
    for (int i = c->nat_close - 1; i >= 0; i--)
        c->at_close[i].fn(c->at_close[i].arg);
    if (c->gwhold)
        gwhold_close(c->gwhold);
    if (c->ingress)
        ingress_close(c->ingress);
    if (c->http)
        hcl_close(c->http, NULL, NULL);
    if (c->store)
        store_close(c->store, NULL, NULL);
}

/* ---- start ----------------------------------------------------------------- */

static int load_config(struct core *c, int argc, char **argv, char **envp, enum role role)
{
    struct buf out;
    buf_init(&out, 1 << 20);
    int rc = cfg_load(&c->cfg, role, argc, argv, envp, &out);
    log_setup(c->cfg.name, role_name(role), rc >= 0 ? (enum log_level)c->cfg.log_level : LOG_INFO, -1);
    if (rc == CFG_EXIT_OK) {
        fputs(buf_str(&out), stdout);
    } else if (rc == CFG_CHECK_ONLY) {
        if (cfg_dump(&c->cfg, &out)) {
            log_error("the settings do not fit in the --check-config output", LF_INT("cap", out.max));
            rc = BC_ECONFIG;
        } else {
            fputs(buf_str(&out), stdout);
        }
    } else if (rc < 0) {
        /* each problem is "KEY\tproblem"; values of secrets never get here */
        const char *p = buf_str(&c->cfg.problems);
        while (*p) {
            const char *tab = strchr(p, '\t'), *nl = strchr(p, '\n');
            char key[128], what[512];
            snprintf(key, sizeof(key), "%.*s", (int)(tab - p), p);
            snprintf(what, sizeof(what), "%.*s", (int)(nl - tab - 1), tab + 1);
            log_error("invalid configuration", LF_STR("key", key), LF_STR("problem", what));
            p = nl + 1;
        }
    }
    buf_free(&out);
    return rc;
}

static void log_warnings(const struct config *cfg)
{
    const char *p = buf_str(&cfg->warnings);
    while (*p) {
        const char *tab = strchr(p, '\t'), *nl = strchr(p, '\n');
        char key[128], what[256];
        snprintf(key, sizeof(key), "%.*s", (int)(tab - p), p);
        snprintf(what, sizeof(what), "%.*s", (int)(nl - tab - 1), tab + 1);
        log_warn(what, LF_STR("key", key));
        p = nl + 1;
    }
}

static int start_http(struct core *c)
{
    struct httpd_opts ho = {.bind = c->cfg.health_bind, .port = c->cfg.health_port};
    int rc = httpd_start(c->loop, &ho, &c->httpd);
    if (rc) {
        log_error("cannot start the health server", LF_STR("bind", c->cfg.health_bind),
                  LF_INT("port", c->cfg.health_port), LF_ERR(rc));
        return rc;
    }
    httpd_route(c->httpd, "GET", "/health", on_health, c);
    httpd_route(c->httpd, "GET", "/metrics", on_metrics, c);
    httpd_route(c->httpd, "GET", "/performance", on_performance, c);
    return 0;
}

static int start_store(struct core *c)
{
    if (!*c->cfg.database_url) {
        log_warn("DATABASE_URL not set: running without PostgreSQL (no memory, usage or durable jobs)");
        return 0;
    }
    struct store_opts so = {.conninfo = c->cfg.database_url};
    int rc = store_new(c->loop, &so, on_store_state, c, &c->store);
    if (rc)
        log_error("cannot set up postgresql", LF_URL("database_url", c->cfg.database_url), LF_ERR(rc));
    return rc;
}

static int start_redis(struct core *c)
{
    char err[200];
    struct rds_opts ro = {.url = c->cfg.redis_url, .name = "cmd"};
    int rc = rds_new(c->loop, &ro, on_redis_state, c, &c->cmd, err, sizeof(err));
    if (!rc) {
        struct bus_opts bo = {.redis_url = c->cfg.redis_url,
                              .prefix = c->cfg.redis_prefix,
                              .consumer = c->cfg.name,
                              .stream_maxlen = c->cfg.stream_maxlen,
                              .max_inflight = c->cfg.max_inflight,
                              .block_ms = c->cfg.job_block_ms,
                              .claim_idle_ms = c->cfg.claim_idle_ms,
                              /* renewed well within the failover delay, so a
                               * live consumer's jobs never look abandoned */
                              .renew_ms = c->cfg.failover_after_ms / 3};
        bo.on_finish = on_job_finished;
        bo.finish_arg = c->perf;
        rc = bus_new(c->loop, c->cmd, &bo, &c->bus, err, sizeof(err));
    }
    if (rc)
        log_error("cannot set up redis", LF_STR("problem", err));
    return rc;
}

/* ---- Discord --------------------------------------------------------------- */

struct reg_ctx {
    struct core *c;
    char app[24];
    char hash[65];
    char key[160];
};

static void on_reg_timer(uv_timer_t *t);

static void reg_finish(struct core *c, int ok)
{
    c->reg_done = ok ? 1 : -1;
    if (c->cfg.register_commands)
        close_all(c); /* --register-commands: done */
    if (!ok && !c->cfg.register_commands && c->state == CS_RUNNING)
        uv_timer_start(&c->reg_timer, on_reg_timer, 60000, 0);
}

static void on_hash_saved(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    (void)status;
    (void)reply;
    mem_free(arg);
}

static void on_registered(const struct drest_resp *r, void *arg)
{
    struct reg_ctx *rc = arg;
    struct core *c = rc->c;
    if (r->err == BC_ESHUTDOWN) {
        mem_free(rc);
        return;
    }
    if (r->err || r->status >= 300) {
        log_error("slash command registration failed", LF_INT("status", r->status), LF_INT("code", r->code),
                  LF_STR("error", r->err ? r->errstr : (r->message ? r->message : "")));
        mem_free(rc);
        reg_finish(c, 0);
        return;
    }
    log_info("slash commands registered", LF_STR("scope", *c->cfg.discord_guild_id ? "guild" : "global"),
             LF_STR("hash", rc->hash));
    const char *av[] = {"SET", rc->key, rc->hash};
    if (rds_cmd(c->cmd, on_hash_saved, rc, 3, av, NULL))
        mem_free(rc);
    reg_finish(c, 1);
}

static void on_reg_hash(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct reg_ctx *rc = arg;
    struct core *c = rc->c;
    if (status == BC_ESHUTDOWN) {
        mem_free(rc);
        return;
    }
    if (!status && reply && reply->type == REDIS_REPLY_STRING && !strcmp(reply->str, rc->hash)) {
        log_info("slash commands unchanged; not registering again", LF_STR("hash", rc->hash));
        mem_free(rc);
        reg_finish(c, 1);
        return;
    }
    char path[200];
    if (*c->cfg.discord_guild_id)
        snprintf(path, sizeof(path), "/applications/%s/guilds/%s/commands", rc->app, c->cfg.discord_guild_id);
    else
        snprintf(path, sizeof(path), "/applications/%s/commands", rc->app);
    struct buf body;
    buf_init(&body, 1 << 20);
    cmds_json(&body);
    struct drest_req rq = {.method = "PUT", .path = path, .json = body.p, .json_len = body.len, .bot_auth = 1};
    if (drest_request(c->rest, &rq, on_registered, rc)) {
        mem_free(rc);
        reg_finish(c, 0);
    }
    buf_free(&body);
}

static void register_with(struct core *c, const char *app)
{
    struct reg_ctx *rc = mem_calloc(1, sizeof(*rc));
    rc->c = c;
    snprintf(rc->app, sizeof(rc->app), "%s", app);
    cmds_hash(rc->hash);
    snprintf(rc->key, sizeof(rc->key), "%s:commands:%s:%s", c->cfg.redis_prefix, app,
             *c->cfg.discord_guild_id ? c->cfg.discord_guild_id : "global");
    const char *av[] = {"GET", rc->key};
    if (rds_cmd(c->cmd, on_reg_hash, rc, 2, av, NULL)) {
        mem_free(rc);
        uv_timer_start(&c->reg_timer, on_reg_timer, 2000, 0);
    }
}

static void on_app_id(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct core *c = arg;
    if (status == BC_ESHUTDOWN)
        return;
    if (!status && reply && reply->type == REDIS_REPLY_STRING) {
        register_with(c, reply->str);
        return;
    }
    if (c->cfg.register_commands) {
        log_error("cannot register commands: application id unknown; set DISCORD_APPLICATION_ID");
        reg_finish(c, 0);
        return;
    }
    /* not known yet: the gateway holder stores it at READY */
    uv_timer_start(&c->reg_timer, on_reg_timer, 2000, 0);
}

static void on_reg_timer(uv_timer_t *t)
{
    struct core *c = t->data;
    if (c->state != CS_RUNNING && !c->cfg.register_commands)
        return;
    if (*c->cfg.discord_app_id) {
        register_with(c, c->cfg.discord_app_id);
        return;
    }
    char key[128];
    snprintf(key, sizeof(key), "%s:discord:app_id", c->cfg.redis_prefix);
    const char *av[] = {"GET", key};
    if (rds_cmd(c->cmd, on_app_id, c, 2, av, NULL))
        uv_timer_start(&c->reg_timer, on_reg_timer, 2000, 0);
}

static int start_discord(struct core *c)
{
    int has_token = secret_isset(&c->cfg.discord_token), has_key = *c->cfg.discord_public_key != 0;
    int rc;
    if (!has_token && c->cfg.register_commands) {
        log_error("--register-commands needs DISCORD_TOKEN");
        return BC_ECONFIG;
    }
    if (!has_token && !has_key) {
        log_warn("no DISCORD_TOKEN and no DISCORD_PUBLIC_KEY: not connected to Discord");
        return 0;
    }
    struct drest_opts ro = {.api_base = c->cfg.discord_api_base,
                            .token = &c->cfg.discord_token,
                            .version = BC_VERSION,
                            .http = c->http,
                            .redis = c->cmd,
                            .redis_prefix = c->cfg.redis_prefix,
                            .cluster_size = ROLE_COUNT,
                            /* room for one message of every job in flight */
                            .max_queue = 1024 + (size_t)c->cfg.max_inflight};
    if ((rc = drest_new(c->loop, &ro, &c->rest)) || (rc = ingress_new(c->loop, &c->cfg, c->cmd, c->rest, &c->ingress)))
        return rc;
    if (has_key && c->httpd && (rc = ingress_http_route(c->ingress, c->httpd))) {
        log_error("cannot serve POST /interactions", LF_ERR(rc));
        return rc;
    }
    if (has_token && c->cfg.gateway_mode != GATEWAY_OFF && !c->cfg.register_commands) {
        if ((rc = gwhold_new(c->loop, &c->cfg, c->cmd, c->rest, c->ingress, &c->gwhold)))
            return rc;
        gwhold_start(c->gwhold);
    }
    if (has_token && (c->cfg.role == ROLE_ADMIN || c->cfg.register_commands))
        uv_timer_start(&c->reg_timer, on_reg_timer, 0, 0);
    return 0;
}

static void log_start(const struct core *c)
{
    log_info("starting", LF_STR("version", BC_VERSION), LF_STR("rev", BC_GIT_REV), LF_INT("pid", getpid()),
             LF_STR("health", c->cfg.health_bind), LF_INT("port", c->cfg.health_port),
             LF_URL("redis", c->cfg.redis_url), LF_STR("prefix", c->cfg.redis_prefix),
             LF_URL("database", *c->cfg.database_url ? c->cfg.database_url : "(not set)"),
             LF_INT("key_index", c->cfg.key_index), LF_SECRET("openai_keys", &c->cfg.openai_keys),
             LF_SECRET("minimax_keys", &c->cfg.minimax_keys), LF_SECRET("stability_keys", &c->cfg.stability_keys),
             LF_SECRET("discord_token", &c->cfg.discord_token), LF_STR("discord_api", c->cfg.discord_api_base));
}

static int start(struct core *c, core_setup_fn *setup)
{
    c->loop = uv_default_loop();
    c->started_ms = uv_now(c->loop);
    signal(SIGPIPE, SIG_IGN);
    srandom((unsigned)(uv_hrtime() ^ (uint64_t)getpid()));
    /* handles first: close_all may run after a partial start */
    uv_timer_init(c->loop, &c->beat_timer);
    uv_timer_init(c->loop, &c->drain_timer);
    uv_timer_init(c->loop, &c->lag_timer);
    uv_timer_init(c->loop, &c->perf_timer);
    c->perf_timer.data = c;
    c->perf = perf_new();
    uv_timer_init(c->loop, &c->reg_timer);
    c->lag_timer.data = c->reg_timer.data = c;
    uv_signal_init(c->loop, &c->sigterm);
    uv_signal_init(c->loop, &c->sigint);
    c->beat_timer.data = c->drain_timer.data = c;
    c->sigterm.data = c->sigint.data = c;
    log_start(c);
    int rc = start_redis(c);
    if (rc)
        return rc;
    char ua[96];
    snprintf(ua, sizeof(ua), "DiscordBot (https://github.com/discord-ai-bot-cluster, %s)", BC_VERSION);
    struct hcl_opts ho = {.user_agent = ua};
    if ((rc = hcl_new(c->loop, &ho, &c->http)))
        return rc;
    if (c->cfg.diag_jobs && (rc = diag_register(c)))
        return rc;
    if (setup && (rc = setup(c)))
        return rc;
    if (c->cfg.register_commands) /* one-shot: register and exit */
        return start_discord(c);
    if ((rc = bus_consume(c->bus, role_name(c->cfg.role))) || (rc = start_store(c)) || (rc = start_http(c)) ||
        (rc = start_discord(c)) || (rc = start_failover(c)))
        return rc;
    uv_timer_start(&c->beat_timer, on_beat_timer, (uint64_t)c->cfg.heartbeat_interval_ms,
                   (uint64_t)c->cfg.heartbeat_interval_ms);
    uv_timer_start(&c->lag_timer, on_lag_timer, CORE_LAG_TICK_MS, CORE_LAG_TICK_MS);
    uv_timer_start(&c->perf_timer, on_perf_timer, CORE_PERF_LOG_MS, CORE_PERF_LOG_MS);
    uv_unref((uv_handle_t *)&c->perf_timer);
    uv_signal_start(&c->sigterm, on_signal, SIGTERM);
    uv_signal_start(&c->sigint, on_signal, SIGINT);
    return 0;
}

int core_main(int argc, char **argv, char **envp, enum role role, const struct cmd_table *const *commands,
              core_setup_fn *setup)
{
    cmds_use(commands);
    struct core *c = mem_calloc(1, sizeof(*c));
    int rc = load_config(c, argc, argv, envp, role);
    if (rc != CFG_RUN) {
        cfg_free(&c->cfg);
        mem_free(c);
        return rc < 0 ? 2 : 0;
    }
    log_warnings(&c->cfg);
    if (start(c, setup)) {
        c->exit_code = 1;
        close_all(c);
    }
    uv_run(c->loop, UV_RUN_DEFAULT);
    int code = c->exit_code;
    if (c->cfg.register_commands && c->reg_done != 1)
        code = 1;
    log_info("stopped", LF_INT("exit_code", code));
    uv_loop_close(c->loop);
    perf_free(c->perf); /* last: a transfer cancelled at close may still count */
    cfg_free(&c->cfg);
    mem_free(c);
    return code;
}
