#include "imgjob.h"
#include "commands.h"

#include <errno.h>
#include <json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/bus.h"
#include "service/jobctx.h"
#include "process/core.h"
#include "service/dl.h"
#include "discord/dpath.h"
#include "discord/drest.h"
#include "base/err.h"
#include "discord/ixjob.h"
#include "base/jtext.h"
#include "service/keypool.h"
#include "base/log.h"
#include "base/mem.h"
#include "process/perf.h"
#include "service/minimax.h"
#include "service/stability.h"
#include "io/store.h"
#include "service/ulimit.h"
#include "service/usage.h"

#define PIC_MAX 4                      /* images per command */
#define PIC_DL_MAX (20u << 20)         /* one generated image downloaded */
#define SOURCE_MAX (10u << 20)         /* an image given to /img (Stability's limit) */
#define DEFAULT_UPLOAD_LIMIT (10 << 20) /* when the interaction does not say */

enum provider { P_MINIMAX, P_STABILITY };

struct imgjob {
    struct core *core;
    struct keypool *mm, *st; /* NULL: that provider has no key here */
};

struct pic {
    struct imgjob *g;
    struct jobctx jc;    /* owed: provider, downloads, limits, the edit */
    struct ixjob ix;
    enum provider prov;
    int ndl;             /* downloads of generated images still running */
    struct ixjob_edit *edit;
    void (*after_edit)(struct pic *p);
    /* the request */
    const char *prompt, *ratio;
    int count;
    struct ixjob_attachment att;
    int has_image;
    double strength;
    unsigned char *src;
    size_t src_len;
    const char *src_type;
    struct ulimit_req lim;
    int charged;         /* the daily quota counted this request */
    int key_index, attempts;
    /* the result */
    struct {
        unsigned char *data;
        size_t len;
        char type[32];
        char *url; /* where MiniMax put it */
    } out[PIC_MAX];
    int nout, nfailed;
    struct dl *dls[PIC_MAX];
    char model[64];
    double credits;
    char *final_json;
    struct drest_file files[PIC_MAX];
    char names[PIC_MAX][32];
    int nfiles;
    int upload_failed;
    char note[400];
    const char *failure;
};

static void mm_start(struct pic *p);
static void st_start(struct pic *p);

/* ---- small things ---------------------------------------------------------- */

static const char *say(const struct pic *p, const char *ko, const char *en)
{
    return p->ix.ko ? ko : en;
}

static void pic_release(void *arg)
{
    struct pic *p = arg;
    for (int i = 0; i < PIC_MAX; i++) {
        mem_free(p->out[i].data);
        mem_free(p->out[i].url);
    }
    mem_free(p->src);
    mem_free(p->final_json);
    ixjob_free(&p->ix);
    mem_free(p);
}

static void pic_end(struct pic *p, enum bus_result r, const char *why)
{
    jobctx_finish(&p->jc, r, why);
}

/* The bus is closing with the job in flight: downloads call back cancelled. */
static void pic_stop(void *arg)
{
    struct pic *p = arg;
    if (p->edit) {
        ixjob_edit_cancel(p->edit);
        p->edit = NULL;
        jobctx_forget(&p->jc);
    }
    for (int i = 0; i < PIC_MAX; i++)
        if (p->dls[i])
            dl_cancel(p->dls[i]);
}

static char *content_json(const char *text)
{
    struct json_object *o = json_object_new_object(), *am = json_object_new_object();
    json_object_object_add(o, "content", json_object_new_string(text));
    json_object_object_add(am, "parse", json_object_new_array());
    json_object_object_add(o, "allowed_mentions", am);
    return jtext_take(o);
}

/* ---- talking to the user ------------------------------------------------------ */

static void on_edit(int status, int code, void *arg)
{
    struct pic *p = arg;
    p->edit = NULL;
    if (!jobctx_back(&p->jc))
        return;
    if (status)
        log_warn("image reply not delivered", LF_INT("status", status), LF_INT("code", code));
    void (*next)(struct pic *) = p->after_edit;
    p->after_edit = NULL;
    if (next)
        next(p);
}

/* Edit the deferred response; run next once Discord has it (or refused it).
 * Edits never overlap, so a late progress edit cannot hide the result.
 * Returns -1 when the edit could not even start: the job is over then and
 * p may be gone. */
