#include "admincmd.h"
#include "commands.h"

#include <errno.h>
#include <inttypes.h>
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "service/bus.h"
#include "service/jobctx.h"
#include "discord/cmds.h"
#include "base/err.h"
#include "process/core.h"
#include "process/failover.h"
#include "discord/ixjob.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/utf8.h"
#include "ping.h"
#include "io/rds.h"
#include "base/secret.h"
#include "io/store.h"
#include "service/keypool.h"
#include "service/usage.h"

#define PERM_ADMINISTRATOR (1ull << 3)
#define MEMBER_ROLES_MAX 250  /* Discord's own cap on a member's roles */
#define PEERS_MAX 64          /* failover keeps as many */
#define KEYS_SHOWN 20

/* Discord's embed limits, in characters (UTF-16 code units, as Discord
 * counts them). */
#define EMBED_TOTAL_MAX 6000
#define EMBED_FIELDS_MAX 25
#define FIELD_VALUE_MAX 1024
#define FIELD_NAME_MAX 256
#define TAIL_RESERVE 40       /* room kept in a field for "… and N more" */
#define EMBED_COLOR 0x5865F2

enum access { ACCESS_OK, ACCESS_NO_GUILD, ACCESS_DENIED };
enum pg_state { PG_NOT_CONFIGURED, PG_DOWN, PG_OK };
enum kind { KIND_CHAT, KIND_IMAGE, KIND_VIDEO, KIND_COUNT };

static const char *const kind_names[KIND_COUNT] = {"chat", "image", "video"};

struct adm;

/* A reply callback's argument: the job and which stream it is about.
 * Lives in struct facts, so as long as the job does. */
struct ctx {
    struct adm *a;
    int i;
};

struct queue {
    int err;          /* the stream could not be read */
    int has_group;    /* the "workers" group exists */
    int lag_known;    /* Redis could tell the group's lag */
    long long lag, pending, len;
};

struct keyrow {
    char provider[24], instance[32], fp[KEYPOOL_FP_MAX], reason[32];
    enum keypool_key_state state;
    int64_t until_ms;
};

/* What /상태 gathers before it answers. */
struct facts {
    struct peer peers[PEERS_MAX];
    size_t npeers;
    int have_failover;
    char servers[ROLE_COUNT + 1][160]; /* by enum role */
    uint64_t t_redis, t_pg;
    double redis_ms;                   /* -1: no answer */
    struct queue q[ROLE_COUNT + 1];
    struct ctx qx[ROLE_COUNT + 1];
    int keys_truncated, keys_err;
    struct keyrow keys[KEYS_SHOWN];
    int nkeys, keys_more;
    enum pg_state pg;
    double pg_ms;
    struct {
        long long amount, users, busiest;
    } use[KIND_COUNT];
};

struct adm {
    struct core *c;
    struct jobctx jc;         /* owed: Redis and PostgreSQL replies, then the edit */
    struct ixjob ix;
    struct ixjob_edit *edit;
    struct facts *f;          /* /상태 only */
};

/* ---- the job's life ------------------------------------------------------------- */

static const char *say(const struct adm *a, const char *ko, const char *en)
{
    return a->ix.ko ? ko : en;
}

static void adm_release(void *arg)
{
    struct adm *a = arg;
    mem_free(a->f);
    ixjob_free(&a->ix);
    mem_free(a);
}

/* The bus is closing with the job in flight. */
static void adm_stop(void *arg)
{
    struct adm *a = arg;
    if (a->edit) {
        ixjob_edit_cancel(a->edit);
        a->edit = NULL;
        jobctx_forget(&a->jc);
    }
}

static void adm_end(struct adm *a, enum bus_result r, const char *why)
{
    jobctx_finish(&a->jc, r, why);
}

static void on_edited(int status, int code, void *arg)
{
    struct adm *a = arg;
    a->edit = NULL;
    if (!jobctx_back(&a->jc))
        return;
    if (status)
        log_warn("admin answer not delivered", LF_STR("command", a->ix.command), LF_INT("status", status),
                 LF_INT("code", code));
    adm_end(a, status ? BUS_FAILED : BUS_DONE, status ? "answer not delivered" : NULL);
}

/* Edit the deferred (ephemeral) response with msg, which is consumed. A
 * status is read-only, so a job whose lease is merely unsure may answer:
 * two answers would edit the same message with the same facts. */
