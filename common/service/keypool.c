/* keypool: see keypool.h. */
#include "service/keypool.h"

#include <inttypes.h>
#include <json.h>
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "io/rds.h"

#define PROBE_BUSY_RETRY_MS 5000 /* told to callers while the probe is out */

enum kstate { K_OK, K_COOLING, K_OUT };
enum bstate { B_CLOSED, B_OPEN, B_HALF };

static const char *const kstate_name[] = {"ok", "cooling", "out"};
static const char *const bstate_name[] = {"closed", "open", "half-open"};

struct key {
    struct secret sec;
    enum kstate state;
    uint64_t until;     /* monotonic ms, while cooling */
    const char *reason; /* static; why it cools or is out */
    uint64_t uses, failures;
};

struct keypool {
    uv_loop_t *loop;
    struct rds *redis;
    char *hkey; /* <prefix>:keys:<provider>:<instance> */
    char *provider;
    struct keypool_opts o;
    struct key *keys;
    int n, next;
    /* the breaker */
    enum bstate bst;
    int errors;          /* consecutive server errors/timeouts while closed */
    uint64_t first_err;  /* when the run of errors started */
    uint64_t open_until;
    int cooldown_ms;     /* of the current/next opening */
    int probe_out;       /* half-open: the probe was handed out ... */
    uint64_t probe_at;   /* ... at this time */
    /* Redis mirror */
    int pending;         /* writes whose callback has not run */
    int freeing;
    int redis_warned;
};

static void opts_defaults(struct keypool_opts *o, const struct keypool_opts *in)
{
    static const struct keypool_opts def = {
        .default_retry_ms = 20000,
        .breaker_threshold = 5,
        .breaker_window_ms = 60000,
        .breaker_cooldown_ms = 30000,
        .breaker_max_ms = 300000,
        .probe_timeout_ms = 120000,
        .hang_cooldown_ms = 30000,
    };
    *o = in ? *in : def;
#define DEF(f)                                                                                     \
    if (o->f <= 0)                                                                                 \
    o->f = def.f
    DEF(default_retry_ms);
    DEF(breaker_threshold);
    DEF(breaker_window_ms);
    DEF(breaker_cooldown_ms);
    DEF(breaker_max_ms);
    DEF(probe_timeout_ms);
    DEF(hang_cooldown_ms);
#undef DEF
    if (o->breaker_max_ms < o->breaker_cooldown_ms)
        o->breaker_max_ms = o->breaker_cooldown_ms;
}

/* ---- Redis mirror -------------------------------------------------------- */

static void destroy(struct keypool *p)
{
    for (int i = 0; i < p->n; i++)
        secret_clear(&p->keys[i].sec);
    mem_free(p->keys);
    mem_free(p->hkey);
    mem_free(p->provider);
    mem_free(p);
}

static void mirror_failed(struct keypool *p, int err)
{
    if (p->redis_warned)
        return;
    p->redis_warned = 1;
    log_warn("api key state not mirrored to redis; kept locally", LF_STR("provider", p->provider), LF_ERR(err));
}

static void on_written(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct keypool *p = arg;
    p->pending--;
    if (status < 0)
        mirror_failed(p, status);
    else if (rds_reply_error(reply))
        mirror_failed(p, BC_EREDIS);
    else if (p->redis_warned) {
        p->redis_warned = 0;
        log_info("api key state mirrored to redis again", LF_STR("provider", p->provider));
    }
    if (p->freeing && p->pending == 0)
        destroy(p);
}

static void send_cmd(struct keypool *p, int argc, const char **argv)
{
    int rc = rds_cmd(p->redis, on_written, p, argc, argv, NULL);
    if (rc < 0)
        mirror_failed(p, rc);
    else
        p->pending++;
}

/* HSET the key's state, by fingerprint; best effort. */
static void mirror(struct keypool *p, uint64_t now, const struct key *k)
{
    if (!p->redis || p->freeing)
        return;
    char json[256];
    int64_t until = k->state == K_COOLING && k->until > now ? clock_wall_ms() + (int64_t)(k->until - now) : 0;
    snprintf(json, sizeof(json),
             "{\"state\":\"%s\",\"until_ms\":%" PRId64 ",\"reason\":%s%s%s,\"uses\":%" PRIu64
             ",\"failures\":%" PRIu64 "}",
             kstate_name[k->state], until, k->reason ? "\"" : "", k->reason ? k->reason : "null",
             k->reason ? "\"" : "", k->uses, k->failures);
    const char *argv[] = {"HSET", p->hkey, k->sec.fp, json};
    send_cmd(p, 4, argv);
}