static int send_edit(struct pic *p, const char *json, const struct drest_file *files, int nfiles,
                      void (*next)(struct pic *))
{
    p->after_edit = next;
    jobctx_wait(&p->jc);
    p->edit = ixjob_edit_files(core_loop(p->g->core), core_rest(p->g->core), &p->ix, json, files, nfiles, on_edit, p);
    if (!p->edit) {
        /* bad arguments: on_edit will not run */
        jobctx_forget(&p->jc);
        pic_end(p, BUS_FAILED, "job without an application id or token");
        return -1;
    }
    return 0;
}

static void told(struct pic *p)
{
    pic_end(p, p->failure ? BUS_FAILED : BUS_DONE, p->failure);
}

static void tell_now(struct pic *p)
{
    char *json = content_json(p->note);
    send_edit(p, json, NULL, 0, told);
    mem_free(json);
}

/* Tell the user why there is no image (after any edit in flight). failure
 * NULL: a deliberate answer (limits, refusals), not a failed job. Units
 * charged to the daily quota are given back. */
static void tell(struct pic *p, const char *failure, const char *ko, const char *en)
{
    snprintf(p->note, sizeof(p->note), "%s", say(p, ko, en));
    p->failure = failure;
    if (p->charged) {
        ulimit_refund(core_redis(p->g->core), &p->lim);
        p->charged = 0;
    }
    if (p->edit)
        p->after_edit = tell_now;
    else
        tell_now(p);
}

/* ---- delivery ----------------------------------------------------------------- */

static void on_gallery(const struct drest_resp *r, void *arg)
{
    (void)arg;
    if (r->err && r->err != BC_ESHUTDOWN)
        log_warn("gallery post failed", LF_INT("status", r->status), LF_INT("code", r->code),
                 LF_STR("error", r->errstr));
}

static void record(struct pic *p)
{
    struct store *s = core_store(p->g->core);
    if (!s || !store_up(s))
        return;
    struct usage_rec u = {.user_id = p->ix.user_id, .guild_id = p->ix.guild_id, .kind = "image",
                          .model = p->model, .requests = 1, .units = p->nfiles, .credits = p->credits};
    usage_add(s, &u, NULL, NULL);
}

static void gallery(struct pic *p)
{
    const struct config *cfg = core_config(p->g->core);
    char text[1900], path[DPATH_MAX];
    if (!cfg->gallery_channel[0] || !core_rest(p->g->core) || !p->nfiles ||
        dpath_channel_messages(path, sizeof(path), cfg->gallery_channel))
        return;
    snprintf(text, sizeof(text), "%s <@%s>: %.1500s", p->ix.ko ? "🎨 작성자" : "🎨 by", p->ix.user_id ? p->ix.user_id : "?",
             p->prompt);
    struct json_object *o = json_object_new_object(), *am = json_object_new_object(),
                       *atts = json_object_new_array();
    json_object_object_add(o, "content", json_object_new_string(text));
    json_object_object_add(am, "parse", json_object_new_array());
    json_object_object_add(o, "allowed_mentions", am);
    for (int i = 0; i < p->nfiles; i++) {
        struct json_object *a = json_object_new_object();
        json_object_object_add(a, "id", json_object_new_int(i));
        json_object_object_add(a, "filename", json_object_new_string(p->files[i].name));
        json_object_array_add(atts, a);
    }
    json_object_object_add(o, "attachments", atts);
    char *json = jtext_take(o);
    struct drest_req rq = {.method = "POST", .path = path, .json = json, .files = p->files, .nfiles = p->nfiles,
                           .bot_auth = 1};
    if (drest_request(core_rest(p->g->core), &rq, on_gallery, NULL))
        log_warn("gallery post not queued");
    mem_free(json);
}

static void delivered(struct pic *p)
{
    if (p->upload_failed) {
        pic_end(p, BUS_FAILED, "images not delivered");
        return;
    }
    if (p->jc.job)
        bus_mark_done(p->jc.job);
    gallery(p);
    record(p);
    pic_end(p, BUS_DONE, NULL);
}

static void on_upload(int status, int code, void *arg);