static void adm_send(struct adm *a, struct json_object *msg)
{
    if (!jobctx_ours(&a->jc) || !core_rest(a->c)) {
        /* another consumer owns the job now: it answers, not us */
        json_object_put(msg);
        adm_end(a, BUS_DONE, NULL);
        return;
    }
    struct json_object *am = json_object_new_object();
    json_object_object_add(am, "parse", json_object_new_array());
    json_object_object_add(msg, "allowed_mentions", am);
    const char *json = json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    /* NULL only for bad arguments: then on_edited never runs */
    jobctx_wait(&a->jc);
    a->edit = ixjob_edit_original(core_loop(a->c), core_rest(a->c), &a->ix, json, on_edited, a);
    json_object_put(msg);
    if (!a->edit) {
        jobctx_forget(&a->jc);
        adm_end(a, BUS_FAILED, "job without an application id or token");
    }
}

static void adm_say(struct adm *a, const char *text)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "content", json_object_new_string(text));
    adm_send(a, o);
}

/* ---- who may ask ------------------------------------------------------------------ */

/* 1 when id is one of the comma-separated names in list (no blanks:
 * ADMIN_ROLE_IDS is normalized by config, failover writes none). */
static int listed(const char *list, const char *id)
{
    size_t n = strlen(id);
    for (const char *p = list; *p;) {
        size_t m = strcspn(p, ",");
        if (m == n && !strncmp(p, id, n))
            return 1;
        p += m + (p[m] == ',');
    }
    return 0;
}

static int has_administrator(const struct ixjob *ix)
{
    struct json_object *v;
    if (!json_object_object_get_ex(ix->root, "member_permissions", &v) || !json_object_is_type(v, json_type_string))
        return 0;
    const char *s = json_object_get_string(v);
    char *end;
    errno = 0;
    unsigned long long bits = strtoull(s, &end, 10);
    return *s >= '0' && *s <= '9' && !*end && !errno && (bits & PERM_ADMINISTRATOR);
}

static int has_admin_role(const struct config *cfg, const struct ixjob *ix)
{
    struct json_object *v;
    if (!*cfg->admin_role_ids || !json_object_object_get_ex(ix->root, "member_roles", &v) ||
        !json_object_is_type(v, json_type_array))
        return 0;
    size_t n = json_object_array_length(v);
    for (size_t i = 0; i < n && i < MEMBER_ROLES_MAX; i++) {
        struct json_object *r = json_object_array_get_idx(v, i);
        if (json_object_is_type(r, json_type_string) && listed(cfg->admin_role_ids, json_object_get_string(r)))
            return 1;
    }
    return 0;
}

/* Decided from the job's payload, which the ingress copied from Discord's
 * interaction (member permissions already include channel overwrites). */
static enum access access_of(const struct config *cfg, const struct ixjob *ix)
{
    if (!ix->guild_id || !*ix->guild_id)
        return ACCESS_NO_GUILD;
    return has_administrator(ix) || has_admin_role(cfg, ix) ? ACCESS_OK : ACCESS_DENIED;
}

static void refuse(struct adm *a, enum access why)
{
    log_info("admin command refused", LF_STR("command", a->ix.command),
             LF_STR("user", a->ix.user_id ? a->ix.user_id : "?"),
             LF_STR("why", why == ACCESS_NO_GUILD ? "direct message" : "not an administrator"));
    if (why == ACCESS_NO_GUILD)
        adm_say(a, say(a, "이 명령은 서버 안에서만 쓸 수 있습니다.", "This command works only inside a server."));
    else
        adm_say(a, say(a, "이 명령은 서버 관리자만 쓸 수 있습니다.", "This command is for server administrators only."));
}

/* ---- text helpers ---------------------------------------------------------------- */

/* Bytes of the character at s[0..n) (n > 0), and in *w how many Discord
 * counts it as: UTF-16 code units, 2 outside the BMP (a surrogate pair),
 * else 1, an ill-formed byte included. */
static size_t char_at(const char *s, size_t n, size_t *w)
{
    uint32_t cp = 0;
    size_t len = utf8_decode(s, n, &cp);
    *w = cp >= 0x10000 ? 2 : 1;
    return len ? len : 1;
}

/* Characters as Discord counts them in s[0..n). */
static size_t chars_n(const char *s, size_t n)
{
    size_t c = 0, w;
    for (size_t i = 0; i < n; c += w)
        i += char_at(s + i, n - i, &w);
    return c;
}

static size_t chars(const char *s)
{
    return chars_n(s, strlen(s));
}

/* Bytes of the longest prefix of s[0..n) holding at most max characters,
 * ending on a code point boundary. */
static size_t prefix_bytes(const char *s, size_t n, size_t max)
{
    size_t c = 0, i = 0, w;
    while (i < n) {
        size_t len = char_at(s + i, n - i, &w);
        if (c + w > max)
            break;
        c += w;
        i += len;
    }
    return i;
}

/* A name from Redis (an instance, a provider, a role list) made safe for
 * Markdown: letters, digits, '-', '_', '.' and ',' only. */
static void clean(char *out, size_t len, const char *in, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < len; i++) {
        char ch = in[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 strchr("-_.,", ch);
        out[o++] = ok && ch ? ch : '?';
    }
    out[o] = '\0';
}

