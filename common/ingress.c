#include "ingress.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "buf.h"
#include "cmds.h"
#include "drest.h"
#include "err.h"
#include "glob.h"
#include "httpd.h"
#include "log.h"
#include "mem.h"
#include "rds.h"

#define BATCH_MAX 256
#define CHAN_MAX 200000            /* cached channels */
#define TOKEN_TTL_MS (15 * 60 * 1000)
#define SEEN_TTL_S "900"
/* An interaction older than this (by its snowflake) cannot be acknowledged
 * any more (Discord allows 3 s): it is not routed. The margin covers clock
 * skew between Discord and us. */
#define STALE_INTERACTION_MS 10000
#define DISCORD_EPOCH_MS 1420070400000LL

/* ---- channel cache: id -> name, parent -------------------------------- */

struct chan {
    uint64_t id, parent;
    char *name;
};

struct chan_table {
    struct chan *slots;
    size_t cap, len;
};

static uint64_t snowflake(const char *s)
{
    return s ? strtoull(s, NULL, 10) : 0;
}

static struct chan *chan_find(struct chan_table *t, uint64_t id)
{
    if (!t->cap || !id)
        return NULL;
    for (size_t i = (id * 0x9E3779B97F4A7C15ull) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        if (t->slots[i].id == id)
            return &t->slots[i];
        if (!t->slots[i].id)
            return NULL;
    }
}

static void chan_put_slot(struct chan_table *t, struct chan c)
{
    for (size_t i = (c.id * 0x9E3779B97F4A7C15ull) & (t->cap - 1);; i = (i + 1) & (t->cap - 1))
        if (!t->slots[i].id) {
            t->slots[i] = c;
            t->len++;
            return;
        }
}

static void chan_set(struct chan_table *t, uint64_t id, const char *name, uint64_t parent)
{
    if (!id || !name)
        return;
    struct chan *c = chan_find(t, id);
    if (c) {
        mem_free(c->name);
        c->name = mem_strdup(name);
        c->parent = parent;
        return;
    }
    if (t->len >= CHAN_MAX)
        return;
    if ((t->len + 1) * 2 > t->cap) {
        struct chan_table n = {mem_calloc(t->cap ? t->cap * 2 : 256, sizeof(struct chan)), t->cap ? t->cap * 2 : 256,
                               0};
        for (size_t i = 0; i < t->cap; i++)
            if (t->slots[i].id)
                chan_put_slot(&n, t->slots[i]);
        mem_free(t->slots);
        *t = n;
    }
    chan_put_slot(t, (struct chan){id, parent, mem_strdup(name)});
}

/* Deleting from open addressing: re-insert the rest of the cluster. */
static void chan_del(struct chan_table *t, uint64_t id)
{
    struct chan *c = chan_find(t, id);
    if (!c)
        return;
    mem_free(c->name);
    size_t i = (size_t)(c - t->slots);
    t->slots[i].id = 0;
    t->len--;
    for (i = (i + 1) & (t->cap - 1); t->slots[i].id; i = (i + 1) & (t->cap - 1)) {
        struct chan moved = t->slots[i];
        t->slots[i].id = 0;
        t->len--;
        chan_put_slot(t, moved);
    }
}

static void chan_free(struct chan_table *t)
{
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].id)
            mem_free(t->slots[i].name);
    mem_free(t->slots);
    t->slots = NULL;
    t->cap = t->len = 0;
}

/* ---- the ingress ---------------------------------------------------------- */

struct ack {
    char id[24];
    char token[512];
    int ephemeral;
    int ko;
};

struct ingress {
    uv_loop_t *loop;
    const struct config *cfg;
    struct rds *redis;
    struct drest *rest;
    struct chan_table chans;
    char bot_user[24];
    char chan_key[128];
    char maxlen[16];

    /* holder state */
    char *lease_key, *session_key, *token;
    ingress_trouble_cb *trouble;
    void *trouble_arg;

    /* the batch being collected: Lua argv kept as offsets into one buffer */
    struct buf args;
    size_t offs[4 + 4 * BATCH_MAX], lens[4 + 4 * BATCH_MAX];
    int nargs, nevents;
    struct ack *acks;
    int nacks;
    uv_check_t flush;
    int closing;
    int broken; /* a batch was not stored: store nothing until the holder resyncs */

    unsigned public_key_ok;
    unsigned char public_key[crypto_sign_PUBLICKEYBYTES];
    struct ingress_stats st;
};

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static const char *jstr(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return NULL;
}

