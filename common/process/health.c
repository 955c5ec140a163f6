#include "process/health.h"

#include <json.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/config.h"
#include "discord/drest.h"
#include "discord/gwhold.h"
#include "discord/ingress.h"
#include "io/rds.h"
#include "io/store.h"
#include "process/failover.h"
#include "process/perf.h"
#include "service/bus.h"

static const char *status_of(const struct health_view *v, int *http)
{
    *http = 200;
    if (v->draining) {
        *http = 503;
        return "draining";
    }
    if (!v->redis_ok) {
        *http = 503;
        return "unhealthy";
    }
    return v->pg_ok ? "ok" : "degraded";
}

struct json_object *health_json(const struct health_view *v, int *http)
{
    struct bus_stats st;
    bus_stats(v->bus, &st);
    const char *status = status_of(v, http);
    struct json_object *o = json_object_new_object(), *redis = json_object_new_object(),
                       *pg = json_object_new_object();
    json_object_object_add(o, "status", json_object_new_string(status));
    json_object_object_add(o, "instance", json_object_new_string(v->cfg->name));
    json_object_object_add(o, "role", json_object_new_string(role_name(v->cfg->role)));
    json_object_object_add(o, "version", json_object_new_string(BC_VERSION));
    json_object_object_add(o, "pid", json_object_new_int(getpid()));
    json_object_object_add(o, "uptime_s", json_object_new_int64((int64_t)v->uptime_s));
    json_object_object_add(redis, "ok", json_object_new_boolean(v->redis_ok));
    char lat[32];
    snprintf(lat, sizeof(lat), "%.3f", v->redis_latency_ms);
    json_object_object_add(redis, "latency_ms", json_object_new_double_s(v->redis_latency_ms, lat));
    if (!v->redis_ok)
        json_object_object_add(redis, "error", json_object_new_string(rds_errstr(v->redis)));
    json_object_object_add(o, "redis", redis);
    json_object_object_add(pg, "ok", json_object_new_boolean(v->pg_ok));
    json_object_object_add(pg, "configured", json_object_new_boolean(v->store != NULL));
    if (v->store && !v->pg_ok)
        json_object_object_add(pg, "error", json_object_new_string(store_errstr(v->store)));
    else if (!v->store)
        json_object_object_add(pg, "error", json_object_new_string("DATABASE_URL not set"));
    json_object_object_add(o, "postgres", pg);
    if (v->gwhold) {
        struct gwhold_status gs;
        gwhold_status(v->gwhold, &gs);
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
    snprintf(lat, sizeof(lat), "%.3f", v->loop_lag_ms);
    json_object_object_add(o, "loop_lag_ms", json_object_new_double_s(v->loop_lag_ms, lat));
    json_object_object_add(o, "inflight", json_object_new_int64(st.inflight));
    json_object_object_add(o, "processed", json_object_new_int64((int64_t)st.processed));
    json_object_object_add(o, "failed", json_object_new_int64((int64_t)(st.failed + st.dead)));
    return o;
}

/* Gateway, ingress and REST figures; only where Discord is configured. */
static void metrics_discord(const struct health_view *v, struct buf *b)
{
    if (v->gwhold) {
        struct gwhold_status gs;
        gwhold_status(v->gwhold, &gs);
        buf_printf(b,
                   "# HELP discordbot_gateway_holder 1 while this instance holds the gateway session.\n"
                   "# TYPE discordbot_gateway_holder gauge\ndiscordbot_gateway_holder %d\n"
                   "# HELP discordbot_gateway_connected 1 while connected and identified or resumed.\n"
                   "# TYPE discordbot_gateway_connected gauge\ndiscordbot_gateway_connected %d\n"
                   "# HELP discordbot_gateway_latency_seconds Last gateway heartbeat round trip.\n"
                   "# TYPE discordbot_gateway_latency_seconds gauge\ndiscordbot_gateway_latency_seconds %.6f\n",
                   gs.holder, !strcmp(gs.state, "connected"), gs.latency_ms > 0 ? gs.latency_ms / 1000.0 : 0.0);
    }
    if (v->ingress) {
        struct ingress_stats is;
        ingress_stats(v->ingress, &is);
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
    if (v->rest) {
        struct drest_stats ds;
        drest_stats(v->rest, &ds);
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

int health_metrics(const struct health_view *v, struct buf *b)
{
    struct bus_stats st;
    bus_stats(v->bus, &st);
    buf_printf(b,
               "# HELP discordbot_info Instance identity.\n# TYPE discordbot_info gauge\n"
               "discordbot_info{name=\"%s\",role=\"%s\",version=\"%s\"} 1\n"
               "# HELP discordbot_uptime_seconds Seconds since start.\n# TYPE discordbot_uptime_seconds gauge\n"
               "discordbot_uptime_seconds %llu\n"
               "# HELP discordbot_draining 1 while draining for shutdown.\n# TYPE discordbot_draining gauge\n"
               "discordbot_draining %d\n",
               v->cfg->name, role_name(v->cfg->role), BC_VERSION, (unsigned long long)v->uptime_s,
               v->draining);
    buf_printf(b,
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
    buf_printf(b,
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
               v->redis_ok, v->redis_latency_ms / 1000.0, v->pg_ok, (unsigned long long)v->beats_sent,
               (unsigned long long)v->beats_failed, v->loop_lag_ms / 1000.0);
    metrics_discord(v, b);
    int rc = perf_metrics(v->perf, b);
    if (v->failover)
        failover_metrics(v->failover, b);
    /* appends are not checked one by one: a buf's failure is sticky, so
     * this one check says whether the text is whole */
    return rc ? rc : buf_error(b);
}
