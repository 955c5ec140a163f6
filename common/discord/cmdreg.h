/* cmdreg: keeping Discord's slash commands equal to ours.
 *
 * Registers the commands of every role (cmds_json) by bulk overwrite
 * (PUT /applications/{app}/commands, or the guild's when DISCORD_GUILD_ID
 * is set), but only when the hash of the set (cmds_hash) differs from the
 * one stored at <prefix>:commands:<app>:<guild id or "global">, which it
 * writes after Discord accepted the set. The application id comes from
 * DISCORD_APPLICATION_ID, or else from <prefix>:discord:app_id, which the
 * gateway holder writes at READY (looked for every 2 s until it is there).
 *
 * Two ways to run: kept (the admin instance) retries a failed
 * registration every 60 s and calls done after each attempt; once
 * (--register-commands) gives up at the first failure, also when the
 * application id is unknown, and calls done exactly once. done is never
 * called from inside cmdreg_start or after cmdreg_close. */
#ifndef BC_CMDREG_H
#define BC_CMDREG_H

#include <uv.h>

struct cmdreg;
struct config;
struct drest;
struct rds;

/* ok: the commands are registered (or were already). */
typedef void cmdreg_done_cb(int ok, void *arg);

/* Start now (the first attempt runs from the loop). cfg, redis and rest
 * are borrowed and must outlive the cmdreg. Returns 0 or -EINVAL. */
int cmdreg_start(uv_loop_t *loop, const struct config *cfg, struct rds *redis, struct drest *rest, int once,
                 cmdreg_done_cb *done, void *arg, struct cmdreg **out);
/* Stop: no more attempts, done is not called again. Replies still owed
 * (they come back at the latest as BC_ESHUTDOWN when redis and rest
 * close) free what is left. NULL is a no-op. */
void cmdreg_close(struct cmdreg *r);

#endif
