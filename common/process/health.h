/* health: what /health and /metrics say, from a picture of the instance.
 *
 * The core fills a health_view when a request comes and serves the
 * result; this module only turns the view into the JSON of /health and the
 * Prometheus text of /metrics, so what an operator sees is written in one
 * place. Nothing here holds state or touches the network; the pointers in
 * the view are only read during the call. */
#ifndef BC_HEALTH_H
#define BC_HEALTH_H

#include <stdint.h>

struct buf;
struct bus;
struct config;
struct drest;
struct failover;
struct gwhold;
struct ingress;
struct json_object;
struct perf;
struct rds;
struct store;

struct health_view {
    const struct config *cfg;
    int draining;                /* draining or closing: /health answers 503 */
    uint64_t uptime_s;
    struct rds *redis;           /* the command connection (its error text) */
    int redis_ok;                /* commands and the job reader are up */
    double redis_latency_ms;     /* the last heartbeat's round trip */
    struct store *store;         /* NULL without DATABASE_URL */
    int pg_ok;
    double loop_lag_ms;
    uint64_t beats_sent, beats_failed;
    struct bus *bus;             /* never NULL */
    struct gwhold *gwhold;       /* the next four NULL where not configured */
    struct ingress *ingress;
    struct drest *rest;
    struct failover *failover;
    struct perf *perf;           /* never NULL */
};

/* The /health object (the caller adds the roles' fields and puts it) and
 * its HTTP status in *http: 200 ("ok", "degraded": no PostgreSQL) or 503
 * ("unhealthy": no Redis, "draining"). */
struct json_object *health_json(const struct health_view *v, int *http);
/* Append the /metrics text to b. Returns 0, or the error that left the
 * text incomplete (b full): never serve it then. */
int health_metrics(const struct health_view *v, struct buf *b);

#endif
