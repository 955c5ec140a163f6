/* failover: who is alive, and who serves which role.
 *
 * Every instance follows <prefix>:heartbeats (each beat carries the name,
 * role, state and the roles the instance reads, "serving"). A peer is up
 * while it beats, suspect after two missed beats, down after
 * FAILOVER_AFTER_MS of silence, and down at once when its last beat said
 * it is draining. From that picture each instance decides alone, by the
 * same rules, so no election is needed:
 *  - nobody is judged until this instance has watched the heartbeats for a
 *    full FAILOVER_AFTER_MS; a role none of whose instances has beaten yet
 *    is starting, not dead, while instances are still joining (one joined
 *    less than FAILOVER_AFTER_MS ago);
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
 * hook takeover (video resumes the dead instance's rows); failover itself
 * only calls the takeover function it is given. */
#ifndef BC_FAILOVER_H
#define BC_FAILOVER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "base/buf.h"
#include "base/config.h"

struct bus;
struct failover;
struct rds;

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

/* What failover needs, all borrowed (they must outlive it). */
struct failover_opts {
    uv_loop_t *loop;
    struct rds *redis;        /* command connection: beats read, events written */
    struct bus *bus;          /* roles are taken over and handed back on it; NULL: watch only */
    const struct config *cfg; /* name, role, redis_prefix, heartbeat_interval_ms, failover_after_ms */
    /* wall-clock ms (beats are stamped with Redis's); NULL = the system's.
     * Tests pass their own to step time. */
    int64_t (*clock)(void *arg);
    void *clock_arg;
    /* this instance took role r over (on = 1, dead = the instances of r seen
     * down, comma-separated) or handed it back (on = 0); may be NULL */
    void (*takeover)(enum role r, int on, const char *dead, void *arg);
    void *takeover_arg;
    int tick_ms;              /* how often the heartbeats are read; 0 = 250 */
};

/* Start watching (reads begin on the loop). Returns 0 and *out, or -EINVAL
 * (no loop, redis or cfg; cfg without name, prefix or a role). Never calls
 * back from inside. */
int failover_new(const struct failover_opts *o, struct failover **out);
void failover_close(struct failover *f);

/* How a role is judged now (see the top of this header):
 *  UNJUDGED  this instance has not watched a full failover window yet;
 *  ALIVE     an instance of it is up or suspect (always, for our own role);
 *  STARTING  none of its instances has beaten while we watched, and
 *            instances are still joining the cluster (one joined less than
 *            FAILOVER_AFTER_MS ago): not dead, nobody takes it over;
 *  DEAD      its instances were alive while we watched and are down or
 *            draining now: it is taken over;
 *  ABSENT    none has beaten while we watched and the cluster has been
 *            settled for a full window: nobody serves it, it is taken over. */
enum failover_role_state { FO_ROLE_UNJUDGED, FO_ROLE_ALIVE, FO_ROLE_STARTING, FO_ROLE_DEAD, FO_ROLE_ABSENT };
enum failover_role_state failover_role_state(const struct failover *f, enum role r);
const char *failover_role_state_name(enum failover_role_state s);

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
