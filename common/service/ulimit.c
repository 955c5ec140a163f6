#include "service/ulimit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "io/rds.h"

/* KEYS: rate log (zset), daily counter prefix. ARGV: rate, window ms,
 * daily, cost, now (ms; 0 = Redis's clock). Returns {0} or {1, wait_ms}
 * (rate) or {2, wait_ms} (daily). An entry exactly one window old no longer
 * counts, so wait_ms is exactly the time until a request passes. */
static const char check_lua[] =
    "local now = tonumber(ARGV[5])\n"
    "if now <= 0 then\n"
    "  local t = redis.call('TIME')\n"
    "  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "end\n"
    "local rate, win, daily = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local day = math.floor(now / 86400000)\n"
    "local dkey = KEYS[2] .. ':' .. day\n"
    "local cost = tonumber(ARGV[4])\n"
    "if daily > 0 and tonumber(redis.call('GET', dkey) or '0') + cost > daily then\n"
    "  return {2, (day + 1) * 86400000 - now}\n"
    "end\n"
    "if rate > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - win)\n"
    "  if redis.call('ZCARD', KEYS[1]) >= rate then\n"
    "    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "    return {1, tonumber(oldest[2]) + win - now}\n"
    "  end\n"
    "  redis.call('ZADD', KEYS[1], now, now .. ':' .. redis.call('INCR', KEYS[1] .. ':n'))\n"
    "  redis.call('PEXPIRE', KEYS[1], win)\n"
    "  redis.call('PEXPIRE', KEYS[1] .. ':n', win)\n"
    "end\n"
    "if daily > 0 then\n"
    "  redis.call('INCRBY', dkey, cost)\n"
    "  redis.call('EXPIRE', dkey, 172800)\n"
    "end\n"
    "return {0}\n";

struct ulimit_ctx {
    ulimit_cb *cb;
    void *arg;
};

/* A verdict given without Redis, delivered on the next loop turn. */
struct ulimit_later {
    uv_timer_t timer;
    ulimit_cb *cb;
    void *arg;
};

static void on_later_closed(uv_handle_t *h)
{
    mem_free(h->data);
}

static void on_later(uv_timer_t *t)
{
    struct ulimit_later *l = t->data;
    l->cb(ULIMIT_OK, 0, l->arg);
    uv_close((uv_handle_t *)&l->timer, on_later_closed);
}

static void allow_later(uv_loop_t *loop, ulimit_cb *cb, void *arg)
{
    struct ulimit_later *l = mem_alloc(sizeof(*l));
    l->cb = cb;
    l->arg = arg;
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, on_later, 0, 0);
}

static void on_reply(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct ulimit_ctx *c = arg;
    ulimit_cb *cb = c->cb;
    void *cb_arg = c->arg;
    mem_free(c);
    if (status || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER) {
        if (status != BC_ESHUTDOWN)
            log_warn("user limits not checked (redis); allowing the request",
                     LF_STR("error", status ? bc_strerror(status) : (rds_reply_error(reply) ? rds_reply_error(reply) : "")));
        cb(ULIMIT_OK, 0, cb_arg);
        return;
    }
    long long v = reply->element[0]->integer;
    long long wait = reply->elements > 1 && reply->element[1]->type == REDIS_REPLY_INTEGER ? reply->element[1]->integer : 0;
    cb(v == 1 ? ULIMIT_RATE : v == 2 ? ULIMIT_DAILY : ULIMIT_OK, wait < 0 ? 0 : wait, cb_arg);
}

int ulimit_check(uv_loop_t *loop, struct rds *r, const struct ulimit_req *q, ulimit_cb *cb, void *arg)
{
    if (!loop || !q || !cb || !q->prefix || !q->kind)
        return -EINVAL;
    if ((q->rate <= 0 && q->daily <= 0) || !q->user_id || !r) {
        allow_later(loop, cb, arg);
        return 0;
    }
    char rkey[200], dkey[200], rate[16], win[24], daily[16], cost[16], now[24];
    snprintf(rkey, sizeof(rkey), "%s:ulimit:%s:%s:rate", q->prefix, q->kind, q->user_id);
    snprintf(dkey, sizeof(dkey), "%s:ulimit:%s:%s:day", q->prefix, q->kind, q->user_id);
    snprintf(rate, sizeof(rate), "%d", q->rate);
    snprintf(win, sizeof(win), "%lld", (long long)q->window_s * 1000);
    snprintf(daily, sizeof(daily), "%d", q->daily);
    snprintf(cost, sizeof(cost), "%d", q->cost > 0 ? q->cost : 1);
    snprintf(now, sizeof(now), "%lld", (long long)(q->now_ms > 0 ? q->now_ms : 0));
    struct ulimit_ctx *c = mem_alloc(sizeof(*c));
    c->cb = cb;
    c->arg = arg;
    const char *av[] = {"EVAL", check_lua, "2", rkey, dkey, rate, win, daily, cost, now};
    if (rds_cmd(r, on_reply, c, 10, av, NULL)) {
        mem_free(c);
        log_warn("user limits not checked (redis unavailable); allowing the request");
        allow_later(loop, cb, arg);
    }
    return 0;
}

/* Give back what a request counted against the day (it failed before the
 * user got anything). Best effort; never below zero. ARGV: cost, now (ms;
 * 0 = Redis's clock). */
static const char refund_lua[] =
    "local now = tonumber(ARGV[2])\n"
    "if now <= 0 then\n"
    "  local t = redis.call('TIME')\n"
    "  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "end\n"
    "local day = math.floor(now / 86400000)\n"
    "local dkey = KEYS[1] .. ':' .. day\n"
    "local v = tonumber(redis.call('GET', dkey) or '0')\n"
    "if v > 0 then redis.call('DECRBY', dkey, math.min(v, tonumber(ARGV[1]))) end\n"
    "return 0\n";

static void on_refund(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    (void)status;
    (void)reply;
    (void)arg;
}

void ulimit_refund(struct rds *r, const struct ulimit_req *q)
{
    if (q->daily <= 0 || !q->user_id)
        return;
    char dkey[200], cost[16], now[24];
    snprintf(dkey, sizeof(dkey), "%s:ulimit:%s:%s:day", q->prefix, q->kind, q->user_id);
    snprintf(cost, sizeof(cost), "%d", q->cost > 0 ? q->cost : 1);
    snprintf(now, sizeof(now), "%lld", (long long)(q->now_ms > 0 ? q->now_ms : 0));
    const char *av[] = {"EVAL", refund_lua, "1", dkey, cost, now};
    rds_cmd(r, on_refund, NULL, 6, av, NULL);
}

void ulimit_say(enum ulimit_verdict v, int64_t wait_ms, int daily, int ko, const char *what_ko, const char *what_en,
                char *out, size_t len)
{
    long secs = (long)((wait_ms + 999) / 1000);
    if (v == ULIMIT_RATE) {
        if (ko)
            snprintf(out, len, "요청이 너무 많습니다. %ld초 후에 다시 시도해 주세요.", secs);
        else
            snprintf(out, len, "Too many requests; please try again in %ld s.", secs);
        return;
    }
    long h = secs / 3600, m = (secs % 3600 + 59) / 60;
    if (ko)
        snprintf(out, len, "오늘의 %s 한도(하루 %d)를 모두 썼습니다. %ld시간 %ld분 후에 초기화됩니다.", what_ko, daily, h, m);
    else
        snprintf(out, len, "You have used today's %s (%d a day); they reset in %ldh %ldm (UTC midnight).", what_en,
                 daily, h, m);
}
