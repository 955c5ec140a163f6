/* failover: who is alive, and who serves which role.
 *
 * Every instance follows <prefix>:heartbeats (each beat carries the name,
 * role, state and the roles the instance reads, "serving"). A peer is up
 * while it beats, suspect after two missed beats, down after
 * FAILOVER_AFTER_MS of silence, and down at once when its last beat said
 * it is draining. From that picture each instance decides alone, by the
 * same rules, so no election is needed:
 *  - a chat, image or video role with no live instance is taken over by the
 *    admin instance (if it is up), which reads that role's stream as its own
 *    consumer with its own keys: first it claims the entries pending on the
 *    dead consumers (idle at least FAILOVER_AFTER_MS), then new ones;
 *  - the admin role with no live admin is taken over by the lowest-numbered
 *    live instance, so /상태 always answers;
 *  - a live replica of a role claims the pending entries of a dead replica
 *    of the same role as soon as it is seen down;
 *  - when a role's own instance beats again for HANDBACK_BEATS intervals,
 *    the taker stops reading new entries of it (handback) and finishes
 *    what it holds.
 * Each takeover and handback is logged (a line containing "routing") and
 * added to <prefix>:events. Role modules learn of them through the core
 * hook takeover (video resumes the dead instance's rows). */
#ifndef BC_FAILOVER_H
#define BC_FAILOVER_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"

struct core;
struct failover;

#define HANDBACK_BEATS 3

enum peer_state { PEER_UP, PEER_SUSPECT, PEER_DOWN, PEER_DRAINING };

struct peer {
    char name[32];          /* "chat-1" */
    enum role role;
    int instance;
    enum peer_state state;
    int64_t age_ms;         /* since its last beat was seen */
    int64_t uptime_s;
    long long inflight, processed, failed;
    int pid, health_port;
    char serving[64];       /* roles it reads, "admin,chat" */
    char version[24];
};

int failover_new(struct core *c, struct failover **out);
void failover_close(struct failover *f);

/* Every instance seen (this one included), ordered by instance number.
 * Returns how many were written to out (at most max). */
size_t failover_peers(const struct failover *f, struct peer *out, size_t max);
const char *failover_state_name(enum peer_state s);

/* The names of the live instances reading role's stream, comma-separated,
 * into out ("" when nobody serves it). */
void failover_servers(const struct failover *f, enum role r, char *out, size_t len);

/* Prometheus lines: heartbeat age per peer, peer state, takeover per role. */
void failover_metrics(const struct failover *f, struct buf *out);

#endif