static const char *ext_of(const char *type)
{
    if (!strcmp(type, "image/jpeg"))
        return "jpg";
    if (!strcmp(type, "image/webp"))
        return "webp";
    if (!strcmp(type, "image/gif"))
        return "gif";
    return "png";
}

/* The deferred response gets the images and an embed with the prompt. */
static void upload(struct pic *p)
{
    struct json_object *limit_o;
    int64_t limit = DEFAULT_UPLOAD_LIMIT;
    if (json_object_object_get_ex(p->ix.root, "attachment_size_limit", &limit_o) && json_object_get_int64(limit_o) > 0)
        limit = json_object_get_int64(limit_o);
    struct buf links;
    buf_init(&links, 8192);
    p->nfiles = 0;
    for (int i = 0; i < p->nout; i++) {
        if ((int64_t)p->out[i].len > limit) {
            if (p->out[i].url)
                buf_printf(&links, "%s\n", p->out[i].url);
            continue;
        }
        snprintf(p->names[p->nfiles], sizeof(p->names[0]), "image-%d.%s", p->nfiles + 1, ext_of(p->out[i].type));
        p->files[p->nfiles] = (struct drest_file){.name = p->names[p->nfiles], .content_type = p->out[i].type,
                                                  .data = p->out[i].data, .len = p->out[i].len};
        p->nfiles++;
    }
    struct json_object *o = json_object_new_object(), *embed = json_object_new_object(),
                       *embeds = json_object_new_array(), *atts = json_object_new_array(),
                       *am = json_object_new_object(), *footer = json_object_new_object();
    char title[80], foot[160];
    snprintf(title, sizeof(title), "%s", say(p, "🎨 완성된 이미지", "🎨 Your image"));
    json_object_object_add(embed, "title", json_object_new_string(title));
    json_object_object_add(embed, "description", json_object_new_string(p->prompt));
    json_object_object_add(embed, "color", json_object_new_int(0x5865F2));
    if (p->nfiles) {
        struct json_object *img = json_object_new_object();
        char ref[64];
        snprintf(ref, sizeof(ref), "attachment://%s", p->files[0].name);
        json_object_object_add(img, "url", json_object_new_string(ref));
        json_object_object_add(embed, "image", img);
    }
    if (p->prov == P_MINIMAX)
        snprintf(foot, sizeof(foot), "MiniMax %s · %s · %d", p->model, p->ratio, p->nout);
    else
        snprintf(foot, sizeof(foot), "Stability %s%s", p->model, p->has_image ? " · image-to-image" : "");
    json_object_object_add(footer, "text", json_object_new_string(foot));
    json_object_object_add(embed, "footer", footer);
    json_object_array_add(embeds, embed);
    json_object_object_add(o, "embeds", embeds);
    for (int i = 0; i < p->nfiles; i++) {
        struct json_object *a = json_object_new_object();
        json_object_object_add(a, "id", json_object_new_int(i));
        json_object_object_add(a, "filename", json_object_new_string(p->files[i].name));
        json_object_array_add(atts, a);
    }
    json_object_object_add(o, "attachments", atts);
    struct buf content;
    buf_init(&content, 4096);
    if (p->nfailed)
        buf_printf(&content, "%s\n", p->ix.ko ? "(일부 이미지는 만들지 못했습니다)" : "(some images could not be made)");
    if (links.len)
        buf_printf(&content, "%s\n%s", p->ix.ko ? "첨부하기에 너무 큰 이미지:" : "Too big to attach:", buf_str(&links));
    json_object_object_add(o, "content", json_object_new_string(buf_str(&content)));
    json_object_object_add(am, "parse", json_object_new_array());
    json_object_object_add(o, "allowed_mentions", am);
    buf_free(&content);
    buf_free(&links);
    mem_free(p->final_json);
    p->final_json = jtext_take(o);
    p->after_edit = delivered;
    jobctx_wait(&p->jc);
    p->edit = ixjob_edit_files(core_loop(p->g->core), core_rest(p->g->core), &p->ix, p->final_json, p->files,
                               p->nfiles, on_upload, p);
    if (!p->edit) {
        /* bad arguments: on_upload will not run */
        jobctx_forget(&p->jc);
        pic_end(p, BUS_FAILED, "job without an application id or token");
    }
}