static void fmt_duration(char *out, size_t n, int64_t s, int ko)
{
    if (s < 0)
        s = 0;
    if (s < 60)
        snprintf(out, n, ko ? "%" PRId64 "초" : "%" PRId64 "s", s);
    else if (s < 3600)
        snprintf(out, n, ko ? "%" PRId64 "분 %" PRId64 "초" : "%" PRId64 "m %" PRId64 "s", s / 60, s % 60);
    else if (s < 86400)
        snprintf(out, n, ko ? "%" PRId64 "시간 %" PRId64 "분" : "%" PRId64 "h %" PRId64 "m", s / 3600, s / 60 % 60);
    else
        snprintf(out, n, ko ? "%" PRId64 "일 %" PRId64 "시간" : "%" PRId64 "d %" PRId64 "h", s / 86400,
                 s / 3600 % 24);
}

static void fmt_ms(char *out, size_t n, double ms, int ko)
{
    if (ms < 0)
        snprintf(out, n, "%s", ko ? "응답 없음" : "down");
    else
        snprintf(out, n, "%s (%.1f ms)", ko ? "정상" : "ok", ms);
}

/* ---- embeds within Discord's limits ---------------------------------------------- */

struct embed {
    struct json_object *obj, *fields;
    size_t total; /* characters counted toward EMBED_TOTAL_MAX */
    int nfields;
    int ko;
};

static void embed_init(struct embed *e, int ko, const char *title, const char *description)
{
    e->ko = ko;
    e->obj = json_object_new_object();
    e->fields = json_object_new_array();
    json_object_object_add(e->obj, "title", json_object_new_string(title));
    json_object_object_add(e->obj, "description", json_object_new_string(description));
    json_object_object_add(e->obj, "color", json_object_new_int(EMBED_COLOR));
    e->total = chars(title) + chars(description);
    e->nfields = 0;
}

/* The message holding the embed; the embed is consumed. */
static struct json_object *embed_message(struct embed *e)
{
    char ts[40];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_object_object_add(e->obj, "timestamp", json_object_new_string(ts));
    json_object_object_add(e->obj, "fields", e->fields);
    struct json_object *msg = json_object_new_object(), *arr = json_object_new_array();
    json_object_array_add(arr, e->obj);
    json_object_object_add(msg, "embeds", arr);
    return msg;
}

/* Characters a value under name may still have. */
static size_t field_room(const struct embed *e, const char *name)
{
    size_t used = e->total + chars(name);
    if (e->nfields >= EMBED_FIELDS_MAX || used >= EMBED_TOTAL_MAX)
        return 0;
    return EMBED_TOTAL_MAX - used < FIELD_VALUE_MAX ? EMBED_TOTAL_MAX - used : FIELD_VALUE_MAX;
}

static void embed_field(struct embed *e, const char *name, const char *value)
{
    struct json_object *f = json_object_new_object();
    json_object_object_add(f, "name", json_object_new_string(name));
    json_object_object_add(f, "value", json_object_new_string(value));
    json_object_object_add(f, "inline", json_object_new_boolean(0));
    json_object_array_add(e->fields, f);
    e->total += chars(name) + chars(value);
    e->nfields++;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (const char *p = s; *p; n++) {
        p += strcspn(p, "\n");
        p += *p == '\n';
    }
    return n;
}

/* Fill one field's value v from *p with whole lines while they fit in room
 * characters; a single line longer than a field is cut. Returns the lines
 * taken. */
static int fill_field(struct buf *v, const char **p, int left, size_t room)
{
    int taken = 0;
    size_t have = 0;
    while (taken < left) {
        size_t n = strcspn(*p, "\n"), c = chars_n(*p, n) + (v->len ? 1 : 0);
        if (have + c > room) {
            if (v->len || room < 2)
                break;
            buf_append(v, *p, prefix_bytes(*p, n, room - 1));
            buf_puts(v, "…");
            c = room;
        } else {
            if (v->len)
                buf_puts(v, "\n");
            buf_append(v, *p, n);
        }
        have += c;
        *p += n + ((*p)[n] == '\n');
        taken++;
    }
    return taken;
}

/* Add lines ('\n'-separated) under name, in up to max_fields fields (the
 * later ones named "name (cont.)"), each within a field's limit and the
 * embed's. Lines that do not fit, plus `hidden` items that were never
 * made into lines, end as "… and N more". Returns 0, or the error of a
 * field's text that could not be built whole (nothing more is added). */
