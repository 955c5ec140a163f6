#include "vidjob.h"
#include "commands.h"

#include <errno.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "service/bus.h"
#include "service/jobctx.h"
#include "process/core.h"
#include "service/dl.h"
#include "discord/dpath.h"
#include "discord/drest.h"
#include "base/clock.h"
#include "base/err.h"
#include "discord/ixjob.h"
#include "base/jget.h"
#include "base/jtext.h"
#include "service/keypool.h"
#include "base/log.h"
#include "base/mem.h"
#include "process/perf.h"
#include "service/minimax.h"
#include "io/rds.h"
#include "io/store.h"
#include "service/ulimit.h"
#include "service/usage.h"

#define SCAN_EVERY_MS 30000
#define TOKEN_MARGIN_MS 90000            /* move to the channel this long before the token dies */
#define DEFAULT_UPLOAD_LIMIT (10 << 20)  /* when the interaction does not say */
#define ID_MAX 24
#define RECORD_RETRY_MS 2000             /* a final row write or the delivery marker that failed */
#define MARK_TTL_S "2592000"             /* the delivery marker outlives any job (30 days) */

enum stage { ST_SUBMIT, ST_POLL, ST_FETCH, ST_DELIVER, ST_FINISH };

/* The row's final write (done or failed), kept until PostgreSQL took it. */
enum final { FINAL_NONE, FINAL_PENDING, FINAL_WRITTEN };

struct vidjob {
    struct core *core;
    struct keypool *mm;
    struct video *active; /* every video this process works on */
    uv_timer_t scan;
    int scanning, closing;
};

struct video {
    struct vidjob *g;
    struct video *prev, *next;
    struct jobctx jc;    /* .job: the stream entry, until the row says submitted;
                          * owed: queries, provider calls, downloads, edits */
    long long row;
    char iid[ID_MAX], app_id[ID_MAX], channel_id[ID_MAX], guild_id[ID_MAX], user_id[ID_MAX];
    char *token;         /* the interaction token; NULL once unusable */
    int ko;
    int64_t created_ms, token_expires_ms, upload_limit;
    char *prompt;
    char model[64], resolution[16];
    int duration;
    char task_id[128], key_fp[40], mmstate[16];
    enum stage stage;
    uv_timer_t timer;
    int poll_ms;
    struct ixjob_edit *edit;
    int edit_pending;    /* a channel message of ours is on its way */
    void (*after_edit)(struct video *v);
    int channel_mode;
    char status_msg[ID_MAX];
    char path[600];
    struct dl *dl;
    char *download_url;
    long long bytes;
    int have_file;       /* v->path holds the downloaded video */
    struct ulimit_req lim;
    int charged, persisted_task, attempts;
    /* the message being sent, kept to send it again in the channel when
     * the token turns out dead */
    char *resend_json;
    const struct drest_file *resend_files;
    struct drest_file file; /* the video, while it is being uploaded */
    int resend_nfiles, resend_final;
    char note[600];
    const char *failure;
    /* delivery, exactly once: see docs/videos.md */
    enum final final;
    int told;               /* the user has the final message */
    int final_inflight;     /* the final UPDATE is on its way */
    char *final_result;     /* the done row's result JSON */
    int mark_ok, mark_wait; /* the "started" marker: records written, answers awaited */
    int redeliver;          /* a delivery may have reached Discord before a crash */
    int final_warned;       /* the final write's failure was logged (once per video) */
};

static void poll_later(struct video *v);
static void finish_failed(struct video *v, const char *error, const char *ko, const char *en);
static void submit(struct video *v);
static void show_progress(struct video *v);
static void show(struct video *v, const char *json, const struct drest_file *files, int nfiles, int final,
                 void (*next)(struct video *));

/* ---- small things --------------------------------------------------------- */

static const char *say(const struct video *v, const char *ko, const char *en)
{
    return v->ko ? ko : en;
}

/* ---- lifetime ----------------------------------------------------------------- */

static struct video *find_active(struct vidjob *g, const char *iid)
{
    for (struct video *v = g->active; v; v = v->next)
        if (!strcmp(v->iid, iid))
            return v;
    return NULL;
}

static void vidjob_free_maybe(struct vidjob *g);

static void on_unlinked(uv_fs_t *r)
{
    uv_fs_req_cleanup(r);
    mem_free(r);
}

/* Remove the downloaded video off the loop (freeing a 200 MiB file's
 * blocks takes the file system a while). */
static void remove_file(struct video *v)
{
    if (!v->path[0])
        return;
    uv_fs_t *r = mem_alloc(sizeof(*r));
    if (uv_fs_unlink(core_loop(v->g->core), r, v->path, on_unlinked))
        mem_free(r);
    v->path[0] = 0;
    v->have_file = 0;
}

static void video_free(struct video *v)
{
    struct vidjob *g = v->g;
    if (v->prev)
        v->prev->next = v->next;
    else
        g->active = v->next;
    if (v->next)
        v->next->prev = v->prev;
    remove_file(v);
    mem_free(v->token);
    mem_free(v->prompt);
    mem_free(v->download_url);
    mem_free(v->resend_json);
    mem_free(v->final_result);
    mem_free(v);
    vidjob_free_maybe(g);
}

static void on_timer_closed(uv_handle_t *h)
{
    video_free(h->data);
}

static void video_release(void *arg)
{
    struct video *v = arg;
    uv_close((uv_handle_t *)&v->timer, on_timer_closed);
}

/* Shutdown with the video in flight: stop what would call back late; the
 * row stays, and a later start resumes it. */
static void video_stop(void *arg)
{
    struct video *v = arg;
    uv_timer_stop(&v->timer);
    if (v->dl)
        dl_cancel(v->dl);
    if (v->edit) {
        ixjob_edit_cancel(v->edit);
        v->edit = NULL;
        jobctx_forget(&v->jc);
    }
}

/* This process is done with the video (finished, or shutting down). */
static void video_close(struct video *v)
{
    video_stop(v);
    jobctx_finish(&v->jc, v->failure ? BUS_FAILED : BUS_DONE, v->failure);
}

/* An outside callback came back; 1 when the video still goes on (0 also
 * when the module is closing: then the video ends here). */
static int back(struct video *v)
{
    if (!jobctx_back(&v->jc))
        return 0;
    if (!v->g->closing)
        return 1;
    jobctx_end(&v->jc);
    return 0;
}

/* Ack the stream entry: from now on the row carries the job. */
static void release_job(struct video *v)
{
    jobctx_ack(&v->jc, BUS_DONE, NULL);
}

/* A video of g; job: the stream entry that asks for it, NULL when a row
 * carries it (or for a probe that only carries a query). */
static struct video *video_new(struct vidjob *g, struct bus_job *job)
{
    struct video *v = mem_calloc(1, sizeof(*v));
    v->g = g;
    jobctx_start(&v->jc, job, video_stop, video_release, v);
    v->next = g->active;
    if (g->active)
        g->active->prev = v;
    g->active = v;
    uv_timer_init(core_loop(g->core), &v->timer);
    v->timer.data = v;
    return v;
}

/* ---- PostgreSQL ---------------------------------------------------------------- */

typedef void row_cb(struct video *v, int status, const PGresult *res);

