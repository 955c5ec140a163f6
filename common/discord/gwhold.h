/* gwhold: who holds the cluster's one gateway session, and holding it.
 *
 * Every instance with a DISCORD_TOKEN (and GATEWAY not off) competes for the
 * lease <prefix>:gw:0:lease. The holder asks GET /gateway/bot for the URL,
 * reads the session kept in <prefix>:gw:0:session (session_id, resume_url,
 * seq = last sequence routed), RESUMEs it when there is one, so Discord
 * replays what the previous holder missed, and identifies only when there
 * is none or Discord refuses the resume. Identifies go through a gate: at
 * most one per 5 s per max_concurrency bucket cluster-wide (Redis key), and
 * none when the daily budget is nearly spent. Dispatches go to the ingress,
 * which routes them under the lease's fencing token. Losing the lease closes
 * the connection at once without ending the session; a fatal close code
 * (bad token, disallowed intents) stops every instance from trying for an
 * hour (<prefix>:gw:fatal) and says why in the log and /health. */
#ifndef BC_GWHOLD_H
#define BC_GWHOLD_H

#include <uv.h>

#include "base/config.h"

struct gwhold;
struct rds;
struct drest;
struct ingress;

struct gwhold_status {
    const char *state;     /* "off", "candidate", "connecting", "connected", "stopped" */
    int holder;            /* this instance holds the lease */
    double latency_ms;     /* gateway heartbeat round trip (holder only) */
    const char *error;     /* why stopped, or "" */
};

int gwhold_new(uv_loop_t *loop, const struct config *cfg, struct rds *redis, struct drest *rest,
               struct ingress *in, struct gwhold **out);
void gwhold_start(struct gwhold *h);
/* Hand the session over: release the lease and close the connection
 * without ending the session (another instance resumes it). */
void gwhold_stop(struct gwhold *h);
void gwhold_status(const struct gwhold *h, struct gwhold_status *out);
void gwhold_close(struct gwhold *h);

#endif