static int embed_section(struct embed *e, const char *name, const char *lines, int max_fields, int hidden)
{
    int left = count_lines(lines);
    const char *p = lines;
    char fname[FIELD_NAME_MAX], cont[FIELD_NAME_MAX];
    snprintf(fname, sizeof(fname), "%s", name);
    snprintf(cont, sizeof(cont), "%s %s", name, e->ko ? "(계속)" : "(cont.)");
    struct buf v;
    buf_init(&v, 8 * FIELD_VALUE_MAX);
    for (int field = 0; left > 0 && field < max_fields; field++) {
        size_t room = field_room(e, fname);
        if (room < TAIL_RESERVE + 20)
            break; /* the embed is full */
        buf_reset(&v);
        left -= fill_field(&v, &p, left, room - TAIL_RESERVE);
        /* can the rest go on in another field after this one? */
        size_t after = e->total + chars(fname) + chars_n(v.p, v.len) + chars(cont);
        int more_fields = field + 1 < max_fields && e->nfields + 2 <= EMBED_FIELDS_MAX &&
                          after + TAIL_RESERVE + 20 <= EMBED_TOTAL_MAX;
        if ((left > 0 && !more_fields) || (left == 0 && hidden > 0)) {
            buf_printf(&v, e->ko ? "\n… 외 %d개" : "\n… and %d more", left + hidden);
            left = 0;
        }
        /* the appends to v are checked here, once: a buf's failure is
         * sticky, so v is either whole or known to be cut */
        int rc = buf_error(&v);
        if (rc) {
            buf_free(&v);
            return rc;
        }
        embed_field(e, fname, buf_str(&v));
        snprintf(fname, sizeof(fname), "%s", cont);
    }
    buf_free(&v);
    return 0;
}

/* An answer whose text could not be built whole (a buffer's cap): drop the
 * embed, log it and tell the user so instead of showing part of it. */
static void too_large(struct adm *a, struct embed *e, const char *section, int rc)
{
    json_object_put(e->obj);
    json_object_put(e->fields);
    log_error("admin answer too large, not sent", LF_STR("command", a->ix.command), LF_STR("section", section),
              LF_ERR(rc));
    adm_say(a, say(a, "응답이 너무 커서 보여 줄 수 없습니다. 관리자는 인스턴스 로그를 확인하세요.",
                   "The answer is too large to show; an operator can find the details in the instance log."));
}

/* ---- /인스턴스 -------------------------------------------------------------------- */

/* Who reads role's stream, "admin-4 (takeover)" for a taker, or "nobody". */
static void servers_text(const char *servers, enum role r, int ko, struct buf *out)
{
    if (!*servers) {
        buf_puts(out, ko ? "없음" : "nobody");
        return;
    }
    const char *rn = role_name(r);
    size_t rl = strlen(rn);
    for (const char *p = servers; *p;) {
        size_t n = strcspn(p, ",");
        char name[64];
        clean(name, sizeof(name), p, n);
        int taker = strncmp(name, rn, rl) || name[rl] != '-';
        buf_printf(out, "%s**%s**%s", p == servers ? "" : ", ", name, !taker ? "" : ko ? " (인계)" : " (takeover)");
        p += n + (p[n] == ',');
    }
}

/* Bytes of a glob list written out before it stops with "…": far more
 * than a field shows (embed_section cuts the line there, visibly), far
 * less than the lines buffer holds, whatever the length of the setting. */
#define GLOBS_TEXT_MAX (4 * FIELD_VALUE_MAX)

/* A config glob list "a-*,b" as "`a-*`, `b`" (backticks dropped). */
static void globs_text(const char *globs, struct buf *out)
{
    size_t start = out->len;
    for (const char *p = globs; *p;) {
        if (out->len - start > GLOBS_TEXT_MAX) {
            buf_puts(out, ", …");
            return;
        }
        size_t n = strcspn(p, ",");
        buf_printf(out, "%s`", p == globs ? "" : ", ");
        for (size_t i = 0; i < n; i++)
            if (p[i] != '`')
                buf_append(out, &p[i], 1);
        buf_puts(out, "`");
        p += n + (p[n] == ',');
    }
}

static const char *role_globs(const struct config *cfg, enum role r)
{
    return r == ROLE_CHAT ? cfg->chat_channels : r == ROLE_IMAGE ? cfg->image_channels
                                               : r == ROLE_VIDEO ? cfg->video_channels : NULL;
}