void keypool_resync(struct keypool *p, uint64_t now_ms)
{
    if (!p->redis || p->freeing)
        return;
    const char *argv[] = {"DEL", p->hkey};
    send_cmd(p, 2, argv); /* forget keys this instance no longer has */
    for (int i = 0; i < p->n; i++)
        mirror(p, now_ms, &p->keys[i]);
}

/* ---- construction ---------------------------------------------------------- */

static int has_fp(const struct keypool *p, const char *fp)
{
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->keys[i].sec.fp, fp))
            return 1;
    return 0;
}

/* Split the comma-separated list into keys; the scratch copy is wiped. */
static void parse_keys(struct keypool *p, const char *list)
{
    char *copy = mem_strdup(list);
    size_t cap = 0;
    char *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ' || *t == '\t' || *t == '\n' || *t == '\r')
            t++;
        size_t l = strlen(t);
        while (l > 0 && (t[l - 1] == ' ' || t[l - 1] == '\t' || t[l - 1] == '\n' || t[l - 1] == '\r'))
            t[--l] = '\0';
        if (!l)
            continue;
        char fp[SECRET_FP_LEN];
        secret_fingerprint(t, l, fp);
        if (has_fp(p, fp)) {
            log_warn("duplicate api key ignored", LF_STR("provider", p->provider), LF_STR("key", fp));
            continue;
        }
        if ((size_t)p->n == cap) {
            cap = cap ? cap * 2 : 4;
            p->keys = mem_realloc(p->keys, cap * sizeof(*p->keys));
        }
        struct key *k = &p->keys[p->n++];
        memset(k, 0, sizeof(*k));
        secret_set(&k->sec, t);
        log_mask_add(t); /* a provider that echoes it in a header is not logged */
    }
    explicit_bzero(copy, strlen(list));
    mem_free(copy);
}

int keypool_new(uv_loop_t *loop, struct rds *redis, const char *prefix, const char *provider,
                const char *instance, const struct secret *keys, const struct keypool_opts *opts,
                struct keypool **out)
{
    *out = NULL;
    struct keypool *p = mem_calloc(1, sizeof(*p));
    p->loop = loop;
    p->redis = redis;
    p->provider = mem_strdup(provider ? provider : "provider");
    opts_defaults(&p->o, opts);
    p->cooldown_ms = p->o.breaker_cooldown_ms;
    if (keys && keys->value)
        parse_keys(p, keys->value);
    if (p->n == 0) {
        destroy(p);
        return BC_ECONFIG;
    }
    struct buf b;
    buf_init(&b, 1024);
    if (buf_printf(&b, "%s:keys:%s:%s", prefix ? prefix : "discordbot", p->provider, instance ? instance : "-") <
        0) {
        buf_free(&b);
        destroy(p);
        return BC_ECONFIG;
    }
    p->hkey = buf_detach(&b);
    keypool_resync(p, loop ? uv_now(loop) : 0);
    *out = p;
    return 0;
}

void keypool_free(struct keypool *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n; i++)
        secret_clear(&p->keys[i].sec);
    p->freeing = 1;
    if (p->pending == 0)
        destroy(p);
}

/* ---- the breaker ------------------------------------------------------------- */

static void breaker_open(struct keypool *p, uint64_t now)
{
    p->bst = B_OPEN;
    p->open_until = now + (uint64_t)p->cooldown_ms;
    p->errors = 0;
    p->probe_out = 0;
    log_warn("provider circuit breaker open", LF_STR("provider", p->provider),
             LF_INT("retry_in_ms", p->cooldown_ms));
}

/* The provider answered (whatever it said). */
static void breaker_answered(struct keypool *p)
{
    if (p->bst == B_HALF) {
        p->bst = B_CLOSED;
        p->probe_out = 0;
        log_info("provider circuit breaker closed", LF_STR("provider", p->provider));
    }
    if (p->bst == B_CLOSED) {
        p->errors = 0;
        p->cooldown_ms = p->o.breaker_cooldown_ms;
    }
    /* open: a late answer to a request sent before it opened changes nothing */
}