struct q {
    struct video *v;
    row_cb *fn;
};

static void on_q(struct store *s, int status, const PGresult *res, void *arg)
{
    (void)s;
    struct q *q = arg;
    struct video *v = q->v;
    row_cb *fn = q->fn;
    mem_free(q);
    if (!back(v))
        return;
    if (status)
        log_warn("video job row not written", LF_STR("interaction", v->iid), LF_ERR(status));
    if (fn)
        fn(v, status, res);
}

static int vq(struct video *v, const char *sql, int n, const char *const *params, row_cb *fn)
{
    struct store *s = core_store(v->g->core);
    if (!s)
        return -ENOTCONN;
    struct q *q = mem_alloc(sizeof(*q));
    q->v = v;
    q->fn = fn;
    int rc = store_query(s, sql, n, params, on_q, q);
    if (rc) {
        mem_free(q);
        return rc;
    }
    jobctx_wait(&v->jc);
    return 0;
}

/* ---- the row's final write ------------------------------------------------------- */

static void final_write(struct video *v);

static void final_retry(uv_timer_t *t)
{
    final_write(t->data);
}

/* The user has the final message and the row says so (or there is no row):
 * this process is done with the video. */
static void final_maybe_close(struct video *v)
{
    if (v->told && v->final != FINAL_PENDING)
        video_close(v);
}

static void final_written(struct video *v, int status, const PGresult *res)
{
    (void)res;
    v->final_inflight = 0;
    if (status) {
        /* PostgreSQL is away: keep the video here (a scan skips it) and try
         * again, also as soon as PostgreSQL is back (vidjob_store_up). A
         * dropped write would leave the row unfinished, and the next scan
         * would resume it and deliver the video a second time. */
        if (!v->final_warned++)
            log_warn("video row not finished yet; retrying until PostgreSQL takes it", LF_STR("interaction", v->iid),
                     LF_ERR(status));
        uv_timer_start(&v->timer, final_retry, RECORD_RETRY_MS, 0);
        return;
    }
    if (v->final_warned)
        log_info("video row finished after a retry", LF_STR("interaction", v->iid));
    v->final = FINAL_WRITTEN;
    final_maybe_close(v);
}

/* Write the row's final state (done with final_result, or failed with
 * v->failure) until PostgreSQL has taken it. */
static void final_write(struct video *v)
{
    if (v->final != FINAL_PENDING || v->final_inflight || v->jc.ended)
        return;
    uv_timer_stop(&v->timer);
    char id[24];
    snprintf(id, sizeof(id), "%lld", v->row);
    int rc;
    if (v->failure) {
        const char *p[] = {id, v->failure};
        rc = vq(v,
                "UPDATE jobs SET state = 'failed', error = $2, interaction_token = NULL, finished_at = now(), "
                "updated_at = now() WHERE id = $1::bigint AND state NOT IN ('done', 'failed')",
                2, p, final_written);
    } else {
        const char *p[] = {id, v->final_result ? v->final_result : "{}"};
        rc = vq(v,
                "UPDATE jobs SET state = 'done', result = $2::jsonb, interaction_token = NULL, finished_at = now(), "
                "updated_at = now() WHERE id = $1::bigint AND state NOT IN ('done', 'failed')",
                2, p, final_written);
    }
    if (rc)
        final_written(v, rc, NULL);
    else
        v->final_inflight = 1;
}

static void final_begin(struct video *v)
{
    if (!v->row) {
        v->final = FINAL_WRITTEN;
        return;
    }
    v->final = FINAL_PENDING;
    final_write(v);
}

/* ---- the delivery marker in Redis ---------------------------------------------------- */

/* "<prefix>:video:delivery:<interaction id>" = started | done: written
 * before the video is handed to Discord and after Discord took it, and
 * read before a resumed row is polled again. It holds when PostgreSQL
 * does not (an outage, a kill -9 while the final write waits). */
static void marker_key(const struct video *v, char *out, size_t n)
{
    snprintf(out, n, "%s:video:delivery:%s", core_config(v->g->core)->redis_prefix, v->iid);
}

static void on_marker_done(struct rds *r, int status, const redisReply *rep, void *arg)
{
    (void)r;
    (void)arg;
    if (status || rds_reply_error(rep))
        log_warn("video delivery marker not written", LF_ERR(status ? status : BC_EHTTP));
}

/* Record the delivery as done; best effort (the row is the main record). */
static void marker_done(struct video *v)
{
    struct rds *r = core_redis(v->g->core);
    char key[200];
    marker_key(v, key, sizeof(key));
    const char *av[] = {"SET", key, "done", "EX", MARK_TTL_S};
    if (!r || rds_cmd(r, on_marker_done, NULL, 5, av, NULL))
        log_warn("video delivery marker not written", LF_STR("interaction", v->iid));
}

/* ---- talking to the user ---------------------------------------------------------- */

static int token_usable(const struct video *v)
{
    return v->token && !v->channel_mode && clock_wall_ms() < v->token_expires_ms - TOKEN_MARGIN_MS;
}

static void run_after_edit(struct video *v)
{
    void (*next)(struct video *) = v->after_edit;
    v->after_edit = NULL;
    if (next)
        next(v);
}

static void on_edit(int status, int code, void *arg)
{
    struct video *v = arg;
    v->edit = NULL;
    if (!back(v))
        return;
    if (code == 50027 || code == 10015 || code == 10008) {
        /* the token is dead: continue in the channel, with this message too */
        log_info("interaction token no longer usable; video continues in the channel", LF_STR("interaction", v->iid),
                 LF_INT("code", code));
        v->channel_mode = 1;
        char *json = v->resend_json;
        v->resend_json = NULL;
        show(v, json, v->resend_files, v->resend_nfiles, v->resend_final, v->after_edit);
        mem_free(json);
        return;
    }
    if (status)
        log_warn("video status not delivered", LF_INT("status", status), LF_INT("code", code));
    run_after_edit(v);
}

static void on_channel_sent(const struct drest_resp *r, void *arg)
{
    struct video *v = arg;
    v->edit_pending = 0;
    if (!back(v))
        return;
    if (r->err)
        log_warn("video message not delivered", LF_INT("status", r->status), LF_INT("code", r->code));
    else if (!v->status_msg[0]) {
        struct json_object *o = json_tokener_parse(r->body), *id;
        if (o && json_object_object_get_ex(o, "id", &id) && json_object_is_type(id, json_type_string))
            snprintf(v->status_msg, sizeof(v->status_msg), "%s", json_object_get_string(id));
        json_object_put(o);
    }
    run_after_edit(v);
}

/* The final channel message carries a nonce Discord enforces: a message
 * posted again (a delivery that was interrupted, then resumed after a
 * restart) returns the first one instead of making a second. */
static char *with_nonce(const struct video *v, const char *json)
{
    struct json_object *o = json_tokener_parse(json);
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return NULL;
    }
    char nonce[ID_MAX + 2];
    snprintf(nonce, sizeof(nonce), "v%s", v->iid); /* Discord: at most 25 characters */
    json_object_object_add(o, "nonce", json_object_new_string(nonce));
    json_object_object_add(o, "enforce_nonce", json_object_new_boolean(1));
    return jtext_take(o);
}

