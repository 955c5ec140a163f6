/* core: one instance's lifecycle, shared by the four role binaries.
 *
 * core_main parses the configuration, sets up logging, the event loop, the
 * Redis command connection, the job bus (consuming the role's stream),
 * PostgreSQL (optional: without it the instance runs degraded), the
 * /health and /metrics server and the heartbeat, lets the role register
 * its job handlers, and runs the loop until SIGTERM/SIGINT. Then it drains:
 * no new jobs are taken, jobs in flight get DRAIN_TIMEOUT_SEC to finish and
 * be acked, and the process exits 0. A second signal exits at once (jobs
 * still running stay pending in Redis and are picked up again).
 *
 * Exit codes: 0 after a drain or --help/--version/--check-config, 1 when
 * the instance cannot start (e.g. health port in use), 2 on bad config. */
#ifndef BC_CORE_H
#define BC_CORE_H

#include <uv.h>

#include "service/bus.h"
#include "base/config.h"

struct core;
struct store;
struct drest;
struct hcl;

/* Role setup: register job handlers on core_bus(c). Non-zero aborts start. */
typedef int core_setup_fn(struct core *c);

struct role_def;
/* roles: every role's row, NULL-terminated (base/role.h), with its command
 * table: any instance routes any command to the role that serves it, and
 * takes over by the rows. role: this binary's. */
int core_main(int argc, char **argv, char **envp, enum role role, const struct role_def *const *roles,
              core_setup_fn *setup);
/* What core_main does first: the rows and their command tables are in use
 * (roles_use, cmds_use). For tests and fuzzers. */
void core_use_roles(const struct role_def *const *roles);

uv_loop_t *core_loop(struct core *c);
const struct config *core_config(const struct core *c);
struct bus *core_bus(struct core *c);
struct rds *core_redis(struct core *c);
/* NULL when DATABASE_URL is not set. */
struct store *core_store(struct core *c);
/* Discord REST client; NULL without DISCORD_TOKEN or DISCORD_PUBLIC_KEY. */
struct drest *core_rest(struct core *c);
/* The process's HTTP client (providers). */
struct hcl *core_http(struct core *c);
/* The process's performance counters (perf.h): a provider module reports
 * each request with perf_provider(core_perf(c), ...). Never NULL once the
 * role's setup runs; owned by the core, valid until core_main returns. */
struct perf;
struct perf *core_perf(struct core *c);
/* What a role adds to the instance; any member may be NULL. Called only
 * while the instance runs (not while draining or closing). */
struct json_object;
struct core_hooks {
    /* add the role's fields to the /health JSON object */
    void (*health)(struct json_object *health, void *arg);
    /* the Redis command connection came up (again): rewrite mirrored state */
    void (*redis_up)(void *arg);
    /* PostgreSQL is connected and migrated (again) */
    void (*store_up)(void *arg);
    /* this instance took role r over (on) or handed it back; dead lists the
     * instances of r seen down, comma-separated */
    void (*takeover)(enum role r, int on, const char *dead, void *arg);
};
/* Up to 4 sets per instance (a role may be served by more than one
 * module); -ENOSPC beyond. */
int core_add_hooks(struct core *c, const struct core_hooks *h, void *arg);

/* The cluster picture (peers, takeovers); NULL before start completes. */
struct failover *core_failover(struct core *c);
/* For failover: tell the roles' takeover hooks. */
void core_notify_takeover(struct core *c, enum role r, int on, const char *dead);

/* fn(arg) runs at shutdown, after in-flight jobs were cancelled and before
 * the HTTP client and the store close (last registered runs first). */
int core_at_close(struct core *c, void (*fn)(void *arg), void *arg);

#endif