static void breaker_failed(struct keypool *p, uint64_t now)
{
    if (p->bst == B_HALF) {
        int doubled = p->cooldown_ms > p->o.breaker_max_ms / 2 ? p->o.breaker_max_ms : p->cooldown_ms * 2;
        p->cooldown_ms = doubled;
        breaker_open(p, now);
        return;
    }
    if (p->bst != B_CLOSED)
        return;
    if (p->errors == 0 || now - p->first_err > (uint64_t)p->o.breaker_window_ms) {
        p->errors = 1;
        p->first_err = now;
    } else {
        p->errors++;
    }
    if (p->errors >= p->o.breaker_threshold) {
        p->cooldown_ms = p->o.breaker_cooldown_ms;
        breaker_open(p, now);
    }
}

/* 0 when a request may go out now (*probe set when it is the probe). */
static int breaker_gate(struct keypool *p, uint64_t now, struct keypool_pick *pk, int *probe)
{
    *probe = 0;
    if (p->bst == B_OPEN) {
        if (now < p->open_until) {
            pk->retry_in_ms = p->open_until - now;
            return KEYPOOL_EUNAVAIL;
        }
        p->bst = B_HALF;
        p->probe_out = 0;
    }
    if (p->bst == B_HALF) {
        if (p->probe_out && now - p->probe_at < (uint64_t)p->o.probe_timeout_ms) {
            pk->retry_in_ms = PROBE_BUSY_RETRY_MS;
            return KEYPOOL_EUNAVAIL;
        }
        *probe = 1;
    }
    return 0;
}

/* ---- picking and reporting ----------------------------------------------------- */

int keypool_in_rotation(const struct keypool *p)
{
    int in = 0;
    for (int i = 0; i < p->n; i++)
        in += p->keys[i].state != K_OUT;
    return in;
}

int keypool_size(const struct keypool *p)
{
    return p->n;
}

int keypool_pick(struct keypool *p, uint64_t now_ms, struct keypool_pick *pk)
{
    memset(pk, 0, sizeof(*pk));
    pk->index = -1;
    if (!keypool_in_rotation(p))
        return KEYPOOL_EEXHAUSTED;
    int probe, rc = breaker_gate(p, now_ms, pk, &probe);
    if (rc < 0)
        return rc;
    uint64_t soonest = UINT64_MAX;
    for (int i = 0; i < p->n; i++) {
        int j = (p->next + i) % p->n;
        struct key *k = &p->keys[j];
        if (k->state == K_COOLING && now_ms >= k->until) {
            k->state = K_OK;
            k->until = 0;
            k->reason = NULL;
            mirror(p, now_ms, k);
        }
        if (k->state == K_COOLING && k->until < soonest)
            soonest = k->until;
        if (k->state != K_OK)
            continue;
        p->next = (j + 1) % p->n;
        k->uses++;
        pk->index = j;
        pk->key = k->sec.value;
        pk->fp = k->sec.fp;
        if (probe) {
            pk->probe = 1;
            p->probe_out = 1;
            p->probe_at = now_ms;
        }
        return 0;
    }
    pk->retry_in_ms = soonest - now_ms;
    return KEYPOOL_EAGAIN;
}

int keypool_by_fp(const struct keypool *p, const char *fp, struct keypool_pick *pk)
{
    memset(pk, 0, sizeof(*pk));
    pk->index = -1;
    for (int i = 0; fp && i < p->n; i++) {
        if (strcmp(p->keys[i].sec.fp, fp))
            continue;
        pk->index = i;
        pk->key = p->keys[i].sec.value;
        pk->fp = p->keys[i].sec.fp;
        return 0;
    }
    return -ENOENT;
}

static void take_out(struct keypool *p, struct key *k, const char *reason)
{
    if (k->state == K_OUT)
        return;
    k->state = K_OUT;
    k->until = 0;
    k->reason = reason;
    log_warn("api key taken out of rotation", LF_STR("provider", p->provider), LF_SECRET("key", &k->sec),
             LF_STR("reason", reason));
}

