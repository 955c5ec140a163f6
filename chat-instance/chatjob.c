#include "chatjob.h"
#include "commands.h"

#include <errno.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "service/audit.h"
#include "service/bus.h"
#include "service/jobctx.h"
#include "base/clock.h"
#include "service/conv.h"
#include "process/core.h"
#include "base/err.h"
#include "io/hcl.h"
#include "discord/ixjob.h"
#include "base/jget.h"
#include "service/keypool.h"
#include "service/llm.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/utf8.h"
#include "process/perf.h"
#include "io/rds.h"
#include "discord/reply.h"
#include "io/store.h"
#include "service/ulimit.h"
#include "service/usage.h"

#define ANSWER_MAX (256 << 10) /* bytes of one answer kept */
#define QUESTION_MAX (32 << 10) /* bytes of a channel message taken as a question */
#define SWEEP_EVERY_MS 60000   /* expired conversations are deleted this often */
#define BUSY_RETRY_S 30        /* "try again in" when a job waited too long */
#define UNSAVED_MAX 256          /* exchanges kept while PostgreSQL is away */
#define PERM_ADMINISTRATOR (1ull << 3)
#define PERM_MANAGE_CHANNELS (1ull << 4)

/* An answered exchange not (yet, or not surely) in PostgreSQL: written
 * again, with its turn key so it is stored once, when the store is back. */
struct unsaved {
    struct unsaved *next;
    struct chat *chat;     /* while a write is out */
    unsigned long long seq; /* answer order: rewritten in it */
    char *scope, *guild_id, *channel_id, *user_id, *turn_key, *question, *answer;
};

struct chat {
    struct core *core;
    struct keypool *keys; /* NULL: no key configured (local servers) */
    int memory_down;      /* the last memory access found PostgreSQL away (logged once) */
    uv_timer_t sweep;
    struct unsaved *unsaved; /* oldest first */
    size_t nunsaved, nwriting; /* kept; written and not yet answered */
    unsigned long long seq;
    unsigned long long unsaved_dropped;
};

enum step { STEP_LIMITS, STEP_MODERATION, STEP_HISTORY, STEP_MODEL, STEP_STORE, STEP_REDIS };

struct answer {
    struct chat *chat;
    struct jobctx jc;         /* owed: model, limits, history ... and the reply */
    struct ixjob ix;          /* interactions */
    struct json_object *msg;  /* channel messages: the gateway frame (owned) */
    const char *channel_id, *guild_id, *user_id, *message_id;
    char scope[96];
    int ko;
    char *question;
    struct reply *reply;
    struct llm_call *call;
    struct buf text;
    struct llm_message *history;
    size_t nhistory;
    int key_index, attempts;
    struct llm_usage usage;
    int model_ok;             /* the model answered in full: remember it */
    const char *failure;      /* why the job failed, when it did */
    /* while the bus is unsure the job is still ours, the final answer waits */
    uv_timer_t lease_timer;
    int lease_timer_on;
    char held_note[600];
    int held_told;
};

static void answer_model(struct answer *a);
static void answer_history(struct answer *a);

/* ---- small things -------------------------------------------------------- */

static const char *say(const struct answer *a, const char *ko, const char *en)
{
    return a->ko ? ko : en;
}

static int has_hangul(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++)
        if (*p == 0xEA || *p == 0xEB || *p == 0xEC || (*p == 0xED && p[1] < 0x9F) ||
            (*p == 0xE3 && p[1] >= 0x84 && p[1] <= 0x86))
            return 1; /* U+A000..U+D7FF (Hangul syllables), U+3100..U+31BF (jamo) */
    return 0;
}

/* ---- lifetime ------------------------------------------------------------ */

static void answer_release(struct answer *a)
{
    buf_free(&a->text);
    for (size_t i = 0; i < a->nhistory; i++)
        mem_free((char *)a->history[i].content);
    mem_free(a->history);
    mem_free(a->question);
    ixjob_free(&a->ix);
    json_object_put(a->msg);
    mem_free(a);
}

static void on_lease_timer_closed(uv_handle_t *h)
{
    answer_release(h->data);
}

static void answer_free(void *arg)
{
    struct answer *a = arg;
    if (a->lease_timer_on) {
        a->lease_timer_on = 0;
        uv_close((uv_handle_t *)&a->lease_timer, on_lease_timer_closed);
        return;
    }
    answer_release(a);
}

static void answer_end(struct answer *a, enum bus_result r, const char *why)
{
    jobctx_finish(&a->jc, r, why);
}

/* The reply is owed from its start to its done callback. */
static struct reply *answer_reply(struct answer *a);

static struct reply *reply_of(struct answer *a)
{
    if (!a->reply) {
        a->reply = answer_reply(a);
        jobctx_wait(&a->jc);
    }
    return a->reply;
}

/* Nothing more is sent; the reply's done callback will not run. */
static void reply_drop(struct answer *a)
{
    if (!a->reply)
        return;
    reply_cancel(a->reply);
    a->reply = NULL;
    jobctx_forget(&a->jc);
}

/* The bus is closing with the job in flight: the model call ends in its
 * callback (cancelled), the reply is dropped. */
static void answer_stop(void *arg)
{
    struct answer *a = arg;
    reply_drop(a);
    if (a->call)
        llm_cancel(a->call);
}

