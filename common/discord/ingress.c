#include "discord/ingress.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "discord/cmds.h"
#include "discord/dpath.h"
#include "discord/drest.h"
#include "base/err.h"
#include "base/glob.h"
#include "base/idmap.h"
#include "io/httpd.h"
#include "base/jget.h"
#include "parse/jscan.h"
#include "base/log.h"
#include "base/mem.h"
#include "io/rds.h"

/* A batch is one script call: at most this many events or bytes. The
 * queue of batches not yet stored (Redis away, acknowledgements owed) is
 * capped in bytes; past it the holder resyncs instead. */
#define BATCH_EVENTS 1024
#define BATCH_BYTES ((size_t)8 << 20)
#define QUEUE_BYTES ((size_t)64 << 20)
#define INFLIGHT_MAX 2 /* batches on the wire: one running in Redis, one on its way */
#define UNSTORED_MAX 1024    /* acknowledged interactions dropped unstored, remembered */
#define HTTP_QUEUE_MAX 10000 /* POST /interactions jobs held while Redis is away */
/* Discord allows 3 s to acknowledge: an answer after that is useless, and
 * the batch behind it should not wait longer. */
#define ACK_TIMEOUT_MS 2500
#define CHAN_MAX 200000            /* cached channels */
#define TOKEN_TTL_MS (15 * 60 * 1000)
#define SEEN_TTL_S "900"
/* A POST /interactions request for an interaction older than this (by its
 * snowflake) is a replay, not a delivery: Discord sends each one at once.
 * The margin covers clock skew between Discord and us. */
#define STALE_INTERACTION_MS 10000
#define DISCORD_EPOCH_MS 1420070400000LL

/* ---- channel cache: id -> name, parent -------------------------------- */

/* A channel id is cached as the decimal text of its number, so "0123" and
 * "123" are one channel and an id that is no number (0) is never cached. */
struct chan {
    uint64_t parent;
    char *name;
    char id[24]; /* the key it is indexed by */
};

static uint64_t snowflake(const char *s)
{
    return s ? strtoull(s, NULL, 10) : 0;
}

static struct chan *chan_find(struct idmap *t, uint64_t id)
{
    if (!id)
        return NULL;
    char key[24];
    snprintf(key, sizeof(key), "%" PRIu64, id);
    return idmap_get(t, 0, key);
}

static void chan_set(struct idmap *t, uint64_t id, const char *name, uint64_t parent)
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
    if (idmap_count(t) >= CHAN_MAX)
        return;
    c = mem_alloc(sizeof(*c));
    c->parent = parent;
    c->name = mem_strdup(name);
    snprintf(c->id, sizeof(c->id), "%" PRIu64, id);
    idmap_put(t, 0, c->id, c);
}

static void chan_del(struct idmap *t, uint64_t id)
{
    struct chan *c = chan_find(t, id);
    if (!c)
        return;
    idmap_del(t, 0, c->id);
    mem_free(c->name);
    mem_free(c);
}

static void chan_free(struct idmap *t)
{
    const struct idmap_slot *s;
    for (size_t pos = 0; (s = idmap_next(t, &pos));) {
        struct chan *c = s->val;
        mem_free(c->name);
        mem_free(c);
    }
    idmap_free(t);
}

/* ---- the ingress ---------------------------------------------------------- */

struct batch;

struct ingress {
    uv_loop_t *loop;
    const struct config *cfg;
    struct rds *redis;
    struct drest *rest;
    struct idmap chans; /* struct chan by id, tag 0 */
    struct json_tokener *tok;
    char bot_user[24];
    char chan_key[128];
    char maxlen[16];

    /* holder state */
    char *lease_key, *session_key, *token;
    ingress_trouble_cb *trouble;
    void *trouble_arg;

    /* gateway batches, oldest first; open is the tail while collecting */
    struct batch *head, *tail, *open;
    size_t queued_bytes, queued_batches;
    int inflight;
    size_t batch_events, batch_bytes, queue_bytes; /* limits */
    uv_check_t flush;
    uv_timer_t retry; /* Redis away: try again */
    int handles;      /* closed handles, for ingress_close */
    int closing;
    int broken;      /* a batch was not stored: store nothing until the holder resyncs */
    int warned_down; /* said that Redis is away */
    int64_t stale_ms;                /* STALE_INTERACTION_MS, but for the fuzz target */
    uint64_t unstored[UNSTORED_MAX]; /* see remember_unstored */
    int unstored_next;
    unsigned requeued;

    /* POST /interactions jobs not stored yet (Redis away) */
    struct http_job *hj_head, **hj_tail;
    size_t hj_count;
    int hj_inflight;

    unsigned public_key_ok;
    unsigned char public_key[crypto_sign_PUBLICKEYBYTES];
    struct ingress_stats st;
};

/* How long ago Discord created the snowflake id (negative: in our future). */
static int64_t snowflake_age_ms(const char *id)
{
    return clock_wall_ms() - ((int64_t)(strtoull(id, NULL, 10) >> 22) + DISCORD_EPOCH_MS);
}

static int korean(struct json_object *ix)
{
    const char *loc = jget_str(ix, "locale");
    return loc && !strncmp(loc, "ko", 2);
}

/* The channel globs of r's commands (its row says which setting). */
static const char *role_channels(const struct config *cfg, enum role r)
{
    const struct role_def *d = role_def(r);
    return d && d->channels ? d->channels(cfg) : "*";
}

/* Name of a channel, or of its parent when it is a thread: the one the
 * role patterns are matched against. Either may be NULL. */
