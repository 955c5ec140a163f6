#include "discord/cmdreg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "discord/cmds.h"
#include "discord/dpath.h"
#include "discord/drest.h"
#include "io/rds.h"

#define CMDREG_APP_WAIT_MS 2000   /* the application id is not known yet */
#define CMDREG_RETRY_MS 60000     /* after a failed registration */

struct cmdreg {
    uv_loop_t *loop;
    const struct config *cfg;
    struct rds *redis;
    struct drest *rest;
    int once;
    cmdreg_done_cb *done;
    void *arg;
    uv_timer_t timer;
    int owed;   /* replies still owed to us, plus the timer until it closed */
    int closed;
};

/* One attempt's state, owned by whichever reply is owed. */
struct attempt {
    struct cmdreg *r;
    char app[24];
    char hash[65];
    char key[160];
};

static void maybe_free(struct cmdreg *r)
{
    if (r->closed && !r->owed)
        mem_free(r);
}

/* A reply came back: 1 when the cmdreg still wants it. */
static int owed_back(struct cmdreg *r)
{
    r->owed--;
    if (!r->closed)
        return 1;
    maybe_free(r);
    return 0;
}

static void attempt_later(struct cmdreg *r, uint64_t ms);

static void finish(struct cmdreg *r, int ok)
{
    if (!ok && !r->once)
        attempt_later(r, CMDREG_RETRY_MS);
    r->done(ok, r->arg);
}

static void on_hash_saved(struct rds *rds, int status, const redisReply *reply, void *arg)
{
    (void)rds, (void)status, (void)reply;
    struct attempt *a = arg;
    struct cmdreg *r = a->r;
    mem_free(a);
    owed_back(r); /* the hash is a hint: if it is lost we register once more */
}

static void on_registered(const struct drest_resp *resp, void *arg)
{
    struct attempt *a = arg;
    struct cmdreg *r = a->r;
    if (!owed_back(r) || resp->err == BC_ESHUTDOWN) {
        mem_free(a);
        return;
    }
    if (resp->err || resp->status >= 300) {
        log_error("slash command registration failed", LF_INT("status", resp->status), LF_INT("code", resp->code),
                  LF_STR("error", resp->err ? resp->errstr : (resp->message ? resp->message : "")));
        mem_free(a);
        finish(r, 0);
        return;
    }
    log_info("slash commands registered", LF_STR("scope", *r->cfg->discord_guild_id ? "guild" : "global"),
             LF_STR("hash", a->hash));
    const char *av[] = {"SET", a->key, a->hash};
    if (rds_cmd(r->redis, on_hash_saved, a, 3, av, NULL))
        mem_free(a);
    else
        r->owed++;
    finish(r, 1);
}

static void on_stored_hash(struct rds *rds, int status, const redisReply *reply, void *arg)
{
    (void)rds;
    struct attempt *a = arg;
    struct cmdreg *r = a->r;
    if (!owed_back(r) || status == BC_ESHUTDOWN) {
        mem_free(a);
        return;
    }
    if (!status && reply && reply->type == REDIS_REPLY_STRING && !strcmp(reply->str, a->hash)) {
        log_info("slash commands unchanged; not registering again", LF_STR("hash", a->hash));
        mem_free(a);
        finish(r, 1);
        return;
    }
    char path[DPATH_MAX];
    int rc = *r->cfg->discord_guild_id
                 ? dpath_guild_commands(path, sizeof(path), a->app, r->cfg->discord_guild_id)
                 : dpath_app_commands(path, sizeof(path), a->app);
    if (rc) {
        log_error("cannot register commands: the application or guild id is not a Discord id", LF_ERR(rc));
        mem_free(a);
        finish(r, 0);
        return;
    }
    struct buf body;
    buf_init(&body, 1 << 20);
    cmds_json(&body);
    struct drest_req rq = {.method = "PUT", .path = path, .json = body.p, .json_len = body.len, .bot_auth = 1};
    if (drest_request(r->rest, &rq, on_registered, a)) {
        mem_free(a);
        finish(r, 0);
    } else {
        r->owed++;
    }
    buf_free(&body);
}

static void register_as(struct cmdreg *r, const char *app)
{
    struct attempt *a = mem_calloc(1, sizeof(*a));
    a->r = r;
    snprintf(a->app, sizeof(a->app), "%s", app);
    cmds_hash(a->hash);
    snprintf(a->key, sizeof(a->key), "%s:commands:%s:%s", r->cfg->redis_prefix, app,
             *r->cfg->discord_guild_id ? r->cfg->discord_guild_id : "global");
    const char *av[] = {"GET", a->key};
    if (rds_cmd(r->redis, on_stored_hash, a, 2, av, NULL)) {
        mem_free(a);
        attempt_later(r, CMDREG_APP_WAIT_MS);
    } else {
        r->owed++;
    }
}

static void on_app_id(struct rds *rds, int status, const redisReply *reply, void *arg)
{
    (void)rds;
    struct cmdreg *r = arg;
    if (!owed_back(r) || status == BC_ESHUTDOWN)
        return;
    if (!status && reply && reply->type == REDIS_REPLY_STRING) {
        register_as(r, reply->str);
        return;
    }
    if (r->once) {
        log_error("cannot register commands: application id unknown; set DISCORD_APPLICATION_ID");
        finish(r, 0);
        return;
    }
    attempt_later(r, CMDREG_APP_WAIT_MS); /* the gateway holder stores it at READY */
}

static void on_timer(uv_timer_t *t)
{
    struct cmdreg *r = t->data;
    if (*r->cfg->discord_app_id) {
        register_as(r, r->cfg->discord_app_id);
        return;
    }
    char key[128];
    snprintf(key, sizeof(key), "%s:discord:app_id", r->cfg->redis_prefix);
    const char *av[] = {"GET", key};
    if (rds_cmd(r->redis, on_app_id, r, 2, av, NULL))
        attempt_later(r, CMDREG_APP_WAIT_MS);
    else
        r->owed++;
}

static void attempt_later(struct cmdreg *r, uint64_t ms)
{
    uv_timer_start(&r->timer, on_timer, ms, 0);
}

int cmdreg_start(uv_loop_t *loop, const struct config *cfg, struct rds *redis, struct drest *rest, int once,
                 cmdreg_done_cb *done, void *arg, struct cmdreg **out)
{
    if (!loop || !cfg || !redis || !rest || !done || !out)
        return -EINVAL;
    struct cmdreg *r = mem_calloc(1, sizeof(*r));
    *r = (struct cmdreg){.loop = loop, .cfg = cfg, .redis = redis, .rest = rest, .once = once, .done = done,
                         .arg = arg, .owed = 1 /* the timer */};
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    attempt_later(r, 0);
    *out = r;
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct cmdreg *r = h->data;
    r->owed--;
    maybe_free(r);
}

void cmdreg_close(struct cmdreg *r)
{
    if (!r || r->closed)
        return;
    r->closed = 1;
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}