static struct answer *answer_new(struct chat *ch, struct bus_job *job)
{
    struct answer *a = mem_calloc(1, sizeof(*a));
    a->chat = ch;
    buf_init(&a->text, ANSWER_MAX);
    jobctx_start(&a->jc, job, answer_stop, answer_free, a);
    return a;
}

static struct drest *chat_rest(void *arg)
{
    return core_rest(arg);
}

static struct reply *answer_reply(struct answer *a)
{
    struct core *c = a->chat->core;
    struct reply_env env = {.loop = core_loop(c), .rest = chat_rest, .rest_arg = c,
                            .edit_interval_ms = core_config(c)->edit_interval_ms};
    struct reply_target t = {.ko = a->ko};
    if (a->msg) {
        t.channel_id = a->channel_id;
        t.message_id = a->message_id;
    } else {
        t.app_id = a->ix.app_id;
        t.token = a->ix.token;
    }
    return reply_new(&env, &t, &a->text);
}

/* ---- delivery ----------------------------------------------------------------- */

static void remember(struct answer *a);

static void on_delivered(int status, int code, void *arg)
{
    struct answer *a = arg;
    a->reply = NULL;
    if (!jobctx_back(&a->jc))
        return;
    if (status) {
        log_warn("chat answer not delivered", LF_INT("status", status), LF_INT("code", code));
        answer_end(a, BUS_FAILED, "answer not delivered");
        return;
    }
    if (a->jc.job)
        bus_mark_done(a->jc.job);
    if (a->model_ok)
        remember(a);
    answer_end(a, a->failure ? BUS_FAILED : BUS_DONE, a->failure);
}

/* Deliver what there is, with a note (the reason when there is no
 * answer). told: the note is a deliberate answer (limits, refusals), not a
 * failure of the job. */
static void on_lease_wait(uv_timer_t *t);

static void finish_with(struct answer *a, const char *note, int told)
{
    struct bus_job *job = a->jc.job;
    if (job)
        bus_job_recheck(job);
    if (job && job->lease_lost) {
        /* another consumer took the job over while we worked: it answers */
        log_warn("chat job taken over by another consumer; not answering", LF_EXT("id", job->id));
        reply_drop(a);
        answer_end(a, BUS_DONE, NULL);
        return;
    }
    if (job && job->lease_unsure) {
        /* wait for the bus to confirm the lease (or lose it) */
        snprintf(a->held_note, sizeof(a->held_note), "%s", note);
        a->held_told = told;
        if (!a->lease_timer_on) {
            uv_timer_init(core_loop(a->chat->core), &a->lease_timer);
            a->lease_timer.data = a;
            a->lease_timer_on = 1;
        }
        uv_timer_start(&a->lease_timer, on_lease_wait, 100, 0);
        return;
    }
    if (!a->text.len && !note[0])
        note = say(a, "(AI가 빈 답을 보냈습니다)", "(the AI sent an empty answer)");
    a->failure = a->text.len || told ? NULL : "the model gave no answer";
    reply_finish(reply_of(a), note, on_delivered, a);
}

static void on_lease_wait(uv_timer_t *t)
{
    struct answer *a = t->data;
    if (!a->jc.job)
        return;
    char note[sizeof(a->held_note)];
    snprintf(note, sizeof(note), "%s", a->held_note);
    finish_with(a, note, a->held_told);
}

static void tell(struct answer *a, const char *ko, const char *en)
{
    finish_with(a, say(a, ko, en), 1);
}

/* ---- memory and usage ---------------------------------------------------------- */

static void unsaved_free(struct unsaved *u)
{
    mem_free(u->scope);
    mem_free(u->guild_id);
    mem_free(u->channel_id);
    mem_free(u->user_id);
    mem_free(u->turn_key);
    mem_free(u->question);
    mem_free(u->answer);
    mem_free(u);
}

/* Keep u (in answer order) to write later; past UNSAVED_MAX the oldest
 * exchange is forgotten, and counted. */
static void unsaved_keep(struct chat *ch, struct unsaved *u)
{
    struct unsaved **p = &ch->unsaved;
    while (*p && (*p)->seq < u->seq)
        p = &(*p)->next;
    u->next = *p;
    *p = u;
    u->chat = NULL;
    if (++ch->nunsaved + ch->nwriting <= UNSAVED_MAX)
        return;
    struct unsaved *old = ch->unsaved;
    ch->unsaved = old->next;
    ch->nunsaved--;
    if (ch->unsaved_dropped++ % 100 == 0)
        log_warn("PostgreSQL away too long: an answered exchange is not kept in conversation memory",
                 LF_INT("kept_max", UNSAVED_MAX), LF_INT("forgotten", (long long)ch->unsaved_dropped));
    unsaved_free(old);
}

static void on_unsaved_written(int status, long long affected, void *arg)
{
    (void)affected;
    struct unsaved *u = arg;
    if (status == BC_ESHUTDOWN) { /* the chat may be gone already */
        unsaved_free(u);
        return;
    }
    struct chat *ch = u->chat;
    ch->nwriting--;
    if (status == -ENOTCONN || status == -ETIMEDOUT)
        unsaved_keep(ch, u); /* its outcome is unknown: written again, once, later */
    else
        unsaved_free(u);
}

