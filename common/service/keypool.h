/* keypool: the API keys of one provider for one instance, and the
 * provider's circuit breaker.
 *
 * Keys are handed out round robin. A key that was rate limited cools down
 * (for the provider's retry-after, else a default) and comes back by
 * itself; a key that is out of quota or rejected leaves the rotation for
 * good (logged once, by fingerprint). Server errors and timeouts feed a
 * per-provider circuit breaker: after `threshold` of them in a row, within
 * `window_ms`, the breaker opens and no key is handed out for a cooldown
 * that doubles each time the probe after it fails (capped); after the
 * cooldown exactly one probe request is let through, and its success
 * closes the breaker. A key whose request hung (KEYPOOL_HUNG: no first
 * token, or silence) rests for hang_cooldown_ms, so the next requests get
 * the other keys at once, and the hang also counts toward the breaker.
 * Every key is registered with log_mask_add, so an LF_EXT log field that
 * echoes one is redacted. Any answer from the provider counts as success for
 * the breaker (a 429, quota or auth error proves it is reachable) and
 * breaks a run of errors; reports that arrive while it is open (requests
 * sent before it opened) change nothing.
 *
 * Time is the caller's monotonic clock in ms (uv_now), passed in on every
 * call, so the module never reads a clock for its decisions and tests can
 * drive it. The key state is mirrored to Redis, by fingerprint only:
 *   HSET <prefix>:keys:<provider>:<instance> <fingerprint>
 *        {"state":"ok|cooling|out","until_ms":<unix ms or 0>,"reason":..,"uses":n,"failures":n}
 * written at start (after a DEL of the hash) and on every report and
 * recovery, so one HSET per request. The writes are best effort: with no
 * Redis, or Redis down, the state stays local (logged once per outage);
 * keypool_resync writes everything again. The hash has no TTL: the admin
 * instance must treat entries of a gone instance as stale. until_ms is
 * wall-clock (for operators), the only use of the wall clock here. A key's
 * value never leaves the pool other than through keypool_pick. Nothing
 * here blocks; only keypool_read_state calls back.
 *
 * This module is the one home of that Redis format: keypool_read_state
 * reads every instance's hashes back (the admin status), so no other code
 * knows the key names or the JSON. */
#ifndef BC_KEYPOOL_H
#define BC_KEYPOOL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/secret.h"

struct keypool;
struct rds;

enum keypool_outcome {
    KEYPOOL_OK,
    KEYPOOL_RATE_LIMITED, /* cool down for retry_after_ms (0 = default_retry_ms) */
    KEYPOOL_QUOTA,        /* out of money: out of rotation */
    KEYPOOL_AUTH,         /* rejected key: out of rotation */
    KEYPOOL_SERVER_ERROR, /* counts toward the breaker */
    KEYPOOL_TIMEOUT,      /* counts toward the breaker */
    KEYPOOL_HUNG,         /* no answer (no first token, or silence) from this key:
                           * it cools down for hang_cooldown_ms, so the next
                           * requests go to other keys, and it counts toward
                           * the breaker */
};

struct keypool_opts {
    int default_retry_ms;     /* cooldown after a 429 without retry-after; default 20000 */
    int breaker_threshold;    /* consecutive server errors/timeouts; default 5 */
    int breaker_window_ms;    /* ... all within this; default 60000 */
    int breaker_cooldown_ms;  /* first open; default 30000, doubling per failed probe */
    int breaker_max_ms;       /* cap of the cooldown; default 300000 */
    int probe_timeout_ms;     /* a probe never reported is given up after; default 120000 */
    int hang_cooldown_ms;     /* a key that hung rests this long; default 30000 */
};

/* Results of keypool_pick besides 0. */
#define KEYPOOL_EAGAIN (-EAGAIN)          /* every usable key cools down: retry_in_ms */
#define KEYPOOL_EUNAVAIL BC_EDEGRADED     /* breaker open: provider unavailable, retry_in_ms */
#define KEYPOOL_EEXHAUSTED (-EKEYREVOKED) /* every key is out for good */

struct keypool_pick {
    int index;           /* pass to keypool_report */
    const char *key;     /* borrowed; valid until keypool_free */
    const char *fp;      /* its fingerprint, for logs */
    int probe;           /* this request is the breaker's half-open probe */
    uint64_t retry_in_ms; /* on KEYPOOL_EAGAIN / KEYPOOL_EUNAVAIL */
};

/* Parse keys (a secret holding "k1,k2,k3"; blanks around keys are dropped,
 * empty entries and duplicates skipped) into a pool. redis may be NULL (no
 * mirror) and must outlive the pool or be closed after it (pending writes
 * hold the pool until they complete). prefix, provider and instance are
 * copied; opts may be NULL (defaults; a zero field also means default).
 * loop provides the clock of the first mirror write.
 * Returns 0 and *out, or BC_ECONFIG when there is no key. */