static void channel_names(struct ingress *in, const char *channel_id, struct json_object *channel,
                          const char **name, const char **parent_name)
{
    struct chan *c = chan_find(&in->chans, snowflake(channel_id));
    *name = jget_str(channel, "name");
    if (!*name && c)
        *name = c->name;
    uint64_t parent = snowflake(jget_str(channel, "parent_id"));
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
    const char *id = jget_str(ch, "id"), *name = jget_str(ch, "name"), *parent = jget_str(ch, "parent_id");
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
    const char *id = jget_str(ch, "id");
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
    log_info("channel names loaded", LF_INT("channels", idmap_count(&in->chans)));
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
    char path[DPATH_MAX];
    if (!in->rest || dpath_interaction_callback(path, sizeof(path), id, token))
        return;
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
    struct json_object *type = jget_member(ix, "type"), *data = jget_member(ix, "data");
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
    const char *name = jget_str(data, "name");
    const struct cmd_def *cmd = name ? cmds_find(name, NULL) : NULL;
    if (!cmd) {
        snprintf(out->reply, sizeof(out->reply), "%s",
                 ko ? "알 수 없는 명령입니다." : "Unknown command.");
        return;
    }
    const char *guild = jget_str(ix, "guild_id");
    if (in->cfg->enforce_channels && guild && !cmd->open_everywhere) {
        const char *patterns = role_channels(in->cfg, cmd->role), *cname, *pname;
        channel_names(in, jget_str(ix, "channel_id"), jget_member(ix, "channel"), &cname, &pname);
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
    struct json_object *o = json_object_new_object(), *data = jget_member(ix, "data");
    struct json_object *member = jget_member(ix, "member");
    struct json_object *user = member ? jget_member(member, "user") : jget_member(ix, "user");
    static const char *const copy[] = {"id", "token", "application_id", "guild_id", "channel_id", "locale",
                                       "guild_locale", "app_permissions"};
    json_object_object_add(o, "kind", json_object_new_string("interaction"));
    for (size_t i = 0; i < sizeof(copy) / sizeof(copy[0]); i++)
        if (jget_member(ix, copy[i]))
            json_object_object_add(o, copy[i], json_object_get(jget_member(ix, copy[i])));
    const char *cname, *pname;
    channel_names(in, jget_str(ix, "channel_id"), jget_member(ix, "channel"), &cname, &pname);
    if (cname)
        json_object_object_add(o, "channel_name", json_object_new_string(cname));
    if (pname)
        json_object_object_add(o, "parent_channel_name", json_object_new_string(pname));
    /* the name that was used: an English twin's options go by English names */
    json_object_object_add(o, "command", json_object_get(jget_member(data, "name")));
    json_object_object_add(o, "role", json_object_new_string(role_name(cmd->role)));
    json_object_object_add(o, "ephemeral", json_object_new_boolean(cmd->ephemeral));
    if (user)
        json_object_object_add(o, "user", json_object_get(user));
    if (member && jget_member(member, "permissions"))
        json_object_object_add(o, "member_permissions", json_object_get(jget_member(member, "permissions")));
    if (member && jget_member(member, "roles"))
        json_object_object_add(o, "member_roles", json_object_get(jget_member(member, "roles")));
    if (jget_member(data, "options"))
        json_object_object_add(o, "options", json_object_get(jget_member(data, "options")));
    if (jget_member(data, "resolved"))
        json_object_object_add(o, "resolved", json_object_get(jget_member(data, "resolved")));
    if (jget_member(ix, "attachment_size_limit"))
        json_object_object_add(o, "attachment_size_limit", json_object_get(jget_member(ix, "attachment_size_limit")));
    int64_t now = clock_wall_ms();
    json_object_object_add(o, "received_ms", json_object_new_int64(now));
    json_object_object_add(o, "token_expires_ms", json_object_new_int64(now + TOKEN_TTL_MS));
    char *s = mem_strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return s;
}

/* ---- gateway batches ----------------------------------------------------- */

/* Every event in a batch is ARGS_PER_EVENT script arguments (seq, stream,
 * type, payload, ts) after BATCH_HEAD fixed ones; both the script and the
 * arrays below are sized from these two definitions. */
#define ARGS_PER_EVENT 5
#define BATCH_HEAD 9 /* EVAL script 2 lease session token count maxlen ttl */

/* Returns the number of jobs added, -1 when the fencing token is not the
 * lease holder's, -2 when the batch does not continue the stored sequence
 * (an earlier batch was lost: nothing is written, the holder resyncs).
 * Sequences are checked first and applied after, so a batch is all or
 * nothing and the stored sequence never jumps over a hole. A lease key
 * that is gone (expired while Redis was away, or Redis restarted) is set
 * again for the token: nobody else holds it, and the sequence check keeps
 * a stale holder from skipping anything. Replaying a batch is harmless:
 * sequences already stored are skipped. */
static const char route_lua[] =
    "local holder = redis.call('GET', KEYS[1])\n"
    "if holder ~= ARGV[1] then\n"
    "  if holder then return -1 end\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])\n"
    "end\n"
    "local last = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')\n"
    "local expect = last\n"
    "for i = 5, 4 + 5 * tonumber(ARGV[2]), 5 do\n"
    "  local seq = tonumber(ARGV[i])\n"
    "  if seq > expect then\n"
    "    if expect > 0 and seq ~= expect + 1 then return -2 end\n"
    "    expect = seq\n"
    "  end\n"
    "end\n"
    "local routed = 0\n"
    "local i = 5\n"
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

enum batch_state { B_OPEN, B_SEALED, B_SENT };

/* A batch of gateway events on its way to Redis. Batches form one FIFO:
 * they are sent in order, several at once on the one connection, and a
 * batch waits until the acknowledgements of its interactions are answered
 * (so a worker can never edit a reply Discord does not know yet), which
 * also holds back every batch after it. Arguments are kept as offsets into
 * one capped buffer until the reply: a batch whose connection dropped is
 * sent again (the script skips what was stored). */
struct batch {
    struct batch *next;
    struct ingress *in;
    enum batch_state state;
    int nevents, nargs, cap_args;
    int failed;       /* an argument did not fit: the batch cannot be stored */
    int dropped;      /* left the queue while acknowledgements were owed */
    int acks_pending; /* acknowledgements sent and not yet answered */
    size_t *offs, *lens;
    struct buf args;
    char token[160];  /* the fencing token it was collected under */
    uint64_t *ix_ids; /* the interactions it holds, acknowledged by us */
    int nix;
};

/* An interaction acknowledged from a batch: which argument to blank when
 * it turns out it cannot be answered any more. */
struct ack_ctx {
    struct batch *b;
    int stream_arg;
    char id[24];
};

static void batch_free(struct batch *b)
{
    mem_free(b->ix_ids);
    buf_free(&b->args);
    mem_free(b->offs);
    mem_free(b->lens);
    mem_free(b);
}

static struct batch *batch_new(struct ingress *in)
{
    struct batch *b = mem_calloc(1, sizeof(*b));
    b->in = in;
    b->cap_args = ARGS_PER_EVENT * in->batch_events;
    b->offs = mem_alloc(sizeof(size_t) * (size_t)b->cap_args);
    b->lens = mem_alloc(sizeof(size_t) * (size_t)b->cap_args);
    buf_init(&b->args, in->batch_bytes);
    snprintf(b->token, sizeof(b->token), "%s", in->token ? in->token : "");
    return b;
}

/* Take b out of the queue (it is at the head or was never sent). It is
 * freed now, or by its last acknowledgement when some are still owed. */
static void batch_unlink(struct ingress *in, struct batch *b)
{
    struct batch **pp = &in->head;
    while (*pp && *pp != b)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = b->next;
        if (in->tail == b) {
            in->tail = NULL;
            for (struct batch *x = in->head; x; x = x->next)
                in->tail = x;
        }
    }
    if (in->open == b)
        in->open = NULL;
    in->queued_bytes -= b->args.len;
    in->queued_batches--;
    b->next = NULL;
    if (b->acks_pending)
        b->dropped = 1;
    else
        batch_free(b);
}