static struct json_object *jobj(struct json_object *o, const char *key)
{
    struct json_object *v;
    return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static int korean(struct json_object *ix)
{
    const char *loc = jstr(ix, "locale");
    return loc && !strncmp(loc, "ko", 2);
}

static const char *role_channels(const struct config *cfg, enum role r)
{
    switch (r) {
    case ROLE_CHAT:
        return cfg->chat_channels;
    case ROLE_IMAGE:
        return cfg->image_channels;
    case ROLE_VIDEO:
        return cfg->video_channels;
    default:
        return "*";
    }
}

/* Name of a channel, or of its parent when it is a thread: the one the
 * role patterns are matched against. Either may be NULL. */
static void channel_names(struct ingress *in, const char *channel_id, struct json_object *channel,
                          const char **name, const char **parent_name)
{
    struct chan *c = chan_find(&in->chans, snowflake(channel_id));
    *name = jstr(channel, "name");
    if (!*name && c)
        *name = c->name;
    uint64_t parent = snowflake(jstr(channel, "parent_id"));
    if (!parent && c)
        parent = c->parent;
    struct chan *p = chan_find(&in->chans, parent);
    *parent_name = p ? p->name : NULL;
}

static int channel_allowed(const char *patterns, const char *name, const char *parent_name)
{
    return (name && glob_list_match(patterns, name)) || (parent_name && glob_list_match(patterns, parent_name));
}

/* ---- Redis: channel names ------------------------------------------------ */

static void on_ignore(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    (void)status;
    (void)reply;
    (void)arg;
}

static void remember_channel(struct ingress *in, struct json_object *ch)
{
    const char *id = jstr(ch, "id"), *name = jstr(ch, "name"), *parent = jstr(ch, "parent_id");
    if (!id || !name)
        return;
    chan_set(&in->chans, snowflake(id), name, snowflake(parent));
    char val[512];
    snprintf(val, sizeof(val), "%s\t%s", name, parent ? parent : "");
    const char *av[] = {"HSET", in->chan_key, id, val};
    rds_cmd(in->redis, on_ignore, NULL, 4, av, NULL);
}

static void forget_channel(struct ingress *in, struct json_object *ch)
{
    const char *id = jstr(ch, "id");
    if (!id)
        return;
    chan_del(&in->chans, snowflake(id));
    const char *av[] = {"HDEL", in->chan_key, id};
    rds_cmd(in->redis, on_ignore, NULL, 3, av, NULL);
}

static void remember_list(struct ingress *in, struct json_object *arr)
{
    if (!arr || !json_object_is_type(arr, json_type_array))
        return;
    for (size_t i = 0; i < json_object_array_length(arr); i++)
        remember_channel(in, json_object_array_get_idx(arr, i));
}

struct load_ctx {
    struct ingress *in;
    void (*done)(int status, void *arg);
    void *arg;
};

static void on_channels(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct load_ctx *c = arg;
    struct ingress *in = c->in;
    void (*done)(int, void *) = c->done;
    void *darg = c->arg;
    mem_free(c);
    if (status || !reply || reply->type != REDIS_REPLY_ARRAY) {
        done(status ? status : BC_EREDIS, darg);
        return;
    }
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const char *val = reply->element[i + 1]->str;
        const char *tab = strchr(val, '\t');
        if (!tab)
            continue;
        char name[400];
        snprintf(name, sizeof(name), "%.*s", (int)(tab - val), val);
        chan_set(&in->chans, snowflake(reply->element[i]->str), name, snowflake(tab + 1));
    }
    log_info("channel names loaded", LF_INT("channels", in->chans.len));
    done(0, darg);
}

int ingress_load_channels(struct ingress *in, void (*done)(int status, void *arg), void *arg)
{
    struct load_ctx *c = mem_alloc(sizeof(*c));
    c->in = in;
    c->done = done;
    c->arg = arg;
    const char *av[] = {"HGETALL", in->chan_key};
    int rc = rds_cmd(in->redis, on_channels, c, 2, av, NULL);
    if (rc)
        mem_free(c);
    return rc;
}

/* ---- answering interactions ---------------------------------------------- */

struct cb_ctx {
    struct ingress *in;
    char what[16];
    char id[24];
};

static void on_callback_done(const struct drest_resp *r, void *arg)
{
    struct cb_ctx *c = arg;
    if (r->err == BC_ESHUTDOWN) {
        mem_free(c);
        return;
    }
    if (r->err || r->status >= 300) {
        /* 40060: another holder already acknowledged it (replay) — fine */
        if (r->code != 40060) {
            c->in->st.ack_failed++;
            log_warn("interaction callback failed", LF_STR("what", c->what), LF_STR("interaction", c->id),
                     LF_INT("status", r->status), LF_INT("code", r->code),
                     LF_STR("error", r->err ? r->errstr : (r->message ? r->message : "")));
        }
    }
    mem_free(c);
}

