#include "process/diag.h"

#include <json.h>
#include <stdio.h>
#include <string.h>

#include "base/config.h"
#include "service/bus.h"
#include "discord/dpath.h"
#include "discord/drest.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "io/rds.h"

#define DIAG_SLEEP_MAX_MS 600000
#define DIAG_RESULTS_MAXLEN "10000"

struct diag_job {
    const struct diag_deps *deps;
    struct bus_job *job;
    uv_timer_t timer;
};

static void on_result(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct bus_job *job = arg;
    if (status == BC_ESHUTDOWN)
        return; /* the bus is closing; the job stays pending */
    if (status || rds_reply_error(reply))
        bus_finish(job, BUS_RETRY, "could not record the diag result");
    else
        bus_finish(job, BUS_DONE, NULL);
}

static void record(const struct diag_deps *d, struct bus_job *job)
{
    const struct config *cfg = d->cfg;
    char key[160];
    snprintf(key, sizeof(key), "%s:diag:results", cfg->redis_prefix);
    const char *av[] = {"XADD", key, "MAXLEN", "~", DIAG_RESULTS_MAXLEN, "*", "job", job->id,
                        "role", job->role, "consumer", cfg->name, "type", job->type, "payload", job->payload};
    if (rds_cmd(d->redis, on_result, job, (int)(sizeof(av) / sizeof(av[0])), av, NULL))
        bus_finish(job, BUS_RETRY, "redis unavailable");
}

static void on_echo(struct bus *b, struct bus_job *job, void *arg)
{
    (void)b;
    record(arg, job);
}

static void on_fail(struct bus *b, struct bus_job *job, void *arg)
{
    (void)b;
    (void)arg;
    bus_finish(job, BUS_FAILED, "diag.fail asks to fail");
}

/* diag.post {"channel_id": "...", "content": "..."}: one channel message
 * through the Discord REST client (rate limits and all). */
static void on_posted(const struct drest_resp *r, void *arg)
{
    struct bus_job *job = arg;
    if (r->err == BC_ESHUTDOWN)
        return;
    if (r->err || r->status >= 300) {
        log_warn("diag.post failed", LF_INT("status", r->status), LF_INT("code", r->code),
                 LF_STR("error", r->err ? r->errstr : r->message));
        bus_finish(job, BUS_FAILED, "discord refused the message");
        return;
    }
    bus_finish(job, BUS_DONE, NULL);
}

static void on_post(struct bus *b, struct bus_job *job, void *arg)
{
    (void)b;
    const struct diag_deps *d = arg;
    struct json_object *root = json_tokener_parse(job->payload), *ch, *content;
    char path[DPATH_MAX];
    if (!d->rest || !root || !json_object_object_get_ex(root, "channel_id", &ch) ||
        !json_object_object_get_ex(root, "content", &content) ||
        dpath_channel_messages(path, sizeof(path), json_object_get_string(ch))) {
        json_object_put(root);
        bus_finish(job, BUS_FAILED, d->rest ? "diag.post needs {channel_id, content}" : "no Discord client");
        return;
    }
    struct json_object *body = json_object_new_object();
    json_object_object_add(body, "content", json_object_get(content));
    const char *json = json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    struct drest_req rq = {.method = "POST", .path = path, .json = json, .bot_auth = 1};
    if (drest_request(d->rest, &rq, on_posted, job))
        bus_finish(job, BUS_RETRY, "discord client busy");
    json_object_put(body);
    json_object_put(root);
}

static void on_timer_closed(uv_handle_t *h)
{
    mem_free(h->data);
}

static void on_slept(uv_timer_t *t)
{
    struct diag_job *d = t->data;
    struct bus_job *job = d->job;
    const struct diag_deps *deps = d->deps;
    job->cancel = NULL;
    uv_close((uv_handle_t *)&d->timer, on_timer_closed);
    record(deps, job);
}

static void on_cancel(struct bus_job *job, void *arg)
{
    (void)job;
    struct diag_job *d = arg;
    uv_timer_stop(&d->timer);
    uv_close((uv_handle_t *)&d->timer, on_timer_closed);
}

static void on_sleep(struct bus *b, struct bus_job *job, void *arg)
{
    (void)b;
    const struct diag_deps *deps = arg;
    long long ms = -1;
    struct json_object *root = json_tokener_parse(job->payload), *v;
    if (root && json_object_object_get_ex(root, "ms", &v) && json_object_is_type(v, json_type_int))
        ms = json_object_get_int64(v);
    json_object_put(root);
    if (ms < 0 || ms > DIAG_SLEEP_MAX_MS) {
        bus_finish(job, BUS_FAILED, "diag.sleep needs a payload {\"ms\": 0..600000}");
        return;
    }
    struct diag_job *d = mem_calloc(1, sizeof(*d));
    d->deps = deps;
    d->job = job;
    uv_timer_init(deps->loop, &d->timer);
    d->timer.data = d;
    job->cancel = on_cancel;
    job->cancel_arg = d;
    uv_timer_start(&d->timer, on_slept, (uint64_t)ms, 0);
}

int diag_register(struct bus *b, const struct diag_deps *d)
{
    void *arg = (void *)d; /* handlers take it back as const */
    int rc = bus_register(b, "diag.echo", on_echo, arg);
    if (!rc)
        rc = bus_register(b, "diag.sleep", on_sleep, arg);
    if (!rc)
        rc = bus_register(b, "diag.fail", on_fail, arg);
    if (!rc)
        rc = bus_register(b, "diag.post", on_post, arg);
    if (!rc)
        log_info("diag jobs enabled", LF_STR("types", "diag.echo diag.sleep diag.fail diag.post"));
    return rc;
}