static void instances_answer(struct adm *a)
{
    const struct config *cfg = core_config(a->c);
    const struct failover *fo = core_failover(a->c);
    int ko = a->ix.ko;
    char desc[128];
    snprintf(desc, sizeof(desc), ko ? "응답: **%s**" : "Answered by **%s**", cfg->name);
    struct embed e;
    embed_init(&e, ko, ko ? "역할별 담당 인스턴스" : "Who serves which role", desc);
    struct buf lines;
    buf_init(&lines, 16 * FIELD_VALUE_MAX);
    for (enum role r = ROLE_CHAT; r <= ROLE_ADMIN; r++) {
        char servers[160] = "";
        if (fo)
            failover_servers(fo, r, servers, sizeof(servers));
        buf_reset(&lines);
        buf_puts(&lines, ko ? "담당: " : "Served by: ");
        servers_text(servers, r, ko, &lines);
        buf_puts(&lines, ko ? "\n채널: " : "\nChannels: ");
        if (role_globs(cfg, r))
            globs_text(role_globs(cfg, r), &lines);
        else
            buf_puts(&lines, ko ? "어디서나" : "anywhere");
        int rc = buf_error(&lines);
        if (rc || (rc = embed_section(&e, role_name(r), buf_str(&lines), 1, 0))) {
            buf_free(&lines);
            too_large(a, &e, role_name(r), rc);
            return;
        }
    }
    buf_free(&lines);
    adm_send(a, embed_message(&e));
}

/* ---- /상태: gathering ------------------------------------------------------------- */

static void status_answer(struct adm *a);

/* One reply owed to the job came back; the answer goes out with the last. */
static void done_one(struct adm *a)
{
    if (jobctx_back(&a->jc) && !a->jc.pending)
        status_answer(a);
}

static void on_ping(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct adm *a = arg;
    if (!status && reply && !rds_reply_error(reply))
        a->f->redis_ms = (double)(uv_hrtime() - a->f->t_redis) / 1e6;
    done_one(a);
}

static long long field_int(const redisReply *v)
{
    if (v->type == REDIS_REPLY_INTEGER)
        return v->integer;
    if (v->type == REDIS_REPLY_STRING)
        return strtoll(v->str, NULL, 10);
    return 0;
}

/* One group of XINFO GROUPS: a flat list of name, value pairs. */
static void xinfo_group(struct queue *q, const redisReply *g)
{
    const redisReply *name = NULL, *pending = NULL, *lag = NULL;
    for (size_t i = 0; g->type == REDIS_REPLY_ARRAY && i + 1 < g->elements; i += 2) {
        const redisReply *k = g->element[i], *v = g->element[i + 1];
        if (k->type != REDIS_REPLY_STRING)
            continue;
        if (!strcmp(k->str, "name"))
            name = v;
        else if (!strcmp(k->str, "pending"))
            pending = v;
        else if (!strcmp(k->str, "lag"))
            lag = v;
    }
    if (!name || name->type != REDIS_REPLY_STRING || strcmp(name->str, BUS_GROUP))
        return;
    q->has_group = 1;
    q->pending = pending ? field_int(pending) : 0;
    q->lag_known = lag && lag->type == REDIS_REPLY_INTEGER;
    q->lag = q->lag_known ? lag->integer : 0;
}

static void on_xinfo(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct ctx *x = arg;
    struct queue *q = &x->a->f->q[x->i];
    const char *err = reply ? rds_reply_error(reply) : NULL;
    if (status || !reply)
        q->err = 1;
    else if (err)
        q->err = !strstr(err, "no such key"); /* a missing stream is an empty one */
    else if (reply->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < reply->elements; i++)
            xinfo_group(q, reply->element[i]);
    done_one(x->a);
}

static void on_xlen(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct ctx *x = arg;
    struct queue *q = &x->a->f->q[x->i];
    if (!status && reply && reply->type == REDIS_REPLY_INTEGER)
        q->len = reply->integer;
    else
        q->err = 1;
    done_one(x->a);
}

static void queues_probe(struct adm *a)
{
    struct facts *f = a->f;
    for (enum role r = ROLE_CHAT; r <= ROLE_ADMIN; r++) {
        char key[200];
        bus_stream_key(core_bus(a->c), role_name(r), key, sizeof(key));
        const char *xinfo[] = {"XINFO", "GROUPS", key}, *xlen[] = {"XLEN", key};
        f->qx[r] = (struct ctx){a, (int)r};
        if (rds_cmd(core_redis(a->c), on_xinfo, &f->qx[r], 3, xinfo, NULL) == 0)
            jobctx_wait(&a->jc);
        else
            f->q[r].err = 1;
        if (rds_cmd(core_redis(a->c), on_xlen, &f->qx[r], 2, xlen, NULL) == 0)
            jobctx_wait(&a->jc);
        else
            f->q[r].err = 1;
    }
}

/* A key as keypool read it back, made into a row to show. */
static void key_row(struct facts *f, const struct keypool_entry *e)
{
    struct keyrow *k = &f->keys[f->nkeys++];
    memset(k, 0, sizeof(*k));
    clean(k->provider, sizeof(k->provider), e->provider, e->provider_len);
    clean(k->instance, sizeof(k->instance), e->instance, e->instance_len);
    snprintf(k->fp, sizeof(k->fp), "%s", e->fp);
    k->state = e->state;
    if (e->reason)
        clean(k->reason, sizeof(k->reason), e->reason, strlen(e->reason));
    k->until_ms = e->until_ms;
}