void keypool_report(struct keypool *p, uint64_t now_ms, int index, enum keypool_outcome outcome,
                    int retry_after_ms)
{
    if (index < 0 || index >= p->n || p->freeing)
        return;
    struct key *k = &p->keys[index];
    switch (outcome) {
    case KEYPOOL_OK:
        breaker_answered(p);
        break;
    case KEYPOOL_RATE_LIMITED:
        k->failures++;
        if (k->state != K_OUT) {
            k->state = K_COOLING;
            k->until = now_ms + (uint64_t)(retry_after_ms > 0 ? retry_after_ms : p->o.default_retry_ms);
            k->reason = "rate_limited";
            log_debug("api key cooling down", LF_STR("provider", p->provider), LF_SECRET("key", &k->sec),
                      LF_INT("retry_in_ms", k->until - now_ms));
        }
        breaker_answered(p);
        break;
    case KEYPOOL_QUOTA:
    case KEYPOOL_AUTH:
        k->failures++;
        take_out(p, k, outcome == KEYPOOL_QUOTA ? "quota" : "auth");
        breaker_answered(p);
        break;
    case KEYPOOL_HUNG:
        if (k->state != K_OUT) {
            k->state = K_COOLING;
            k->until = now_ms + (uint64_t)p->o.hang_cooldown_ms;
            k->reason = "hung";
            log_warn("api key rests after a request that hung", LF_STR("provider", p->provider),
                     LF_SECRET("key", &k->sec), LF_INT("retry_in_ms", p->o.hang_cooldown_ms));
        }
        k->failures++;
        breaker_failed(p, now_ms); /* a hang is also a failure of the provider */
        break;
    case KEYPOOL_SERVER_ERROR:
    case KEYPOOL_TIMEOUT:
        k->failures++;
        breaker_failed(p, now_ms);
        break;
    }
    mirror(p, now_ms, k);
}

/* ---- reporting out ----------------------------------------------------------- */

void keypool_describe(const struct keypool *p, int rc, const struct keypool_pick *pk, char *out, size_t outlen)
{
    unsigned long long s = pk ? (pk->retry_in_ms + 999) / 1000 : 0;
    if (rc == 0)
        snprintf(out, outlen, "ok");
    else if (rc == KEYPOOL_EUNAVAIL)
        snprintf(out, outlen, "%s is unavailable, retry in %llu s", p->provider, s);
    else if (rc == KEYPOOL_EAGAIN)
        snprintf(out, outlen, "%s is busy (rate limited), retry in %llu s", p->provider, s);
    else if (rc == KEYPOOL_EEXHAUSTED)
        snprintf(out, outlen, "%s has no usable API key (out of quota or rejected)", p->provider);
    else
        snprintf(out, outlen, "%s", bc_strerror(rc));
}

static int snap_key(const struct key *k, uint64_t now, struct buf *json)
{
    return buf_printf(json,
                      "{\"fp\":\"%s\",\"state\":\"%s\",\"retry_in_ms\":%" PRIu64 ",\"reason\":%s%s%s,"
                      "\"uses\":%" PRIu64 ",\"failures\":%" PRIu64 "}",
                      k->sec.fp, kstate_name[k->state], k->state == K_COOLING && k->until > now ? k->until - now : 0,
                      k->reason ? "\"" : "", k->reason ? k->reason : "null", k->reason ? "\"" : "", k->uses,
                      k->failures);
}

int keypool_snapshot(const struct keypool *p, uint64_t now_ms, struct buf *json)
{
    char name[256];
    log_json_escape(name, sizeof(name), p->provider, strlen(p->provider));
    uint64_t retry = p->bst == B_OPEN && p->open_until > now_ms ? p->open_until - now_ms : 0;
    int rc = buf_printf(json,
                        "{\"provider\":\"%s\",\"breaker\":{\"state\":\"%s\",\"retry_in_ms\":%" PRIu64
                        ",\"cooldown_ms\":%d,\"errors\":%d},\"keys\":[",
                        name, bstate_name[p->bst], retry, p->cooldown_ms, p->errors);
    for (int i = 0; i < p->n && rc >= 0; i++) {
        if (i)
            rc = buf_puts(json, ",");
        if (rc >= 0)
            rc = snap_key(&p->keys[i], now_ms, json);
    }
    if (rc >= 0)
        rc = buf_puts(json, "]}");
    return rc < 0 ? rc : 0;
}

void keypool_health(const struct keypool *p, uint64_t now_ms, struct json_object *health)
{
    struct buf b;
    buf_init(&b, 64 << 10);
    struct json_object *snap = keypool_snapshot(p, now_ms, &b) ? NULL : json_tokener_parse(buf_str(&b)), *arr;
    buf_free(&b);
    if (!snap)
        return;
    if (!json_object_object_get_ex(health, "keys", &arr)) {
        arr = json_object_new_array();
        json_object_object_add(health, "keys", arr);
    }
    json_object_array_add(arr, snap);
}