static void on_upload(int status, int code, void *arg)
{
    struct pic *p = arg;
    if (status && p->jc.job) {
        log_warn("images not delivered", LF_INT("status", status), LF_INT("code", code));
        p->upload_failed = 1;
    }
    on_edit(status, code, arg);
}

static void deliver(struct pic *p)
{
    if (p->jc.job && p->jc.job->lease_lost) {
        log_warn("image job taken over by another consumer; not answering", LF_STR("id", p->jc.job->id));
        pic_end(p, BUS_DONE, NULL);
        return;
    }
    if (!p->nout) {
        tell(p, "no image arrived", "이미지를 받아오지 못했습니다. 잠시 후 다시 시도해 주세요.",
             "The images could not be fetched; please try again shortly.");
        return;
    }
    if (p->edit)
        p->after_edit = upload;
    else
        upload(p);
}

/* ---- key pool ------------------------------------------------------------------ */

static struct keypool *pool(struct pic *p)
{
    return p->prov == P_MINIMAX ? p->g->mm : p->g->st;
}

/* A key, or the user is told why there is none (returns NULL). */
static const char *pick_key(struct pic *p)
{
    struct keypool_pick pk;
    int rc = keypool_pick(pool(p), uv_now(core_loop(p->g->core)), &pk);
    if (!rc) {
        p->key_index = pk.index;
        return pk.key;
    }
    char ko[200], en[200];
    unsigned secs = (unsigned)((pk.retry_in_ms + 999) / 1000);
    if (rc == KEYPOOL_EEXHAUSTED) {
        snprintf(ko, sizeof(ko), "이미지 서비스 키를 사용할 수 없습니다. 운영자에게 알려 주세요.");
        snprintf(en, sizeof(en), "No image service key is usable; please tell the server's operators.");
    } else {
        snprintf(ko, sizeof(ko), "이미지 서비스를 잠시 사용할 수 없습니다. %u초 후 다시 시도해 주세요.", secs);
        snprintf(en, sizeof(en), "The image service is unavailable for now; please try again in %u s.", secs);
    }
    tell(p, NULL, ko, en);
    return NULL;
}

/* After a provider failure: another key, or words for the user. */
static void provider_failed(struct pic *p, int status, const char *message)
{
    int key_problem = status == PROV_RATE || status == PROV_QUOTA || status == PROV_AUTH;
    if (key_problem && ++p->attempts < keypool_size(pool(p))) {
        if (p->prov == P_MINIMAX)
            mm_start(p);
        else
            st_start(p);
        return;
    }
    log_warn("image request failed", LF_STR("provider", p->prov == P_MINIMAX ? "minimax" : "stability"),
             LF_STR("status", prov_status_name(status)), LF_STR("message", message ? message : ""));
    char ko[400], en[400];
    switch (status) {
    case PROV_REFUSED:
        tell(p, NULL, "이 설명은 안전 정책에 걸려 이미지를 만들 수 없습니다. 다른 표현으로 시도해 주세요.",
             "This prompt was refused by the provider's safety policy; please try different words.");
        return;
    case PROV_FILTERED:
        tell(p, NULL, "만든 이미지가 안전 필터에 걸려 보여 드릴 수 없습니다. 다른 설명으로 시도해 주세요.",
             "The image was caught by the provider's safety filter; please try a different prompt.");
        return;
    case PROV_BAD_REQUEST:
        snprintf(ko, sizeof(ko), "요청을 처리할 수 없습니다: %.200s", message ? message : "");
        snprintf(en, sizeof(en), "The request was not accepted: %.200s", message ? message : "");
        tell(p, "bad request", ko, en);
        return;
    case PROV_RATE:
    case PROV_QUOTA:
    case PROV_AUTH:
        tell(p, "no usable key", "지금은 사용할 수 있는 이미지 서비스 키가 없습니다. 잠시 후 다시 시도해 주세요.",
             "No image service key is usable right now; please try again later.");
        return;
    case PROV_TIMEOUT:
        tell(p, "provider timeout", "이미지 생성이 너무 오래 걸려 중단했습니다. 다시 시도해 주세요.",
             "The image took too long; please try again.");
        return;
    default:
        tell(p, "provider error", "이미지 서비스에 문제가 있습니다. 잠시 후 다시 시도해 주세요.",
             "The image service is having trouble; please try again shortly.");
    }
}