/* Show json (and files) to the user: the deferred response while the token
 * lasts, else a channel message (created once, edited after; final results
 * are new messages so the mention notifies). next runs when Discord
 * answered. */
static void show(struct video *v, const char *json, const struct drest_file *files, int nfiles, int final,
                 void (*next)(struct video *))
{
    v->after_edit = next;
    struct drest *rest = core_rest(v->g->core);
    if (!rest) {
        run_after_edit(v);
        return;
    }
    if (token_usable(v)) {
        mem_free(v->resend_json);
        v->resend_json = mem_strdup(json);
        v->resend_files = files;
        v->resend_nfiles = nfiles;
        v->resend_final = final;
        struct ixjob j = {.app_id = v->app_id, .token = v->token};
        jobctx_wait(&v->jc);
        v->edit = ixjob_edit_files(core_loop(v->g->core), rest, &j, json, files, nfiles, on_edit, v);
        if (!v->edit) {
            /* bad arguments: on_edit will not run; go on as without REST */
            jobctx_forget(&v->jc);
            run_after_edit(v);
        }
        return;
    }
    v->channel_mode = 1;
    char path[DPATH_MAX];
    struct drest_req rq = {.json = json, .files = files, .nfiles = nfiles, .bot_auth = 1, .path = path};
    int edit = v->status_msg[0] && !final;
    rq.method = edit ? "PATCH" : "POST";
    int rc = edit ? dpath_channel_message(path, sizeof(path), v->channel_id, v->status_msg)
                  : dpath_channel_messages(path, sizeof(path), v->channel_id);
    char *nonced = final && !rc ? with_nonce(v, json) : NULL;
    if (nonced)
        rq.json = nonced;
    if (!rc)
        rc = drest_request(rest, &rq, on_channel_sent, v);
    mem_free(nonced);
    if (rc) {
        run_after_edit(v);
        return;
    }
    v->edit_pending = 1;
    jobctx_wait(&v->jc);
}

static int busy(const struct video *v)
{
    return v->edit || v->edit_pending;
}

/* The message body: content (in the channel, prefixed by the user's
 * mention, which pings only there), optional attachments list. */
static char *message_json(struct video *v, const char *text, const char *filename)
{
    struct json_object *o = json_object_new_object(), *am = json_object_new_object(),
                       *parse = json_object_new_array(), *users = json_object_new_array();
    char buf[2000];
    if (!token_usable(v))
        snprintf(buf, sizeof(buf), "<@%s> %s", v->user_id, text);
    else
        snprintf(buf, sizeof(buf), "%s", text);
    json_object_object_add(o, "content", json_object_new_string(buf));
    json_object_object_add(am, "parse", parse);
    json_object_array_add(users, json_object_new_string(v->user_id));
    json_object_object_add(am, "users", users);
    json_object_object_add(o, "allowed_mentions", am);
    if (filename) {
        struct json_object *atts = json_object_new_array(), *a = json_object_new_object();
        json_object_object_add(a, "id", json_object_new_int(0));
        json_object_object_add(a, "filename", json_object_new_string(filename));
        json_object_array_add(atts, a);
        json_object_object_add(o, "attachments", atts);
    }
    return jtext_take(o);
}

/* ---- finishing ----------------------------------------------------------------------- */

static void closed_after_tell(struct video *v)
{
    v->told = 1;
    final_maybe_close(v);
}

static void tell_final(struct video *v)
{
    char *json = message_json(v, v->note, NULL);
    show(v, json, NULL, 0, 1, closed_after_tell);
    mem_free(json);
}

/* The video will not come: the row says why, the user is told, the quota
 * given back. */
static void finish_failed(struct video *v, const char *error, const char *ko, const char *en)
{
    if (v->stage == ST_FINISH)
        return;
    v->stage = ST_FINISH;
    uv_timer_stop(&v->timer);
    log_warn("video failed", LF_STR("interaction", v->iid), LF_STR("task", v->task_id), LF_STR("error", error));
    snprintf(v->note, sizeof(v->note), "%s", say(v, ko, en));
    v->failure = error;
    final_begin(v);
    if (v->charged || v->row) {
        ulimit_refund(core_redis(v->g->core), &v->lim);
        v->charged = 0;
    }
    if (busy(v))
        v->after_edit = tell_final;
    else
        tell_final(v);
}

/* Told the user something final that is not a failure (limits): no row change. */
static void finish_told(struct video *v, const char *ko, const char *en)
{
    v->stage = ST_FINISH;
    snprintf(v->note, sizeof(v->note), "%s", say(v, ko, en));
    if (busy(v))
        v->after_edit = tell_final;
    else
        tell_final(v);
}

/* ---- delivery ------------------------------------------------------------------------ */

static void after_delivery(struct video *v)
{
    remove_file(v);
    v->stage = ST_FINISH;
    marker_done(v);
    struct store *s = core_store(v->g->core);
    if (s && store_up(s)) {
        struct usage_rec u = {.user_id = v->user_id, .guild_id = v->guild_id[0] ? v->guild_id : NULL,
                              .kind = "video", .model = v->model, .requests = 1, .units = 1};
        usage_add(s, &u, NULL, NULL);
    }
    struct json_object *r = json_object_new_object();
    json_object_object_add(r, "file_bytes", json_object_new_int64(v->bytes));
    json_object_object_add(r, "in_channel", json_object_new_boolean(v->channel_mode));
    mem_free(v->final_result);
    v->final_result = jtext_take(r);
    log_info("video delivered", LF_STR("interaction", v->iid), LF_STR("task", v->task_id),
             LF_INT("bytes", v->bytes), LF_BOOL("in_channel", v->channel_mode));
    v->told = 1;
    final_begin(v);
    final_maybe_close(v);
}

static void deliver_now(struct video *v)
{
    char text[1500];
    int attach = v->have_file;
    if (attach)
        snprintf(text, sizeof(text), "%s\n> %.1000s", say(v, "🎬 영상이 완성되었습니다!", "🎬 Your video is ready!"),
                 v->prompt);
    else
        snprintf(text, sizeof(text), "%s\n%s\n> %.900s",
                 say(v, "🎬 영상이 완성되었습니다! 첨부하기에는 커서 링크로 드립니다 (24시간 유효):",
                     "🎬 Your video is ready! It is too big to attach, so here is a link (valid 24 h):"),
                 v->download_url ? v->download_url : "", v->prompt);
    char *json = message_json(v, text, attach ? "video.mp4" : NULL);
    /* streamed from the file as it is sent: nothing of it is read here */
    v->file = (struct drest_file){.name = "video.mp4", .content_type = "video/mp4", .path = v->path};
    show(v, json, attach ? &v->file : NULL, attach ? 1 : 0, 1, after_delivery);
    mem_free(json);
}

static void deliver(struct video *v);

static void deliver_retry(uv_timer_t *t)
{
    deliver(t->data);
}

/* Both "started" records answered: hand the video over if one holds. */
static void mark_settled(struct video *v)
{
    if (v->mark_wait)
        return;
    if (!v->mark_ok) {
        /* nothing durable would say the video went out: a crash now could
         * deliver it twice, so wait until Redis or PostgreSQL takes it */
        log_warn("video delivery waits: neither Redis nor PostgreSQL can record it", LF_STR("interaction", v->iid));
        uv_timer_start(&v->timer, deliver_retry, RECORD_RETRY_MS, 0);
        return;
    }
    deliver_now(v);
}