static void send_callback(struct ingress *in, const char *id, const char *token, const char *json, const char *what)
{
    if (!in->rest)
        return;
    char path[700];
    snprintf(path, sizeof(path), "/interactions/%s/%s/callback", id, token);
    struct cb_ctx *c = mem_calloc(1, sizeof(*c));
    c->in = in;
    snprintf(c->what, sizeof(c->what), "%s", what);
    snprintf(c->id, sizeof(c->id), "%s", id);
    struct drest_req rq = {.method = "POST", .path = path, .json = json, .json_len = strlen(json), .bot_auth = 0};
    if (drest_request(in->rest, &rq, on_callback_done, c)) {
        log_warn("interaction callback not sent", LF_STR("what", what), LF_STR("interaction", id));
        mem_free(c);
    }
}

/* {"type":4,"data":{"content":...,"flags":64}} */
static char *reply_json(const char *text)
{
    struct json_object *o = json_object_new_object(), *d = json_object_new_object();
    json_object_object_add(d, "content", json_object_new_string(text));
    json_object_object_add(d, "flags", json_object_new_int(64));
    json_object_object_add(o, "type", json_object_new_int(4));
    json_object_object_add(o, "data", d);
    char *s = mem_strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return s;
}

static const char *defer_json(int ephemeral)
{
    return ephemeral ? "{\"type\":5,\"data\":{\"flags\":64}}" : "{\"type\":5}";
}

/* ---- deciding ----------------------------------------------------------- */

struct decision {
    const struct cmd_def *cmd; /* route to cmd->role when reply is empty */
    char reply[600];           /* answer at once with this (ephemeral) */
    int ignore;                /* say nothing (autocomplete) */
};

static void decide(struct ingress *in, struct json_object *ix, struct decision *out)
{
    memset(out, 0, sizeof(*out));
    int ko = korean(ix);
    struct json_object *type = jobj(ix, "type"), *data = jobj(ix, "data");
    int t = type ? json_object_get_int(type) : 0;
    if (t == 4) {
        out->ignore = 1; /* autocomplete: no options offer suggestions */
        return;
    }
    if (t != 2) {
        snprintf(out->reply, sizeof(out->reply), "%s",
                 ko ? "이 상호작용은 아직 지원하지 않습니다." : "This kind of interaction is not supported yet.");
        return;
    }
    const char *name = jstr(data, "name");
    const struct cmd_def *cmd = name ? cmds_find(name) : NULL;
    if (!cmd) {
        snprintf(out->reply, sizeof(out->reply), "%s",
                 ko ? "알 수 없는 명령입니다." : "Unknown command.");
        return;
    }
    const char *guild = jstr(ix, "guild_id");
    if (in->cfg->enforce_channels && guild && !cmd->open_everywhere) {
        const char *patterns = role_channels(in->cfg, cmd->role), *cname, *pname;
        channel_names(in, jstr(ix, "channel_id"), jobj(ix, "channel"), &cname, &pname);
        if (!channel_allowed(patterns, cname, pname)) {
            snprintf(out->reply, sizeof(out->reply),
                     ko ? "/%s 명령은 다음 채널에서 사용할 수 있어요: %s" : "/%s works in these channels: %s", name,
                     patterns);
            return;
        }
    }
    if (!cmd->available) {
        snprintf(out->reply, sizeof(out->reply),
                 ko ? "/%s 명령은 이 버전에서 아직 제공되지 않습니다." : "/%s is not available in this version yet.",
                 name);
        return;
    }
    out->cmd = cmd;
}