int keypool_new(uv_loop_t *loop, struct rds *redis, const char *prefix, const char *provider,
                const char *instance, const struct secret *keys, const struct keypool_opts *opts,
                struct keypool **out);

/* The next usable key at now_ms. Returns 0 with *pk filled,
 * KEYPOOL_EUNAVAIL (breaker open, or its probe in flight: then retry_in_ms
 * is a few seconds),
 * KEYPOOL_EAGAIN (all usable keys cool down) with pk->retry_in_ms, or
 * KEYPOOL_EEXHAUSTED. */
int keypool_pick(struct keypool *p, uint64_t now_ms, struct keypool_pick *pk);

/* The key whose fingerprint is fp, whatever its state (a follow-up call
 * about something that key started, e.g. polling a task its account owns):
 * 0 and pk->index/key/fp, or -ENOENT. Not counted as a use. */
int keypool_by_fp(const struct keypool *p, const char *fp, struct keypool_pick *pk);

/* What happened to a request made with key index. retry_after_ms is used
 * for KEYPOOL_RATE_LIMITED only (0 = unknown). A stale or bad index is
 * ignored. */
void keypool_report(struct keypool *p, uint64_t now_ms, int index, enum keypool_outcome outcome,
                    int retry_after_ms);

/* A user-facing sentence for a keypool_pick result ("provider unavailable,
 * retry in 30 s"), into out. */
void keypool_describe(const struct keypool *p, int rc, const struct keypool_pick *pk, char *out, size_t outlen);

/* Append the pool's state as a JSON object to json (for /health):
 * {"provider","breaker":{"state","retry_in_ms","cooldown_ms","errors"},"keys":[{"fp","state",
 * "retry_in_ms","reason","uses","failures"}]}. Returns 0 or BC_ETOOBIG. */
int keypool_snapshot(const struct keypool *p, uint64_t now_ms, struct buf *json);

/* Append the snapshot to the "keys" array of a /health JSON object
 * (creating the array). */
struct json_object;
void keypool_health(const struct keypool *p, uint64_t now_ms, struct json_object *health);

/* Write every key's state to Redis again (after the hash was lost, or when
 * the connection comes up: call it from the rds state callback). */
void keypool_resync(struct keypool *p, uint64_t now_ms);

/* Number of keys, and how many are in rotation (not out) at now. */
int keypool_size(const struct keypool *p);
int keypool_in_rotation(const struct keypool *p);

/* Wipe the keys and free the pool (later, once its Redis writes complete). */
void keypool_free(struct keypool *p);

/* ---- the cluster's key state, read back from Redis ---------------------------- */

#define KEYPOOL_READ_HASHES_MAX 16 /* pools (provider, instance) read at most */
#define KEYPOOL_FP_MAX 72          /* a fingerprint read back is shorter */

enum keypool_key_state { KEYPOOL_KEY_UNKNOWN, KEYPOOL_KEY_OK, KEYPOOL_KEY_COOLING, KEYPOOL_KEY_OUT };

/* One key as some instance mirrored it. Everything in it came from Redis
 * and is untrusted: provider and instance are the parts of the hash's name
 * as they are (any bytes, not NUL-terminated: use the lengths); fp is
 * "sha256:" and hex digits (a field of any other shape is skipped, never
 * returned); state is KEYPOOL_KEY_UNKNOWN when the value says none of
 * ok/cooling/out (or is not JSON); reason is NULL or any text; until_ms
 * is wall-clock ms, 0 when not cooling or not said. */
struct keypool_entry {
    const char *provider, *instance;
    size_t provider_len, instance_len;
    char fp[KEYPOOL_FP_MAX];
    enum keypool_key_state state;
    const char *reason;
    int64_t until_ms;
};

/* What keypool_read_state found: entries in the order Redis gave them, at
 * most the max asked for; more counts the well-formed entries past that;
 * truncated is 1 when some pool was not read (more than
 * KEYPOOL_READ_HASHES_MAX, or SCAN still had more after its round limit). */
struct keypool_state {
    const struct keypool_entry *entries;
    size_t n, more;
    int truncated;
};

/* status is 0 when everything found was read, else the first error (an
 * rds status such as -ENOTCONN or BC_ESHUTDOWN, or BC_EREDIS for a reply
 * of the wrong shape); st is never NULL and holds what could be read all
 * the same. st and everything it points to are borrowed for the callback's
 * duration. */
typedef void keypool_state_cb(int status, const struct keypool_state *st, void *arg);

/* Read the key state every instance mirrored under prefix (SCAN for
 * <prefix>:keys:*, then HGETALL of each hash), keeping at most max entries.
 * Returns 0 and cb runs exactly once, never synchronously (at the latest
 * with BC_ESHUTDOWN when redis closes); or, without calling cb, -EINVAL
 * (NULL redis, prefix or cb) or rds_cmd's error (-ENOTCONN while down).
 * prefix is copied; redis must stay open until cb runs. */
int keypool_read_state(struct rds *redis, const char *prefix, size_t max, keypool_state_cb *cb, void *arg);

#endif