static void on_mark_started(struct rds *r, int status, const redisReply *rep, void *arg)
{
    (void)r;
    struct video *v = arg;
    if (!back(v))
        return;
    v->mark_wait--;
    v->mark_ok += !status && !rds_reply_error(rep);
    mark_settled(v);
}

static void on_row_started(struct video *v, int status, const PGresult *res)
{
    (void)res;
    v->mark_wait--;
    v->mark_ok += !status;
    mark_settled(v);
}

/* Deliver: first record, in Redis and in the row, that the video is being
 * handed to Discord, so a process that resumes the row after a crash knows
 * it may already be there (see adopt). */
static void deliver(struct video *v)
{
    v->stage = ST_DELIVER;
    v->mark_ok = v->mark_wait = 0;
    struct rds *r = core_redis(v->g->core);
    char key[200], id[24];
    marker_key(v, key, sizeof(key));
    const char *av[] = {"SET", key, "started", "EX", MARK_TTL_S};
    if (r && !rds_cmd(r, on_mark_started, v, 5, av, NULL)) {
        jobctx_wait(&v->jc);
        v->mark_wait++;
    }
    snprintf(id, sizeof(id), "%lld", v->row);
    const char *p[] = {id};
    if (v->row && !vq(v,
                      "UPDATE jobs SET result = jsonb_build_object('delivery', 'started'), updated_at = now() "
                      "WHERE id = $1::bigint AND state NOT IN ('done', 'failed')",
                      1, p, on_row_started))
        v->mark_wait++;
    mark_settled(v);
}

static void deliver_when_idle(struct video *v)
{
    if (busy(v))
        v->after_edit = deliver;
    else
        deliver(v);
}

static void on_downloaded(const struct dl_result *r, void *arg)
{
    struct video *v = arg;
    v->dl = NULL;
    if (!back(v))
        return;
    if (r->err) {
        log_warn("video download failed; giving the link", LF_INT("err", r->err), LF_INT("status", r->status));
        v->path[0] = 0;
        deliver_when_idle(v);
        return;
    }
    v->have_file = r->len > 0;
    deliver_when_idle(v);
}

static void fetch(struct video *v)
{
    const struct config *cfg = core_config(v->g->core);
    long long cap = (long long)cfg->video_max_mb << 20;
    if (v->bytes > v->upload_limit || v->bytes > cap || !v->download_url) {
        deliver_when_idle(v); /* a link */
        return;
    }
    snprintf(v->path, sizeof(v->path), "%s/%s.mp4", cfg->video_dir, v->iid);
    size_t max = (size_t)(v->upload_limit < cap ? v->upload_limit : cap);
    struct dl_req rq = {.url = v->download_url, .max_bytes = max, .timeout_ms = 300000, .path = v->path};
    if (dl_get(core_http(v->g->core), &rq, on_downloaded, v, &v->dl)) {
        v->path[0] = 0;
        deliver_when_idle(v);
        return;
    }
    jobctx_wait(&v->jc);
}

/* ---- polling ---------------------------------------------------------------------------- */

static const char *key_for(struct video *v)
{
    struct keypool_pick pk;
    if (!v->g->mm)
        return NULL;
    if (v->key_fp[0] && !keypool_by_fp(v->g->mm, v->key_fp, &pk))
        return pk.key;
    /* the key that submitted is not ours (another instance's): any key of
     * the same account will do */
    if (!keypool_pick(v->g->mm, uv_now(core_loop(v->g->core)), &pk))
        return pk.key;
    return NULL;
}

static void on_file(const struct mm_result *r, void *arg)
{
    struct video *v = arg;
    if (!back(v))
        return;
    if (r->status != PROV_OK || !r->download_url[0]) {
        log_warn("video file not retrieved; retrying", LF_STR("status", prov_status_name(r->status)),
                 LF_INT("code", r->code));
        poll_later(v);
        return;
    }
    mem_free(v->download_url);
    v->download_url = mem_strdup(r->download_url);
    v->bytes = r->bytes;
    v->stage = ST_FETCH;
    fetch(v);
}

static void persist_polling(struct video *v)
{
    char id[24];
    snprintf(id, sizeof(id), "%lld", v->row);
    if (!v->persisted_task) {
        /* the submit's row update was lost (PostgreSQL away): write it now */
        const char *p[] = {id, v->task_id, v->key_fp};
        if (!vq(v,
                "UPDATE jobs SET state = 'polling', provider_task_id = $2, request = request || "
                "jsonb_build_object('key_fp', $3::text), updated_at = now() WHERE id = $1::bigint",
                3, p, NULL))
            v->persisted_task = 1;
        return;
    }
    const char *p[] = {id};
    vq(v, "UPDATE jobs SET state = 'polling', updated_at = now() WHERE id = $1::bigint AND state IN ('submitted', "
          "'polling')",
       1, p, NULL);
}

static void on_query(const struct mm_result *r, void *arg)
{
    struct video *v = arg;
    if (!back(v))
        return;
    const struct config *cfg = core_config(v->g->core);
    if (r->status == PROV_FILTERED || r->status == PROV_REFUSED) {
        finish_failed(v, "sensitive output", "만든 영상이 안전 필터에 걸려 보여 드릴 수 없습니다. 다른 설명으로 시도해 주세요.",
                      "The video was caught by the provider's safety filter; please try a different prompt.");
        return;
    }
    if (r->status != PROV_OK) {
        log_warn("video status not read; will retry", LF_STR("task", v->task_id),
                 LF_STR("status", prov_status_name(r->status)), LF_INT("code", r->code));
        poll_later(v);
        return;
    }
    snprintf(v->mmstate, sizeof(v->mmstate), "%s", r->state);
    persist_polling(v);
    if (!strcmp(r->state, "Success") && r->file_id[0]) {
        const char *key = key_for(v);
        if (!key || mm_file_retrieve(core_http(v->g->core), cfg->minimax_base_url, key, r->file_id, 30000, on_file, v)) {
            poll_later(v);
            return;
        }
        jobctx_wait(&v->jc);
        return;
    }
    if (!strcmp(r->state, "Fail")) {
        finish_failed(v, "provider failed the task", "영상을 만들지 못했습니다 (MiniMax가 작업을 실패로 끝냈습니다). 다시 시도해 주세요.",
                      "The video could not be made (MiniMax failed the task); please try again.");
        return;
    }
    show_progress(v);
    poll_later(v);
}

static void poll_now(uv_timer_t *t)
{
    struct video *v = t->data;
    const struct config *cfg = core_config(v->g->core);
    if (clock_wall_ms() - v->created_ms > (int64_t)cfg->video_timeout_min * 60000) {
        char ko[200], en[200];
        snprintf(ko, sizeof(ko), "영상이 %d분 안에 완성되지 않아 중단했습니다. 다시 시도해 주세요.", cfg->video_timeout_min);
        snprintf(en, sizeof(en), "The video was not ready within %d minutes, so it was given up; please try again.",
                 cfg->video_timeout_min);
        finish_failed(v, "timed out", ko, en);
        return;
    }
    const char *key = key_for(v);
    if (!key || mm_video_query(core_http(v->g->core), cfg->minimax_base_url, key, v->task_id, 30000, on_query, v)) {
        poll_later(v);
        return;
    }
    jobctx_wait(&v->jc);
}