static void unsaved_write(struct chat *ch, struct store *s, struct unsaved *u)
{
    const struct config *cfg = core_config(ch->core);
    struct conv_key k = {.scope_key = u->scope, .guild_id = u->guild_id, .channel_id = u->channel_id,
                         .user_id = u->user_id, .turn_key = u->turn_key};
    u->chat = ch;
    ch->nwriting++;
    int rc = conv_append(s, &k, u->question, u->answer, cfg->session_ttl_minutes, 2 * cfg->context_max_turns + 2,
                         on_unsaved_written, u);
    if (rc == -ENOTCONN || rc == -ENOBUFS) {
        ch->nwriting--;
        unsaved_keep(ch, u);
    } else if (rc) {
        ch->nwriting--;
        unsaved_free(u);
    }
}

/* Write what was kept, oldest first, ahead of anything queued after. */
static void unsaved_flush(struct chat *ch, struct store *s)
{
    struct unsaved *list = ch->unsaved;
    ch->unsaved = NULL;
    ch->nunsaved = 0;
    while (list) {
        struct unsaved *u = list;
        list = u->next;
        unsaved_write(ch, s, u);
    }
}

static struct store *memory_store(struct chat *ch)
{
    struct store *s = core_store(ch->core);
    int up = s && store_up(s);
    if (s && !up && !ch->memory_down)
        log_warn("PostgreSQL is away: answering without conversation memory until it returns");
    else if (up && ch->memory_down)
        log_info("PostgreSQL is back: conversation memory restored");
    if (s)
        ch->memory_down = !up;
    if (up && ch->unsaved)
        unsaved_flush(ch, s);
    return up ? s : NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? mem_strdup(s) : NULL;
}

static void remember(struct answer *a)
{
    struct chat *ch = a->chat;
    const struct config *cfg = core_config(ch->core);
    struct store *s = memory_store(ch);
    if (cfg->context_max_turns > 0 && core_store(ch->core)) {
        struct unsaved *u = mem_calloc(1, sizeof(*u));
        u->seq = ++ch->seq;
        u->scope = mem_strdup(a->scope);
        u->guild_id = dup_or_null(a->guild_id);
        u->channel_id = dup_or_null(a->channel_id);
        u->user_id = dup_or_null(a->user_id);
        u->turn_key = dup_or_null(a->jc.job ? a->ix.id ? a->ix.id : a->message_id : NULL);
        u->question = mem_strdup(a->question);
        u->answer = mem_strndup(buf_str(&a->text), a->text.len);
        if (s)
            unsaved_write(ch, s, u);
        else
            unsaved_keep(ch, u);
    }
    if (!s)
        return;
    struct usage_rec u = {.user_id = a->user_id, .guild_id = a->guild_id, .kind = "chat",
                          .model = cfg->openai_model, .requests = 1};
    if (a->usage.has_usage) {
        u.prompt_tokens = a->usage.prompt;
        u.completion_tokens = a->usage.completion;
    } else { /* the server sent no usage: our estimate */
        u.prompt_tokens = (long long)conv_estimate_tokens(a->question, strlen(a->question));
        for (size_t i = 0; i < a->nhistory; i++)
            u.prompt_tokens += (long long)conv_estimate_tokens(a->history[i].content, strlen(a->history[i].content));
        u.completion_tokens = (long long)conv_estimate_tokens(buf_str(&a->text), a->text.len);
    }
    usage_add(s, &u, NULL, NULL);
}

/* ---- the model call ------------------------------------------------------------ */

static void on_delta(const char *text, size_t len, void *arg)
{
    struct answer *a = arg;
    struct bus_job *job = a->jc.job;
    if (!job || buf_append(&a->text, text, len))
        return; /* past the cap: the rest is dropped, the answer ends at the cap */
    if (job->lease_lost || job->lease_unsure)
        return; /* not ours to show (yet): kept for the final answer */
    reply_changed(reply_of(a));
}

/* What the key pool learns from a call. A timeout before any text is a
 * hang of that key (it rests, others take over); after text it is only a
 * provider failure. */