/* The job for a worker: everything it needs without asking Discord. */
static char *interaction_payload(struct ingress *in, struct json_object *ix, const struct cmd_def *cmd)
{
    struct json_object *o = json_object_new_object(), *data = jobj(ix, "data"), *member = jobj(ix, "member");
    struct json_object *user = member ? jobj(member, "user") : jobj(ix, "user");
    static const char *const copy[] = {"id", "token", "application_id", "guild_id", "channel_id", "locale",
                                       "guild_locale", "app_permissions"};
    json_object_object_add(o, "kind", json_object_new_string("interaction"));
    for (size_t i = 0; i < sizeof(copy) / sizeof(copy[0]); i++)
        if (jobj(ix, copy[i]))
            json_object_object_add(o, copy[i], json_object_get(jobj(ix, copy[i])));
    const char *cname, *pname;
    channel_names(in, jstr(ix, "channel_id"), jobj(ix, "channel"), &cname, &pname);
    if (cname)
        json_object_object_add(o, "channel_name", json_object_new_string(cname));
    if (pname)
        json_object_object_add(o, "parent_channel_name", json_object_new_string(pname));
    json_object_object_add(o, "command", json_object_new_string(cmd->name));
    json_object_object_add(o, "role", json_object_new_string(role_name(cmd->role)));
    json_object_object_add(o, "ephemeral", json_object_new_boolean(cmd->ephemeral));
    if (user)
        json_object_object_add(o, "user", json_object_get(user));
    if (member && jobj(member, "permissions"))
        json_object_object_add(o, "member_permissions", json_object_get(jobj(member, "permissions")));
    if (member && jobj(member, "roles"))
        json_object_object_add(o, "member_roles", json_object_get(jobj(member, "roles")));
    if (jobj(data, "options"))
        json_object_object_add(o, "options", json_object_get(jobj(data, "options")));
    if (jobj(data, "resolved"))
        json_object_object_add(o, "resolved", json_object_get(jobj(data, "resolved")));
    if (jobj(ix, "attachment_size_limit"))
        json_object_object_add(o, "attachment_size_limit", json_object_get(jobj(ix, "attachment_size_limit")));
    int64_t now = wall_ms();
    json_object_object_add(o, "received_ms", json_object_new_int64(now));
    json_object_object_add(o, "token_expires_ms", json_object_new_int64(now + TOKEN_TTL_MS));
    char *s = mem_strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return s;
}

/* ---- gateway batches ----------------------------------------------------- */

/* Returns the number of jobs added, -1 when the fencing token is not the
 * lease holder's, -2 when the batch does not continue the stored sequence
 * (an earlier batch was lost: nothing is written, the holder resyncs).
 * Sequences are checked first and applied after, so a batch is all or
 * nothing and the stored sequence never jumps over a hole. */