/* Interactions we acknowledged whose jobs were dropped unstored: when
 * Discord replays them (after the resync) they are routed whatever their
 * age. A small ring: this happens only around a resync. */
static void remember_unstored(struct ingress *in, const struct batch *b)
{
    for (int i = 0; i < b->nix; i++) {
        in->unstored[in->unstored_next] = b->ix_ids[i];
        in->unstored_next = (in->unstored_next + 1) % UNSTORED_MAX;
    }
}

static int take_unstored(struct ingress *in, uint64_t id)
{
    for (int i = 0; i < UNSTORED_MAX; i++)
        if (id && in->unstored[i] == id) {
            in->unstored[i] = 0;
            return 1;
        }
    return 0;
}

/* Drop every batch not on the wire (a resync or a new holder: Discord
 * replays them to whoever resumes the session). Sent ones finish alone. */
static void drop_unsent(struct ingress *in)
{
    struct batch *b = in->head;
    while (b) {
        struct batch *next = b->next;
        if (b->state != B_SENT) {
            remember_unstored(in, b);
            batch_unlink(in, b);
        }
        b = next;
    }
}

static void batch_seal(struct ingress *in)
{
    if (in->open) {
        in->open->state = B_SEALED;
        in->open = NULL;
    }
}

static void pump(struct ingress *in);
static void http_pump(struct ingress *in);
static void on_retry_timer(uv_timer_t *t);

/* Redis cannot take what we have: say so once, and try again shortly. */
static void redis_away(struct ingress *in)
{
    if (!in->warned_down) {
        in->warned_down = 1;
        log_warn("redis away: gateway events and interaction jobs are held in memory and stored when it returns",
                 LF_INT("held_bytes", in->queued_bytes), LF_INT("held_http", in->hj_count));
    }
    uv_timer_start(&in->retry, on_retry_timer, 100, 100);
}

static void on_retry_timer(uv_timer_t *t)
{
    struct ingress *in = t->data;
    uv_timer_stop(t); /* pump and http_pump start it again while needed */
    pump(in);
    http_pump(in);
}

/* Something held was stored: once nothing is held any more, say so. */
static void redis_back(struct ingress *in)
{
    if (in->warned_down && !in->head && !in->hj_head) {
        in->warned_down = 0;
        log_info("redis back: held gateway events stored", LF_INT("requeued_batches", in->requeued));
        in->requeued = 0;
    }
}

/* A batch could not be stored: store nothing more (a later batch would
 * move the stored sequence past the lost events), and ask the holder to
 * resume from the stored sequence; Discord replays the events, and their
 * interactions (acknowledged already) are routed then. */
static void batch_failed(struct ingress *in)
{
    drop_unsent(in);
    int first = !in->broken;
    in->broken = 1;
    if (first && in->trouble)
        in->trouble(INGRESS_RESYNC, in->trouble_arg);
}

