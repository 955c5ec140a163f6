#include "chat.h"

#include <errno.h>
#include <json.h>
#include <stdio.h>
#include <string.h>

#include "bus.h"
#include "core.h"
#include "drest.h"
#include "err.h"
#include "hcl.h"
#include "ixjob.h"
#include "keypool.h"
#include "llm.h"
#include "log.h"
#include "mem.h"
#include "split.h"
#include "ulimit.h"

#define ANSWER_MAX (256 << 10) /* bytes of one answer kept */

struct chat {
    struct core *core;
    struct hcl *http;
    struct keypool *keys; /* NULL: no key configured (local servers) */
};

struct answer {
    struct chat *chat;
    struct bus_job *job;
    struct ixjob ix;
    struct llm_call *call;
    struct buf text;
    int key_index, attempts;
    uint64_t last_edit_ms;
    int edit_busy, dirty, finishing;
    struct ixjob_edit *edit;
    uv_timer_t timer;
    /* the final delivery: parts after the first go out as follow-ups */
    struct split_part *parts;
    size_t nparts, next_part;
    const char *failure; /* why the job failed, when it did */
    int told;            /* the reply is a deliberate answer (limits): not a failure */
    char note[300];
};

static void answer_start(struct answer *a);
static void deliver_next(struct answer *a);

/* ---- words for the user -------------------------------------------------- */

static const char *say(const struct answer *a, const char *ko, const char *en)
{
    return a->ix.ko ? ko : en;
}

/* {"content": text, "allowed_mentions": {"parse": []}}: a model's answer
 * must never ping @everyone. */
static char *message_json(const char *text, size_t len)
{
    struct json_object *o = json_object_new_object(), *am = json_object_new_object();
    json_object_object_add(o, "content", json_object_new_string_len(text, (int)len));
    json_object_object_add(am, "parse", json_object_new_array());
    json_object_object_add(o, "allowed_mentions", am);
    char *s = mem_strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return s;
}

/* ---- finishing ------------------------------------------------------------ */

static void answer_free_cb(uv_handle_t *h)
{
    struct answer *a = h->data;
    buf_free(&a->text);
    split_free(a->parts, a->nparts);
    ixjob_free(&a->ix);
    mem_free(a);
}

static void answer_end(struct answer *a, enum bus_result r, const char *why)
{
    a->job->cancel = NULL;
    bus_finish(a->job, r, why);
    uv_close((uv_handle_t *)&a->timer, answer_free_cb);
}

/* The bus is closing with the job in flight: stop everything. A model call
 * still running calls back once more (cancelled) and frees the answer. */
static void answer_cancel(struct bus_job *job, void *arg)
{
    (void)job;
    struct answer *a = arg;
    a->job = NULL;
    if (a->edit)
        ixjob_edit_cancel(a->edit);
    if (a->call)
        llm_cancel(a->call);
    else
        uv_close((uv_handle_t *)&a->timer, answer_free_cb);
}

/* ---- follow-ups ------------------------------------------------------------ */

static void on_followup(const struct drest_resp *r, void *arg)
{
    struct answer *a = arg;
    if (r->err == BC_ESHUTDOWN || !a->job)
        return;
    if (r->err) {
        log_warn("chat follow-up not delivered", LF_INT("status", r->status), LF_INT("code", r->code));
        answer_end(a, BUS_FAILED, "follow-up not delivered");
        return;
    }
    deliver_next(a);
}

static void deliver_next(struct answer *a)
{
    if (a->next_part >= a->nparts) {
        answer_end(a, a->failure ? BUS_FAILED : BUS_DONE, a->failure);
        return;
    }
    struct split_part *p = &a->parts[a->next_part++];
    char path[700];
    snprintf(path, sizeof(path), "/webhooks/%s/%s", a->ix.app_id, a->ix.token);
    char *json = message_json(p->text, p->len);
    struct drest_req rq = {.method = "POST", .path = path, .json = json, .bot_auth = 0};
    if (drest_request(core_rest(a->chat->core), &rq, on_followup, a))
        answer_end(a, BUS_FAILED, "follow-up not queued");
    mem_free(json);
}

static void on_final_edit(int status, int code, void *arg)
{
    struct answer *a = arg;
    a->edit = NULL;
    if (status == BC_ESHUTDOWN || !a->job)
        return;
    if (status) {
        log_warn("chat answer not delivered", LF_INT("status", status), LF_INT("code", code));
        answer_end(a, BUS_FAILED, "answer not delivered");
        return;
    }
    deliver_next(a);
}