static const char route_lua[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end\n"
    "local last = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')\n"
    "local expect = last\n"
    "for i = 4, 3 + 5 * tonumber(ARGV[2]), 5 do\n"
    "  local seq = tonumber(ARGV[i])\n"
    "  if seq > expect then\n"
    "    if expect > 0 and seq ~= expect + 1 then return -2 end\n"
    "    expect = seq\n"
    "  end\n"
    "end\n"
    "local routed = 0\n"
    "local i = 4\n"
    "for n = 1, tonumber(ARGV[2]) do\n"
    "  local seq = tonumber(ARGV[i])\n"
    "  if seq > last then\n"
    "    if ARGV[i + 1] ~= '' then\n"
    "      redis.call('XADD', ARGV[i + 1], 'MAXLEN', '~', ARGV[3], '*', 'type', ARGV[i + 2],\n"
    "                 'payload', ARGV[i + 3], 'ts', ARGV[i + 4])\n"
    "      routed = routed + 1\n"
    "    end\n"
    "    last = seq\n"
    "  end\n"
    "  i = i + 5\n"
    "end\n"
    "redis.call('HSET', KEYS[2], 'seq', last)\n"
    "return routed\n";

static void batch_arg(struct ingress *in, const char *s, size_t n)
{
    in->offs[in->nargs] = in->args.len;
    in->lens[in->nargs] = n;
    buf_append(&in->args, s, n);
    in->nargs++;
}

struct batch_ctx {
    struct ingress *in;
    int nevents;
    struct ack *acks;
    int nacks;
};

#define REDIS_DOWN_KO "일시적인 문제로 요청을 처리하지 못했습니다. 잠시 후 다시 시도해 주세요."
#define REDIS_DOWN_EN "Temporary problem: your request could not be taken. Please try again shortly."

/* The jobs of these interactions could not be stored: tell the users now
 * rather than leave them "thinking". */
static void reply_unstored(struct ingress *in, const struct ack *acks, int n)
{
    for (int i = 0; i < n; i++) {
        char *json = reply_json(acks[i].ko ? REDIS_DOWN_KO : REDIS_DOWN_EN);
        send_callback(in, acks[i].id, acks[i].token, json, "error");
        mem_free(json);
        in->st.replied++;
    }
}

/* A batch could not be stored: answer its interactions, store nothing more
 * (a later batch would move the stored sequence past the lost events), and
 * ask the holder to resume from the stored sequence. Frees b. */
static void batch_failed(struct ingress *in, struct batch_ctx *b)
{
    reply_unstored(in, b->acks, b->nacks);
    mem_free(b->acks);
    mem_free(b);
    int first = !in->broken;
    in->broken = 1;
    if (first && in->trouble)
        in->trouble(INGRESS_RESYNC, in->trouble_arg);
}

static void on_batch(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct batch_ctx *b = arg;
    struct ingress *in = b->in;
    if (status == BC_ESHUTDOWN || in->closing) {
        mem_free(b->acks);
        mem_free(b);
        return;
    }
    const char *e = rds_reply_error(reply);
    if (status || e) {
        /* Not stored: the holder must resume from the stored sequence so
         * Discord replays these events. */
        log_warn("gateway batch not stored; resyncing from the stored sequence", LF_INT("events", b->nevents),
                 LF_STR("error", e ? e : bc_strerror(status)));
        batch_failed(in, b); /* frees b */
        return;
    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer == -2) {
        log_warn("gateway batch does not follow the stored sequence (an earlier one was lost); resyncing",
                 LF_INT("events", b->nevents));
        batch_failed(in, b); /* frees b */
        return;
    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer < 0) {
        log_warn("gateway batch refused: another instance holds the gateway lease", LF_INT("events", b->nevents));
        if (in->trouble)
            in->trouble(INGRESS_FENCED, in->trouble_arg);
    } else {
        long long routed = reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
        in->st.batches++;
        in->st.routed += (uint64_t)routed;
        /* acknowledge interactions now that their jobs are stored (a
         * replayed duplicate gets a harmless 40060) */
        for (int i = 0; i < b->nacks; i++)
            send_callback(in, b->acks[i].id, b->acks[i].token, defer_json(b->acks[i].ephemeral), "defer");
    }
    mem_free(b->acks);
    mem_free(b);
}

static void flush_batch(struct ingress *in)
{
    if (!in->nevents)
        return;
    char count[16];
    snprintf(count, sizeof(count), "%d", in->nevents);
    /* fixed head: EVAL script 2 lease session token count maxlen */
    const char *argv[4 + 3 + 5 * BATCH_MAX];
    size_t lens[4 + 3 + 5 * BATCH_MAX];
    int n = 0;
    argv[n] = "EVAL", lens[n++] = 4;
    argv[n] = route_lua, lens[n++] = sizeof(route_lua) - 1;
    argv[n] = "2", lens[n++] = 1;
    argv[n] = in->lease_key, lens[n++] = strlen(in->lease_key);
    argv[n] = in->session_key, lens[n++] = strlen(in->session_key);
    argv[n] = in->token, lens[n++] = strlen(in->token);
    argv[n] = count, lens[n++] = strlen(count);
    argv[n] = in->maxlen, lens[n++] = strlen(in->maxlen);
    for (int i = 0; i < in->nargs; i++) {
        argv[n] = in->args.p + in->offs[i];
        lens[n++] = in->lens[i];
    }
    struct batch_ctx *b = mem_calloc(1, sizeof(*b));
    b->in = in;
    b->nevents = in->nevents;
    b->acks = in->acks;
    b->nacks = in->nacks;
    in->acks = NULL;
    in->nacks = 0;
    int rc = rds_cmd(in->redis, on_batch, b, n, argv, lens);
    buf_reset(&in->args);
    in->nargs = 0;
    in->nevents = 0;
    if (rc) {
        log_warn("redis unavailable: gateway events not stored; resyncing", LF_INT("events", b->nevents));
        batch_failed(in, b);
    }
}

/* Flushed once per loop iteration, after all network input was read. */
static void on_flush(uv_check_t *h)
{
    flush_batch(h->data);
}

static void batch_add(struct ingress *in, int64_t seq, const char *stream, const char *type, const char *payload,
                      size_t plen)
{
    if (in->broken)
        return; /* replayed after the resync */
    char s[24], ts[24];
    snprintf(s, sizeof(s), "%lld", (long long)seq);
    snprintf(ts, sizeof(ts), "%lld", (long long)wall_ms());
    batch_arg(in, s, strlen(s));
    batch_arg(in, stream, strlen(stream));
    batch_arg(in, type, strlen(type));
    batch_arg(in, payload, plen);
    batch_arg(in, ts, strlen(ts));
    in->nevents++;
    if (in->nevents == BATCH_MAX)
        flush_batch(in);
}

static void stream_key(const struct ingress *in, enum role r, char *out, size_t len)
{
    snprintf(out, len, "%s:jobs:%s", in->cfg->redis_prefix, role_name(r));
}

static void gateway_interaction(struct ingress *in, int64_t seq, struct json_object *ix)
{
    struct decision dc;
    decide(in, ix, &dc);
    const char *id = jstr(ix, "id"), *token = jstr(ix, "token");
    in->st.interactions++;
    if (id && (wall_ms() - ((int64_t)(strtoull(id, NULL, 10) >> 22) + DISCORD_EPOCH_MS)) > STALE_INTERACTION_MS) {
        /* a replay long after the fact: it can no longer be acknowledged */
        log_info("interaction too old to acknowledge; not routed", LF_STR("interaction", id));
        batch_add(in, seq, "", "", "", 0);
        return;
    }
    if (in->broken && id && token && dc.cmd) {
        /* Redis is away: nothing can be stored, but the user hears why */
        struct ack a = {.ko = korean(ix)};
        snprintf(a.id, sizeof(a.id), "%s", id);
        snprintf(a.token, sizeof(a.token), "%s", token);
        reply_unstored(in, &a, 1);
        return;
    }
    if (!id || !token || strlen(id) >= sizeof(((struct ack *)0)->id) ||
        strlen(token) >= sizeof(((struct ack *)0)->token)) {
        log_warn("interaction without a usable id or token ignored");
        batch_add(in, seq, "", "", "", 0);
        return;
    }
    if (!dc.cmd) {
        batch_add(in, seq, "", "", "", 0);
        if (!dc.ignore) {
            char *json = reply_json(dc.reply);
            send_callback(in, id, token, json, "reply");
            mem_free(json);
            in->st.replied++;
        }
        return;
    }
    char key[160];
    stream_key(in, dc.cmd->role, key, sizeof(key));
    /* the ack joins the batch that stores its job (batch_add may flush) */
    in->acks = mem_realloc(in->acks, sizeof(struct ack) * (size_t)(in->nacks + 1));
    struct ack *a = &in->acks[in->nacks++];
    snprintf(a->id, sizeof(a->id), "%s", id);
    snprintf(a->token, sizeof(a->token), "%s", token);
    a->ephemeral = dc.cmd->ephemeral;
    a->ko = korean(ix);
    char *payload = interaction_payload(in, ix, dc.cmd);
    batch_add(in, seq, key, "discord.interaction", payload, strlen(payload));
    mem_free(payload);
}

/* Whether the message's mentions name the bot user. Before READY taught
 * us who we are, nothing counts as a mention. */
static int mentions_bot(struct ingress *in, struct json_object *m)
{
    struct json_object *list = jobj(m, "mentions");
    if (!in->bot_user[0] || !list || !json_object_is_type(list, json_type_array))
        return 0;
    size_t n = json_object_array_length(list);
    for (size_t i = 0; i < n; i++) {
        const char *id = jstr(json_object_array_get_idx(list, i), "id");
        if (id && !strcmp(id, in->bot_user))
            return 1;
    }
    return 0;
}

/* The job type of a message for the chat stream: "discord.mention" when it
 * speaks to the bot (a DM, or it mentions the bot), "discord.message" for
 * other messages in chat channels, NULL when it is not the chat role's. */
static const char *message_for_chat(struct ingress *in, struct json_object *m)
{
    struct json_object *author = jobj(m, "author"), *bot = jobj(author, "bot");
    if (!author || (bot && json_object_get_boolean(bot)) || jobj(m, "webhook_id"))
        return NULL;
    const char *uid = jstr(author, "id");
    if (uid && in->bot_user[0] && !strcmp(uid, in->bot_user))
        return NULL;
    if (!jstr(m, "guild_id"))
        return "discord.mention"; /* direct message */
    const char *cname, *pname;
    channel_names(in, jstr(m, "channel_id"), NULL, &cname, &pname);
    if (!channel_allowed(in->cfg->chat_channels, cname, pname))
        return NULL;
    return mentions_bot(in, m) ? "discord.mention" : "discord.message";
}

void ingress_gateway_event(struct ingress *in, int64_t seq, const char *type, struct json_object *d,
                           const char *raw, size_t raw_len)
{
    if (!in->token || !type)
        return;
    in->st.events++;
    if (!strcmp(type, "INTERACTION_CREATE")) {
        gateway_interaction(in, seq, d);
        return;
    }
    const char *job = !strcmp(type, "MESSAGE_CREATE") ? message_for_chat(in, d) : NULL;
    if (job) {
        char key[160];
        stream_key(in, ROLE_CHAT, key, sizeof(key));
        batch_add(in, seq, key, job, raw, raw_len);
        return;
    }
    if (!strcmp(type, "GUILD_CREATE")) {
        remember_list(in, jobj(d, "channels"));
        remember_list(in, jobj(d, "threads"));
    } else if (!strcmp(type, "CHANNEL_CREATE") || !strcmp(type, "CHANNEL_UPDATE") ||
               !strcmp(type, "THREAD_CREATE") || !strcmp(type, "THREAD_UPDATE")) {
        remember_channel(in, d);
    } else if (!strcmp(type, "CHANNEL_DELETE") || !strcmp(type, "THREAD_DELETE")) {
        forget_channel(in, d);
    } else if (!strcmp(type, "THREAD_LIST_SYNC")) {
        remember_list(in, jobj(d, "threads"));
    }
    batch_add(in, seq, "", "", "", 0); /* not routed, but its sequence is */
}

/* ---- POST /interactions (HTTP delivery) ---------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int unhex(const char *s, unsigned char *out, size_t n)
{
    if (!s || strlen(s) != 2 * n)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        int h = hexval(s[2 * i]), l = hexval(s[2 * i + 1]);
        if (h < 0 || l < 0)
            return -EINVAL;
        out[i] = (unsigned char)(h * 16 + l);
    }
    return 0;
}

int ingress__verify(const struct ingress *in, const char *ts, const char *sig_hex, const char *body, size_t len)
{
    unsigned char sig[crypto_sign_BYTES];
    if (!in->public_key_ok || !ts || strlen(ts) > 32 || unhex(sig_hex, sig, sizeof(sig)))
        return 0;
    size_t tl = strlen(ts);
    unsigned char *msg = mem_alloc(tl + len);
    memcpy(msg, ts, tl);
    memcpy(msg + tl, body, len);
    int ok = crypto_sign_verify_detached(sig, msg, tl + len, in->public_key) == 0;
    mem_free(msg);
    return ok;
}

static const char http_route_lua[] =
    "if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then\n"
    "  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'type', 'discord.interaction',\n"
    "                    'payload', ARGV[3], 'ts', ARGV[4])\n"
    "end\n"
    "return 0\n";

struct http_ix {
    struct httpd_req *req;
    int ephemeral;
    int ko;
};

static void http_reply(struct httpd_req *req, const char *text)
{
    char *json = reply_json(text);
    httpd_respond(req, 200, "application/json", json, strlen(json));
    mem_free(json);
}

static void on_http_stored(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct http_ix *h = arg;
    if (status || rds_reply_error(reply)) {
        /* the request must still be answered (httpd's contract) */
        http_reply(h->req, h->ko ? REDIS_DOWN_KO : REDIS_DOWN_EN);
    } else {
        const char *json = defer_json(h->ephemeral);
        httpd_respond(h->req, 200, "application/json", json, strlen(json));
    }
    mem_free(h);
}