/* ---- reading the cluster's key state back --------------------------------------- */

#define READ_SCAN_ROUNDS_MAX 32 /* SCAN calls before we stop looking for more */
#define READ_JSON_MAX 1024      /* one key's state as mirror() writes it is far shorter */

/* One hash found: its name, split at the first ':' after "<prefix>:keys:". */
struct rd_hash {
    char *key;
    size_t prov_off, prov_len, inst_off, inst_len;
};

struct rd_ctx {
    struct keypool_reader *rd;
    int i;
};

struct keypool_reader {
    struct rds *redis;
    char *prefix;
    keypool_state_cb *cb;
    void *arg;
    int waiting; /* replies still owed to us */
    int status;  /* the first error */
    int scans;
    struct rd_hash hashes[KEYPOOL_READ_HASHES_MAX];
    struct rd_ctx hx[KEYPOOL_READ_HASHES_MAX];
    int nhashes;
    struct keypool_entry *entries; /* max of them */
    size_t max;
    struct keypool_state st;
};

static void rd_fail(struct keypool_reader *rd, int status)
{
    if (!rd->status)
        rd->status = status ? status : BC_EREDIS;
}

static void rd_done_one(struct keypool_reader *rd)
{
    if (--rd->waiting)
        return;
    rd->st.entries = rd->entries;
    rd->cb(rd->status, &rd->st, rd->arg);
    for (size_t i = 0; i < rd->st.n; i++)
        mem_free((char *)rd->entries[i].reason);
    for (int i = 0; i < rd->nhashes; i++)
        mem_free(rd->hashes[i].key);
    mem_free(rd->entries);
    mem_free(rd->prefix);
    mem_free(rd);
}

/* "<prefix>:keys:<provider>:<instance>" into its parts; 0 when it is one. */
static int rd_hash_parse(const char *prefix, const char *key, size_t len, struct rd_hash *h)
{
    size_t pl = strlen(prefix);
    if (len <= pl + 6 || strncmp(key, prefix, pl) || strncmp(key + pl, ":keys:", 6))
        return -1;
    const char *p = key + pl + 6, *end = key + len, *colon = memchr(p, ':', (size_t)(end - p));
    if (!colon || colon == p || colon + 1 == end)
        return -1;
    h->prov_off = (size_t)(p - key);
    h->prov_len = (size_t)(colon - p);
    h->inst_off = (size_t)(colon + 1 - key);
    h->inst_len = (size_t)(end - colon - 1);
    return 0;
}

static void rd_scan_take(struct keypool_reader *rd, const redisReply *keys)
{
    for (size_t i = 0; i < keys->elements; i++) {
        const redisReply *k = keys->element[i];
        struct rd_hash h = {0};
        if (k->type != REDIS_REPLY_STRING || rd_hash_parse(rd->prefix, k->str, k->len, &h))
            continue;
        int seen = 0; /* SCAN may return a key twice */
        for (int j = 0; j < rd->nhashes && !seen; j++)
            seen = !strcmp(rd->hashes[j].key, k->str);
        if (seen)
            continue;
        if (rd->nhashes == KEYPOOL_READ_HASHES_MAX) {
            rd->st.truncated = 1;
            continue;
        }
        h.key = mem_strndup(k->str, k->len);
        rd->hashes[rd->nhashes++] = h;
    }
}

/* A fingerprint as secret_fingerprint writes it: "sha256:" and hex digits.
 * Anything else is not returned at all (it could be anything). */
static int is_fingerprint(const char *s, size_t n)
{
    return n > 7 && n < KEYPOOL_FP_MAX && !strncmp(s, "sha256:", 7) && strspn(s + 7, "0123456789abcdef") == n - 7;
}

/* The value mirror() writes, parsed into e. */
static void rd_value(struct keypool_entry *e, const redisReply *val)
{
    struct json_object *o = val->len <= READ_JSON_MAX ? json_tokener_parse(val->str) : NULL, *v;
    if (json_object_object_get_ex(o, "state", &v) && json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        for (enum kstate k = K_OK; k <= K_OUT; k++)
            if (!strcmp(s, kstate_name[k]))
                e->state = k == K_OK ? KEYPOOL_KEY_OK : k == K_COOLING ? KEYPOOL_KEY_COOLING : KEYPOOL_KEY_OUT;
    }
    if (json_object_object_get_ex(o, "reason", &v) && json_object_is_type(v, json_type_string))
        e->reason = mem_strdup(json_object_get_string(v));
    if (json_object_object_get_ex(o, "until_ms", &v))
        e->until_ms = json_object_get_int64(v);
    json_object_put(o);
}