static enum keypool_outcome outcome_of(const struct llm_result *r)
{
    if (r->status == LLM_ERR_TIMEOUT && (r->stalled || !r->text_len))
        return KEYPOOL_HUNG;
    switch (r->status) {
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

static void on_done(const struct llm_result *r, void *arg)
{
    struct answer *a = arg;
    a->call = NULL;
    if (!jobctx_back(&a->jc))
        return;
    struct chat *ch = a->chat;
    if (r->status != LLM_ERR_CANCELLED)
        perf_provider(core_perf(ch->core), "openai", llm_status_name(r->status));
    if (ch->keys && r->status != LLM_ERR_CANCELLED)
        keypool_report(ch->keys, uv_now(core_loop(ch->core)), a->key_index, outcome_of(r),
                       (int)r->retry_after_ms);
    a->usage = r->usage;
    if (r->status == LLM_OK) {
        a->model_ok = a->text.len > 0;
        if (r->finish_reason && !strcmp(r->finish_reason, "length"))
            finish_with(a, say(a, "(답변이 길이 제한에서 끊겼습니다)", "(the answer was cut at the length limit)"), 0);
        else
            finish_with(a, "", 0);
        return;
    }
    /* Another key may serve it, as long as nothing was shown yet: after a
     * key problem, or a key that hung (it rests now, so the pick gives
     * another key, or a clear "unavailable, retry in" when none is left). */
    int key_problem = r->status == LLM_ERR_RATE || r->status == LLM_ERR_QUOTA || r->status == LLM_ERR_AUTH ||
                      r->status == LLM_ERR_TIMEOUT;
    if (key_problem && !a->text.len && ch->keys && ++a->attempts < keypool_size(ch->keys)) {
        answer_model(a);
        return;
    }
    log_warn("chat model call failed", LF_STR("error", llm_status_name(r->status)), LF_INT("http", r->http_status),
             LF_EXT("code", r->error_code ? r->error_code : ""), LF_INT("stalled", r->stalled));
    switch (r->status) {
    case LLM_ERR_TIMEOUT:
        if (!a->text.len && r->stalled) {
            finish_with(a, say(a, "AI가 지금 응답하지 않습니다. 잠시 후 다시 시도해 주세요.",
                               "The AI is not answering right now; please try again shortly."), 0);
            break;
        }
        finish_with(a, say(a, "AI 응답이 너무 오래 걸려 중단했습니다. 다시 시도해 주세요.",
                           "The AI took too long to answer; please try again."), 0);
        break;
    case LLM_ERR_BAD_REQUEST:
        finish_with(a, say(a, "AI가 이 요청을 처리할 수 없습니다. 질문을 줄이거나 바꾸거나, /초기화로 대화를 새로 시작해 주세요.",
                           "The AI could not take this request; try a shorter or different question, or /reset."), 0);
        break;
    case LLM_ERR_RATE:
    case LLM_ERR_QUOTA:
    case LLM_ERR_AUTH:
        finish_with(a, say(a, "지금은 사용할 수 있는 AI 키가 없습니다. 잠시 후 다시 시도해 주세요.",
                           "No AI key is usable right now; please try again later."), 0);
        break;
    default:
        if (a->text.len)
            finish_with(a, say(a, "(응답이 도중에 끊겼습니다)", "(the answer was interrupted)"), 0);
        else
            finish_with(a, say(a, "AI 서비스에 문제가 있습니다. 잠시 후 다시 시도해 주세요.",
                               "The AI service is having trouble; please try again shortly."), 0);
    }
}

/* A key from the pool (NULL when the pool has none configured). Returns 0,
 * or tells the user why there is none and returns -1. */
static int pick_key(struct answer *a, const char **key)
{
    struct chat *ch = a->chat;
    *key = NULL;
    if (!ch->keys)
        return 0;
    struct keypool_pick pk;
    int rc = keypool_pick(ch->keys, uv_now(core_loop(ch->core)), &pk);
    if (!rc) {
        *key = pk.key;
        a->key_index = pk.index;
        return 0;
    }
    char ko[200], en[200];
    unsigned secs = (unsigned)((pk.retry_in_ms + 999) / 1000);
    if (rc == KEYPOOL_EEXHAUSTED) {
        snprintf(ko, sizeof(ko), "사용할 수 있는 AI 키가 없습니다. 운영자에게 알려 주세요.");
        snprintf(en, sizeof(en), "No AI key is usable; please tell the server's operators.");
    } else {
        snprintf(ko, sizeof(ko), "AI를 잠시 사용할 수 없습니다. %u초 후 다시 시도해 주세요.", secs);
        snprintf(en, sizeof(en), "The AI is unavailable for now; please try again in %u s.", secs);
    }
    finish_with(a, say(a, ko, en), 0);
    return -1;
}

static void answer_model(struct answer *a)
{
    struct chat *ch = a->chat;
    const struct config *cfg = core_config(ch->core);
    const char *key;
    if (pick_key(a, &key))
        return;
    size_t n = 0;
    struct llm_message *msgs = mem_calloc(a->nhistory + 2, sizeof(*msgs));
    msgs[n++] = (struct llm_message){"system", cfg->system_prompt};
    for (size_t i = 0; i < a->nhistory; i++)
        msgs[n++] = a->history[i];
    msgs[n++] = (struct llm_message){"user", a->question};
    struct llm_request rq = {.base_url = cfg->openai_base_url,
                             .api_key = key,
                             .model = cfg->openai_model,
                             .messages = msgs,
                             .nmessages = n,
                             .temperature = cfg->llm_temperature,
                             .has_temperature = cfg->has_llm_temperature,
                             .max_tokens = cfg->max_tokens,
                             .user = a->user_id,
                             .timeout_ms = (long)cfg->llm_timeout_sec * 1000,
                             .first_token_ms = (long)cfg->llm_first_token_sec * 1000,
                             .idle_ms = (long)cfg->llm_idle_sec * 1000};
    int rc = llm_chat(core_http(ch->core), &rq, on_delta, on_done, a, &a->call);
    mem_free(msgs);
    if (rc) {
        a->call = NULL;
        finish_with(a, say(a, "AI 요청을 보낼 수 없습니다. 잠시 후 다시 시도해 주세요.",
                           "The AI request could not be sent; please try again shortly."), 0);
        return;
    }
    jobctx_wait(&a->jc);
}

/* ---- history -------------------------------------------------------------------- */

static void on_history(int status, const struct conv_turn *turns, size_t n, void *arg)
{
    struct answer *a = arg;
    if (!jobctx_back(&a->jc))
        return;
    if (status) {
        log_warn("conversation history not read; answering without it", LF_ERR(status));
        n = 0;
    }
    a->history = mem_calloc(n ? n : 1, sizeof(*a->history));
    for (size_t i = 0; i < n; i++) {
        a->history[i].role = !strcmp(turns[i].role, "assistant") ? "assistant" : "user";
        a->history[i].content = mem_strndup(turns[i].content, turns[i].len);
    }
    a->nhistory = n;
    answer_model(a);
}

static void answer_history(struct answer *a)
{
    const struct config *cfg = core_config(a->chat->core);
    struct store *s = cfg->context_max_turns > 0 ? memory_store(a->chat) : NULL;
    if (s && !conv_load(s, a->scope, cfg->context_max_turns, cfg->context_max_tokens, cfg->session_ttl_minutes,
                        on_history, a)) {
        jobctx_wait(&a->jc);
        return;
    }
    answer_model(a);
}

/* ---- moderation ------------------------------------------------------------------ */

static void audit_flagged(struct answer *a, const char *categories)
{
    struct store *s = memory_store(a->chat);
    if (!s) {
        log_warn("moderation refusal not written to the audit log (PostgreSQL away)", LF_EXT("user", a->user_id),
                 LF_EXT("categories", categories));
        return;
    }
    char excerpt[400];
    size_t n = utf8_trunc(a->question, strlen(a->question), 300);
    memcpy(excerpt, a->question, n);
    excerpt[n] = 0;
    const char *detail[] = {"categories", categories, "channel_id", a->channel_id, "excerpt", excerpt};
    struct audit_rec r = {core_config(a->chat->core)->name, a->guild_id, a->user_id, "moderation_flagged",
                          detail, 3};
    audit_add(s, &r, NULL, NULL);
}

static void on_moderated(int status, int flagged, const char *categories, void *arg)
{
    struct answer *a = arg;
    if (!jobctx_back(&a->jc))
        return;
    if (status != LLM_OK) {
        /* fail open: moderation trouble must not take chat down */
        log_warn("moderation check failed; answering unchecked", LF_STR("error", llm_status_name(status)));
    } else if (flagged) {
        log_info("input refused by moderation", LF_EXT("user", a->user_id), LF_EXT("categories", categories));
        audit_flagged(a, categories);
        tell(a, "죄송하지만 이 요청은 이용 정책에 맞지 않아 답할 수 없습니다.",
             "Sorry, I can't help with that request: it goes against the usage policy.");
        return;
    }
    answer_history(a);
}

static void answer_moderation(struct answer *a)
{
    const struct config *cfg = core_config(a->chat->core);
    if (!cfg->moderation) {
        answer_history(a);
        return;
    }
    const char *key;
    if (pick_key(a, &key))
        return;
    struct llm_moderation_request rq = {.base_url = cfg->openai_base_url, .api_key = key, .input = a->question,
                                        .model = cfg->moderation_model, .timeout_ms = 15000};
    if (llm_moderate(core_http(a->chat->core), &rq, on_moderated, a)) {
        log_warn("moderation check not sent; answering unchecked");
        answer_history(a);
        return;
    }
    jobctx_wait(&a->jc);
}

/* ---- fairness ----------------------------------------------------------------------- */

static void on_limits(enum ulimit_verdict v, int64_t wait_ms, void *arg)
{
    struct answer *a = arg;
    if (!jobctx_back(&a->jc))
        return;
    if (v == ULIMIT_OK) {
        answer_moderation(a);
        return;
    }
    char text[300];
    ulimit_say(v, wait_ms, core_config(a->chat->core)->user_daily_limit, a->ko, "요청", "requests", text, sizeof(text));
    finish_with(a, text, 1);
}

static void answer_begin(struct answer *a)
{
    const struct config *cfg = core_config(a->chat->core);
    snprintf(a->scope, sizeof(a->scope), "c:%s:u:%s", a->channel_id, a->user_id);
    struct ulimit_req q = {.prefix = cfg->redis_prefix, .kind = "chat", .user_id = a->user_id,
                           .rate = cfg->user_rate_limit, .window_s = cfg->user_rate_window_sec,
                           .daily = cfg->user_daily_limit};
    jobctx_wait(&a->jc);
    ulimit_check(core_loop(a->chat->core), core_redis(a->chat->core), &q, on_limits, a);
}

/* ---- /초기화 /reset ------------------------------------------------------------------ */

static void on_reset(int status, long long affected, void *arg)
{
    struct answer *a = arg;
    if (!jobctx_back(&a->jc))
        return;
    if (status)
        tell(a, "대화 기록을 지우지 못했습니다. 잠시 후 다시 시도해 주세요.",
             "The conversation could not be cleared; please try again shortly.");
    else if (affected)
        tell(a, "이 채널에서의 대화 기록을 지웠습니다. 새 대화를 시작합니다.",
             "Your conversation in this channel is forgotten; the next question starts afresh.");
    else
        tell(a, "이 채널에는 지울 대화 기록이 없습니다.", "There was no conversation to forget in this channel.");
}

static void cmd_reset(struct answer *a)
{
    struct store *s = memory_store(a->chat);
    snprintf(a->scope, sizeof(a->scope), "c:%s:u:%s", a->channel_id, a->user_id);
    if (!s) {
        tell(a, "대화 기록 저장소(데이터베이스)에 지금 연결할 수 없어 지우지 못했습니다.",
             "The conversation store (database) is not reachable right now; nothing was cleared.");
        return;
    }
    jobctx_wait(&a->jc);
    if (conv_reset(s, a->scope, on_reset, a))
        on_reset(-ENOTCONN, 0, a);
}

/* ---- /채팅모드 /chatmode ----------------------------------------------------------------- */

static void chatmode_key(const struct answer *a, const char *channel_id, char *out, size_t len)
{
    snprintf(out, len, "%s:chatmode:%s", core_config(a->chat->core)->redis_prefix, channel_id);
}

static void on_chatmode_set(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct answer *a = arg;
    if (!jobctx_back(&a->jc))
        return;
    const char *mode = ixjob_option(&a->ix, "mode");
    if (status || rds_reply_error(reply))
        tell(a, "채팅 모드를 바꾸지 못했습니다 (Redis 연결 문제). 잠시 후 다시 시도해 주세요.",
             "The chat mode could not be changed (Redis is not reachable); please try again shortly.");
    else if (mode && !strcmp(mode, "on"))
        tell(a, "이 채널의 채팅 모드를 켰습니다. 이제 이 채널의 모든 메시지에 답합니다.",
             "Chat mode is on: I will answer every message in this channel.");
    else
        tell(a, "이 채널의 채팅 모드를 껐습니다. 이제 저를 멘션한 메시지에만 답합니다.",
             "Chat mode is off: I will answer only messages that mention me.");
}

static void cmd_chatmode(struct answer *a)
{
    const char *mode = ixjob_option(&a->ix, "mode");
    const char *perms = jget_str(a->ix.root, "member_permissions");
    unsigned long long p = perms ? strtoull(perms, NULL, 10) : 0;
    if (a->ix.guild_id && !(p & (PERM_ADMINISTRATOR | PERM_MANAGE_CHANNELS))) {
        tell(a, "채팅 모드는 채널 관리 권한이 있는 사람만 바꿀 수 있습니다.",
             "Only members who can manage channels may change the chat mode.");
        return;
    }
    if (!mode || (strcmp(mode, "on") && strcmp(mode, "off"))) {
        tell(a, "모드는 켜기 또는 끄기입니다.", "The mode is on or off.");
        return;
    }
    char key[200];
    chatmode_key(a, a->channel_id, key, sizeof(key));
    const char *on[] = {"SET", key, "on"}, *off[] = {"DEL", key};
    int rc = !strcmp(mode, "on") ? rds_cmd(core_redis(a->chat->core), on_chatmode_set, a, 3, on, NULL)
                                 : rds_cmd(core_redis(a->chat->core), on_chatmode_set, a, 2, off, NULL);
    jobctx_wait(&a->jc);
    if (rc)
        on_chatmode_set(NULL, rc, NULL, a);
}

/* ---- /사용량 /usage ---------------------------------------------------------------------- */

static void on_usage(int status, const struct usage_row *rows, size_t n, void *arg)
{
    struct answer *a = arg;
    if (!jobctx_back(&a->jc))
        return;
    if (status) {
        tell(a, "사용량 기록을 지금 읽을 수 없습니다. 잠시 후 다시 시도해 주세요.",
             "Your usage cannot be read right now; please try again shortly.");
        return;
    }
    long long chat = 0, prompt = 0, completion = 0, images = 0, videos = 0;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(rows[i].kind, "chat")) {
            chat += rows[i].requests;
            prompt += rows[i].prompt_tokens;
            completion += rows[i].completion_tokens;
        } else if (!strcmp(rows[i].kind, "image")) {
            images += rows[i].units;
        } else if (!strcmp(rows[i].kind, "video")) {
            videos += rows[i].units;
        }
    }
    /* each kind's own daily limit (0 = none), so a user sees how much is left of each */
    const struct config *cfg = core_config(a->chat->core);
    char text[600], limit[3][48] = {"", "", ""};
    int daily[3] = {cfg->user_daily_limit, cfg->user_daily_images, cfg->user_daily_videos};
    const char *ko_unit[3] = {"회", "장", "개"};
    for (int i = 0; i < 3; i++) {
        if (daily[i] && a->ko)
            snprintf(limit[i], sizeof(limit[i]), " / 하루 %d%s", daily[i], ko_unit[i]);
        else if (daily[i])
            snprintf(limit[i], sizeof(limit[i]), " of %d a day", daily[i]);
    }
    if (a->ko)
        snprintf(text, sizeof(text),
                 "**오늘의 사용량** (UTC 기준)\n채팅: %lld회%s, 토큰 %lld (입력 %lld, 출력 %lld)\n이미지: %lld장%s\n"
                 "비디오: %lld개%s",
                 chat, limit[0], prompt + completion, prompt, completion, images, limit[1], videos, limit[2]);
    else
        snprintf(text, sizeof(text),
                 "**Your usage today** (UTC)\nChat: %lld requests%s, %lld tokens (%lld in, %lld out)\n"
                 "Images: %lld%s\nVideos: %lld%s",
                 chat, limit[0], prompt + completion, prompt, completion, images, limit[1], videos, limit[2]);
    finish_with(a, text, 1);
}

