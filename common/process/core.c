#include "process/core.h"

#include <errno.h>
#include <json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "discord/cmdreg.h"
#include "discord/cmds.h"
#include "process/diag.h"
#include "process/failover.h"
#include "process/health.h"
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
    struct diag_deps diag;  /* what the diag.* probes use (rest set once it exists) */
    struct cmdreg *reg;     /* slash-command registration, or NULL */
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

static void view(struct core *c, struct health_view *v)
{
    *v = (struct health_view){.cfg = &c->cfg,
                              .draining = c->state != CS_RUNNING,
                              .uptime_s = uptime_s(c),
                              .redis = c->cmd,
                              .redis_ok = redis_ok(c),
                              .redis_latency_ms = c->redis_latency_ms,
                              .store = c->store,
                              .pg_ok = pg_ok(c),
                              .loop_lag_ms = loop_lag_ms(c),
                              .beats_sent = c->beats_sent,
                              .beats_failed = c->beats_failed,
                              .bus = c->bus,
                              .gwhold = c->gwhold,
                              .ingress = c->ingress,
                              .rest = c->rest,
                              .perf = c->perf,
                              .failover = c->failover};
}

static void on_health(struct httpd_req *req, void *arg)
{
    struct core *c = arg;
    struct health_view v;
    view(c, &v);
    int http;
    struct json_object *o = health_json(&v, &http);
    for (int i = 0; i < c->nhooks && c->state == CS_RUNNING; i++)
        if (c->hooks[i].h.health)
            c->hooks[i].h.health(o, c->hooks[i].arg);
    size_t len;
    const char *body = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    httpd_respond(req, http, "application/json", body, len);
    json_object_put(o);
}

static void on_metrics(struct httpd_req *req, void *arg)
{
    struct core *c = arg;
    struct health_view v;
    view(c, &v);
    struct buf b;
    buf_init(&b, 64 << 10);
    int rc = health_metrics(&v, &b);
    if (rc) { /* never serve it cut */
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
    cmdreg_close(c->reg); /* no more registration attempts */
    c->reg = NULL;
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
    cmdreg_close(c->reg);
    c->reg = NULL;
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
    c->rest = c->diag.rest = NULL;
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

/* The admin instance keeps the slash commands registered; with
 * --register-commands any instance registers them once and exits. */
static void on_registration(int ok, void *arg)
{
    struct core *c = arg;
    c->reg_done = ok ? 1 : -1;
    if (c->cfg.register_commands)
        close_all(c); /* --register-commands: done */
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
    c->diag.rest = c->rest;
    if (has_key && c->httpd && (rc = ingress_http_route(c->ingress, c->httpd))) {
        log_error("cannot serve POST /interactions", LF_ERR(rc));
        return rc;
    }
    if (has_token && c->cfg.gateway_mode != GATEWAY_OFF && !c->cfg.register_commands) {
        if ((rc = gwhold_new(c->loop, &c->cfg, c->cmd, c->rest, c->ingress, &c->gwhold)))
            return rc;
        gwhold_start(c->gwhold);
    }
    if (has_token && (c->cfg.role == role_taker() || c->cfg.register_commands))
        return cmdreg_start(c->loop, &c->cfg, c->cmd, c->rest, c->cfg.register_commands, on_registration, c,
                            &c->reg);
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
    c->lag_timer.data = c;
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
    c->diag = (struct diag_deps){.loop = c->loop, .redis = c->cmd, .cfg = &c->cfg};
    if (c->cfg.diag_jobs && (rc = diag_register(c->bus, &c->diag)))
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

void core_use_roles(const struct role_def *const *roles)
{
    static const struct cmd_table *tables[ROLE_COUNT + 1];
    size_t n = 0;
    roles_use(roles);
    for (; roles && *roles && n < ROLE_COUNT; roles++)
        if ((*roles)->commands)
            tables[n++] = (*roles)->commands;
    tables[n] = NULL;
    cmds_use(tables);
}

int core_main(int argc, char **argv, char **envp, enum role role, const struct role_def *const *roles,
              core_setup_fn *setup)
{
    core_use_roles(roles);
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
