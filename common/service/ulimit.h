/* ulimit: per-user fairness, cluster-wide.
 *
 * Two limits per user and kind of request (chat, image, video), kept in
 * Redis and checked atomically by one script so every instance sees the
 * same counts: at most `rate` requests in any `window_s` seconds (a sliding
 * log, so no burst at window edges), and at most `daily` a day (UTC). A
 * request is counted only when it is allowed. 0 turns a limit off. When
 * Redis cannot answer, the request is allowed (fail open: Redis being down
 * already stops new jobs) and that is logged. */
#ifndef BC_ULIMIT_H
#define BC_ULIMIT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct rds;

enum ulimit_verdict { ULIMIT_OK = 0, ULIMIT_RATE, ULIMIT_DAILY };

/* verdict and, when limited, how long until the user may ask again. */
typedef void ulimit_cb(enum ulimit_verdict v, int64_t wait_ms, void *arg);

struct ulimit_req {
    const char *prefix, *kind, *user_id;
    int rate, window_s, daily;
    int cost; /* units this request takes of the daily limit; 0 = 1 */
    /* The time the limits are judged at, ms since the epoch. 0 (always, in
     * the roles) means Redis's own clock, so every instance agrees; tests
     * pass a time to reach the edges of a window or of a UTC day exactly. */
    int64_t now_ms;
};

/* Returns -EINVAL (q, its kind or prefix, or cb missing) and cb never
 * runs; otherwise 0, and cb runs exactly once, always later from the loop,
 * never from inside this call: with the verdict, with ULIMIT_OK at once
 * (next loop turn) when nothing needs checking, and with ULIMIT_OK (fail
 * open, logged) when Redis cannot answer. q is copied. */
int ulimit_check(uv_loop_t *loop, struct rds *r, const struct ulimit_req *q, ulimit_cb *cb, void *arg);

/* The sentence for a refusal: how long to wait (rate) or until when
 * (daily, with the limit), in Korean or English. what names the unit
 * ("요청"/"requests", "이미지"/"images" ...). Into out. */
void ulimit_say(enum ulimit_verdict v, int64_t wait_ms, int daily, int ko, const char *what_ko, const char *what_en,
                char *out, size_t len);

/* Give the day's units of q back (the request failed before the user got
 * anything). Best effort, no callback. A refund across UTC midnight goes
 * to the new day's counter, never below zero. */
void ulimit_refund(struct rds *r, const struct ulimit_req *q);

#endif