static void on_interactions(struct httpd_req *req, void *arg)
{
    struct ingress *in = arg;
    size_t len;
    const char *body = httpd_req_body(req, &len);
    if (!ingress__verify(in, httpd_req_header(req, "X-Signature-Timestamp"),
                         httpd_req_header(req, "X-Signature-Ed25519"), body, len)) {
        static const char bad[] = "{\"error\":\"invalid request signature\"}";
        httpd_respond(req, 401, "application/json", bad, sizeof(bad) - 1);
        return;
    }
    struct ingress__http d;
    ingress__http_decide(in, body, len, &d);
    if (d.status) {
        httpd_respond(req, d.status, "application/json", d.body, strlen(d.body));
        mem_free(d.body);
        return;
    }
    char seen[160], key[160], maxlen[16], ts[24];
    snprintf(seen, sizeof(seen), "%s:ix:seen:%s", in->cfg->redis_prefix, d.id);
    stream_key(in, d.role, key, sizeof(key));
    snprintf(maxlen, sizeof(maxlen), "%d", in->cfg->stream_maxlen);
    snprintf(ts, sizeof(ts), "%lld", (long long)wall_ms());
    struct http_ix *h = mem_alloc(sizeof(*h));
    h->req = req;
    h->ephemeral = d.ephemeral;
    h->ko = d.ko;
    const char *av[] = {"EVAL", http_route_lua, "2", seen, key, SEEN_TTL_S, maxlen, d.body, ts};
    if (rds_cmd(in->redis, on_http_stored, h, 9, av, NULL)) {
        on_http_stored(in->redis, -ENOTCONN, NULL, h);
    }
    mem_free(d.body);
}