static void poll_later(struct video *v)
{
    if (v->jc.ended || v->stage == ST_FINISH)
        return;
    v->stage = ST_POLL;
    int base = core_config(v->g->core)->video_poll_sec * 1000;
    if (!v->poll_ms)
        v->poll_ms = base;
    else if (v->poll_ms < 4 * base)
        v->poll_ms = v->poll_ms * 3 / 2 > 4 * base ? 4 * base : v->poll_ms * 3 / 2;
    uv_timer_start(&v->timer, poll_now, (uint64_t)v->poll_ms, 0);
}

static void show_progress(struct video *v)
{
    if (busy(v))
        return; /* the next poll shows it */
    static const char *const states[] = {"Preparing", "Queueing", "Processing", "Success"};
    int step = 0;
    for (int i = 0; i < 4; i++)
        if (!strcmp(v->mmstate, states[i]))
            step = i + 1;
    const char *ko_state = step == 1 ? "준비 중" : step == 2 ? "대기 중" : step == 3 ? "생성 중" : "접수됨";
    const char *en_state = step == 1 ? "preparing" : step == 2 ? "queued" : step == 3 ? "rendering" : "submitted";
    char bar[64] = "";
    for (int i = 0; i < 4; i++)
        strcat(bar, i < step ? "■" : "□");
    long secs = (long)((clock_wall_ms() - v->created_ms) / 1000);
    char text[1400];
    if (v->ko)
        snprintf(text, sizeof(text), "🎬 영상을 만드는 중입니다 — %s\n`[%s]` %ld분 %02ld초 경과 (%d초, %s)\n> %.1000s", ko_state,
                 bar, secs / 60, secs % 60, v->duration, v->resolution, v->prompt);
    else
        snprintf(text, sizeof(text), "🎬 Making your video — %s\n`[%s]` %ldm %02lds elapsed (%d s, %s)\n> %.1000s",
                 en_state, bar, secs / 60, secs % 60, v->duration, v->resolution, v->prompt);
    char *json = message_json(v, text, NULL);
    show(v, json, NULL, 0, 0, NULL);
    mem_free(json);
}

/* ---- submitting ------------------------------------------------------------------------- */

static void submitted_recorded(struct video *v, int status, const PGresult *res)
{
    (void)res;
    v->persisted_task = !status;
    release_job(v);
    show_progress(v);
    poll_later(v);
}

static void on_submitted(const struct mm_result *r, void *arg)
{
    struct video *v = arg;
    if (!back(v))
        return;
    struct keypool_pick pk;
    int idx = v->g->mm && !keypool_by_fp(v->g->mm, v->key_fp, &pk) ? pk.index : -1;
    if (r->status != PROV_CANCELLED)
        perf_provider(core_perf(v->g->core), "minimax", prov_status_name(r->status));
    if (r->status != PROV_CANCELLED && idx >= 0)
        keypool_report(v->g->mm, uv_now(core_loop(v->g->core)), idx, prov_keypool_outcome(r->status),
                       r->retry_after_ms > 0 ? (int)r->retry_after_ms : 0);
    if (r->status == PROV_OK && r->task_id[0]) {
        snprintf(v->task_id, sizeof(v->task_id), "%s", r->task_id);
        log_info("video submitted", LF_STR("interaction", v->iid), LF_STR("task", v->task_id),
                 LF_STR("key", v->key_fp));
        char id[24];
        snprintf(id, sizeof(id), "%lld", v->row);
        const char *p[] = {id, v->task_id, v->key_fp};
        if (vq(v,
               "UPDATE jobs SET state = 'submitted', provider_task_id = $2, request = request || "
               "jsonb_build_object('key_fp', $3::text), attempts = attempts + 1, updated_at = now() "
               "WHERE id = $1::bigint",
               3, p, submitted_recorded))
            submitted_recorded(v, -ENOTCONN, NULL);
        return;
    }
    int key_problem = r->status == PROV_RATE || r->status == PROV_QUOTA || r->status == PROV_AUTH;
    if (key_problem && ++v->attempts < keypool_size(v->g->mm)) {
        submit(v);
        return;
    }
    switch (r->status) {
    case PROV_REFUSED:
        finish_failed(v, "sensitive input", "이 설명은 안전 정책에 걸려 영상을 만들 수 없습니다. 다른 표현으로 시도해 주세요.",
                      "This prompt was refused by the provider's safety policy; please try different words.");
        break;
    case PROV_BAD_REQUEST: {
        char ko[400], en[400];
        snprintf(ko, sizeof(ko), "요청을 처리할 수 없습니다: %.200s", r->message);
        snprintf(en, sizeof(en), "The request was not accepted: %.200s", r->message);
        finish_failed(v, "bad request", ko, en);
        break;
    }
    case PROV_RATE:
    case PROV_QUOTA:
    case PROV_AUTH:
        finish_failed(v, "no usable key", "지금은 사용할 수 있는 영상 서비스 키가 없습니다. 잠시 후 다시 시도해 주세요.",
                      "No video service key is usable right now; please try again later.");
        break;
    case PROV_TIMEOUT:
    case PROV_NETWORK:
        /* MiniMax may or may not have the task: never resubmit */
        finish_failed(v, "submit outcome unknown", "영상 요청의 접수 여부를 확인하지 못했습니다. 잠시 후 다시 요청해 주세요.",
                      "It is unclear whether the video request was accepted; please ask again in a moment.");
        break;
    default:
        finish_failed(v, "provider error", "영상 서비스에 문제가 있습니다. 잠시 후 다시 시도해 주세요.",
                      "The video service is having trouble; please try again shortly.");
    }
}

static void submit(struct video *v)
{
    const struct config *cfg = core_config(v->g->core);
    struct keypool_pick pk;
    int rc = keypool_pick(v->g->mm, uv_now(core_loop(v->g->core)), &pk);
    if (rc) {
        char ko[200], en[200];
        unsigned secs = (unsigned)((pk.retry_in_ms + 999) / 1000);
        snprintf(ko, sizeof(ko), "영상 서비스를 잠시 사용할 수 없습니다. %u초 후 다시 시도해 주세요.", secs);
        snprintf(en, sizeof(en), "The video service is unavailable for now; please try again in %u s.", secs);
        finish_failed(v, "no usable key", ko, en);
        return;
    }
    snprintf(v->key_fp, sizeof(v->key_fp), "%s", pk.fp);
    struct mm_video_req rq = {.base_url = cfg->minimax_base_url, .api_key = pk.key, .model = v->model,
                              .prompt = v->prompt, .duration = v->duration, .resolution = v->resolution,
                              .timeout_ms = 60000};
    if (mm_video_submit(core_http(v->g->core), &rq, on_submitted, v)) {
        finish_failed(v, "request not sent", "영상 요청을 보낼 수 없습니다. 설명을 확인해 주세요.",
                      "The video request could not be sent; please check the prompt.");
        return;
    }
    jobctx_wait(&v->jc);
}

/* ---- adopting a row -------------------------------------------------------------------- */