static void on_batch(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct batch *b = arg;
    struct ingress *in = b->in;
    in->inflight--;
    if (status == BC_ESHUTDOWN || in->closing) {
        batch_unlink(in, b);
        return;
    }
    if (status == -ENOTCONN || status == BC_EREDIS) {
        /* The connection dropped with the batch outstanding: whether it ran
         * is unknown, and running it twice is harmless. Send it again, in
         * order, once Redis is back. */
        if (!in->broken && !strcmp(b->token, in->token ? in->token : "")) {
            b->state = B_SEALED;
            in->requeued++;
            redis_away(in);
        } else {
            remember_unstored(in, b);
            batch_unlink(in, b);
        }
        return;
    }
    const char *e = rds_reply_error(reply);
    if (status || e) {
        log_warn("gateway batch not stored; resyncing from the stored sequence", LF_INT("events", b->nevents),
                 LF_STR("error", e ? e : bc_strerror(status)));
        remember_unstored(in, b);
        batch_unlink(in, b);
        batch_failed(in);
        return;
    }
    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == -2) {
        log_warn("gateway batch does not follow the stored sequence (an earlier one was lost); resyncing",
                 LF_INT("events", b->nevents));
        remember_unstored(in, b);
        batch_unlink(in, b);
        batch_failed(in);
        return;
    }
    if (reply->type == REDIS_REPLY_INTEGER && reply->integer < 0) {
        log_warn("gateway batch refused: another instance holds the gateway lease", LF_INT("events", b->nevents));
        remember_unstored(in, b);
        batch_unlink(in, b);
        drop_unsent(in);
        if (in->trouble)
            in->trouble(INGRESS_FENCED, in->trouble_arg);
        return;
    }
    long long routed = reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
    in->st.batches++;
    in->st.routed += (uint64_t)routed;
    batch_unlink(in, b);
    redis_back(in);
    pump(in);
}

static int batch_send(struct ingress *in, struct batch *b)
{
    if (b->failed) {
        log_warn("gateway batch too large to store; resyncing from the stored sequence",
                 LF_INT("events", b->nevents));
        remember_unstored(in, b);
        batch_unlink(in, b);
        batch_failed(in);
        return -1;
    }
    char count[16], ttl[16];
    snprintf(count, sizeof(count), "%d", b->nevents);
    snprintf(ttl, sizeof(ttl), "%d", in->cfg->gateway_lease_ms);
    int argc = BATCH_HEAD + b->nargs;
    const char **argv = mem_alloc(sizeof(char *) * (size_t)argc);
    size_t *lens = mem_alloc(sizeof(size_t) * (size_t)argc);
    int n = 0;
    argv[n] = "EVAL", lens[n++] = 4;
    argv[n] = route_lua, lens[n++] = sizeof(route_lua) - 1;
    argv[n] = "2", lens[n++] = 1;
    argv[n] = in->lease_key, lens[n++] = strlen(in->lease_key);
    argv[n] = in->session_key, lens[n++] = strlen(in->session_key);
    argv[n] = b->token, lens[n++] = strlen(b->token);
    argv[n] = count, lens[n++] = strlen(count);
    argv[n] = in->maxlen, lens[n++] = strlen(in->maxlen);
    argv[n] = ttl, lens[n++] = strlen(ttl);
    for (int i = 0; i < b->nargs; i++) {
        argv[n] = b->args.p + b->offs[i];
        lens[n++] = b->lens[i];
    }
    /* hiredis copies the arguments into its output buffer */
    int rc = rds_cmd(in->redis, on_batch, b, n, argv, lens);
    mem_free(argv);
    mem_free(lens);
    if (rc)
        return rc;
    b->state = B_SENT;
    in->inflight++;
    return 0;
}

/* Send what may go: sealed batches in order, up to INFLIGHT_MAX on the
 * wire, stopping at the first one still waiting for acknowledgements. */
static void pump(struct ingress *in)
{
    if (in->closing || !in->token || !in->head)
        return;
    if (!rds_up(in->redis)) {
        redis_away(in);
        return;
    }
    for (struct batch *b = in->head, *next; b && in->inflight < INFLIGHT_MAX; b = next) {
        next = b->next;
        if (b->state == B_SENT)
            continue;
        if (b->acks_pending)
            break;
        /* The open batch goes only when the pipe has room: while it is
         * full, events keep joining it, so a burst makes few big batches
         * rather than many small ones each waiting for a round trip. */
        if (b->state == B_OPEN)
            batch_seal(in);
        if (batch_send(in, b)) {
            if (!in->broken && !in->closing)
                uv_timer_start(&in->retry, on_retry_timer, 100, 100);
            return;
        }
    }
}

/* The open batch, sealing a full one first; NULL when the queue is at its
 * cap (Redis has been away for long: the holder resyncs instead). */
static struct batch *open_batch(struct ingress *in, size_t need)
{
    struct batch *b = in->open;
    if (b && (b->nargs + ARGS_PER_EVENT > b->cap_args || (b->nevents && b->args.len + need > in->batch_bytes)))
        batch_seal(in);
    if (in->open)
        return in->open;
    if (in->queued_bytes + need > in->queue_bytes) {
        log_error("gateway events held in memory reached their cap; resyncing from the stored sequence",
                  LF_INT("held_bytes", in->queued_bytes));
        batch_failed(in);
        return NULL;
    }
    b = batch_new(in);
    if (in->tail)
        in->tail->next = b;
    else
        in->head = b;
    in->tail = b;
    in->open = b;
    in->queued_batches++;
    return b;
}