static void on_final_timer(uv_timer_t *t);

/* The whole text is known: first part into the deferred message, the rest
 * as follow-ups, in order. The final edit keeps the edit interval too. */
static void deliver_final(struct answer *a)
{
    uint64_t now = uv_now(core_loop(a->chat->core)), every = (uint64_t)core_config(a->chat->core)->edit_interval_ms;
    if (a->last_edit_ms && now - a->last_edit_ms < every) {
        uv_timer_start(&a->timer, on_final_timer, every - (now - a->last_edit_ms), 0);
        return;
    }
    if (a->parts)
        return; /* already delivering */
    if (!a->text.len && !a->note[0])
        snprintf(a->note, sizeof(a->note), "%s", say(a, "(AI가 빈 답을 보냈습니다)", "(the AI sent an empty answer)"));
    const char *text = a->text.len ? buf_str(&a->text) : a->note;
    size_t len = a->text.len ? a->text.len : strlen(a->note);
    if (a->text.len && a->note[0]) {
        buf_puts(&a->text, "\n\n");
        buf_puts(&a->text, a->note);
        text = buf_str(&a->text);
        len = a->text.len;
    }
    if (split_all(text, len, SPLIT_DISCORD_MAX, 4 * SPLIT_DISCORD_MAX, &a->parts, &a->nparts) || !a->nparts) {
        answer_end(a, BUS_FAILED, "answer could not be split");
        return;
    }
    a->next_part = 1;
    char *json = message_json(a->parts[0].text, a->parts[0].len);
    a->edit = ixjob_edit_original(core_loop(a->chat->core), core_rest(a->chat->core), &a->ix, json, on_final_edit, a);
    mem_free(json);
}

static void on_final_timer(uv_timer_t *t)
{
    deliver_final(t->data);
}

/* ---- streaming edits ---------------------------------------------------------- */

static void send_progress(struct answer *a);

static void on_progress_edit(int status, int code, void *arg)
{
    struct answer *a = arg;
    (void)code;
    a->edit = NULL;
    a->edit_busy = 0;
    if (status == BC_ESHUTDOWN || !a->job)
        return;
    if (a->finishing) {
        deliver_final(a);
        return;
    }
    if (a->dirty)
        send_progress(a);
}

static void on_edit_timer(uv_timer_t *t)
{
    struct answer *a = t->data;
    if (a->dirty && !a->edit_busy && !a->finishing)
        send_progress(a);
}

/* Edit the deferred message with the part of the answer that fits it, at
 * most once per EDIT_INTERVAL_MS. */
static void send_progress(struct answer *a)
{
    uint64_t now = uv_now(core_loop(a->chat->core)), every = (uint64_t)core_config(a->chat->core)->edit_interval_ms;
    if (a->last_edit_ms && now - a->last_edit_ms < every) {
        uv_timer_start(&a->timer, on_edit_timer, every - (now - a->last_edit_ms), 0);
        return;
    }
    struct split_cut cut;
    struct buf msg;
    buf_init(&msg, 16 * SPLIT_DISCORD_MAX);
    if (split_next(buf_str(&a->text), a->text.len, SPLIT_DISCORD_MAX, 4 * SPLIT_DISCORD_MAX, NULL, &cut) ||
        split_render(buf_str(&a->text), NULL, &cut, &msg) || !msg.len) {
        buf_free(&msg);
        return;
    }
    a->dirty = 0;
    a->edit_busy = 1;
    a->last_edit_ms = now;
    char *json = message_json(msg.p, msg.len);
    a->edit = ixjob_edit_original(core_loop(a->chat->core), core_rest(a->chat->core), &a->ix, json,
                                  on_progress_edit, a);
    mem_free(json);
    buf_free(&msg);
}

static void on_delta(const char *text, size_t len, void *arg)
{
    struct answer *a = arg;
    if (!a->job)
        return;
    if (buf_append(&a->text, text, len))
        return; /* past the cap: the rest is dropped, the answer ends at the cap */
    a->dirty = 1;
    if (!a->edit_busy)
        send_progress(a);
}

/* ---- the model call -------------------------------------------------------------- */

