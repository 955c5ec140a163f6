/* ping: /핑 (/ping) — which instance answered, and the latencies of the
 * gateway heartbeat (as published by the holder), a REST round trip and a
 * Redis round trip. Open to everyone, answered ephemerally. Part of the
 * admin role, which any instance may serve (see admincmd.h). */
#ifndef BC_PING_H
#define BC_PING_H

#include <stddef.h>

#include <uv.h>

struct bus_job;
struct config;
struct drest;
struct ixjob;
struct rds;

/* What a ping uses (copied; the pointers must stay valid until the job is
 * over). rest may be NULL: the REST figure is then unavailable and nobody
 * is answered. */
struct ping_deps {
    uv_loop_t *loop;
    struct drest *rest;
    struct rds *redis;
    const struct config *cfg;
};

/* Takes over job and ix (ix is freed when done). */
void ping_run(const struct ping_deps *d, struct bus_job *job, struct ixjob *ix);

/* For tests: the answer's text (cfg->name answered; a figure < 0 is
 * unknown; gw_ms < 0 with a holder: no heartbeat answered yet). */
void ping__text(char *out, size_t n, const struct config *cfg, int ko, const char *holder, double gw_ms,
                double rest_ms, double redis_ms);

#endif