static void report(struct pic *p, int status, long retry_after_ms)
{
    if (status != PROV_CANCELLED)
        perf_provider(core_perf(p->g->core), p->prov == P_MINIMAX ? "minimax" : "stability", prov_status_name(status));
    if (status != PROV_CANCELLED)
        keypool_report(pool(p), uv_now(core_loop(p->g->core)), p->key_index, prov_keypool_outcome(status),
                       retry_after_ms > 0 ? (int)retry_after_ms : 0);
}

/* ---- MiniMax ---------------------------------------------------------------------- */

static void on_mm_download(const struct dl_result *r, void *arg);

struct dl_slot {
    struct pic *p;
    int i;
};

static void on_mm(const struct mm_result *r, void *arg)
{
    struct pic *p = arg;
    if (!jobctx_back(&p->jc))
        return;
    report(p, r->status, r->retry_after_ms);
    if (r->status != PROV_OK) {
        provider_failed(p, r->status, r->message);
        return;
    }
    p->nfailed = r->failed_count;
    size_t n = r->nurls ? r->nurls : r->nimages;
    for (size_t i = 0; i < n && p->nout < PIC_MAX; i++) {
        int k = p->nout++;
        if (r->nimages) {
            p->out[k].data = mem_alloc(r->images[i].len);
            memcpy(p->out[k].data, r->images[i].data, r->images[i].len);
            p->out[k].len = r->images[i].len;
            const char *t = dl_sniff_image(p->out[k].data, p->out[k].len);
            snprintf(p->out[k].type, sizeof(p->out[k].type), "%s", t ? t : "image/png");
        } else {
            p->out[k].url = mem_strdup(r->urls[i]);
        }
    }
    if (!r->nurls) {
        deliver(p);
        return;
    }
    /* fetch every image; the last download delivers */
    for (int k = 0; k < p->nout; k++) {
        struct dl_slot *s = mem_alloc(sizeof(*s));
        s->p = p;
        s->i = k;
        struct dl_req rq = {.url = p->out[k].url, .max_bytes = PIC_DL_MAX, .timeout_ms = 60000};
        if (dl_get(core_http(p->g->core), &rq, on_mm_download, s, &p->dls[k])) {
            mem_free(s);
            continue;
        }
        p->ndl++;
        jobctx_wait(&p->jc);
    }
    if (!p->ndl)
        deliver(p);
}

static void on_mm_download(const struct dl_result *r, void *arg)
{
    struct dl_slot *s = arg;
    struct pic *p = s->p;
    int k = s->i;
    mem_free(s);
    p->dls[k] = NULL;
    p->ndl--;
    if (!jobctx_back(&p->jc))
        return;
    const char *type = r->err ? NULL : dl_sniff_image(r->data, r->len);
    if (type) {
        p->out[k].data = mem_alloc(r->len);
        memcpy(p->out[k].data, r->data, r->len);
        p->out[k].len = r->len;
        snprintf(p->out[k].type, sizeof(p->out[k].type), "%s", type);
    } else {
        log_warn("generated image not fetched", LF_INT("err", r->err), LF_INT("status", r->status));
    }
    if (p->ndl)
        return;
    /* all back: keep the fetched ones, in order */
    int n = 0;
    for (int i = 0; i < p->nout; i++) {
        if (p->out[i].data) {
            if (i != n) {
                p->out[n] = p->out[i];
                memset(&p->out[i], 0, sizeof(p->out[i]));
            }
            n++;
        } else {
            p->nfailed++;
        }
    }
    p->nout = n;
    deliver(p);
}

static void mm_start(struct pic *p)
{
    const struct config *cfg = core_config(p->g->core);
    const char *key = pick_key(p);
    if (!key)
        return;
    snprintf(p->model, sizeof(p->model), "%s", cfg->minimax_image_model);
    struct mm_image_req rq = {.base_url = cfg->minimax_base_url, .api_key = key, .model = cfg->minimax_image_model,
                              .prompt = p->prompt, .aspect_ratio = p->ratio, .n = p->count,
                              .timeout_ms = (long)cfg->image_timeout_sec * 1000};
    int rc = mm_image(core_http(p->g->core), &rq, on_mm, p);
    if (rc) {
        tell(p, "request not sent", "이미지 요청을 보낼 수 없습니다. 설명을 확인해 주세요.",
             "The image request could not be sent; please check the prompt.");
        return;
    }
    jobctx_wait(&p->jc);
}