static enum keypool_outcome outcome_of(int status)
{
    switch (status) {
    case LLM_ERR_RATE:
        return KEYPOOL_RATE_LIMITED;
    case LLM_ERR_QUOTA:
        return KEYPOOL_QUOTA;
    case LLM_ERR_AUTH:
        return KEYPOOL_AUTH;
    case LLM_ERR_TIMEOUT:
        return KEYPOOL_TIMEOUT;
    case LLM_ERR_SERVER:
    case LLM_ERR_NETWORK:
        return KEYPOOL_SERVER_ERROR;
    default:
        return KEYPOOL_OK;
    }
}

static void finish_with(struct answer *a, const char *ko, const char *en)
{
    snprintf(a->note, sizeof(a->note), "%s", say(a, ko, en));
    a->failure = a->text.len || a->told ? NULL : "the model gave no answer";
    a->finishing = 1;
    uv_timer_stop(&a->timer);
    if (!a->edit_busy)
        deliver_final(a);
}

static void on_done(const struct llm_result *r, void *arg)
{
    struct answer *a = arg;
    a->call = NULL;
    if (!a->job) { /* cancelled by shutdown */
        uv_close((uv_handle_t *)&a->timer, answer_free_cb);
        return;
    }
    struct chat *ch = a->chat;
    uint64_t now = uv_now(core_loop(ch->core));
    if (ch->keys && r->status != LLM_ERR_CANCELLED)
        keypool_report(ch->keys, now, a->key_index, outcome_of(r->status), (int)r->retry_after_ms);
    if (r->status == LLM_OK) {
        if (r->finish_reason && !strcmp(r->finish_reason, "length"))
            finish_with(a, "(답변이 길이 제한에서 끊겼습니다)", "(the answer was cut at the length limit)");
        else
            finish_with(a, "", "");
        return;
    }
    /* Another key may serve it, as long as nothing was shown yet. */
    int key_problem = r->status == LLM_ERR_RATE || r->status == LLM_ERR_QUOTA || r->status == LLM_ERR_AUTH;
    if (key_problem && !a->text.len && ch->keys && ++a->attempts < keypool_size(ch->keys)) {
        answer_start(a);
        return;
    }
    log_warn("chat model call failed", LF_STR("error", llm_status_name(r->status)), LF_INT("http", r->http_status),
             LF_STR("code", r->error_code ? r->error_code : ""));
    switch (r->status) {
    case LLM_ERR_TIMEOUT:
        finish_with(a, "AI 응답이 너무 오래 걸려 중단했습니다. 다시 시도해 주세요.",
                    "The AI took too long to answer; please try again.");
        break;
    case LLM_ERR_BAD_REQUEST:
        finish_with(a, "AI가 이 요청을 처리할 수 없습니다. 질문을 줄이거나 바꿔 주세요.",
                    "The AI could not take this request; try a shorter or different question.");
        break;
    case LLM_ERR_RATE:
    case LLM_ERR_QUOTA:
    case LLM_ERR_AUTH:
        finish_with(a, "지금은 사용할 수 있는 AI 키가 없습니다. 잠시 후 다시 시도해 주세요.",
                    "No AI key is usable right now; please try again later.");
        break;
    default:
        finish_with(a, a->text.len ? "(응답이 도중에 끊겼습니다)" : "AI 서비스에 문제가 있습니다. 잠시 후 다시 시도해 주세요.",
                    a->text.len ? "(the answer was interrupted)"
                                : "The AI service is having trouble; please try again shortly.");
    }
}

static void answer_start(struct answer *a)
{
    struct chat *ch = a->chat;
    const struct config *cfg = core_config(ch->core);
    const char *key = NULL;
    if (ch->keys) {
        struct keypool_pick pk;
        int rc = keypool_pick(ch->keys, uv_now(core_loop(ch->core)), &pk);
        if (rc) {
            unsigned secs = (unsigned)((pk.retry_in_ms + 999) / 1000);
            char ko[200], en[200];
            if (rc == KEYPOOL_EEXHAUSTED) {
                snprintf(ko, sizeof(ko), "사용할 수 있는 AI 키가 없습니다. 운영자에게 알려 주세요.");
                snprintf(en, sizeof(en), "No AI key is usable; please tell the server's operators.");
            } else {
                snprintf(ko, sizeof(ko), "AI를 잠시 사용할 수 없습니다. %u초 후 다시 시도해 주세요.", secs);
                snprintf(en, sizeof(en), "The AI is unavailable for now; please try again in %u s.", secs);
            }
            finish_with(a, ko, en);
            return;
        }
        key = pk.key;
        a->key_index = pk.index;
    }
    const char *question = ixjob_option(&a->ix, !strcmp(a->ix.command, "chat") ? "question" : "질문");
    struct llm_message msgs[2] = {{"system", cfg->system_prompt}, {"user", question ? question : ""}};
    struct llm_request rq = {.base_url = cfg->openai_base_url,
                             .api_key = key,
                             .model = cfg->openai_model,
                             .messages = msgs,
                             .nmessages = 2,
                             .max_tokens = cfg->max_tokens,
                             .user = a->ix.user_id,
                             .timeout_ms = (long)cfg->llm_timeout_sec * 1000};
    int rc = llm_chat(ch->http, &rq, on_delta, on_done, a, &a->call);
    if (rc)
        finish_with(a, "AI 요청을 보낼 수 없습니다. 잠시 후 다시 시도해 주세요.",
                    "The AI request could not be sent; please try again shortly.");
}