static void http_answer(struct ingress__http *out, int status, const char *json)
{
    out->status = status;
    out->body = mem_strdup(json);
}

void ingress__http_decide(struct ingress *in, const char *body, size_t len, struct ingress__http *out)
{
    memset(out, 0, sizeof(*out));
    /* the body is NUL-terminated (httpd); a NUL inside ends the JSON text */
    (void)len;
    struct json_object *ix = json_tokener_parse(body);
    struct json_object *type = jobj(ix, "type");
    if (!ix || !json_object_is_type(ix, json_type_object) || !type) {
        http_answer(out, 400, "{\"error\":\"malformed interaction\"}");
        json_object_put(ix);
        return;
    }
    if (json_object_get_int(type) == 1) {
        http_answer(out, 200, "{\"type\":1}");
        json_object_put(ix);
        return;
    }
    const char *id = jstr(ix, "id");
    if (!id || !*id || strlen(id) > 20) {
        http_answer(out, 400, "{\"error\":\"interaction without a valid id\"}");
        json_object_put(ix);
        return;
    }
    in->st.interactions++;
    struct decision dc;
    decide(in, ix, &dc);
    if (!dc.cmd) {
        if (dc.ignore)
            http_answer(out, 200, "{\"type\":8,\"data\":{\"choices\":[]}}");
        else
            out->status = 200, out->body = reply_json(dc.reply);
        in->st.replied++;
        json_object_put(ix);
        return;
    }
    snprintf(out->id, sizeof(out->id), "%s", id);
    out->role = dc.cmd->role;
    out->ephemeral = dc.cmd->ephemeral;
    out->ko = korean(ix);
    out->body = interaction_payload(in, ix, dc.cmd);
    json_object_put(ix);
}

