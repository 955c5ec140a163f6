/* diag: pipeline probe jobs, enabled with DIAG_JOBS=on.
 *
 * diag.echo answers at once, diag.sleep after payload {"ms": N} (at most
 * 600000), diag.fail finishes as failed, diag.post {"channel_id", "content"}
 * posts one Discord message through the REST client (rate limits apply). Each successful probe appends
 * {job, role, consumer, type, payload} to <prefix>:diag:results (capped), so an
 * operator or a test can prove that a role's stream is consumed end to end
 * and that every job is answered exactly once. */
#ifndef BC_DIAG_H
#define BC_DIAG_H

#include <uv.h>

struct bus;
struct config;
struct drest;
struct rds;

/* What the probes use; borrowed, must outlive the bus. rest may be NULL
 * (diag.post then fails). */
struct diag_deps {
    uv_loop_t *loop;
    struct rds *redis;
    struct drest *rest;
    const struct config *cfg;
};

/* Register the diag.* handlers on b. Returns 0 or bus_register's error. */
int diag_register(struct bus *b, const struct diag_deps *d);

#endif