static void on_keys(int status, const struct keypool_state *st, void *arg)
{
    struct adm *a = arg;
    struct facts *f = a->f;
    f->keys_err = status != 0;
    f->keys_truncated = st->truncated;
    for (size_t i = 0; i < st->n && f->nkeys < KEYS_SHOWN; i++)
        key_row(f, &st->entries[i]);
    f->keys_more = (int)st->more;
    done_one(a);
}

static void keys_probe(struct adm *a)
{
    if (keypool_read_state(core_redis(a->c), core_config(a->c)->redis_prefix, KEYS_SHOWN, on_keys, a) == 0)
        jobctx_wait(&a->jc);
    else
        a->f->keys_err = 1;
}

static void on_usage(int status, const struct usage_total *t, size_t n, void *arg)
{
    struct adm *a = arg;
    struct facts *f = a->f;
    if (status) {
        f->pg = PG_DOWN;
        done_one(a);
        return;
    }
    f->pg = PG_OK;
    f->pg_ms = (double)(uv_hrtime() - f->t_pg) / 1e6;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < KIND_COUNT; k++)
            if (!strcmp(t[i].kind, kind_names[k])) {
                f->use[k].amount = t[i].amount;
                f->use[k].users = t[i].users;
                f->use[k].busiest = t[i].busiest;
            }
    done_one(a);
}

static void usage_probe(struct adm *a)
{
    struct store *s = core_store(a->c);
    if (!s) {
        a->f->pg = PG_NOT_CONFIGURED;
        return;
    }
    a->f->pg = PG_DOWN;
    a->f->t_pg = uv_hrtime();
    if (usage_totals_today(s, on_usage, a) == 0)
        jobctx_wait(&a->jc);
}

static void status_start(struct adm *a)
{
    struct facts *f = a->f = mem_calloc(1, sizeof(*f));
    const struct failover *fo = core_failover(a->c);
    if (fo) {
        f->have_failover = 1;
        f->npeers = failover_peers(fo, f->peers, PEERS_MAX);
        for (enum role r = ROLE_CHAT; r <= ROLE_ADMIN; r++)
            failover_servers(fo, r, f->servers[r], sizeof(f->servers[r]));
    }
    f->redis_ms = f->pg_ms = -1;
    jobctx_wait(&a->jc); /* released below, once everything is asked */
    const char *ping[] = {"PING"};
    f->t_redis = uv_hrtime();
    if (rds_cmd(core_redis(a->c), on_ping, a, 1, ping, NULL) == 0)
        jobctx_wait(&a->jc);
    queues_probe(a);
    keys_probe(a);
    usage_probe(a);
    done_one(a);
}

/* ---- /상태: the answer ------------------------------------------------------------- */

static const char *state_text(enum peer_state s, int ko)
{
    if (!ko)
        return failover_state_name(s);
    return s == PEER_UP ? "정상" : s == PEER_SUSPECT ? "응답 지연" : s == PEER_DOWN ? "중단" : "종료 중";
}

static void peer_line(const struct facts *f, const struct peer *p, int ko, struct buf *out)
{
    char name[40], serving[80], servers[160], up[48];
    clean(name, sizeof(name), p->name, strnlen(p->name, sizeof(p->name)));
    clean(serving, sizeof(serving), p->serving, strnlen(p->serving, sizeof(p->serving)));
    const char *rn = role_name(p->role);
    const char *taken = p->role >= ROLE_CHAT && p->role <= ROLE_ADMIN ? f->servers[p->role] : "";
    buf_printf(out, "**%s** · %s · ", name, rn);
    if ((p->state == PEER_DOWN || p->state == PEER_DRAINING) && *taken && !listed(taken, p->name)) {
        clean(servers, sizeof(servers), taken, strlen(taken));
        buf_printf(out, ko ? "인계됨 → %s" : "taken over by %s", servers);
    } else {
        buf_puts(out, state_text(p->state, ko));
    }
    fmt_duration(up, sizeof(up), p->uptime_s, ko);
    buf_printf(out, ko ? " · 가동 %s · 처리 중 %lld · 처리 %lld · 실패 %lld" : " · uptime %s · in flight %lld · "
                                                                  "processed %lld · failed %lld",
               up, p->inflight, p->processed, p->failed);
    if (*serving && strcmp(serving, rn))
        buf_printf(out, ko ? " · 읽는 역할 %s" : " · serving %s", serving);
    buf_puts(out, "\n");
}

