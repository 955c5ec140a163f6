#include "discord/reply.h"

#include <errno.h>
#include <json.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "discord/dpath.h"
#include "discord/drest.h"
#include "base/err.h"
#include "discord/ixjob.h"
#include "base/jtext.h"
#include "base/log.h"
#include "base/mem.h"
#include "parse/split.h"

#define TYPING_EVERY_MS 8000
#define QUEUE_RETRY_MS 200  /* the REST queue was full: send the part again after this */
#define QUEUE_WAIT_MS 60000 /* for this long at most */
#define SNOWFLAKE_MAX 24
#define PART_BYTES (4 * SPLIT_DISCORD_MAX)

typedef void then_fn(struct reply *r, int status, int code);

struct reply {
    struct reply_env env;
    char app_id[SNOWFLAKE_MAX], channel_id[SNOWFLAKE_MAX], message_id[SNOWFLAKE_MAX];
    char *token;                   /* interaction token; NULL for a message target */
    char posted_id[SNOWFLAKE_MAX]; /* our reply message (message target), once created */
    int ko;
    const struct buf *text;
    uv_timer_t timer, typing;
    uint64_t last_edit_ms;
    int busy;       /* one request of ours is out; then runs when it is back */
    then_fn *then;
    int pending;    /* drest requests that will still call back */
    struct ixjob_edit *edit;
    int dirty, finishing, cancelled, closing;
    int resend;             /* the timer sends parts[next_part] (or the file) again */
    int sending_file;       /* the message with r->file is out */
    uint64_t queue_full_ms; /* when drest's queue first refused the pending part; 0 */
    char *note;
    struct split_part *parts;
    size_t nparts, next_part;
    char *file; /* the whole text, attached when it needs too many parts */
    size_t file_len;
    reply_done_cb *done;
    void *done_arg;
};

static void send_progress(struct reply *r);
static void deliver_final(struct reply *r);
static void deliver_next(struct reply *r);

static struct drest *rest_of(const struct reply *r)
{
    return r->env.rest ? r->env.rest(r->env.rest_arg) : NULL;
}

/* ---- lifetime ------------------------------------------------------------ */

static void on_closed(uv_handle_t *h)
{
    struct reply *r = h->data;
    if (--r->closing)
        return;
    mem_free(r->token);
    mem_free(r->note);
    mem_free(r->file);
    split_free(r->parts, r->nparts);
    mem_free(r);
}

/* Free r once it is over (done ran or cancelled) and nothing can call back. */
static void maybe_free(struct reply *r)
{
    if (r->closing || r->pending || r->edit || !r->cancelled)
        return;
    r->closing = 2;
    uv_close((uv_handle_t *)&r->timer, on_closed);
    uv_close((uv_handle_t *)&r->typing, on_closed);
}

static void stop(struct reply *r)
{
    r->cancelled = 1;
    uv_timer_stop(&r->timer);
    uv_timer_stop(&r->typing);
}

static void finish(struct reply *r, int status, int code)
{
    reply_done_cb *done = r->done;
    void *arg = r->done_arg;
    r->done = NULL;
    stop(r);
    if (done)
        done(status, code, arg);
    maybe_free(r);
}

void reply_cancel(struct reply *r)
{
    r->done = NULL;
    stop(r);
    if (r->edit) {
        ixjob_edit_cancel(r->edit);
        r->edit = NULL;
    }
    maybe_free(r);
}

/* ---- sending ------------------------------------------------------------- */

/* A model's answer must never ping anybody, the person it replies to included. */
static char *message_json(const struct reply *r, const char *text, size_t len, int reference)
{
    struct json_object *o = json_object_new_object(), *am = json_object_new_object();
    json_object_object_add(o, "content", json_object_new_string_len(text, (int)len));
    json_object_object_add(am, "parse", json_object_new_array());
    if (reference) {
        json_object_object_add(am, "replied_user", json_object_new_boolean(0));
        struct json_object *ref = json_object_new_object();
        json_object_object_add(ref, "message_id", json_object_new_string(r->message_id));
        json_object_object_add(ref, "fail_if_not_exists", json_object_new_boolean(0));
        json_object_object_add(o, "message_reference", ref);
    }
    json_object_object_add(o, "allowed_mentions", am);
    return jtext_take(o);
}

static void on_sent(const struct drest_resp *resp, void *arg)
{
    struct reply *r = arg;
    r->pending--;
    r->busy = 0;
    if (r->cancelled) {
        maybe_free(r);
        return;
    }
    if (!resp->err && !r->token && !r->posted_id[0]) {
        /* the reply we just created: later edits go to it */
        struct json_object *o = json_tokener_parse(resp->body), *id;
        if (o && json_object_object_get_ex(o, "id", &id) && json_object_is_type(id, json_type_string))
            snprintf(r->posted_id, sizeof(r->posted_id), "%s", json_object_get_string(id));
        json_object_put(o);
        uv_timer_stop(&r->typing);
    }
    int status = resp->err;
    if (status == BC_EHTTP && resp->status)
        status = -(int)resp->status;
    r->then(r, status, resp->code);
}