static void cmd_usage(struct answer *a)
{
    struct store *s = memory_store(a->chat);
    if (!s) {
        tell(a, "사용량 기록(데이터베이스)에 지금 연결할 수 없습니다.", "The usage records (database) are not reachable right now.");
        return;
    }
    jobctx_wait(&a->jc);
    if (usage_today(s, a->user_id, on_usage, a))
        on_usage(-ENOTCONN, NULL, 0, a);
}

/* ---- jobs ------------------------------------------------------------------------------- */

static void on_interaction(struct bus *b, struct bus_job *job, void *arg)
{
    (void)b;
    struct chat *ch = arg;
    struct ixjob ix;
    if (ixjob_parse(&ix, job->payload)) {
        bus_finish(job, BUS_FAILED, "bad interaction payload");
        return;
    }
    struct answer *a = answer_new(ch, job);
    a->ix = ix;
    a->ko = ix.ko;
    a->channel_id = ix.channel_id;
    a->guild_id = ix.guild_id;
    a->user_id = ix.user_id;
    if (!a->user_id || !a->channel_id) {
        answer_end(a, BUS_FAILED, "interaction without user or channel");
        return;
    }
    if (!ix.cmd || ix.cmd->role != ROLE_CHAT) {
        answer_end(a, BUS_FAILED, "not a chat command");
        return;
    }
    switch ((enum chat_cmd)ix.cmd->id) {
    case CHAT_CMD_CHAT: {
        const struct config *cfg = core_config(ch->core);
        int64_t waited = ix.received_ms ? clock_wall_ms() - ix.received_ms : 0;
        if (waited > (int64_t)cfg->queue_wait_max_sec * 1000) {
            char ko[200], en[200];
            log_warn("chat job waited too long for a free slot; told the user to retry",
                     LF_INT("waited_ms", waited), LF_INT("max_inflight", cfg->max_inflight));
            snprintf(ko, sizeof(ko), "지금 요청이 많아 처리하지 못했습니다. %d초 후에 다시 시도해 주세요.", BUSY_RETRY_S);
            snprintf(en, sizeof(en), "I'm too busy right now; please try again in %d s.", BUSY_RETRY_S);
            tell(a, ko, en);
            return;
        }
        const char *q = ixjob_option(&ix, "question");
        a->question = mem_strdup(q ? q : "");
        answer_begin(a);
        break;
    }
    case CHAT_CMD_RESET:
        cmd_reset(a);
        break;
    case CHAT_CMD_MODE:
        cmd_chatmode(a);
        break;
    case CHAT_CMD_USAGE:
        cmd_usage(a);
        break;
    }
}