static void check_marker(struct video *v);

static void check_marker_retry(uv_timer_t *t)
{
    check_marker(t->data);
}

static void resume_polling(struct video *v)
{
    poll_later(v);
    v->poll_ms = 0;
    uv_timer_start(&v->timer, poll_now, 0, 0);
}

static void on_marker(struct rds *r, int status, const redisReply *rep, void *arg)
{
    (void)r;
    struct video *v = arg;
    if (!back(v))
        return;
    if (status || rds_reply_error(rep) || (rep->type != REDIS_REPLY_STRING && rep->type != REDIS_REPLY_NIL)) {
        /* the marker may say "done": resuming without it could deliver twice */
        uv_timer_start(&v->timer, check_marker_retry, RECORD_RETRY_MS, 0);
        return;
    }
    if (rep->type == REDIS_REPLY_STRING && !strcmp(rep->str, "done")) {
        /* delivered by an earlier life whose final row write was lost */
        log_info("video already delivered; only the row is finished", LF_STR("interaction", v->iid));
        v->stage = ST_FINISH;
        v->told = 1;
        mem_free(v->final_result);
        v->final_result = mem_strdup("{\"recorded_after_restart\": true}");
        final_begin(v);
        final_maybe_close(v);
        return;
    }
    if (rep->type == REDIS_REPLY_STRING && !strcmp(rep->str, "started"))
        v->redeliver = 1;
    if (v->redeliver)
        log_info("video delivery was interrupted; it is delivered again in place", LF_STR("interaction", v->iid));
    resume_polling(v);
}

/* Before a resumed row is polled: was its video delivered already? */
static void check_marker(struct video *v)
{
    struct rds *r = core_redis(v->g->core);
    char key[200];
    marker_key(v, key, sizeof(key));
    const char *av[] = {"GET", key};
    if (!r) {
        resume_polling(v);
        return;
    }
    if (rds_cmd(r, on_marker, v, 2, av, NULL)) {
        uv_timer_start(&v->timer, check_marker_retry, RECORD_RETRY_MS, 0);
        return;
    }
    jobctx_wait(&v->jc);
}

/* A row this process did not start in this life: resume or reconcile. */
static void adopt(struct video *v, const char *state)
{
    if (!strcmp(state, "submitting")) {
        /* crashed between writing the row and recording the task: MiniMax
         * may or may not have it, and it cannot be asked. Never resubmit. */
        finish_failed(v, "interrupted while submitting",
                      "영상 요청이 처리 도중 중단되어 접수 여부를 알 수 없습니다. 중복 요금이 없도록 다시 보내지 않았습니다. 다시 요청해 주세요.",
                      "The video request was interrupted while it was being sent, so it was not sent again (no "
                      "double charge); please ask again.");
        release_job(v);
        return;
    }
    log_info("video resumed", LF_STR("interaction", v->iid), LF_STR("task", v->task_id), LF_STR("state", state));
    v->persisted_task = 1;
    release_job(v);
    check_marker(v);
}

/* Fill v from a jobs row: id, idempotency_key, state, user_id, guild_id,
 * channel_id, application_id, interaction_token, token_expires_ms,
 * provider_task_id, request, created_ms, result's delivery mark. */
#define ROW_COLUMNS                                                                                          \
    "id, idempotency_key, state, user_id, coalesce(guild_id, ''), channel_id, application_id, "              \
    "interaction_token, (extract(epoch FROM token_expires_at) * 1000)::bigint, coalesce(provider_task_id, ''), " \
    "request::text, (extract(epoch FROM created_at) * 1000)::bigint, coalesce(result->>'delivery', '')"

static void from_row(struct video *v, const PGresult *res, int r, int col)
{
    v->row = strtoll(PQgetvalue(res, r, col + 0), NULL, 10);
    snprintf(v->iid, sizeof(v->iid), "%s", PQgetvalue(res, r, col + 1));
    snprintf(v->user_id, sizeof(v->user_id), "%s", PQgetvalue(res, r, col + 3));
    snprintf(v->guild_id, sizeof(v->guild_id), "%s", PQgetvalue(res, r, col + 4));
    snprintf(v->channel_id, sizeof(v->channel_id), "%s", PQgetvalue(res, r, col + 5));
    snprintf(v->app_id, sizeof(v->app_id), "%s", PQgetvalue(res, r, col + 6));
    mem_free(v->token);
    v->token = PQgetisnull(res, r, col + 7) ? NULL : mem_strdup(PQgetvalue(res, r, col + 7));
    v->token_expires_ms = strtoll(PQgetvalue(res, r, col + 8), NULL, 10);
    snprintf(v->task_id, sizeof(v->task_id), "%s", PQgetvalue(res, r, col + 9));
    v->created_ms = strtoll(PQgetvalue(res, r, col + 11), NULL, 10);
    v->redeliver = !strcmp(PQgetvalue(res, r, col + 12), "started");
    struct json_object *rq = json_tokener_parse(PQgetvalue(res, r, col + 10)), *n;
    const char *s;
    if ((s = jget_str(rq, "prompt"))) {
        mem_free(v->prompt);
        v->prompt = mem_strdup(s);
    }
    if ((s = jget_str(rq, "model")))
        snprintf(v->model, sizeof(v->model), "%s", s);
    if ((s = jget_str(rq, "resolution")))
        snprintf(v->resolution, sizeof(v->resolution), "%s", s);
    if ((s = jget_str(rq, "key_fp")))
        snprintf(v->key_fp, sizeof(v->key_fp), "%s", s);
    if ((s = jget_str(rq, "locale")))
        v->ko = !strncmp(s, "ko", 2);
    if (json_object_object_get_ex(rq, "duration", &n))
        v->duration = json_object_get_int(n);
    if (json_object_object_get_ex(rq, "upload_limit", &n))
        v->upload_limit = json_object_get_int64(n);
    json_object_put(rq);
    if (!v->prompt)
        v->prompt = mem_strdup("");
    if (v->upload_limit <= 0)
        v->upload_limit = DEFAULT_UPLOAD_LIMIT;
    const struct config *cfg = core_config(v->g->core);
    v->lim = (struct ulimit_req){.prefix = cfg->redis_prefix, .kind = "video", .user_id = v->user_id,
                                 .daily = cfg->user_daily_videos};
}

static void on_scan(struct video *probe, int status, const PGresult *res)
{
    struct vidjob *g = probe->g;
    g->scanning = 0;
    jobctx_end(&probe->jc);
    if (status || g->closing)
        return;
    for (int r = 0; r < PQntuples(res); r++) {
        if (find_active(g, PQgetvalue(res, r, 1)))
            continue;
        struct video *v = video_new(g, NULL);
        from_row(v, res, r, 0);
        adopt(v, PQgetvalue(res, r, 2));
    }
}

/* Resume every unfinished video this instance owns that nobody here works on. */
static void scan(struct vidjob *g)
{
    struct store *s = core_store(g->core);
    if (g->scanning || g->closing || !s || !store_up(s))
        return;
    struct video *probe = video_new(g, NULL); /* carries the query */
    snprintf(probe->iid, sizeof(probe->iid), "-scan-");
    const char *p[] = {core_config(g->core)->name};
    if (vq(probe,
           "SELECT " ROW_COLUMNS " FROM jobs WHERE kind = 'video' AND owner = $1 AND state NOT IN ('done', 'failed') "
           "ORDER BY id LIMIT 1000",
           1, p, on_scan)) {
        jobctx_end(&probe->jc);
        return;
    }
    g->scanning = 1;
}