/* ---- Stability ------------------------------------------------------------------- */

static double credits_of(const char *endpoint, const char *model)
{
    if (!strcmp(endpoint, "ultra"))
        return 8;
    if (!strcmp(endpoint, "core"))
        return 3;
    if (model && !strcmp(model, "sd3.5-large-turbo"))
        return 4;
    if (model && !strcmp(model, "sd3.5-medium"))
        return 3.5;
    return 6.5; /* sd3.5-large */
}

static void on_st(const struct st_result *r, void *arg)
{
    struct pic *p = arg;
    if (!jobctx_back(&p->jc))
        return;
    report(p, r->status, r->retry_after_ms);
    if (r->status != PROV_OK) {
        provider_failed(p, r->status, r->message);
        return;
    }
    const char *type = dl_sniff_image(r->image, r->image_len);
    if (!type) {
        provider_failed(p, PROV_PROTOCOL, "not an image");
        return;
    }
    p->out[0].data = mem_alloc(r->image_len);
    memcpy(p->out[0].data, r->image, r->image_len);
    p->out[0].len = r->image_len;
    snprintf(p->out[0].type, sizeof(p->out[0].type), "%s", type);
    p->nout = 1;
    deliver(p);
}

static void st_start(struct pic *p)
{
    const struct config *cfg = core_config(p->g->core);
    const char *key = pick_key(p);
    if (!key)
        return;
    const char *endpoint = !p->has_image ? "core" : cfg->stability_img2img == IMG2IMG_ULTRA ? "ultra" : "sd3";
    const char *model = !strcmp(endpoint, "sd3") ? cfg->stability_sd3_model : NULL;
    snprintf(p->model, sizeof(p->model), "%s", model ? model : endpoint);
    p->credits = credits_of(endpoint, model);
    struct st_req rq = {.base_url = cfg->stability_base_url, .api_key = key, .endpoint = endpoint, .model = model,
                        .prompt = p->prompt, .output_format = "png", .image = p->has_image ? p->src : NULL,
                        .image_len = p->has_image ? p->src_len : 0, .image_type = p->src_type,
                        .strength = p->strength, .timeout_ms = (long)cfg->image_timeout_sec * 1000};
    int rc = st_generate(core_http(p->g->core), &rq, on_st, p);
    if (rc) {
        tell(p, "request not sent", "이미지 요청을 보낼 수 없습니다. 설명을 확인해 주세요.",
             "The image request could not be sent; please check the prompt.");
        return;
    }
    jobctx_wait(&p->jc);
}

static int allowed_type(const char *t)
{
    return t && (!strcmp(t, "image/png") || !strcmp(t, "image/jpeg") || !strcmp(t, "image/webp"));
}

static void on_source(const struct dl_result *r, void *arg)
{
    struct pic *p = arg;
    p->dls[0] = NULL;
    if (!jobctx_back(&p->jc))
        return;
    if (r->err == BC_ETOOBIG) {
        tell(p, NULL, "첨부한 이미지가 너무 큽니다 (최대 10MB).", "The attached image is too big (10 MB at most).");
        return;
    }
    if (r->err) {
        log_warn("attachment not fetched", LF_INT("err", r->err), LF_INT("status", r->status));
        tell(p, "attachment not fetched", "첨부한 이미지를 가져오지 못했습니다. 다시 올려 주세요.",
             "The attached image could not be fetched; please attach it again.");
        return;
    }
    const char *type = dl_sniff_image(r->data, r->len);
    if (!allowed_type(type)) {
        tell(p, NULL, "첨부 파일이 PNG, JPEG, WEBP 이미지가 아닙니다.", "The attachment is not a PNG, JPEG or WEBP image.");
        return;
    }
    p->src = mem_alloc(r->len);
    memcpy(p->src, r->data, r->len);
    p->src_len = r->len;
    p->src_type = type;
    st_start(p);
}

/* ---- the job ----------------------------------------------------------------------- */

static void progress_sent(struct pic *p)
{
    (void)p;
}