/* The question in a channel message: its content without the mentions of
 * bots (the "@bot" that called us). */
static char *message_question(struct json_object *m)
{
    const char *content = jget_str(m, "content");
    struct json_object *mentions = jget_member(m, "mentions");
    struct buf q;
    buf_init(&q, QUESTION_MAX);
    buf_puts(&q, content ? content : "");
    for (size_t i = 0; mentions && json_object_is_type(mentions, json_type_array) &&
                       i < json_object_array_length(mentions); i++) {
        struct json_object *u = json_object_array_get_idx(mentions, i), *bot = jget_member(u, "bot");
        const char *id = jget_str(u, "id");
        if (!id || !bot || !json_object_get_boolean(bot))
            continue;
        char tag[2][40];
        snprintf(tag[0], sizeof(tag[0]), "<@%s>", id);
        snprintf(tag[1], sizeof(tag[1]), "<@!%s>", id);
        for (int t = 0; t < 2; t++) {
            char *hit;
            while ((hit = strstr(q.p ? q.p : "", tag[t])) != NULL) {
                size_t off = (size_t)(hit - q.p), tl = strlen(tag[t]);
                memmove(hit, hit + tl, q.len - off - tl + 1);
                q.len -= tl;
            }
        }
    }
    /* trim */
    size_t s = 0, e = q.len;
    while (s < e && (q.p[s] == ' ' || q.p[s] == '\n' || q.p[s] == '\t'))
        s++;
    while (e > s && (q.p[e - 1] == ' ' || q.p[e - 1] == '\n' || q.p[e - 1] == '\t'))
        e--;
    char *out = mem_strndup(q.p ? q.p + s : "", e - s);
    buf_free(&q);
    return out;
}