/* ---- fairness ----------------------------------------------------------------------- */

static void on_limits(enum ulimit_verdict v, int64_t wait_ms, void *arg)
{
    struct answer *a = arg;
    if (v == ULIMIT_OK) {
        answer_start(a);
        return;
    }
    char ko[200], en[200];
    long secs = (long)((wait_ms + 999) / 1000);
    if (v == ULIMIT_RATE) {
        snprintf(ko, sizeof(ko), "요청이 너무 많습니다. %ld초 후에 다시 시도해 주세요.", secs);
        snprintf(en, sizeof(en), "Too many requests; please try again in %ld s.", secs);
    } else {
        long h = secs / 3600, m = (secs % 3600 + 59) / 60;
        snprintf(ko, sizeof(ko), "오늘 사용할 수 있는 횟수를 모두 썼습니다. %ld시간 %ld분 후에 초기화됩니다.", h, m);
        snprintf(en, sizeof(en), "You have used today's requests; they reset in %ldh %ldm (UTC midnight).", h, m);
    }
    a->told = 1; /* the user is told why: the job itself is done */
    finish_with(a, ko, en);
}

/* ---- the job ------------------------------------------------------------------------ */

static void on_interaction(struct bus *b, struct bus_job *job, void *arg)
{
    (void)b;
    struct chat *ch = arg;
    struct answer *a = mem_calloc(1, sizeof(*a));
    if (ixjob_parse(&a->ix, job->payload) || (strcmp(a->ix.command, "채팅") && strcmp(a->ix.command, "chat"))) {
        ixjob_free(&a->ix);
        mem_free(a);
        bus_finish(job, BUS_FAILED, "not a chat command");
        return;
    }
    a->chat = ch;
    a->job = job;
    buf_init(&a->text, ANSWER_MAX);
    uv_timer_init(core_loop(ch->core), &a->timer);
    a->timer.data = a;
    job->cancel = answer_cancel;
    job->cancel_arg = a;
    const struct config *cfg = core_config(ch->core);
    struct ulimit_req q = {.prefix = cfg->redis_prefix, .kind = "chat", .user_id = a->ix.user_id,
                           .rate = cfg->user_rate_limit, .window_s = cfg->user_rate_window_sec,
                           .daily = cfg->user_daily_limit};
    ulimit_check(core_redis(ch->core), &q, on_limits, a);
}

static void chat_close(void *arg)
{
    struct chat *ch = arg;
    if (ch->keys)
        keypool_free(ch->keys);
    mem_free(ch);
}

int chat_setup(struct core *c)
{
    const struct config *cfg = core_config(c);
    struct chat *ch = mem_calloc(1, sizeof(*ch));
    ch->core = c;
    ch->http = core_http(c);
    if (secret_isset(&cfg->openai_keys)) {
        int rc = keypool_new(core_loop(c), core_redis(c), cfg->redis_prefix, "openai", cfg->name, &cfg->openai_keys,
                             NULL, &ch->keys);
        if (rc) {
            mem_free(ch);
            return rc;
        }
    } else {
        log_warn("no OPENAI_API_KEY for this instance: requests go without a key (fine for local servers)",
                 LF_INT("key_index", cfg->key_index));
    }
    log_info("chat ready", LF_STR("base_url", cfg->openai_base_url), LF_STR("model", cfg->openai_model),
             LF_INT("keys", ch->keys ? keypool_size(ch->keys) : 0));
    core_at_close(c, chat_close, ch);
    return bus_register(core_bus(c), "discord.interaction", on_interaction, ch);
}
