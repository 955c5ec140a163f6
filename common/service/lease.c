#include "service/lease.h"

#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"

static const char acquire_lua[] =
    "if redis.call('SET', KEYS[1], 'pending', 'NX', 'PX', ARGV[2]) then\n"
    "  local v = ARGV[1] .. ':' .. redis.call('INCR', KEYS[1] .. ':fence')\n"
    "  redis.call('SET', KEYS[1], v, 'PX', ARGV[2])\n"
    "  return v\n"
    "end\n"
    "return {err = 'HELD ' .. (redis.call('GET', KEYS[1]) or '')}\n";

/* Renew; a key that is gone (it expired while Redis was away from us, or
 * Redis restarted) is set again: nobody else holds it. 0: someone does. */
static const char renew_lua[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v == ARGV[1] then\n"
    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "elseif not v then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

/* How long a holder keeps holding while it cannot reach Redis at all: no
 * candidate can take the lease then either, and writes made under the
 * token are fenced when Redis returns, so holding on is safe; it keeps the
 * gateway (and interaction acknowledgements) alive through a Redis restart. */
#define UNREACHABLE_GRACE_MS 30000

static const char release_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

struct lease {
    uv_loop_t *loop;
    struct rds *redis;
    char *key, *owner;
    int ttl_ms;
    int running, held, busy, closing, timer_closed;
    uint64_t last_ok_ms;      /* last successful acquire/renew */
    uint64_t hold_off_until;  /* a candidate waits until then after Redis returned */
    uint64_t last_down_ms;    /* last time Redis was seen unreachable */
    int was_down;             /* Redis was unreachable at the last tick */
    char token[160];
    char holder[160];
    uv_timer_t timer;
    lease_cb *cb;
    void *arg;
};

/* Freed once closed AND no reply is owed to us. */
static void maybe_free(struct lease *l)
{
    if (!l->closing || !l->timer_closed || l->busy)
        return;
    mem_free(l->key);
    mem_free(l->owner);
    mem_free(l);
}

static void set_held(struct lease *l, int held)
{
    if (l->held == held)
        return;
    l->held = held;
    if (held)
        log_info("lease acquired", LF_STR("lease", l->key), LF_STR("token", l->token));
    else
        log_warn("lease lost", LF_STR("lease", l->key), LF_STR("token", l->token));
    if (!held)
        l->token[0] = '\0';
    if (l->cb)
        l->cb(l, held, l->arg);
}

static void on_acquire(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct lease *l = arg;
    l->busy = 0;
    if (l->closing) {
        maybe_free(l);
        return;
    }
    if (status == BC_ESHUTDOWN || !l->running)
        return;
    const char *e = rds_reply_error(reply);
    if (status || !reply)
        return;
    if (e) {
        snprintf(l->holder, sizeof(l->holder), "%s", !strncmp(e, "HELD ", 5) ? e + 5 : "");
        return;
    }
    if (reply->type == REDIS_REPLY_STRING) {
        snprintf(l->token, sizeof(l->token), "%s", reply->str);
        snprintf(l->holder, sizeof(l->holder), "%s", reply->str);
        l->last_ok_ms = uv_now(l->loop);
        set_held(l, 1);
    }
}

static void on_renew(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct lease *l = arg;
    l->busy = 0;
    if (l->closing) {
        maybe_free(l);
        return;
    }
    if (status == BC_ESHUTDOWN || !l->held)
        return;
    if (!status && reply && reply->type == REDIS_REPLY_INTEGER) {
        if (reply->integer == 1) {
            l->last_ok_ms = uv_now(l->loop);
            return;
        }
        set_held(l, 0); /* someone else has it: stop at once */
        return;
    }
    if (status)
        l->last_down_ms = uv_now(l->loop); /* the connection dropped under the renewal */
    /* transport errors: the timer decides when silence means loss */
}

static void tick(struct lease *l)
{
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%d", l->ttl_ms);
    uint64_t now = uv_now(l->loop);
    int up = rds_up(l->redis);
    if (!up)
        l->last_down_ms = now;
    /* Redis just came back: a holder that kept holding through the outage
     * renews at once and sets its key again; candidates give it one ttl to
     * do so, so the session does not move for nothing. */
    if (up && l->was_down)
        l->hold_off_until = now + (uint64_t)l->ttl_ms;
    l->was_down = !up;
    /* Silence counts only while Redis could have answered. */
    uint64_t since = l->last_ok_ms > l->last_down_ms ? l->last_ok_ms : l->last_down_ms;
    if (l->held && up && now - since > (uint64_t)(l->ttl_ms * 2 / 3)) {
        /* Redis answers others but our renewals did not go through for
         * most of the ttl: another candidate may take it soon, so stop
         * acting as holder before that can happen. */
        set_held(l, 0);
    } else if (l->held && now - l->last_ok_ms > UNREACHABLE_GRACE_MS) {
        set_held(l, 0);
    }
    if (l->busy)
        return;
    if (!l->held && l->running && uv_now(l->loop) < l->hold_off_until)
        return;
    if (l->held) {
        const char *av[] = {"EVAL", renew_lua, "1", l->key, l->token, ttl};
        if (rds_cmd(l->redis, on_renew, l, 6, av, NULL) == 0)
            l->busy = 1;
    } else if (l->running) {
        const char *av[] = {"EVAL", acquire_lua, "1", l->key, l->owner, ttl};
        if (rds_cmd(l->redis, on_acquire, l, 6, av, NULL) == 0)
            l->busy = 1;
    }
}

static void on_timer(uv_timer_t *t)
{
    tick(t->data);
}

int lease_new(uv_loop_t *loop, struct rds *redis, const char *key, const char *owner, int ttl_ms, lease_cb *cb,
              void *arg, struct lease **out)
{
    if (ttl_ms < 300)
        return -EINVAL;
    struct lease *l = mem_calloc(1, sizeof(*l));
    l->loop = loop;
    l->redis = redis;
    l->key = mem_strdup(key);
    l->owner = mem_strdup(owner);
    l->ttl_ms = ttl_ms;
    l->cb = cb;
    l->arg = arg;
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    *out = l;
    return 0;
}

void lease_start(struct lease *l)
{
    if (l->running)
        return;
    l->running = 1;
    /* candidates look every ttl/5; a holder renews every ttl/3 (the renew
     * interval is the shorter one that matters, so tick at ttl/5 always) */
    uv_timer_start(&l->timer, on_timer, 0, (uint64_t)(l->ttl_ms / 5));
}

static void on_released(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    (void)status;
    (void)reply;
    mem_free(arg);
}

void lease_release(struct lease *l)
{
    l->running = 0;
    uv_timer_stop(&l->timer);
    if (!l->held)
        return;
    /* the token is copied: the lease may be closed before the reply */
    char *tok = mem_strdup(l->token);
    const char *av[] = {"EVAL", release_lua, "1", l->key, tok};
    if (rds_cmd(l->redis, on_released, tok, 5, av, NULL))
        mem_free(tok);
    log_info("lease released", LF_STR("lease", l->key), LF_STR("token", l->token));
    l->held = 0;
    l->token[0] = '\0';
}

int lease_held(const struct lease *l)
{
    return l->held;
}

const char *lease_token(const struct lease *l)
{
    return l->token;
}

const char *lease_holder(const struct lease *l)
{
    return l->holder;
}

static void on_closed(uv_handle_t *h)
{
    struct lease *l = h->data;
    l->timer_closed = 1;
    maybe_free(l);
}

void lease_close(struct lease *l)
{
    l->closing = 1;
    l->cb = NULL;
    uv_close((uv_handle_t *)&l->timer, on_closed);
}
