/* ingress: Discord events in, jobs out.
 *
 * Whoever holds the gateway session hands every dispatch to
 * ingress_gateway_event; every instance serves POST /interactions when
 * DISCORD_PUBLIC_KEY is set. The ingress decides where an event goes:
 *  - INTERACTION_CREATE by command name to its role's stream (job type
 *    "discord.interaction", payload: everything a worker needs); a command
 *    used outside its role's channels, a command this build does not serve,
 *    or a Redis outage is answered at once with a short ephemeral message in
 *    the caller's language instead;
 *  - MESSAGE_CREATE in a chat channel (or a thread under one, or a DM) to
 *    the chat stream, payload: the raw gateway message. Job type
 *    "discord.mention" when the message speaks to the bot (a DM, or its
 *    mentions hold the bot user learned from READY, see
 *    ingress_set_bot_user), "discord.message" otherwise. Mentions outside
 *    the chat channels are not routed; bots, webhooks and the bot itself are
 *    ignored;
 *  - GUILD_CREATE, CHANNEL_* and THREAD_* update the channel-name cache,
 *    kept in Redis (<prefix>:channels) so every instance can resolve names.
 * Gateway events are routed in batches by one Lua script that checks the
 * holder's fencing token, skips sequences already routed (a resume replay),
 * adds the jobs and records the last sequence, atomically: so an event is
 * routed exactly once even when the holder dies mid-stream. Batches are
 * collected per loop iteration (at most BATCH_EVENTS events or BATCH_BYTES
 * each), several are on the wire at once, and while Redis is away they are
 * held in memory (capped; past the cap the holder resyncs) and stored when
 * it returns.
 *
 * Interactions are acknowledged (deferred, type 5) at once, before their
 * job is stored: that needs no Redis, and Discord allows only 3 s. The
 * batch holding the job (and every batch after it) is stored only once
 * Discord has answered the acknowledgement, so a worker never edits a
 * reply Discord does not know yet; a replayed interaction that another
 * holder acknowledged (40060) is routed, one that nobody acknowledged in
 * time (10062) is not. POST /interactions answers with the deferral and
 * queues the job the same way; its signed timestamp must be within
 * INTERACTION_MAX_SKEW_SEC of our clock and the interaction younger than
 * 10 s, so a captured request cannot be replayed. */
#ifndef BC_INGRESS_H
#define BC_INGRESS_H

#include <json.h>
#include <stdint.h>
#include <uv.h>

#include "base/config.h"
#include "io/gw.h"

struct ingress;
struct rds;
struct drest;
struct httpd;

/* The holder must drop its gateway connection and resume from the last
 * sequence stored in Redis (a batch could not be stored), or stop holding
 * (fenced: another instance holds the lease now). */
enum ingress_trouble { INGRESS_RESYNC, INGRESS_FENCED };
typedef void ingress_trouble_cb(enum ingress_trouble t, void *arg);

struct ingress_stats {
    uint64_t events, routed, duplicates, interactions, replied, acked, ack_failed, batches, refused_stale;
    size_t held_batches, held_bytes, held_http; /* not stored yet */
};

int ingress_new(uv_loop_t *loop, const struct config *cfg, struct rds *redis, struct drest *rest,
                struct ingress **out);
/* Start serving POST /interactions (needs DISCORD_PUBLIC_KEY). */
int ingress_http_route(struct ingress *in, struct httpd *h);
/* Holder side: the fencing token and keys used for routing; token NULL
 * stops gateway routing (events then are ignored). */
void ingress_set_holder(struct ingress *in, const char *lease_key, const char *session_key, const char *token,
                        ingress_trouble_cb *cb, void *arg);
/* The bot's own user id (from READY): its messages are ignored and
 * mentions of it mark a message "discord.mention". NULL or "" forgets it. */
void ingress_set_bot_user(struct ingress *in, const char *user_id);
/* Load the channel cache from Redis (holder start); done runs once, also
 * with BC_ESHUTDOWN. Routing decisions need it: a holder connects only
 * after it (replayed messages would otherwise find no channel names). If
 * this returns an error, done never runs. */
int ingress_load_channels(struct ingress *in, void (*done)(int status, void *arg), void *arg);
/* One gateway dispatch (holder side), borrowed for the call. */
void ingress_gateway_event(struct ingress *in, const struct gw_event *ev);
void ingress_stats(const struct ingress *in, struct ingress_stats *out);
/* Tests: smaller limits (0 keeps a default). */
void ingress__set_limits(struct ingress *in, size_t batch_events, size_t batch_bytes, size_t queue_bytes);
/* Tests and the fuzz target: how old (by its id) an interaction may be
 * before it counts as a replay (default 10 s). */
void ingress__set_stale_ms(struct ingress *in, int64_t ms);
void ingress_close(struct ingress *in);

/* ---- internal: shared with the tests and the fuzz target ---------------- */

/* POST /interactions without httpd and Redis, in its two steps. */

/* Whether sig_hex (X-Signature-Ed25519) signs ts (X-Signature-Timestamp)
 * followed by body/len with the configured DISCORD_PUBLIC_KEY. 1 or 0;
 * 0 when no key was set up (ingress_http_route) or a header is missing. */
int ingress__verify(const struct ingress *in, const char *ts, const char *sig_hex, const char *body, size_t len);

/* What a verified request gets. status != 0: answer at once with status
 * and body (JSON); status 0: store body (the job payload) for role, then
 * defer (ephemeral) and, if storing fails, say so in the caller's language
 * (ko). */
struct ingress__http {
    int status;
    char *body;  /* owned by the caller: mem_free */
    char id[24]; /* status 0: the interaction id (at most 20 bytes) */
    enum role role;
    int ephemeral, ko;
};

/* Parse and decide. body must be NUL-terminated at len. Counts the
 * interaction in the stats. Pure otherwise: no I/O. */
void ingress__http_decide(struct ingress *in, const char *body, size_t len, struct ingress__http *out);

#endif