static void on_edit(int status, int code, void *arg)
{
    struct reply *r = arg;
    r->edit = NULL;
    r->busy = 0;
    if (r->cancelled) {
        maybe_free(r);
        return;
    }
    r->then(r, status, code);
}

static int rest_send(struct reply *r, const char *method, const char *path, const char *json,
                     const struct drest_file *file, int bot_auth)
{
    struct drest_req rq = {.method = method, .path = path, .json = json, .files = file, .nfiles = file ? 1 : 0,
                           .bot_auth = bot_auth};
    int rc = drest_request(rest_of(r), &rq, on_sent, r);
    if (!rc)
        r->pending++;
    return rc;
}

/* The first message: the interaction's deferred response, or our reply
 * to the message (created the first time, edited after). */
static void send_first(struct reply *r, const char *text, size_t len, then_fn *then)
{
    r->busy = 1;
    r->then = then;
    r->last_edit_ms = uv_now(r->env.loop);
    if (!rest_of(r)) {
        r->busy = 0;
        then(r, -ENOTCONN, 0);
        return;
    }
    if (r->token) {
        char *json = message_json(r, text, len, 0);
        struct ixjob j = {.app_id = r->app_id, .token = r->token};
        r->edit = ixjob_edit_original(r->env.loop, rest_of(r), &j, json, on_edit, r);
        mem_free(json);
        return;
    }
    char path[DPATH_MAX];
    char *json = message_json(r, text, len, !r->posted_id[0]);
    int rc = r->posted_id[0] ? dpath_channel_message(path, sizeof(path), r->channel_id, r->posted_id)
                             : dpath_channel_messages(path, sizeof(path), r->channel_id);
    if (!rc)
        rc = rest_send(r, r->posted_id[0] ? "PATCH" : "POST", path, json, NULL, 1);
    mem_free(json);
    if (rc) {
        r->busy = 0;
        then(r, rc, 0);
    }
}

/* A further message: a follow-up of the interaction, or a message in the channel. */
static void send_more(struct reply *r, const char *text, size_t len, const struct drest_file *file, then_fn *then)
{
    r->busy = 1;
    r->then = then;
    char path[DPATH_MAX];
    char *json = message_json(r, text, len, 0);
    int rc = r->token ? dpath_webhook(path, sizeof(path), r->app_id, r->token)
                      : dpath_channel_messages(path, sizeof(path), r->channel_id);
    if (!rc)
        rc = rest_of(r) ? rest_send(r, "POST", path, json, file, !r->token) : -ENOTCONN;
    mem_free(json);
    if (rc) {
        r->busy = 0;
        then(r, rc, 0);
    }
}

/* ---- typing indicator (message targets) ---------------------------------- */

static void on_typing_sent(const struct drest_resp *resp, void *arg)
{
    (void)resp;
    struct reply *r = arg;
    r->pending--;
    maybe_free(r);
}

static void on_typing_timer(uv_timer_t *t)
{
    struct reply *r = t->data;
    if (r->posted_id[0] || r->cancelled || !rest_of(r))
        return;
    char path[DPATH_MAX];
    struct drest_req rq = {.method = "POST", .path = path, .bot_auth = 1};
    if (!dpath_channel_typing(path, sizeof(path), r->channel_id) &&
        !drest_request(rest_of(r), &rq, on_typing_sent, r))
        r->pending++;
    uv_timer_start(&r->typing, on_typing_timer, TYPING_EVERY_MS, 0);
}

/* ---- progress ------------------------------------------------------------- */

static uint64_t wait_left(const struct reply *r)
{
    uint64_t now = uv_now(r->env.loop), every = (uint64_t)r->env.edit_interval_ms;
    return r->last_edit_ms && now - r->last_edit_ms < every ? every - (now - r->last_edit_ms) : 0;
}

static void resend_part(struct reply *r);

static void on_timer(uv_timer_t *t)
{
    struct reply *r = t->data;
    if (r->resend)
        resend_part(r);
    else if (r->finishing)
        deliver_final(r);
    else if (r->dirty && !r->busy)
        send_progress(r);
}

static void after_progress(struct reply *r, int status, int code)
{
    if (status)
        log_debug("progress edit not delivered", LF_INT("status", status), LF_INT("code", code));
    if (r->finishing)
        deliver_final(r);
    else if (r->dirty)
        send_progress(r);
}

/* Show the part of the text that fits the first message. */
static void send_progress(struct reply *r)
{
    uint64_t left = wait_left(r);
    if (left) {
        uv_timer_start(&r->timer, on_timer, left, 0);
        return;
    }
    struct split_cut cut;
    struct buf msg;
    buf_init(&msg, 2 * PART_BYTES);
    if (split_next(buf_str(r->text), r->text->len, SPLIT_DISCORD_MAX, PART_BYTES, NULL, &cut) ||
        split_render(buf_str(r->text), NULL, &cut, &msg) || !msg.len) {
        buf_free(&msg);
        return;
    }
    r->dirty = 0;
    send_first(r, msg.p, msg.len, after_progress);
    buf_free(&msg);
}