static void batch_arg(struct batch *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->nargs >= b->cap_args || buf_append(&b->args, s, n)) {
        b->failed = 1;
        return;
    }
    b->offs[b->nargs] = b->args.len - n;
    b->lens[b->nargs] = n;
    b->nargs++;
}

/* Decimal digits of v into out (at least 21 bytes), NUL-terminated; the
 * length. snprintf was a tenth of the cost of routing an event. */
static size_t i64toa(int64_t v, char *out)
{
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do
        tmp[n++] = (char)('0' + u % 10);
    while ((u /= 10));
    size_t len = 0;
    if (v < 0)
        out[len++] = '-';
    while (n)
        out[len++] = tmp[--n];
    out[len] = '\0';
    return len;
}

/* Add one event; returns its batch (for an acknowledgement to hold it) or
 * NULL when nothing is being stored (broken: the resync replays it). */
static struct batch *batch_add(struct ingress *in, int64_t seq, const char *stream, const char *type,
                               const char *payload, size_t plen, int *stream_arg)
{
    if (in->broken)
        return NULL; /* replayed after the resync */
    char s[24], ts[24];
    size_t sl = strlen(stream), tl = strlen(type);
    size_t seql = i64toa(seq, s), tsl = i64toa(clock_wall_ms(), ts);
    struct batch *b = open_batch(in, plen + sl + tl + 48);
    if (!b)
        return NULL;
    size_t before = b->args.len;
    batch_arg(b, s, seql);
    if (stream_arg)
        *stream_arg = b->nargs;
    batch_arg(b, stream, sl);
    batch_arg(b, type, tl);
    batch_arg(b, payload, plen);
    batch_arg(b, ts, tsl);
    b->nevents++;
    in->queued_bytes += b->args.len - before;
    if (b->nargs + ARGS_PER_EVENT > b->cap_args)
        batch_seal(in);
    return b;
}

/* Once per loop iteration, after all network input was read: what may go
 * goes (the open batch too, when the pipe has room). */
static void on_flush(uv_check_t *h)
{
    struct ingress *in = h->data;
    pump(in);
    http_pump(in);
    if (!in->token && !in->hj_head)
        uv_check_stop(h);
}

static void stream_key(const struct ingress *in, enum role r, char *out, size_t len)
{
    snprintf(out, len, "%s:jobs:%s", in->cfg->redis_prefix, role_name(r));
}

/* ---- acknowledging gateway interactions ---------------------------------- */

/* Discord answered the deferral. Acknowledged (or acknowledged before, by
 * a holder that died: 40060): the job goes. The interaction is unknown
 * (10062: too late, nobody acknowledged it in time): its job is blanked,
 * since no answer could reach the user. Anything else: the job goes, and
 * the worker finds out. */
static void on_ack_done(const struct drest_resp *r, void *arg)
{
    struct ack_ctx *c = arg;
    struct batch *b = c->b;
    struct ingress *in = b->in;
    if (r->err != BC_ESHUTDOWN) {
        if (r->err && r->code == 10062) {
            if (c->stream_arg >= 0 && c->stream_arg < b->nargs)
                b->lens[c->stream_arg] = 0;
            in->st.ack_failed++;
            log_info("interaction expired before it was acknowledged; not routed", LF_STR("interaction", c->id));
        } else if (r->err && r->code != 40060) {
            in->st.ack_failed++;
            log_warn("interaction acknowledgement failed", LF_STR("interaction", c->id),
                     LF_INT("status", r->status), LF_INT("code", r->code),
                     LF_STR("error", r->message && *r->message ? r->message : r->errstr));
        } else {
            in->st.acked++;
        }
    }
    mem_free(c);
    b->acks_pending--;
    if (b->dropped) {
        if (!b->acks_pending)
            batch_free(b);
        return;
    }
    if (!b->acks_pending && !in->closing)
        pump(in);
}

/* Defer the interaction now: it needs no Redis, and Discord allows 3 s.
 * Its batch waits for the answer. */
static void ack_now(struct ingress *in, struct batch *b, int stream_arg, const char *id, const char *token,
                    int ephemeral)
{
    char path[DPATH_MAX];
    if (!in->rest)
        return;
    if (dpath_interaction_callback(path, sizeof(path), id, token)) {
        in->st.ack_failed++;
        log_warn("interaction acknowledgement not sent: not an interaction id and token",
                 LF_STR("interaction", id));
        return;
    }
    const char *json = defer_json(ephemeral);
    struct ack_ctx *c = mem_calloc(1, sizeof(*c));
    c->b = b;
    c->stream_arg = stream_arg;
    snprintf(c->id, sizeof(c->id), "%s", id);
    struct drest_req rq = {
        .method = "POST", .path = path, .json = json, .json_len = strlen(json), .timeout_ms = ACK_TIMEOUT_MS};
    if (drest_request(in->rest, &rq, on_ack_done, c)) {
        in->st.ack_failed++;
        log_warn("interaction acknowledgement not sent", LF_STR("interaction", id));
        mem_free(c);
        return;
    }
    b->acks_pending++;
}