static void rd_entry(struct keypool_reader *rd, const struct rd_hash *h, const redisReply *fp,
                     const redisReply *val)
{
    if (fp->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING || !is_fingerprint(fp->str, fp->len))
        return;
    if (rd->st.n == rd->max) {
        rd->st.more++;
        return;
    }
    struct keypool_entry *e = &rd->entries[rd->st.n++];
    memset(e, 0, sizeof(*e));
    e->provider = h->key + h->prov_off;
    e->provider_len = h->prov_len;
    e->instance = h->key + h->inst_off;
    e->instance_len = h->inst_len;
    snprintf(e->fp, sizeof(e->fp), "%.*s", (int)fp->len, fp->str);
    rd_value(e, val);
}

static void rd_on_hgetall(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct rd_ctx *x = arg;
    struct keypool_reader *rd = x->rd;
    if (status || !reply || reply->type != REDIS_REPLY_ARRAY)
        rd_fail(rd, status);
    else
        for (size_t i = 0; i + 1 < reply->elements; i += 2)
            rd_entry(rd, &rd->hashes[x->i], reply->element[i], reply->element[i + 1]);
    rd_done_one(rd);
}

static void rd_read_hashes(struct keypool_reader *rd)
{
    for (int i = 0; i < rd->nhashes; i++) {
        const char *av[] = {"HGETALL", rd->hashes[i].key};
        rd->hx[i] = (struct rd_ctx){rd, i};
        int rc = rds_cmd(rd->redis, rd_on_hgetall, &rd->hx[i], 2, av, NULL);
        if (rc == 0)
            rd->waiting++;
        else
            rd_fail(rd, rc);
    }
}

static int rd_scan(struct keypool_reader *rd, const char *cursor);

static void rd_on_scan(struct rds *r, int status, const redisReply *reply, void *arg)
{
    (void)r;
    struct keypool_reader *rd = arg;
    if (status || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING || reply->element[1]->type != REDIS_REPLY_ARRAY) {
        rd_fail(rd, status);
        rd_read_hashes(rd); /* what was found so far */
        rd_done_one(rd);
        return;
    }
    rd_scan_take(rd, reply->element[1]);
    const char *cursor = reply->element[0]->str;
    int more = strcmp(cursor, "0") != 0;
    if (more && ++rd->scans < READ_SCAN_ROUNDS_MAX && rd->nhashes < KEYPOOL_READ_HASHES_MAX) {
        int rc = rd_scan(rd, cursor);
        if (rc == 0) {
            rd_done_one(rd);
            return;
        }
        rd_fail(rd, rc);
    }
    rd->st.truncated |= more;
    rd_read_hashes(rd);
    rd_done_one(rd);
}

/* Ask for the next batch of hashes: 0, or rds_cmd's error. */
static int rd_scan(struct keypool_reader *rd, const char *cursor)
{
    char match[160];
    snprintf(match, sizeof(match), "%s:keys:*", rd->prefix);
    const char *av[] = {"SCAN", cursor, "MATCH", match, "COUNT", "100"};
    int rc = rds_cmd(rd->redis, rd_on_scan, rd, 6, av, NULL);
    if (rc == 0)
        rd->waiting++;
    return rc;
}

int keypool_read_state(struct rds *redis, const char *prefix, size_t max, keypool_state_cb *cb, void *arg)
{
    if (!redis || !prefix || !cb)
        return -EINVAL;
    struct keypool_reader *rd = mem_calloc(1, sizeof(*rd));
    rd->redis = redis;
    rd->prefix = mem_strdup(prefix);
    rd->cb = cb;
    rd->arg = arg;
    rd->max = max;
    rd->entries = mem_calloc(max ? max : 1, sizeof(*rd->entries));
    int rc = rd_scan(rd, "0");
    if (rc < 0) {
        mem_free(rd->entries);
        mem_free(rd->prefix);
        mem_free(rd);
    }
    return rc;
}