static void on_scan_timer(uv_timer_t *t)
{
    scan(t->data);
}

/* ---- a new /비디오 ---------------------------------------------------------------------- */

static void on_inserted(struct video *v, int status, const PGresult *res)
{
    if (status || PQntuples(res) != 1) {
        v->row = 0;
        finish_told(v, "영상 작업을 저장하지 못해 시작하지 않았습니다 (데이터베이스 문제). 잠시 후 다시 시도해 주세요.",
                    "The video job could not be saved, so it was not started (database trouble); please try again "
                    "shortly.");
        ulimit_refund(core_redis(v->g->core), &v->lim);
        return;
    }
    if (!PQgetisnull(res, 0, 0)) { /* a new row: pay for it now */
        v->row = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        v->stage = ST_SUBMIT;
        char text[1200];
        snprintf(text, sizeof(text), "%s\n> %.1000s",
                 say(v, "🎬 영상 요청을 보내는 중입니다…", "🎬 Sending your video request…"), v->prompt);
        char *json = message_json(v, text, NULL);
        show(v, json, NULL, 0, 0, NULL);
        mem_free(json);
        submit(v);
        return;
    }
    if (!PQgetisnull(res, 0, 2)) { /* this interaction has a row already: a redelivery */
        const char *state = PQgetvalue(res, 0, 4);
        struct video *other = find_active(v->g, v->iid);
        if (other && other != v) {
            jobctx_finish(&v->jc, BUS_DONE, NULL);
            return;
        }
        if (!strcmp(state, "done") || !strcmp(state, "failed")) {
            log_info("video already answered; redelivery acked", LF_STR("interaction", v->iid));
            jobctx_finish(&v->jc, BUS_DONE, NULL);
            return;
        }
        from_row(v, res, 0, 2);
        adopt(v, state);
        return;
    }
    ulimit_refund(core_redis(v->g->core), &v->lim);
    char ko[300], en[300];
    snprintf(ko, sizeof(ko), "이미 만들고 있는 영상이 있습니다 (한 번에 %d개까지). 끝난 뒤에 다시 요청해 주세요.",
             core_config(v->g->core)->user_max_video_jobs);
    snprintf(en, sizeof(en), "You already have a video in progress (%d at a time); please wait for it to finish.",
             core_config(v->g->core)->user_max_video_jobs);
    finish_told(v, ko, en);
}

static void insert_row(struct video *v)
{
    const struct config *cfg = core_config(v->g->core);
    struct json_object *rq = json_object_new_object();
    json_object_object_add(rq, "prompt", json_object_new_string(v->prompt));
    json_object_object_add(rq, "model", json_object_new_string(v->model));
    json_object_object_add(rq, "duration", json_object_new_int(v->duration));
    json_object_object_add(rq, "resolution", json_object_new_string(v->resolution));
    json_object_object_add(rq, "locale", json_object_new_string(v->ko ? "ko" : "en"));
    json_object_object_add(rq, "upload_limit", json_object_new_int64(v->upload_limit));
    char *request = jtext_take(rq), expires[32], max[16];
    snprintf(expires, sizeof(expires), "%lld", (long long)v->token_expires_ms);
    snprintf(max, sizeof(max), "%d", cfg->user_max_video_jobs);
    const char *p[] = {v->iid, v->user_id, cfg->name, v->guild_id[0] ? v->guild_id : NULL, v->channel_id,
                       v->app_id, v->token, expires, request, max};
    int rc = vq(v,
                "WITH active AS (SELECT count(*) AS n FROM jobs WHERE user_id = $2 AND kind = 'video' "
                "  AND state NOT IN ('done', 'failed') AND idempotency_key <> $1), "
                "ins AS (INSERT INTO jobs (idempotency_key, kind, state, owner, user_id, guild_id, channel_id, "
                "  application_id, interaction_token, token_expires_at, provider, request) "
                "  SELECT $1, 'video', 'submitting', $3, $2, $4, $5, $6, $7, "
                "  to_timestamp($8::double precision / 1000), 'minimax', $9::jsonb FROM active WHERE n < $10::int "
                "  ON CONFLICT (idempotency_key) DO NOTHING RETURNING id) "
                "SELECT (SELECT id FROM ins), (SELECT n FROM active), " ROW_COLUMNS
                " FROM (SELECT 1) one LEFT JOIN jobs ON jobs.idempotency_key = $1",
                10, p, on_inserted);
    mem_free(request);
    if (rc)
        on_inserted(v, rc, NULL);
}

static void on_limits(enum ulimit_verdict verdict, int64_t wait_ms, void *arg)
{
    struct video *v = arg;
    if (!back(v))
        return;
    if (verdict == ULIMIT_OK) {
        v->charged = v->lim.daily > 0;
        insert_row(v);
        return;
    }
    char text[300];
    ulimit_say(verdict, wait_ms, v->lim.daily, v->ko, "영상", "videos", text, sizeof(text));
    finish_told(v, text, text);
}

static int valid_combo(const char *model, int duration, const char *res)
{
    if (duration != 6 && duration != 10)
        return 0;
    if (strcmp(res, "768P") && strcmp(res, "1080P"))
        return 0;
    /* Hailuo: 1080P only for 6 s */
    return !(duration == 10 && !strcmp(res, "1080P") && !strncmp(model, "MiniMax-Hailuo", 14));
}

void vidjob__decode(const struct ixjob *ix, struct vidjob__req *out)
{
    struct json_object *lim;
    out->upload_limit = json_object_object_get_ex(ix->root, "attachment_size_limit", &lim) &&
                                json_object_get_int64(lim) > 0
                            ? json_object_get_int64(lim)
                            : DEFAULT_UPLOAD_LIMIT;
    const char *prompt = ixjob_option(ix, "prompt"), *len = ixjob_option(ix, "length"),
               *res = ixjob_option(ix, "resolution");
    out->prompt = prompt ? prompt : "";
    out->duration = len ? atoi(len) : 6;
    out->resolution = res ? res : "768P";
}