static void message_answer(struct answer *a)
{
    reply_of(a); /* the typing indicator runs from now */
    if (!a->question[0]) {
        tell(a, "무엇을 도와드릴까요? 질문을 함께 적어 주세요.", "What can I do for you? Write your question with the mention.");
        return;
    }
    answer_begin(a);
}

static void on_chatmode_get(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct answer *a = arg;
    if (!jobctx_back(&a->jc))
        return;
    if (!status && reply && reply->type == REDIS_REPLY_STRING && !strcmp(reply->str, "on")) {
        message_answer(a);
        return;
    }
    answer_end(a, BUS_DONE, NULL); /* chat mode off: only mentions are answered */
}

int chatjob__parse_message(const char *payload, struct chatjob__msg *out)
{
    memset(out, 0, sizeof(*out));
    /* the payload is the gateway frame as received; the message is its "d" */
    struct json_object *frame = json_tokener_parse(payload), *m = jget_member(frame, "d");
    struct json_object *author = jget_member(m, "author");
    if (!m || !json_object_is_type(m, json_type_object) || !jget_str(m, "id") || !jget_str(m, "channel_id") ||
        !jget_str(author, "id")) {
        json_object_put(frame);
        return BC_EPROTO;
    }
    out->frame = frame;
    out->message_id = jget_str(m, "id");
    out->channel_id = jget_str(m, "channel_id");
    out->guild_id = jget_str(m, "guild_id");
    out->user_id = jget_str(author, "id");
    out->question = message_question(m);
    out->ko = has_hangul(out->question) || !out->question[0];
    return 0;
}

