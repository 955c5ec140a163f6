#include "discord/ixjob.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "base/jget.h"
#include "base/log.h"
#include "base/mem.h"
#include "discord/cmds.h"
#include "discord/dpath.h"
#include "discord/drest.h"

#define EDIT_RETRY_MS 250
#define EDIT_RETRY_WINDOW_MS 3000
#define QUEUE_RETRY_MS 200       /* our queue to Discord was full: try again (plus jitter) */
#define QUEUE_WAIT_MS 60000      /* for this long at most */

int ixjob_parse(struct ixjob *j, const char *payload)
{
    memset(j, 0, sizeof(*j));
    struct json_object *o = json_tokener_parse(payload), *user;
    if (!o || !json_object_is_type(o, json_type_object))
        goto bad;
    j->root = o;
    j->id = jget_str(o, "id");
    j->token = jget_str(o, "token");
    j->app_id = jget_str(o, "application_id");
    j->command = jget_str(o, "command");
    j->locale = jget_str(o, "locale");
    j->channel_id = jget_str(o, "channel_id");
    j->guild_id = jget_str(o, "guild_id");
    if (json_object_object_get_ex(o, "user", &user))
        j->user_id = jget_str(user, "id");
    j->ko = j->locale && !strncmp(j->locale, "ko", 2);
    j->received_ms = jget_int_any(o, "received_ms");
    j->token_expires_ms = jget_int_any(o, "token_expires_ms");
    if (!j->id || !j->token || !j->app_id || !j->command)
        goto bad;
    j->cmd = cmds_find(j->command, &j->en);
    return 0;
bad:
    json_object_put(o);
    memset(j, 0, sizeof(*j));
    return BC_EPROTO;
}

void ixjob_free(struct ixjob *j)
{
    json_object_put(j->root);
    memset(j, 0, sizeof(*j));
}

static struct json_object *option_value(const struct ixjob *j, const char *key)
{
    const char *name = cmds_option_name(j->cmd, j->en, key);
    struct json_object *opts, *v;
    if (!name || !json_object_object_get_ex(j->root, "options", &opts) ||
        !json_object_is_type(opts, json_type_array))
        return NULL;
    for (size_t i = 0; i < json_object_array_length(opts); i++) {
        struct json_object *op = json_object_array_get_idx(opts, i);
        const char *n = jget_str(op, "name");
        if (n && !strcmp(n, name) && json_object_object_get_ex(op, "value", &v))
            return v;
    }
    return NULL;
}

const char *ixjob_option(const struct ixjob *j, const char *key)
{
    struct json_object *v = option_value(j, key);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

int ixjob_option_num(const struct ixjob *j, const char *key, double *out)
{
    struct json_object *v = option_value(j, key);
    if (!v || !(json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)))
        return 0;
    *out = json_object_get_double(v);
    return 1;
}

int ixjob_attachment(const struct ixjob *j, const char *key, struct ixjob_attachment *out)
{
    memset(out, 0, sizeof(*out));
    struct json_object *v = option_value(j, key), *res, *atts, *a;
    if (!v || !json_object_is_type(v, json_type_string))
        return 0;
    if (!json_object_object_get_ex(j->root, "resolved", &res) ||
        !json_object_object_get_ex(res, "attachments", &atts) ||
        !json_object_object_get_ex(atts, json_object_get_string(v), &a))
        return 0;
    out->url = jget_str(a, "url");
    out->filename = jget_str(a, "filename");
    out->content_type = jget_str(a, "content_type");
    out->size = jget_int_any(a, "size");
    return out->url != NULL;
}

struct ixjob_edit {
    uv_loop_t *loop;
    struct drest *rest;
    char *path, *json;
    const struct drest_file *files; /* borrowed until cb */
    int nfiles;
    uint64_t started;
    uv_timer_t timer;
    ixjob_cb *cb;
    void *arg;
    int in_flight; /* a drest request is out: it will call back */
    int finished;
    int failed;    /* the first send failed: status delivered on the next turn */
    int queued_waits; /* times drest's queue was full */
};

static int edit_send(struct ixjob_edit *e);

static void on_edit_closed(uv_handle_t *h)
{
    struct ixjob_edit *e = h->data;
    mem_free(e->path);
    mem_free(e->json);
    mem_free(e);
}