static void on_interaction(struct bus *b, struct bus_job *job, void *arg)
{
    (void)b;
    struct vidjob *g = arg;
    struct ixjob ix;
    if (ixjob_parse(&ix, job->payload) || !ix.user_id || !ix.channel_id || !ix.cmd || ix.cmd->role != ROLE_VIDEO ||
        ix.cmd->id != VIDEO_CMD_VIDEO) {
        ixjob_free(&ix);
        bus_finish(job, BUS_FAILED, "not a video command");
        return;
    }
    const struct config *cfg = core_config(g->core);
    struct video *v = video_new(g, job);
    snprintf(v->iid, sizeof(v->iid), "%s", ix.id);
    snprintf(v->app_id, sizeof(v->app_id), "%s", ix.app_id);
    snprintf(v->channel_id, sizeof(v->channel_id), "%s", ix.channel_id);
    snprintf(v->guild_id, sizeof(v->guild_id), "%s", ix.guild_id ? ix.guild_id : "");
    snprintf(v->user_id, sizeof(v->user_id), "%s", ix.user_id);
    v->token = mem_strdup(ix.token);
    v->ko = ix.ko;
    v->created_ms = clock_wall_ms();
    v->token_expires_ms = ix.token_expires_ms ? ix.token_expires_ms : v->created_ms + 15 * 60000;
    struct vidjob__req rq;
    vidjob__decode(&ix, &rq);
    v->upload_limit = rq.upload_limit;
    v->prompt = mem_strdup(rq.prompt);
    v->duration = rq.duration;
    snprintf(v->resolution, sizeof(v->resolution), "%s", rq.resolution);
    snprintf(v->model, sizeof(v->model), "%s", cfg->minimax_video_model);
    v->lim = (struct ulimit_req){.prefix = cfg->redis_prefix, .kind = "video", .user_id = v->user_id,
                                 .rate = cfg->user_rate_limit, .window_s = cfg->user_rate_window_sec,
                                 .daily = cfg->user_daily_videos};
    ixjob_free(&ix);
    if (!v->prompt[0]) {
        finish_told(v, "어떤 영상을 만들지 설명을 적어 주세요.", "Please describe the video.");
        return;
    }
    if (!valid_combo(v->model, v->duration, v->resolution)) {
        finish_told(v, "1080P는 6초 영상에서만 쓸 수 있습니다. 길이나 해상도를 바꿔 주세요.",
                    "1080P is available for 6-second videos only; change the length or the resolution.");
        return;
    }
    if (!g->mm) {
        finish_told(v, "이 서버에는 MiniMax 키가 설정되지 않아 /비디오를 쓸 수 없습니다.",
                    "/비디오 is off here: no MiniMax key is configured.");
        return;
    }
    struct store *s = core_store(g->core);
    if (!s || !store_up(s)) {
        /* a paid, minutes-long job is only started when it can be made durable */
        finish_told(v, "지금은 영상 작업을 안전하게 저장할 수 없어 시작하지 않았습니다 (데이터베이스 연결 없음). 잠시 후 다시 시도해 주세요.",
                    "Videos cannot be started right now: the job could not be saved (no database); please try "
                    "again shortly.");
        return;
    }
    jobctx_wait(&v->jc);
    ulimit_check(core_loop(g->core), core_redis(g->core), &v->lim, on_limits, v);
}

/* ---- the role ---------------------------------------------------------------------------- */

static void on_scan_closed(uv_handle_t *h)
{
    struct vidjob *g = h->data;
    g->scanning = -1; /* the timer is gone */
    vidjob_free_maybe(g);
}

static void vidjob_free_maybe(struct vidjob *g)
{
    if (!g->closing || g->active || g->scanning != -1)
        return;
    if (g->mm)
        keypool_free(g->mm);
    mem_free(g);
}

static void vidjob_close(void *arg)
{
    struct vidjob *g = arg;
    g->closing = 1;
    g->scanning = 0;
    uv_close((uv_handle_t *)&g->scan, on_scan_closed);
    for (struct video *v = g->active, *next; v; v = next) {
        next = v->next;
        video_close(v);
    }
}

static void vidjob_store_up(void *arg)
{
    struct vidjob *g = arg;
    /* final writes that failed while PostgreSQL was away go first */
    for (struct video *v = g->active; v; v = v->next)
        if (v->final == FINAL_PENDING && !v->final_inflight && !v->jc.ended)
            final_write(v);
    scan(g);
}

static void vidjob_health(struct json_object *health, void *arg)
{
    struct vidjob *g = arg;
    if (g->mm)
        keypool_health(g->mm, uv_now(core_loop(g->core)), health);
    int n = 0;
    for (struct video *v = g->active; v; v = v->next)
        n += v->row != 0 && !v->jc.ended;
    json_object_object_add(health, "videos_in_progress", json_object_new_int(n));
}

static void on_adopted(struct video *probe, int status, const PGresult *res)
{
    struct vidjob *g = probe->g;
    jobctx_end(&probe->jc);
    if (status || g->closing)
        return;
    log_info("routing: video jobs of dead instances adopted", LF_STR("owner", core_config(g->core)->name),
             LF_STR("count", PQcmdTuples((PGresult *)res)));
    scan(g);
}

/* Taking the video role over: the rows the dead video instances owned
 * become ours, and are resumed like our own after a restart. */
static void vidjob_takeover(enum role r, int on, const char *dead, void *arg)
{
    struct vidjob *g = arg;
    struct store *s = core_store(g->core);
    if (r != ROLE_VIDEO || !on || !dead || !*dead || g->closing || !s || !store_up(s))
        return;
    struct video *probe = video_new(g, NULL);
    snprintf(probe->iid, sizeof(probe->iid), "-adopt-");
    const char *p[] = {core_config(g->core)->name, dead};
    if (vq(probe,
           "UPDATE jobs SET owner = $1, updated_at = now() WHERE kind = 'video' AND owner = ANY "
           "(string_to_array($2, ',')) AND state NOT IN ('done', 'failed')",
           2, p, on_adopted)) {
        jobctx_end(&probe->jc);
    }
}

static void vidjob_redis_up(void *arg)
{
    struct vidjob *g = arg;
    if (g->mm)
        keypool_resync(g->mm, uv_now(core_loop(g->core)));
}

int vidjob_setup(struct core *c)
{
    const struct config *cfg = core_config(c);
    struct vidjob *g = mem_calloc(1, sizeof(*g));
    g->core = c;
    if (secret_isset(&cfg->minimax_keys) &&
        keypool_new(core_loop(c), core_redis(c), cfg->redis_prefix, "minimax", cfg->name, &cfg->minimax_keys, NULL,
                    &g->mm))
        g->mm = NULL;
    if (!g->mm)
        log_warn("no MINIMAX_API_KEY for this instance: /비디오 answers that it is off",
                 LF_INT("key_index", cfg->key_index));
    if (mkdir(cfg->video_dir, 0700) && errno != EEXIST)
        log_warn("VIDEO_DIR cannot be created: finished videos will be linked, not attached",
                 LF_STR("dir", cfg->video_dir), LF_ERR(-errno));
    if (!cfg->database_url[0])
        log_warn("DATABASE_URL not set: /비디오 refuses to start videos it could not resume");
    uv_timer_init(core_loop(c), &g->scan);
    g->scan.data = g;
    uv_timer_start(&g->scan, on_scan_timer, SCAN_EVERY_MS, SCAN_EVERY_MS);
    uv_unref((uv_handle_t *)&g->scan);
    log_info("video ready", LF_STR("minimax", cfg->minimax_base_url), LF_STR("model", cfg->minimax_video_model),
             LF_INT("keys", g->mm ? keypool_size(g->mm) : 0), LF_INT("timeout_min", cfg->video_timeout_min));
    core_at_close(c, vidjob_close, g);
    struct core_hooks hooks = {.health = vidjob_health, .redis_up = vidjob_redis_up, .store_up = vidjob_store_up,
                               .takeover = vidjob_takeover};
    core_add_hooks(c, &hooks, g);
    return bus_register_role(core_bus(c), "video", "discord.interaction", on_interaction, g);
}