int ingress_http_route(struct ingress *in, struct httpd *h)
{
    if (!*in->cfg->discord_public_key)
        return -EINVAL;
    if (unhex(in->cfg->discord_public_key, in->public_key, sizeof(in->public_key)))
        return BC_ECONFIG;
    in->public_key_ok = 1;
    return httpd_route(h, "POST", "/interactions", on_interactions, in);
}

/* ---- lifecycle ---------------------------------------------------------------- */

int ingress_new(uv_loop_t *loop, const struct config *cfg, struct rds *redis, struct drest *rest,
                struct ingress **out)
{
    struct ingress *in = mem_calloc(1, sizeof(*in));
    in->loop = loop;
    in->cfg = cfg;
    in->redis = redis;
    in->rest = rest;
    snprintf(in->chan_key, sizeof(in->chan_key), "%s:channels", cfg->redis_prefix);
    snprintf(in->maxlen, sizeof(in->maxlen), "%d", cfg->stream_maxlen);
    buf_init(&in->args, (size_t)64 << 20);
    /* ingress_http_route reports a bad key; requests need it from the start */
    in->public_key_ok = cfg->discord_public_key && *cfg->discord_public_key &&
                        !unhex(cfg->discord_public_key, in->public_key, sizeof(in->public_key));
    uv_check_init(loop, &in->flush);
    in->flush.data = in;
    *out = in;
    return 0;
}

void ingress_set_holder(struct ingress *in, const char *lease_key, const char *session_key, const char *token,
                        ingress_trouble_cb *cb, void *arg)
{
    flush_batch(in);
    mem_free(in->lease_key);
    mem_free(in->session_key);
    mem_free(in->token);
    in->lease_key = in->session_key = in->token = NULL;
    in->broken = 0;
    in->trouble = cb;
    in->trouble_arg = arg;
    if (!token) {
        uv_check_stop(&in->flush);
        return;
    }
    in->lease_key = mem_strdup(lease_key);
    in->session_key = mem_strdup(session_key);
    in->token = mem_strdup(token);
    uv_check_start(&in->flush, on_flush);
}

void ingress_set_bot_user(struct ingress *in, const char *user_id)
{
    snprintf(in->bot_user, sizeof(in->bot_user), "%s", user_id ? user_id : "");
}

void ingress_stats(const struct ingress *in, struct ingress_stats *out)
{
    *out = in->st;
}

static void on_closed(uv_handle_t *h)
{
    struct ingress *in = h->data;
    chan_free(&in->chans);
    buf_free(&in->args);
    mem_free(in->acks);
    mem_free(in->lease_key);
    mem_free(in->session_key);
    mem_free(in->token);
    mem_free(in);
}

/* Call after the Redis connection was closed (its callbacks must not find
 * a freed ingress). */
void ingress_close(struct ingress *in)
{
    in->closing = 1;
    uv_close((uv_handle_t *)&in->flush, on_closed);
}