static void on_message(struct bus *b, struct bus_job *job, void *arg)
{
    (void)b;
    struct chat *ch = arg;
    struct chatjob__msg pm;
    if (chatjob__parse_message(job->payload, &pm)) {
        bus_finish(job, BUS_FAILED, "bad message payload");
        return;
    }
    struct answer *a = answer_new(ch, job);
    a->msg = pm.frame;
    a->message_id = pm.message_id;
    a->channel_id = pm.channel_id;
    a->guild_id = pm.guild_id;
    a->user_id = pm.user_id;
    a->question = pm.question;
    a->ko = pm.ko;
    if (!strcmp(job->type, "discord.mention")) {
        message_answer(a);
        return;
    }
    char key[200];
    chatmode_key(a, a->channel_id, key, sizeof(key));
    const char *av[] = {"GET", key};
    jobctx_wait(&a->jc);
    int rc = rds_cmd(core_redis(ch->core), on_chatmode_get, a, 2, av, NULL);
    if (rc)
        on_chatmode_get(NULL, rc, NULL, a);
}

/* ---- the instance --------------------------------------------------------------------------- */

static void on_sweep(uv_timer_t *t)
{
    struct chat *ch = t->data;
    struct store *s = core_store(ch->core);
    if (s && store_up(s))
        conv_expire(s, core_config(ch->core)->session_ttl_minutes, 1000, NULL, NULL);
}

static void chat_health(struct json_object *health, void *arg)
{
    struct chat *ch = arg;
    if (ch->keys)
        keypool_health(ch->keys, uv_now(core_loop(ch->core)), health);
}

static void chat_store_up(void *arg)
{
    struct chat *ch = arg;
    memory_store(ch);
}

static void chat_redis_up(void *arg)
{
    struct chat *ch = arg;
    if (ch->keys)
        keypool_resync(ch->keys, uv_now(core_loop(ch->core)));
}

static void on_sweep_closed(uv_handle_t *h)
{
    mem_free(h->data);
}

static void chat_close(void *arg)
{
    struct chat *ch = arg;
    if (ch->keys)
        keypool_free(ch->keys);
    if (ch->nunsaved)
        log_warn("stopping with answered exchanges PostgreSQL never got: not in conversation memory",
                 LF_INT("exchanges", (long long)ch->nunsaved));
    while (ch->unsaved) {
        struct unsaved *u = ch->unsaved;
        ch->unsaved = u->next;
        unsaved_free(u);
    }
    uv_close((uv_handle_t *)&ch->sweep, on_sweep_closed);
}

/* A streamed answer holds a socket for as long as it runs: make room for
 * MAX_INFLIGHT of them (the soft descriptor limit up to the hard one), and
 * say so when the system does not allow it. */
static void make_fd_room(int inflight)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)inflight + 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur >= want)
        return;
    rlim_t had = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl))
        rl.rlim_cur = had;
    if (rl.rlim_cur < want)
        log_warn("open-file limit is below what MAX_INFLIGHT streamed answers need; raise ulimit -n",
                 LF_INT("limit", (long long)rl.rlim_cur), LF_INT("wanted", (long long)want));
}

int chatjob_setup(struct core *c)
{
    const struct config *cfg = core_config(c);
    struct chat *ch = mem_calloc(1, sizeof(*ch));
    ch->core = c;
    make_fd_room(cfg->max_inflight);
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
    if (!cfg->database_url[0])
        log_warn("DATABASE_URL not set: chat runs without conversation memory and usage records");
    uv_timer_init(core_loop(c), &ch->sweep);
    ch->sweep.data = ch;
    uv_timer_start(&ch->sweep, on_sweep, SWEEP_EVERY_MS, SWEEP_EVERY_MS);
    uv_unref((uv_handle_t *)&ch->sweep);
    log_info("chat ready", LF_URL("base_url", cfg->openai_base_url), LF_STR("model", cfg->openai_model),
             LF_INT("keys", ch->keys ? keypool_size(ch->keys) : 0), LF_BOOL("moderation", cfg->moderation),
             LF_INT("context_turns", cfg->context_max_turns));
    core_at_close(c, chat_close, ch);
    struct core_hooks hooks = {.health = chat_health, .redis_up = chat_redis_up, .store_up = chat_store_up};
    core_add_hooks(c, &hooks, ch);
    int rc = bus_register_role(core_bus(c), "chat", "discord.interaction", on_interaction, ch);
    if (!rc)
        rc = bus_register_role(core_bus(c), "chat", "discord.message", on_message, ch);
    if (!rc)
        rc = bus_register_role(core_bus(c), "chat", "discord.mention", on_message, ch);
    return rc;
}