static int section_instances(struct embed *e, const struct facts *f)
{
    struct buf b;
    buf_init(&b, 64 << 10);
    for (size_t i = 0; i < f->npeers; i++)
        peer_line(f, &f->peers[i], e->ko, &b);
    if (!f->npeers)
        buf_puts(&b, !f->have_failover ? (e->ko ? "정보 없음" : "unknown") : (e->ko ? "아직 없음" : "none seen yet"));
    int rc = buf_error(&b);
    if (!rc)
        rc = embed_section(e, e->ko ? "인스턴스" : "Instances", buf_str(&b), 4, 0);
    buf_free(&b);
    return rc;
}

static int section_queues(struct embed *e, const struct facts *f)
{
    struct buf b;
    buf_init(&b, 16 << 10);
    for (enum role r = ROLE_CHAT; r <= ROLE_ADMIN; r++) {
        const struct queue *q = &f->q[r];
        buf_printf(&b, "**%s** ", role_name(r));
        if (q->err) {
            buf_puts(&b, e->ko ? "읽을 수 없음\n" : "unreadable\n");
            continue;
        }
        /* without a group nobody read anything yet: all of it waits */
        long long backlog = q->has_group && q->lag_known ? q->lag : q->len;
        buf_printf(&b, e->ko ? "대기 %s%lld · 처리 중 %lld\n" : "backlog %s%lld · pending %lld\n",
                   q->has_group && !q->lag_known ? "≤" : "", backlog, q->has_group ? q->pending : 0);
    }
    int rc = buf_error(&b);
    if (!rc)
        rc = embed_section(e, e->ko ? "대기열" : "Queues", buf_str(&b), 1, 0);
    buf_free(&b);
    return rc;
}

static int peer_live(const struct facts *f, const char *name)
{
    for (size_t i = 0; i < f->npeers; i++)
        if (!strcmp(f->peers[i].name, name))
            return f->peers[i].state == PEER_UP || f->peers[i].state == PEER_SUSPECT;
    return 0;
}

static int keyrow_cmp(const void *x, const void *y)
{
    const struct keyrow *a = x, *b = y;
    int c = strcmp(a->provider, b->provider);
    if (!c)
        c = strcmp(a->instance, b->instance);
    return c ? c : strcmp(a->fp, b->fp);
}

static void key_line(const struct facts *f, const struct keyrow *k, int ko, struct buf *b)
{
    buf_printf(b, "`%s` %s · %s: ", k->fp, k->provider, k->instance);
    if (k->state == KEYPOOL_KEY_OK)
        buf_puts(b, ko ? "정상" : "ok");
    else if (k->state == KEYPOOL_KEY_COOLING && k->until_ms > 0)
        buf_printf(b, ko ? "대기 (<t:%" PRId64 ":T>까지)" : "cooling until <t:%" PRId64 ":T>", k->until_ms / 1000);
    else if (k->state == KEYPOOL_KEY_COOLING)
        buf_puts(b, ko ? "대기" : "cooling");
    else if (k->state == KEYPOOL_KEY_OUT)
        buf_puts(b, ko ? "제외됨" : "out");
    else
        buf_puts(b, "?");
    if (*k->reason && k->state != KEYPOOL_KEY_OK)
        buf_printf(b, " (%s)", k->reason);
    if (!peer_live(f, k->instance))
        buf_puts(b, ko ? " · 오래된 정보 (인스턴스 중단)" : " · stale (instance not running)");
    buf_puts(b, "\n");
}

static int section_keys(struct embed *e, struct facts *f)
{
    struct buf b;
    buf_init(&b, 32 << 10);
    qsort(f->keys, (size_t)f->nkeys, sizeof(f->keys[0]), keyrow_cmp);
    /* the notes first: they must survive the truncation of the list */
    if (f->keys_truncated)
        buf_puts(&b, e->ko ? "(일부 키 풀은 읽지 않음)\n" : "(not every key pool was read)\n");
    if (f->keys_err)
        buf_puts(&b, e->ko ? "(Redis에서 일부를 읽지 못함)\n" : "(could not read all of it from Redis)\n");
    for (int i = 0; i < f->nkeys; i++)
        key_line(f, &f->keys[i], e->ko, &b);
    if (!b.len && !f->keys_more)
        buf_puts(&b, e->ko ? "등록된 키 없음" : "no keys registered");
    int rc = buf_error(&b);
    if (!rc)
        rc = embed_section(e, e->ko ? "API 키" : "Provider keys", buf_str(&b), 2, f->keys_more);
    buf_free(&b);
    return rc;
}

