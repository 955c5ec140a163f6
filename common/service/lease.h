/* lease: a named, expiring lock in Redis with a fencing token.
 *
 * One holder at a time: acquiring sets <key> to "<owner>:<fence>" with a
 * time-to-live, where fence comes from INCR <key>:fence, so every new holder
 * has a larger token than all before it. The holder renews every ttl/3;
 * writes made on its behalf carry the token and are refused (in Lua, by
 * comparing <key>) once another holder has it. If renewals are not
 * confirmed for 2/3 of the ttl while Redis is reachable, the holder
 * considers the lease lost before anyone else can take it. While Redis
 * cannot be reached at all (nobody can take the lease then) it keeps
 * holding for up to 30 s, and on return renews, setting the key again if it
 * expired meanwhile (unless another holder has it); candidates that saw
 * Redis come back wait one ttl first, so that holder keeps the session.
 * Candidates retry every ttl/5.
 * Callbacks run on the loop; lease_close never calls them. */
#ifndef BC_LEASE_H
#define BC_LEASE_H

#include <stdint.h>
#include <uv.h>

#include "io/rds.h"

struct lease;

/* held=1: we hold it now (token valid); held=0: we lost or released it. */
typedef void lease_cb(struct lease *l, int held, void *arg);

int lease_new(uv_loop_t *loop, struct rds *redis, const char *key, const char *owner, int ttl_ms, lease_cb *cb,
              void *arg, struct lease **out);
/* Start competing (idempotent). */
void lease_start(struct lease *l);
/* Stop competing; if held, delete the key (only if still ours) so another
 * candidate takes over at once. The callback is not called. */
void lease_release(struct lease *l);
int lease_held(const struct lease *l);
/* "<owner>:<fence>" while held, else "". */
const char *lease_token(const struct lease *l);
/* Current holder's token as last seen in Redis ("" if none or unknown). */
const char *lease_holder(const struct lease *l);
void lease_close(struct lease *l);

#endif