static void start_work(struct pic *p)
{
    char text[300];
    if (p->prov == P_MINIMAX)
        snprintf(text, sizeof(text), p->ix.ko ? "🎨 이미지 %d장을 만드는 중입니다… (%s)" : "🎨 Making %d image(s)… (%s)",
                 p->count, p->ratio);
    else
        snprintf(text, sizeof(text), "%s",
                 p->has_image ? say(p, "🎨 이미지를 바꾸는 중입니다…", "🎨 Transforming your image…")
                              : say(p, "🎨 이미지를 만드는 중입니다…", "🎨 Making your image…"));
    char *json = content_json(text);
    int rc = send_edit(p, json, NULL, 0, progress_sent);
    mem_free(json);
    if (rc)
        return;
    if (p->prov == P_MINIMAX) {
        mm_start(p);
    } else if (p->has_image) {
        struct dl_req rq = {.url = p->att.url, .max_bytes = SOURCE_MAX, .timeout_ms = 30000};
        if (dl_get(core_http(p->g->core), &rq, on_source, p, &p->dls[0]))
            tell(p, "attachment not fetched", "첨부한 이미지를 가져오지 못했습니다.", "The attached image could not be fetched.");
        else
            jobctx_wait(&p->jc);
    } else {
        st_start(p);
    }
}

static void on_limits(enum ulimit_verdict v, int64_t wait_ms, void *arg)
{
    struct pic *p = arg;
    if (!jobctx_back(&p->jc))
        return;
    if (v == ULIMIT_OK) {
        p->charged = p->lim.daily > 0;
        start_work(p);
        return;
    }
    char text[300];
    ulimit_say(v, wait_ms, p->lim.daily, p->ix.ko, "이미지", "images", text, sizeof(text));
    tell(p, NULL, text, text);
}

int imgjob__decode(const struct ixjob *ix, double default_strength, struct imgjob__req *out)
{
    memset(out, 0, sizeof(*out));
    if (!ix->cmd || ix->cmd->role != ROLE_IMAGE)
        return -EINVAL;
    switch ((enum image_cmd)ix->cmd->id) {
    case IMAGE_CMD_MINIMAX: {
        out->ratio = ixjob_option(ix, "ratio");
        static const char *const ratios[] = {"1:1", "16:9", "4:3", "3:2", "2:3", "3:4", "9:16", "21:9"};
        int ok = !out->ratio;
        for (size_t i = 0; out->ratio && i < sizeof(ratios) / sizeof(ratios[0]); i++)
            if (!strcmp(out->ratio, ratios[i]))
                ok = 1, out->ratio = ratios[i];
        if (!out->ratio || !ok)
            out->ratio = "1:1";
        double n = 1;
        /* json-c reads NaN too; a count that is not a number is the default */
        if (ixjob_option_num(ix, "count", &n) && isnan(n))
            n = 1;
        out->count = n < 1 ? 1 : n > PIC_MAX ? PIC_MAX : (int)n;
        break;
    }
    case IMAGE_CMD_STABILITY: {
        out->stability = 1;
        out->count = 1;
        out->has_image = ixjob_attachment(ix, "image", &out->att);
        double s;
        out->strength = default_strength;
        if (ixjob_option_num(ix, "strength", &s) && !isnan(s))
            out->strength = s < 0 ? 0 : s > 1 ? 1 : s;
        break;
    }
    }
    out->prompt = ixjob_option(ix, "prompt");
    return 0;
}