static void edit_done(struct ixjob_edit *e, int status, int code)
{
    e->finished = 1;
    if (e->cb)
        e->cb(status, code, e->arg);
    uv_close((uv_handle_t *)&e->timer, on_edit_closed);
}

static void on_retry(uv_timer_t *t)
{
    struct ixjob_edit *e = t->data;
    int rc = edit_send(e);
    if (rc)
        edit_done(e, rc, 0); /* from the loop: not inside any call of the caller's */
}

/* The first send could not even be queued: tell the caller now, from the
 * loop, not from inside ixjob_edit_files. */
static void on_failed(uv_timer_t *t)
{
    struct ixjob_edit *e = t->data;
    edit_done(e, e->failed, 0);
}

static void on_edited(const struct drest_resp *r, void *arg)
{
    struct ixjob_edit *e = arg;
    e->in_flight = 0;
    if (!e->cb) { /* cancelled */
        edit_done(e, 0, 0);
        return;
    }
    if (!r->err && r->status < 300) {
        edit_done(e, 0, 0);
        return;
    }
    /* 404 Unknown Message/Webhook while the deferral is still on its way */
    if ((!r->err || r->err == BC_EHTTP) && r->status == 404 &&
        uv_now(e->loop) - e->started < EDIT_RETRY_WINDOW_MS) {
        uv_timer_start(&e->timer, on_retry, EDIT_RETRY_MS, 0);
        return;
    }
    edit_done(e, r->err ? r->err : BC_EHTTP, r->code);
}

/* 0 and the request is out, or why it could not be queued. */
static int edit_send(struct ixjob_edit *e)
{
    if (!e->rest)
        return -ENOTCONN;
    struct drest_req rq = {.method = "PATCH", .path = e->path, .json = e->json, .files = e->files,
                           .nfiles = e->nfiles, .bot_auth = 0};
    int rc = drest_request(e->rest, &rq, on_edited, e);
    if (rc == -ENOBUFS && uv_now(e->loop) - e->started < QUEUE_WAIT_MS) {
        /* Our own queue to Discord is full (thousands of answers at once):
         * nothing was sent; wait for room instead of losing the answer. */
        if (!e->queued_waits++)
            log_debug("interaction edit waits for room in the REST queue");
        uv_timer_start(&e->timer, on_retry, QUEUE_RETRY_MS + ((uintptr_t)e >> 4) % 100, 0);
        return 0;
    }
    if (rc) {
        log_warn("interaction edit not sent", LF_ERR(rc));
        return rc;
    }
    e->in_flight = 1;
    return 0;
}

void ixjob_edit_cancel(struct ixjob_edit *e)
{
    e->cb = NULL;
    if (!e->in_flight && !e->finished) {
        uv_timer_stop(&e->timer);
        edit_done(e, 0, 0);
    }
}

struct ixjob_edit *ixjob_edit_original(uv_loop_t *loop, struct drest *rest, const struct ixjob *j,
                                       const char *json, ixjob_cb *cb, void *arg)
{
    return ixjob_edit_files(loop, rest, j, json, NULL, 0, cb, arg);
}

struct ixjob_edit *ixjob_edit_files(uv_loop_t *loop, struct drest *rest, const struct ixjob *j, const char *json,
                                    const struct drest_file *files, int nfiles, ixjob_cb *cb, void *arg)
{
    if (!loop || !j || !j->app_id || !j->token || !json || !cb || nfiles < 0 || (nfiles && !files))
        return NULL;
    struct ixjob_edit *e = mem_calloc(1, sizeof(*e));
    char path[DPATH_MAX];
    /* An id that is not one is the job's fault, told through cb like any
     * request drest refuses: the caller's cleanup runs from there. */
    int rc = dpath_webhook_original(path, sizeof(path), j->app_id, j->token);
    e->loop = loop;
    e->rest = rest;
    e->path = mem_strdup(path);
    e->json = mem_strdup(json);
    e->files = files;
    e->nfiles = nfiles;
    e->started = uv_now(loop);
    e->cb = cb;
    e->arg = arg;
    uv_timer_init(loop, &e->timer);
    e->timer.data = e;
    if (!rc)
        rc = edit_send(e);
    if (rc) {
        e->failed = rc;
        uv_timer_start(&e->timer, on_failed, 0, 0);
    }
    return e;
}