static void gateway_interaction(struct ingress *in, int64_t seq, struct json_object *ix)
{
    struct decision dc;
    decide(in, ix, &dc);
    const char *id = jget_str(ix, "id"), *token = jget_str(ix, "token");
    in->st.interactions++;
    if (!id || !token || strlen(id) >= 24 || strlen(token) > DPATH_TOKEN_MAX) {
        log_warn("interaction without a usable id or token ignored");
        batch_add(in, seq, "", "", "", 0, NULL);
        return;
    }
    int64_t age = snowflake_age_ms(id);
    if (age > in->stale_ms && !(age < TOKEN_TTL_MS && take_unstored(in, snowflake(id)))) {
        /* A replay long after the fact. A holder that died after
         * acknowledging it is replaced within seconds, so this one was
         * handled before (the stored sequence went back: a Redis restored
         * from a backup, or a lost AOF tail), or nobody can answer it any
         * more. Only what we acknowledged ourselves and then dropped
         * unstored (a resync) is routed, whatever its age. */
        log_info("replayed interaction too old to be new; not routed", LF_STR("interaction", id),
                 LF_INT("age_ms", age));
        batch_add(in, seq, "", "", "", 0, NULL);
        return;
    }
    if (!dc.cmd) {
        batch_add(in, seq, "", "", "", 0, NULL);
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
    char *payload = interaction_payload(in, ix, dc.cmd);
    int stream_arg = -1;
    struct batch *b = batch_add(in, seq, key, "discord.interaction", payload, strlen(payload), &stream_arg);
    mem_free(payload);
    if (!b) {
        /* Not stored now (a resync is under way and Discord replays it):
         * acknowledge it anyway, so the replay finds it acknowledged. */
        send_callback(in, id, token, defer_json(dc.cmd->ephemeral), "defer");
        return;
    }
    ack_now(in, b, stream_arg, id, token, dc.cmd->ephemeral);
    b->ix_ids = mem_realloc(b->ix_ids, sizeof(uint64_t) * (size_t)(b->nix + 1));
    b->ix_ids[b->nix++] = snowflake(id);
}

/* A string member as a C string into buf; "" when absent or unusable. */
static const char *scan_str(const struct jscan_val *v, char *buf, size_t len)
{
    buf[0] = '\0';
    if (v->type == JSCAN_STRING && v->n < len && !memchr(v->p, '\\', v->n)) {
        memcpy(buf, v->p, v->n);
        buf[v->n] = '\0';
    }
    return buf;
}

/* Whether the mentions array names the bot user. Before READY taught us
 * who we are, nothing counts as a mention. */
static int mentions_bot(struct ingress *in, const struct jscan_val *list)
{
    static const char *const id_key[] = {"id"};
    if (!in->bot_user[0] || list->type != JSCAN_ARRAY)
        return 0;
    size_t pos = 0;
    struct jscan_val el, id;
    while (jscan_array_next(list, &pos, &el) == 1)
        if (el.type == JSCAN_OBJECT && !jscan_object(el.p, el.n, id_key, 1, &id) && jscan_eq(&id, in->bot_user))
            return 1;
    return 0;
}

/* The job type of a message (d as sent) for the stream of the role that
 * gets messages (role_for_messages: chat): "discord.mention" when it speaks
 * to the bot (a DM, or it mentions the bot), "discord.message" for other
 * messages in that role's channels, NULL when it is not that role's.
 * Scanned, not parsed: this runs for every message the bot can see. */
static const char *message_job(struct ingress *in, enum role r, const char *d, size_t len)
{
    static const char *const keys[] = {"author", "webhook_id", "guild_id", "channel_id", "mentions"};
    static const char *const author_keys[] = {"id", "bot"};
    struct jscan_val v[5], a[2];
    if (jscan_object(d, len, keys, 5, v) || v[0].type != JSCAN_OBJECT ||
        jscan_object(v[0].p, v[0].n, author_keys, 2, a))
        return NULL;
    if (a[1].type == JSCAN_TRUE || (v[1].type != JSCAN_ABSENT && v[1].type != JSCAN_NULL))
        return NULL; /* a bot or a webhook */
    if (in->bot_user[0] && jscan_eq(&a[0], in->bot_user))
        return NULL;
    if (v[2].type != JSCAN_STRING)
        return "discord.mention"; /* direct message */
    char cid[32];
    const char *cname, *pname;
    channel_names(in, scan_str(&v[3], cid, sizeof(cid)), NULL, &cname, &pname);
    if (!channel_allowed(role_channels(in->cfg, r), cname, pname))
        return NULL;
    return mentions_bot(in, &v[4]) ? "discord.mention" : "discord.message";
}

/* d parsed, for the few events whose content the ingress reads; NULL when
 * it is not JSON (the handlers treat that as an event without content). */
static struct json_object *parse_d(struct ingress *in, const struct gw_event *ev)
{
    if (ev->dobj)
        return json_object_get(ev->dobj);
    json_tokener_reset(in->tok);
    struct json_object *d = json_tokener_parse_ex(in->tok, ev->d, (int)ev->d_len);
    if (d && json_tokener_get_parse_end(in->tok) != ev->d_len) {
        json_object_put(d);
        d = NULL;
    }
    return d;
}

static int is_channel_event(const char *type)
{
    return !strcmp(type, "GUILD_CREATE") || !strncmp(type, "CHANNEL_", 8) || !strncmp(type, "THREAD_", 7);
}

void ingress_gateway_event(struct ingress *in, const struct gw_event *ev)
{
    if (!in->token || !ev->type)
        return;
    in->st.events++;
    const char *type = ev->type;
    if (!strcmp(type, "MESSAGE_CREATE")) {
        enum role r = role_for_messages();
        const char *job = r ? message_job(in, r, ev->d, ev->d_len) : NULL;
        char key[160] = "";
        if (job)
            stream_key(in, r, key, sizeof(key));
        batch_add(in, ev->seq, key, job ? job : "", job ? ev->raw : "", job ? ev->raw_len : 0, NULL);
        return;
    }
    if (!strcmp(type, "INTERACTION_CREATE")) {
        struct json_object *d = parse_d(in, ev);
        gateway_interaction(in, ev->seq, d);
        json_object_put(d);
        return;
    }
    if (is_channel_event(type)) {
        struct json_object *d = parse_d(in, ev);
        if (!strcmp(type, "GUILD_CREATE")) {
            remember_list(in, jget_member(d, "channels"));
            remember_list(in, jget_member(d, "threads"));
        } else if (!strcmp(type, "CHANNEL_CREATE") || !strcmp(type, "CHANNEL_UPDATE") ||
                   !strcmp(type, "THREAD_CREATE") || !strcmp(type, "THREAD_UPDATE")) {
            remember_channel(in, d);
        } else if (!strcmp(type, "CHANNEL_DELETE") || !strcmp(type, "THREAD_DELETE")) {
            forget_channel(in, d);
        } else if (!strcmp(type, "THREAD_LIST_SYNC")) {
            remember_list(in, jget_member(d, "threads"));
        }
        json_object_put(d);
    }
    batch_add(in, ev->seq, "", "", "", 0, NULL); /* not routed, but its sequence is */
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

/* The signed timestamp (Unix seconds) is within the allowed skew of our
 * clock: a request captured once cannot be sent again later. */
static int timestamp_fresh(struct ingress *in, struct httpd_req *req)
{
    const char *ts = httpd_req_header(req, "X-Signature-Timestamp");
    char *end;
    errno = 0;
    long long t = ts ? strtoll(ts, &end, 10) : 0;
    if (!ts || end == ts || *end || errno)
        return 0;
    long long skew = t - clock_wall_ms() / 1000;
    return skew <= in->cfg->interaction_max_skew_sec && -skew <= in->cfg->interaction_max_skew_sec;
}

/* Stored at most once per interaction id (the seen key lives longer than
 * any request can be fresh), so a replay inside the window costs nothing. */
static const char http_route_lua[] =
    "if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then\n"
    "  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'type', 'discord.interaction',\n"
    "                    'payload', ARGV[3], 'ts', ARGV[4])\n"
    "end\n"
    "return 0\n";

/* A job from POST /interactions, acknowledged already (the HTTP answer is
 * the acknowledgement), on its way to Redis. */
struct http_job {
    struct http_job *next, **pprev;
    struct ingress *in;
    int sent;
    char seen[160], key[160], ts[24];
    char *payload;
};

static void http_job_free(struct http_job *j)
{
    struct ingress *in = j->in;
    if (j->next)
        j->next->pprev = j->pprev;
    else
        in->hj_tail = j->pprev;
    *j->pprev = j->next;
    in->hj_count--;
    mem_free(j->payload);
    mem_free(j);
}

static void on_http_stored(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct http_job *j = arg;
    struct ingress *in = j->in;
    in->hj_inflight--;
    if (status == -ENOTCONN && !in->closing) {
        j->sent = 0; /* SET NX makes a second try harmless */
        redis_away(in);
        return;
    }
    const char *e = rds_reply_error(reply);
    if (status != BC_ESHUTDOWN && (status || e))
        log_error("interaction acknowledged but its job could not be stored", LF_STR("key", j->seen),
                  LF_STR("error", e ? e : bc_strerror(status)));
    http_job_free(j);
    redis_back(in);
}

static void http_pump(struct ingress *in)
{
    if (in->closing || !in->hj_head)
        return;
    if (!rds_up(in->redis)) {
        redis_away(in);
        return;
    }
    for (struct http_job *j = in->hj_head; j; j = j->next) {
        if (j->sent)
            continue;
        const char *av[] = {"EVAL", http_route_lua, "2", j->seen, j->key, SEEN_TTL_S, in->maxlen, j->payload, j->ts};
        if (rds_cmd(in->redis, on_http_stored, j, 9, av, NULL)) {
            uv_timer_start(&in->retry, on_retry_timer, 100, 100);
            return;
        }
        j->sent = 1;
        in->hj_inflight++;
    }
}

static void http_reply(struct httpd_req *req, const char *text)
{
    char *json = reply_json(text);
    httpd_respond(req, 200, "application/json", json, strlen(json));
    mem_free(json);
}

static void http_error(struct httpd_req *req, int status, const char *json)
{
    httpd_respond(req, status, "application/json", json, strlen(json));
}

#define QUEUE_FULL_KO "요청이 많아 지금은 처리할 수 없습니다. 잠시 후 다시 시도해 주세요."
#define QUEUE_FULL_EN "Too many requests are waiting right now. Please try again shortly."

/* Answer a command: defer it at once and queue its job (stored when Redis
 * can take it), or, when too many wait already, say so. Takes d->body. */
static void http_route(struct ingress *in, struct httpd_req *req, struct ingress__http *d)
{
    if (in->hj_count >= HTTP_QUEUE_MAX) {
        http_reply(req, d->ko ? QUEUE_FULL_KO : QUEUE_FULL_EN);
        in->st.replied++;
        mem_free(d->body);
        return;
    }
    struct http_job *j = mem_calloc(1, sizeof(*j));
    j->in = in;
    snprintf(j->seen, sizeof(j->seen), "%s:ix:seen:%s", in->cfg->redis_prefix, d->id);
    stream_key(in, d->role, j->key, sizeof(j->key));
    snprintf(j->ts, sizeof(j->ts), "%lld", (long long)clock_wall_ms());
    j->payload = d->body;
    j->pprev = in->hj_tail;
    *in->hj_tail = j;
    in->hj_tail = &j->next;
    in->hj_count++;
    const char *json = defer_json(d->ephemeral);
    httpd_respond(req, 200, "application/json", json, strlen(json));
    in->st.acked++;
    /* stored after this loop iteration sent the answer (on_flush) */
    if (!uv_is_active((uv_handle_t *)&in->flush))
        uv_check_start(&in->flush, on_flush);
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
    struct json_object *type = jget_member(ix, "type");
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
    const char *id = jget_str(ix, "id");
    if (!id || !*id || strlen(id) > 20 || strspn(id, "0123456789") != strlen(id)) {
        http_answer(out, 400, "{\"error\":\"interaction without a valid id\"}");
        json_object_put(ix);
        return;
    }
    int64_t age = snowflake_age_ms(id);
    if (age > in->stale_ms || age < -in->stale_ms) {
        in->st.refused_stale++;
        log_warn("signed interaction refused: the interaction is too old to be a delivery (a replay?)",
                 LF_STR("interaction", id), LF_INT("age_ms", age));
        http_answer(out, 401, "{\"error\":\"interaction too old\"}");
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

static void on_interactions(struct httpd_req *req, void *arg)
{
    struct ingress *in = arg;
    size_t len;
    const char *body = httpd_req_body(req, &len);
    if (!ingress__verify(in, httpd_req_header(req, "X-Signature-Timestamp"),
                         httpd_req_header(req, "X-Signature-Ed25519"), body, len)) {
        http_error(req, 401, "{\"error\":\"invalid request signature\"}");
        return;
    }
    if (!timestamp_fresh(in, req)) {
        in->st.refused_stale++;
        log_warn("signed interaction refused: its timestamp is outside the allowed skew (a replay?)",
                 LF_INT("max_skew_sec", in->cfg->interaction_max_skew_sec));
        http_error(req, 401, "{\"error\":\"request timestamp too old or in the future\"}");
        return;
    }
    struct ingress__http d;
    ingress__http_decide(in, body, len, &d);
    if (d.status) {
        httpd_respond(req, d.status, "application/json", d.body, strlen(d.body));
        mem_free(d.body);
        return;
    }
    http_route(in, req, &d);
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
    in->batch_events = BATCH_EVENTS;
    in->batch_bytes = BATCH_BYTES;
    in->queue_bytes = QUEUE_BYTES;
    in->stale_ms = STALE_INTERACTION_MS;
    in->hj_tail = &in->hj_head;
    in->tok = json_tokener_new_ex(64);
    /* ingress_http_route reports a bad key; requests need it from the start */
    in->public_key_ok = cfg->discord_public_key && *cfg->discord_public_key &&
                        !unhex(cfg->discord_public_key, in->public_key, sizeof(in->public_key));
    uv_check_init(loop, &in->flush);
    uv_timer_init(loop, &in->retry);
    in->flush.data = in->retry.data = in;
    *out = in;
    return 0;
}

void ingress__set_limits(struct ingress *in, size_t batch_events, size_t batch_bytes, size_t queue_bytes)
{
    in->batch_events = batch_events ? batch_events : BATCH_EVENTS;
    in->batch_bytes = batch_bytes ? batch_bytes : BATCH_BYTES;
    in->queue_bytes = queue_bytes ? queue_bytes : QUEUE_BYTES;
}

void ingress__set_stale_ms(struct ingress *in, int64_t ms)
{
    in->stale_ms = ms;
}

void ingress_set_holder(struct ingress *in, const char *lease_key, const char *session_key, const char *token,
                        ingress_trouble_cb *cb, void *arg)
{
    /* What was collected under the old token is dropped: whoever resumes
     * the session gets those events replayed. Batches on the wire finish. */
    batch_seal(in);
    drop_unsent(in);
    mem_free(in->lease_key);
    mem_free(in->session_key);
    mem_free(in->token);
    in->lease_key = in->session_key = in->token = NULL;
    in->broken = 0;
    in->warned_down = 0;
    in->trouble = cb;
    in->trouble_arg = arg;
    if (!token) {
        if (!in->hj_head)
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
    out->held_batches = in->queued_batches;
    out->held_bytes = in->queued_bytes;
    out->held_http = in->hj_count;
}

static void on_closed(uv_handle_t *h)
{
    struct ingress *in = h->data;
    if (++in->handles < 2)
        return;
    if (in->hj_count)
        log_error("shutting down with acknowledged interactions whose jobs Redis never took; they get no answer",
                  LF_INT("interactions", in->hj_count));
    while (in->head)
        batch_unlink(in, in->head);
    while (in->hj_head)
        http_job_free(in->hj_head);
    chan_free(&in->chans);
    json_tokener_free(in->tok);
    mem_free(in->lease_key);
    mem_free(in->session_key);
    mem_free(in->token);
    mem_free(in);
}

/* Call after the Redis connection and the REST client were closed (their
 * callbacks must not find a freed ingress). */
void ingress_close(struct ingress *in)
{
    in->closing = 1;
    uv_close((uv_handle_t *)&in->flush, on_closed);
    uv_close((uv_handle_t *)&in->retry, on_closed);
}
