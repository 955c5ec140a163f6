#include "ping.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/bus.h"
#include "service/jobctx.h"
#include "base/config.h"
#include "discord/dpath.h"
#include "discord/drest.h"
#include "base/err.h"
#include "discord/ixjob.h"
#include "base/log.h"
#include "base/mem.h"
#include "io/rds.h"

struct ping {
    struct ping_deps d;
    struct jobctx jc;    /* owed: the Redis and REST replies, then the edit */
    struct ixjob ix;
    uint64_t t_redis, t_rest;
    double redis_ms, rest_ms, gw_ms;
    char holder[64];
    struct ixjob_edit *edit;
};

/* The REST round trip is measured with GET /users/@me at most once per
 * REST_PROBE_EVERY_NS: that route has a small per-route limit, and a burst
 * of /핑 used to queue behind it for many seconds. Later pings show the
 * last figure. One process, one probe. */
#define REST_PROBE_EVERY_NS (10ull * 1000 * 1000 * 1000)
static struct {
    uint64_t at; /* when the last answer came, 0 = never */
    double ms;   /* its round trip, -1 = failed */
    int busy;    /* a probe is on its way */
} rest_probe = {0, -1, 0};

static void ping_release(void *arg)
{
    struct ping *p = arg;
    ixjob_free(&p->ix);
    mem_free(p);
}

/* The bus is closing with this job in flight. */
static void ping_stop(void *arg)
{
    struct ping *p = arg;
    if (p->edit) {
        ixjob_edit_cancel(p->edit);
        p->edit = NULL;
        jobctx_forget(&p->jc);
    }
}

static void ping_answer(struct ping *p);

/* A measurement came back: answer once every one has. */
static void step_done(struct ping *p)
{
    if (jobctx_back(&p->jc) && !p->jc.pending)
        ping_answer(p);
}

static void on_redis(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct ping *p = arg;
    if (!status && reply && !rds_reply_error(reply))
        p->redis_ms = (double)(uv_hrtime() - p->t_redis) / 1e6;
    else
        p->redis_ms = -1;
    step_done(p);
}

static void on_session(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct ping *p = arg;
    if (!status && reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
        if (reply->element[0]->type == REDIS_REPLY_STRING)
            p->gw_ms = strtod(reply->element[0]->str, NULL);
        if (reply->element[1]->type == REDIS_REPLY_STRING)
            snprintf(p->holder, sizeof(p->holder), "%s", reply->element[1]->str);
    }
    step_done(p);
}

static void on_rest(const struct drest_resp *r, void *arg)
{
    struct ping *p = arg;
    p->rest_ms = (!r->err && r->status < 300) ? (double)(uv_hrtime() - p->t_rest) / 1e6 : -1;
    rest_probe.busy = 0;
    if (r->err != BC_ESHUTDOWN) {
        rest_probe.at = uv_hrtime();
        rest_probe.ms = p->rest_ms;
    }
    step_done(p);
}

static void on_edited(int status, int code, void *arg)
{
    struct ping *p = arg;
    p->edit = NULL;
    if (!jobctx_back(&p->jc))
        return;
    if (status)
        log_warn("/ping answer not delivered", LF_INT("status", status), LF_INT("code", code));
    jobctx_finish(&p->jc, status ? BUS_FAILED : BUS_DONE, status ? "answer not delivered" : NULL);
}

static void fmt_ms(char *out, size_t n, double ms, int ko)
{
    if (ms < 0)
        snprintf(out, n, "%s", ko ? "측정 실패" : "unavailable");
    else
        snprintf(out, n, "%.1f ms", ms);
}

static void ping_answer(struct ping *p)
{
    const struct config *cfg = p->d.cfg;
    char gw[128], rest[32], redis[32], text[700];
    int ko = p->ix.ko;
    if (p->holder[0]) {
        char ms[32];
        fmt_ms(ms, sizeof(ms), p->gw_ms, ko);
        snprintf(gw, sizeof(gw), "%s (%s)", ms, p->holder);
    } else {
        snprintf(gw, sizeof(gw), "%s", ko ? "정보 없음" : "unknown");
    }
    fmt_ms(rest, sizeof(rest), p->rest_ms, ko);
    fmt_ms(redis, sizeof(redis), p->redis_ms, ko);
    snprintf(text, sizeof(text),
             ko ? "퐁! 응답한 인스턴스: %s\n게이트웨이 하트비트: %s\nREST 왕복: %s\nRedis 왕복: %s"
                : "Pong! Answered by: %s\nGateway heartbeat: %s\nREST round trip: %s\nRedis round trip: %s",
             cfg->name, gw, rest, redis);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "content", json_object_new_string(text));
    const char *json = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    if (!jobctx_ours(&p->jc) || !p->d.rest) {
        /* another consumer owns the job now: it answers, not us (and
         * without a REST client there is nobody to answer to) */
        json_object_put(o);
        jobctx_finish(&p->jc, BUS_DONE, NULL);
        return;
    }
    /* NULL only for bad arguments: then on_edited never runs */
    jobctx_wait(&p->jc);
    p->edit = ixjob_edit_original(p->d.loop, p->d.rest, &p->ix, json, on_edited, p);
    json_object_put(o);
    if (!p->edit) {
        jobctx_forget(&p->jc);
        jobctx_finish(&p->jc, BUS_FAILED, "job without an application id or token");
    }
}

void ping_run(const struct ping_deps *d, struct bus_job *job, struct ixjob *ix)
{
    struct ping *p = mem_calloc(1, sizeof(*p));
    p->d = *d;
    p->ix = *ix;
    memset(ix, 0, sizeof(*ix));
    p->redis_ms = p->rest_ms = p->gw_ms = -1;
    jobctx_start(&p->jc, job, ping_stop, ping_release, p);
    jobctx_wait(&p->jc); /* released at the end of this function */
    char key[160];
    snprintf(key, sizeof(key), "%s:gw:0:session", d->cfg->redis_prefix);
    const char *ping[] = {"PING"};
    const char *hm[] = {"HMGET", key, "latency_ms", "holder"};
    p->t_redis = uv_hrtime();
    jobctx_wait(&p->jc);
    if (rds_cmd(d->redis, on_redis, p, 1, ping, NULL) != 0)
        jobctx_forget(&p->jc);
    jobctx_wait(&p->jc);
    if (rds_cmd(d->redis, on_session, p, 4, hm, NULL) != 0)
        jobctx_forget(&p->jc);
    char me[DPATH_MAX];
    dpath_me(me, sizeof(me));
    struct drest_req rq = {.method = "GET", .path = me, .bot_auth = 1};
    p->t_rest = uv_hrtime();
    if ((rest_probe.at && p->t_rest - rest_probe.at < REST_PROBE_EVERY_NS) || rest_probe.busy) {
        p->rest_ms = rest_probe.ms; /* measured a moment ago, or being measured */
    } else if (d->rest) {
        jobctx_wait(&p->jc);
        if (drest_request(d->rest, &rq, on_rest, p) == 0)
            rest_probe.busy = 1;
        else
            jobctx_forget(&p->jc);
    }
    step_done(p);
}