static void usage_line(const struct facts *f, int k, int limit, int ko, struct buf *b)
{
    static const char *const ko_kind[KIND_COUNT] = {"채팅", "이미지", "영상"};
    static const char *const ko_unit[KIND_COUNT] = {"요청", "이미지", "영상"};
    static const char *const ko_count[KIND_COUNT] = {"건", "장", "개"};
    static const char *const en_unit[KIND_COUNT] = {"requests", "images", "videos"};
    char lim[48];
    if (limit > 0)
        snprintf(lim, sizeof(lim), "%lld/%d", f->use[k].busiest, limit);
    else
        snprintf(lim, sizeof(lim), ko ? "%lld (제한 없음)" : "%lld (no limit)", f->use[k].busiest);
    if (ko)
        buf_printf(b, "**%s** %s %lld%s · 사용자 %lld명 · 최다 사용자 %s\n", ko_kind[k], ko_unit[k], f->use[k].amount,
                   ko_count[k], f->use[k].users, lim);
    else
        buf_printf(b, "**%s** %lld %s by %lld users · busiest user %s\n", kind_names[k], f->use[k].amount,
                   en_unit[k], f->use[k].users, lim);
}

static int section_usage(struct embed *e, const struct facts *f, const struct config *cfg)
{
    struct buf b;
    buf_init(&b, 8 << 10);
    if (f->pg == PG_NOT_CONFIGURED) {
        buf_puts(&b, e->ko ? "PostgreSQL이 설정되지 않아 사용량을 기록하지 않습니다." : "PostgreSQL is not configured: "
                                                                                  "usage is not recorded.");
    } else if (f->pg == PG_DOWN) {
        buf_puts(&b, e->ko ? "PostgreSQL이 응답하지 않아 알 수 없습니다." : "Unknown: PostgreSQL is down.");
    } else {
        usage_line(f, KIND_CHAT, cfg->user_daily_limit, e->ko, &b);
        usage_line(f, KIND_IMAGE, cfg->user_daily_images, e->ko, &b);
        usage_line(f, KIND_VIDEO, cfg->user_daily_videos, e->ko, &b);
    }
    int rc = buf_error(&b);
    if (!rc)
        rc = embed_section(e, e->ko ? "오늘 사용량 (UTC) · 사용자당 하루 한도" : "Usage today (UTC) · per-user daily limit",
                           buf_str(&b), 1, 0);
    buf_free(&b);
    return rc;
}

static void status_answer(struct adm *a)
{
    struct facts *f = a->f;
    const struct config *cfg = core_config(a->c);
    int ko = a->ix.ko;
    char desc[512], redis[64], pg[64];
    fmt_ms(redis, sizeof(redis), f->redis_ms, ko);
    if (f->pg == PG_NOT_CONFIGURED)
        snprintf(pg, sizeof(pg), "%s", ko ? "설정 안 됨" : "not configured");
    else
        fmt_ms(pg, sizeof(pg), f->pg == PG_OK ? f->pg_ms : -1, ko);
    snprintf(desc, sizeof(desc), ko ? "응답: **%s**\nRedis: %s\nPostgreSQL: %s" : "Answered by **%s**\nRedis: %s\n"
                                                                              "PostgreSQL: %s",
             cfg->name, redis, pg);
    struct embed e;
    embed_init(&e, ko, ko ? "클러스터 상태" : "Cluster status", desc);
    /* each section's text is checked once (bufs fail sticky): an answer
     * is whole, or it is an error, never a status with a part missing */
    int rc = section_instances(&e, f);
    const char *what = "instances";
    if (!rc && (rc = section_queues(&e, f)))
        what = "queues";
    if (!rc && (rc = section_usage(&e, f, cfg)))
        what = "usage";
    if (!rc && (rc = section_keys(&e, f)))
        what = "keys";
    if (rc) {
        too_large(a, &e, what, rc);
        return;
    }
    adm_send(a, embed_message(&e));
}

/* ---- dispatch --------------------------------------------------------------------- */

static void on_interaction(struct bus *b, struct bus_job *job, void *arg)
{
    (void)b;
    struct core *c = arg;
    struct ixjob ix;
    if (ixjob_parse(&ix, job->payload)) {
        bus_finish(job, BUS_FAILED, "malformed interaction job");
        return;
    }
    if (!ix.cmd || ix.cmd->role != ROLE_ADMIN) {
        ixjob_free(&ix);
        bus_finish(job, BUS_FAILED, "not a command of the admin role");
        return;
    }
    if (ix.cmd->id == ADMIN_CMD_PING) {
        struct ping_deps d = {core_loop(c), core_rest(c), core_redis(c), core_config(c)};
        ping_run(&d, job, &ix);
        return;
    }
    struct adm *a = mem_calloc(1, sizeof(*a));
    a->c = c;
    a->ix = ix;
    jobctx_start(&a->jc, job, adm_stop, adm_release, a);
    enum access acc = access_of(core_config(c), &a->ix);
    if (acc != ACCESS_OK)
        refuse(a, acc);
    else if (ix.cmd->id == ADMIN_CMD_STATUS)
        status_start(a);
    else
        instances_answer(a);
}

int admincmd_setup(struct core *c)
{
    return bus_register_role(core_bus(c), "admin", "discord.interaction", on_interaction, c);
}