void reply_changed(struct reply *r)
{
    if (r->finishing || r->cancelled)
        return;
    r->dirty = 1;
    if (!r->busy && !uv_is_active((uv_handle_t *)&r->timer))
        send_progress(r);
}

/* ---- the final delivery ------------------------------------------------------ */

static void after_part(struct reply *r, int status, int code)
{
    uint64_t now = uv_now(r->env.loop);
    if (status == -ENOBUFS && (!r->queue_full_ms || now - r->queue_full_ms < QUEUE_WAIT_MS)) {
        /* Our own queue to Discord is full (thousands of answers at once):
         * nothing was sent; send the part again when there is room. */
        if (!r->queue_full_ms)
            r->queue_full_ms = now;
        if (r->sending_file)
            r->sending_file = 0; /* deliver_next sends it again */
        else
            r->next_part--;
        r->resend = 1;
        uv_timer_start(&r->timer, on_timer, QUEUE_RETRY_MS + ((uintptr_t)r >> 4) % 100, 0);
        return;
    }
    r->queue_full_ms = 0;
    if (r->sending_file && !status) {
        r->sending_file = 0;
        mem_free(r->file);
        r->file = NULL;
    }
    if (status) {
        log_warn("answer not delivered", LF_INT("status", status), LF_INT("code", code),
                 LF_INT("part", (long long)r->next_part));
        finish(r, status, code);
        return;
    }
    deliver_next(r);
}

static void deliver_next(struct reply *r)
{
    if (r->next_part < r->nparts) {
        struct split_part *p = &r->parts[r->next_part++];
        send_more(r, p->text, p->len, NULL, after_part);
        return;
    }
    if (r->file) {
        const char *msg = r->ko ? "(전체 답변은 첨부한 answer.txt에 있습니다)" : "(the whole answer is in answer.txt)";
        struct drest_file f = {.name = "answer.txt", .content_type = "text/plain; charset=utf-8", .data = r->file,
                               .len = r->file_len};
        r->sending_file = 1; /* r->file goes once it is delivered: it may be sent again */
        send_more(r, msg, strlen(msg), &f, after_part);
        return;
    }
    finish(r, 0, 0);
}

static void resend_part(struct reply *r)
{
    r->resend = 0;
    if (r->next_part) {
        deliver_next(r);
        return;
    }
    r->next_part = 1;
    send_first(r, r->parts[0].text, r->parts[0].len, after_part);
}

static void deliver_final(struct reply *r)
{
    uint64_t left = wait_left(r);
    if (left) {
        uv_timer_start(&r->timer, on_timer, left, 0);
        return;
    }
    if (r->busy || r->parts)
        return; /* after_progress comes back here / already delivering */
    struct buf all;
    buf_init(&all, r->text->len + strlen(r->note) + 8);
    buf_append(&all, buf_str(r->text), r->text->len);
    if (all.len && r->note[0])
        buf_puts(&all, "\n\n");
    buf_puts(&all, r->note);
    if (split_all(buf_str(&all), all.len, SPLIT_DISCORD_MAX, PART_BYTES, &r->parts, &r->nparts) || !r->nparts) {
        buf_free(&all);
        finish(r, -EINVAL, 0);
        return;
    }
    if (r->nparts > REPLY_MAX_PARTS) {
        /* first part in the message, the whole text as a file */
        r->file_len = all.len;
        r->file = buf_detach(&all);
        for (size_t i = 1; i < r->nparts; i++)
            mem_free(r->parts[i].text);
        r->nparts = 1;
    }
    buf_free(&all);
    r->next_part = 1;
    send_first(r, r->parts[0].text, r->parts[0].len, after_part);
}

void reply_finish(struct reply *r, const char *note, reply_done_cb *done, void *arg)
{
    r->done = done;
    r->done_arg = arg;
    r->finishing = 1;
    mem_free(r->note);
    r->note = mem_strdup(note ? note : "");
    uv_timer_stop(&r->timer);
    /* run from the loop, never inside this call */
    uv_timer_start(&r->timer, on_timer, 0, 0);
}

/* ---- creation ---------------------------------------------------------------- */

struct reply *reply_new(const struct reply_env *env, const struct reply_target *t, const struct buf *text)
{
    struct reply *r = mem_calloc(1, sizeof(*r));
    r->env = *env;
    r->ko = t->ko;
    r->text = text;
    if (t->token) {
        snprintf(r->app_id, sizeof(r->app_id), "%s", t->app_id ? t->app_id : "");
        r->token = mem_strdup(t->token);
    } else {
        snprintf(r->channel_id, sizeof(r->channel_id), "%s", t->channel_id ? t->channel_id : "");
        snprintf(r->message_id, sizeof(r->message_id), "%s", t->message_id ? t->message_id : "");
    }
    uv_timer_init(env->loop, &r->timer);
    uv_timer_init(env->loop, &r->typing);
    r->timer.data = r->typing.data = r;
    if (!r->token)
        uv_timer_start(&r->typing, on_typing_timer, 0, 0);
    return r;
}