static void on_interaction(struct bus *b, struct bus_job *job, void *arg)
{
    (void)b;
    struct imgjob *g = arg;
    struct pic *p = mem_calloc(1, sizeof(*p));
    if (ixjob_parse(&p->ix, job->payload) || !p->ix.user_id) {
        ixjob_free(&p->ix);
        mem_free(p);
        bus_finish(job, BUS_FAILED, "bad interaction payload");
        return;
    }
    p->g = g;
    jobctx_start(&p->jc, job, pic_stop, pic_release, p);
    const struct config *cfg = core_config(g->core);
    struct imgjob__req rq;
    if (imgjob__decode(&p->ix, cfg->img2img_strength, &rq)) {
        pic_end(p, BUS_FAILED, "not an image command");
        return;
    }
    p->prov = rq.stability ? P_STABILITY : P_MINIMAX;
    p->prompt = rq.prompt;
    p->ratio = rq.ratio;
    p->count = rq.count;
    p->has_image = rq.has_image;
    p->att = rq.att;
    p->strength = rq.strength;
    if (!p->prompt || !*p->prompt) {
        tell(p, NULL, "무엇을 그릴지 설명을 적어 주세요.", "Please describe what to draw.");
        return;
    }
    if (!pool(p)) {
        tell(p, NULL,
             p->prov == P_MINIMAX ? "이 서버에는 MiniMax 키가 설정되지 않아 /이미지를 쓸 수 없습니다."
                                  : "이 서버에는 Stability 키가 설정되지 않아 /img를 쓸 수 없습니다.",
             p->prov == P_MINIMAX ? "/이미지 is off here: no MiniMax key is configured."
                                  : "/img is off here: no Stability key is configured.");
        return;
    }
    if (p->has_image) {
        /* checked before anything is spent */
        if (p->att.content_type && !allowed_type(p->att.content_type)) {
            tell(p, NULL, "첨부 파일은 PNG, JPEG, WEBP 이미지여야 합니다.", "The attachment must be a PNG, JPEG or WEBP image.");
            return;
        }
        if (p->att.size > (int64_t)SOURCE_MAX) {
            tell(p, NULL, "첨부한 이미지가 너무 큽니다 (최대 10MB).", "The attached image is too big (10 MB at most).");
            return;
        }
    }
    p->lim = (struct ulimit_req){.prefix = cfg->redis_prefix, .kind = "image", .user_id = p->ix.user_id,
                                 .rate = cfg->user_rate_limit, .window_s = cfg->user_rate_window_sec,
                                 .daily = cfg->user_daily_images, .cost = p->count};
    jobctx_wait(&p->jc);
    ulimit_check(core_loop(g->core), core_redis(g->core), &p->lim, on_limits, p);
}

/* ---- the role ------------------------------------------------------------------------ */

static void imgjob_health(struct json_object *health, void *arg)
{
    struct imgjob *g = arg;
    uint64_t now = uv_now(core_loop(g->core));
    if (g->mm)
        keypool_health(g->mm, now, health);
    if (g->st)
        keypool_health(g->st, now, health);
}

static void imgjob_redis_up(void *arg)
{
    struct imgjob *g = arg;
    uint64_t now = uv_now(core_loop(g->core));
    if (g->mm)
        keypool_resync(g->mm, now);
    if (g->st)
        keypool_resync(g->st, now);
}

static void imgjob_close(void *arg)
{
    struct imgjob *g = arg;
    if (g->mm)
        keypool_free(g->mm);
    if (g->st)
        keypool_free(g->st);
    mem_free(g);
}

int imgjob_setup(struct core *c)
{
    const struct config *cfg = core_config(c);
    struct imgjob *g = mem_calloc(1, sizeof(*g));
    g->core = c;
    if (secret_isset(&cfg->minimax_keys) &&
        keypool_new(core_loop(c), core_redis(c), cfg->redis_prefix, "minimax", cfg->name, &cfg->minimax_keys, NULL,
                    &g->mm))
        g->mm = NULL;
    if (secret_isset(&cfg->stability_keys) &&
        keypool_new(core_loop(c), core_redis(c), cfg->redis_prefix, "stability", cfg->name, &cfg->stability_keys,
                    NULL, &g->st))
        g->st = NULL;
    if (!g->mm)
        log_warn("no MINIMAX_API_KEY for this instance: /이미지 answers that it is off",
                 LF_INT("key_index", cfg->key_index));
    if (!g->st)
        log_warn("no STABILITY_API_KEY for this instance: /img answers that it is off",
                 LF_INT("key_index", cfg->key_index));
    log_info("image ready", LF_STR("minimax", cfg->minimax_base_url), LF_STR("stability", cfg->stability_base_url),
             LF_INT("minimax_keys", g->mm ? keypool_size(g->mm) : 0),
             LF_INT("stability_keys", g->st ? keypool_size(g->st) : 0));
    core_at_close(c, imgjob_close, g);
    struct core_hooks hooks = {.health = imgjob_health, .redis_up = imgjob_redis_up};
    core_add_hooks(c, &hooks, g);
    return bus_register_role(core_bus(c), "image", "discord.interaction", on_interaction, g);
}
