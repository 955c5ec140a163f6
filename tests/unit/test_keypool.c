/* Unit tests for keypool. The clock is injected (every call takes now), so
 * cooldowns and the breaker are tested without waiting. The Redis mirror is
 * tested against the real redis-server in TEST_REDIS_URL, under a prefix of
 * this process ("t<pid>_kp"), deleted at exit; checks read it with a
 * blocking hiredis context, which is fine in test code (ut_redis.h). */
#include <errno.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <json-c/json.h>
#include <uv.h>

#include "base/buf.h"
#include "base/err.h"
#include "service/keypool.h"
#include "base/log.h"
#include "io/rds.h"
#include "base/secret.h"
#include "ut.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_redis.h"

static uv_loop_t loop;

static struct keypool *pool_new(const char *list, const struct keypool_opts *o)
{
    struct secret s = {0};
    secret_set(&s, list);
    struct keypool *p = NULL;
    UT_EQ_INT(keypool_new(&loop, NULL, "t", "openai", "chat-1", &s, o, &p), 0);
    secret_clear(&s);
    return p;
}

/* Pick at now and return the key (asserting success). */
static const char *pick(struct keypool *p, uint64_t now, struct keypool_pick *pk)
{
    int rc = keypool_pick(p, now, pk);
    if (rc != 0)
        UT_FAIL("pick at %llu: %d", (unsigned long long)now, rc);
    return pk->key;
}

static void test_rotation(void)
{
    UT_EQ_INT(uv_loop_init(&loop), 0);
    struct keypool *p = pool_new(" k1, k2,,k3 ,k1", NULL);
    UT_EQ_INT(keypool_size(p), 3); /* blank and duplicate entries dropped */
    struct keypool_pick pk;
    UT_EQ_STR(pick(p, 0, &pk), "k1");
    char fp[SECRET_FP_LEN];
    secret_fingerprint("k1", 2, fp);
    UT_EQ_STR(pk.fp, fp);
    UT_EQ_INT(pk.index, 0);
    UT_EQ_STR(pick(p, 1, &pk), "k2");
    UT_EQ_STR(pick(p, 2, &pk), "k3");
    UT_EQ_STR(pick(p, 3, &pk), "k1");
    keypool_free(p);

    struct secret none = {0};
    secret_set(&none, " , ,");
    struct keypool *q = (struct keypool *)&none;
    UT_EQ_INT(keypool_new(&loop, NULL, "t", "openai", "chat-1", &none, NULL, &q), BC_ECONFIG);
    UT_ASSERT(q == NULL);
    secret_clear(&none);
    UT_EQ_INT(uv_loop_close(&loop), 0);
}

static void test_cooldown_and_recovery(void)
{
    UT_EQ_INT(uv_loop_init(&loop), 0);
    struct keypool *p = pool_new("k1,k2,k3", NULL);
    struct keypool_pick pk;
    UT_EQ_STR(pick(p, 1000, &pk), "k1");
    keypool_report(p, 1000, pk.index, KEYPOOL_RATE_LIMITED, 5000);
    UT_EQ_STR(pick(p, 1100, &pk), "k2");
    keypool_report(p, 1100, pk.index, KEYPOOL_RATE_LIMITED, 0); /* default 20 s */
    for (int i = 0; i < 3; i++)
        UT_EQ_STR(pick(p, 2000 + (uint64_t)i, &pk), "k3");
    UT_EQ_STR(pick(p, 5999, &pk), "k3");
    UT_EQ_STR(pick(p, 6000, &pk), "k1"); /* back after its 5 s */
    UT_EQ_STR(pick(p, 6001, &pk), "k3");
    UT_EQ_STR(pick(p, 6002, &pk), "k1");
    UT_EQ_STR(pick(p, 21099, &pk), "k3");
    UT_EQ_STR(pick(p, 21100, &pk), "k1");
    UT_EQ_STR(pick(p, 21101, &pk), "k2"); /* back after the default 20 s */
    keypool_free(p);
    UT_EQ_INT(uv_loop_close(&loop), 0);
}

static void test_all_cooling_gives_soonest_retry(void)
{
    UT_EQ_INT(uv_loop_init(&loop), 0);
    struct keypool *p = pool_new("k1,k2", NULL);
    struct keypool_pick pk;
    pick(p, 1000, &pk);
    keypool_report(p, 1000, pk.index, KEYPOOL_RATE_LIMITED, 7000);
    pick(p, 1000, &pk);
    keypool_report(p, 1000, pk.index, KEYPOOL_RATE_LIMITED, 3000);
    UT_EQ_INT(keypool_pick(p, 2000, &pk), KEYPOOL_EAGAIN);
    UT_EQ_INT(pk.retry_in_ms, 2000);
    UT_ASSERT(pk.key == NULL);
    char msg[128];
    keypool_describe(p, KEYPOOL_EAGAIN, &pk, msg, sizeof(msg));
    UT_CONTAINS(msg, "retry in 2 s");
    UT_EQ_STR(pick(p, 4000, &pk), "k2");
    keypool_free(p);
    UT_EQ_INT(uv_loop_close(&loop), 0);
}

static void test_quota_and_auth_leave_rotation(void)
{
    UT_EQ_INT(uv_loop_init(&loop), 0);
    utlog_start("test", "keypool", NULL);
    struct keypool *p = pool_new("sk-quota-value,sk-auth-value,sk-good-value", NULL);
    struct keypool_pick pk;
    pick(p, 0, &pk);
    keypool_report(p, 0, pk.index, KEYPOOL_QUOTA, 0);
    keypool_report(p, 1, pk.index, KEYPOOL_QUOTA, 0); /* a second request in flight */
    pick(p, 2, &pk);
    keypool_report(p, 2, pk.index, KEYPOOL_AUTH, 0);
    UT_EQ_INT(keypool_in_rotation(p), 1);
    for (int i = 0; i < 4; i++)
        UT_EQ_STR(pick(p, 100000000 + (uint64_t)i, &pk), "sk-good-value"); /* never back */
    keypool_report(p, 5, pk.index, KEYPOOL_QUOTA, 0);
    UT_EQ_INT(keypool_pick(p, 6, &pk), KEYPOOL_EEXHAUSTED);
    char msg[128];
    keypool_describe(p, KEYPOOL_EEXHAUSTED, &pk, msg, sizeof(msg));
    UT_CONTAINS(msg, "no usable API key");

    const char *logs = utlog_text();
    char fp[SECRET_FP_LEN];
    secret_fingerprint("sk-quota-value", 14, fp);
    UT_EQ_INT(utlog_count_in(logs, fp), 1); /* logged once, by fingerprint */
    UT_EQ_INT(utlog_count_in(logs, "taken out of rotation"), 3);
    UT_CONTAINS(logs, "\"reason\":\"quota\"");
    UT_CONTAINS(logs, "\"reason\":\"auth\"");
    UT_NOT_CONTAINS(logs, "-value");
    keypool_free(p);
    UT_EQ_INT(uv_loop_close(&loop), 0);
}

static void fail_n(struct keypool *p, uint64_t now, int n, enum keypool_outcome o)
{
    struct keypool_pick pk;
    for (int i = 0; i < n; i++) {
        pick(p, now, &pk);
        keypool_report(p, now, pk.index, o, 0);
    }
}

static void test_breaker_opens_probes_and_closes(void)
{
    UT_EQ_INT(uv_loop_init(&loop), 0);
    struct keypool *p = pool_new("k1,k2", NULL);
    struct keypool_pick pk;
    char msg[128];
    /* errors spread wider than the window, or broken by a success, do not open it */
    fail_n(p, 0, 4, KEYPOOL_SERVER_ERROR);
    fail_n(p, 61000, 4, KEYPOOL_TIMEOUT);
    fail_n(p, 61001, 1, KEYPOOL_OK);
    fail_n(p, 61002, 4, KEYPOOL_TIMEOUT);
    UT_EQ_INT(keypool_pick(p, 61003, &pk), 0);
    UT_EQ_INT(pk.probe, 0);

    uint64_t t = 200000; /* the run above is out of the window by now */
    fail_n(p, t, 5, KEYPOOL_SERVER_ERROR);
    UT_EQ_INT(keypool_pick(p, t + 1000, &pk), KEYPOOL_EUNAVAIL);
    UT_EQ_INT(pk.retry_in_ms, 29000);
    keypool_describe(p, KEYPOOL_EUNAVAIL, &pk, msg, sizeof(msg));
    UT_EQ_STR(msg, "openai is unavailable, retry in 29 s");

    /* failing probes double the cooldown up to 5 min */
    int expect[] = {30000, 60000, 120000, 240000, 300000, 300000};
    for (int i = 0; i < 6; i++) {
        UT_EQ_INT(keypool_pick(p, t + (uint64_t)expect[i] - 1, &pk), KEYPOOL_EUNAVAIL);
        t += (uint64_t)expect[i];
        UT_EQ_INT(keypool_pick(p, t, &pk), 0); /* half-open: one probe */
        UT_EQ_INT(pk.probe, 1);
        UT_EQ_INT(keypool_pick(p, t, &pk), KEYPOOL_EUNAVAIL);
        if (i < 5)
            keypool_report(p, t, pk.index < 0 ? 0 : pk.index, KEYPOOL_TIMEOUT, 0);
    }
    /* the probe succeeds: closed, and the cooldown starts over */
    keypool_report(p, t, 0, KEYPOOL_OK, 0);
    for (int i = 0; i < 10; i++) {
        UT_EQ_INT(keypool_pick(p, t + 1, &pk), 0);
        UT_EQ_INT(pk.probe, 0);
    }
    struct buf js;
    buf_init(&js, 4096);
    UT_EQ_INT(keypool_snapshot(p, t, &js), 0);
    UT_CONTAINS(buf_str(&js), "\"state\":\"closed\"");
    fail_n(p, t + 2, 5, KEYPOOL_TIMEOUT);
    UT_EQ_INT(keypool_pick(p, t + 2, &pk), KEYPOOL_EUNAVAIL);
    UT_EQ_INT(pk.retry_in_ms, 30000);
    buf_reset(&js);
    UT_EQ_INT(keypool_snapshot(p, t + 2, &js), 0);
    UT_CONTAINS(buf_str(&js), "\"state\":\"open\"");
    buf_free(&js);
    keypool_free(p);
    UT_EQ_INT(uv_loop_close(&loop), 0);
}

static void test_lost_probe_is_retried(void)
{
    UT_EQ_INT(uv_loop_init(&loop), 0);
    struct keypool_opts o = {.probe_timeout_ms = 10000, .breaker_threshold = 2};
    struct keypool *p = pool_new("k1", &o);
    struct keypool_pick pk;
    fail_n(p, 0, 2, KEYPOOL_SERVER_ERROR);
    UT_EQ_INT(keypool_pick(p, 30000, &pk), 0);
    UT_EQ_INT(pk.probe, 1);
    UT_EQ_INT(keypool_pick(p, 39999, &pk), KEYPOOL_EUNAVAIL);
    UT_EQ_INT(keypool_pick(p, 40000, &pk), 0); /* never reported: another probe */
    UT_EQ_INT(pk.probe, 1);
    keypool_report(p, 40001, pk.index, KEYPOOL_RATE_LIMITED, 1000); /* it answered: closed */
    UT_EQ_INT(keypool_pick(p, 41001, &pk), 0);
    UT_EQ_INT(pk.probe, 0);
    keypool_free(p);
    UT_EQ_INT(uv_loop_close(&loop), 0);
}

static void test_snapshot_has_fingerprints_only(void)
{
    UT_EQ_INT(uv_loop_init(&loop), 0);
    struct keypool *p = pool_new("sk-alpha-secret,sk-beta-secret", NULL);
    struct keypool_pick pk;
    pick(p, 0, &pk);
    keypool_report(p, 0, pk.index, KEYPOOL_RATE_LIMITED, 4000);
    struct buf js;
    buf_init(&js, 4096);
    UT_EQ_INT(keypool_snapshot(p, 1000, &js), 0);
    UT_NOT_CONTAINS(buf_str(&js), "secret");
    json_object *o = json_tokener_parse(buf_str(&js));
    UT_ASSERT(o != NULL);
    json_object *keys = json_object_object_get(o, "keys");
    UT_EQ_INT(json_object_array_length(keys), 2);
    json_object *k0 = json_object_array_get_idx(keys, 0);
    char fp[SECRET_FP_LEN];
    secret_fingerprint("sk-alpha-secret", 15, fp);
    UT_EQ_STR(json_object_get_string(json_object_object_get(k0, "fp")), fp);
    UT_EQ_STR(json_object_get_string(json_object_object_get(k0, "state")), "cooling");
    UT_EQ_INT(json_object_get_int64(json_object_object_get(k0, "retry_in_ms")), 3000);
    UT_EQ_INT(json_object_get_int64(json_object_object_get(k0, "uses")), 1);
    json_object_put(o);
    buf_free(&js);
    keypool_free(p);
    UT_EQ_INT(uv_loop_close(&loop), 0);
}

/* A key whose request hung rests, so that the next users get the other
 * keys at once instead of waiting on it too; hangs feed the breaker. */
static void test_hung_key_rests_and_feeds_breaker(void)
{
    UT_EQ_INT(uv_loop_init(&loop), 0);
    struct keypool *p = pool_new("k1,k2", &(struct keypool_opts){.breaker_threshold = 3,
                                                                 .hang_cooldown_ms = 10000});
    struct keypool_pick pk;
    UT_EQ_STR(pick(p, 1000, &pk), "k1");
    keypool_report(p, 1000, pk.index, KEYPOOL_HUNG, 0);
    for (int i = 0; i < 4; i++)
        UT_EQ_STR(pick(p, 2000 + (uint64_t)i, &pk), "k2");
    keypool_report(p, 2000, pk.index, KEYPOOL_HUNG, 0);
    UT_EQ_INT(keypool_pick(p, 3000, &pk), KEYPOOL_EAGAIN); /* both rest: a clear "busy", now */
    UT_EQ_INT(pk.retry_in_ms, 8000);
    struct buf js;
    buf_init(&js, 4096);
    UT_EQ_INT(keypool_snapshot(p, 3000, &js), 0);
    UT_CONTAINS(buf_str(&js), "\"reason\":\"hung\"");
    buf_free(&js);
    UT_EQ_STR(pick(p, 11000, &pk), "k1"); /* back by itself */
    keypool_report(p, 11000, pk.index, KEYPOOL_HUNG, 0); /* third hang in a row */
    UT_EQ_INT(keypool_pick(p, 12500, &pk), KEYPOOL_EUNAVAIL);
    keypool_free(p);
    UT_EQ_INT(uv_loop_close(&loop), 0);
}

/* The pool's keys are never shown by a log field of outside text. */
static void test_keys_masked_in_outside_values(void)
{
    UT_EQ_INT(uv_loop_init(&loop), 0);
    utlog_start("chat-1", "chat", NULL);
    struct keypool *p = pool_new("gsk_LongGroqKey0123456789,other-key-XYZ98765", NULL);
    log_warn("echo", LF_EXT("id", "proxy says gsk_LongGroqKey0123456789 hi"),
             LF_EXT("id2", "other-key-XYZ98765"), LF_EXT("id3", "part: LongGroqKey0123"));
    const char *log = utlog_text();
    UT_NOT_CONTAINS(log, "LongGroqKey");
    UT_NOT_CONTAINS(log, "XYZ98765");
    UT_CONTAINS(log, "\"id\":\"[redacted]\"");
    keypool_free(p);
    utlog_stop(LOG_INFO);
    UT_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- Redis ----------------------------------------------------------------- */

static char host[256];
static int port;
static char prefix[64];
static struct utloop lp;

static void cleanup(void)
{
    utredis_del_prefix(host, port, 1u << 0, prefix);
}

static void on_up(struct rds *r, int up, void *arg)
{
    (void)r;
    *(int *)arg = up;
}

static void on_flag(void *arg)
{
    (*(int *)arg)++;
}

/* HGETALL of the mirror as "fp=json\n" lines. */
static void read_hash(char *out, size_t outlen)
{
    redisContext *c = utredis_connect(host, port, 2000);
    redisReply *r = redisCommand(c, "HGETALL %s:keys:openai:chat-1", prefix);
    UT_ASSERT(r && r->type == REDIS_REPLY_ARRAY);
    out[0] = '\0';
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        size_t l = strlen(out);
        snprintf(out + l, outlen - l, "%s=%s\n", r->element[i]->str, r->element[i + 1]->str);
    }
    freeReplyObject(r);
    redisFree(c);
}

/* A connection to the shared Redis, once it is up, on a new loop; keys
 * under this process's prefix are deleted at exit. */
static struct rds *redis_setup(void)
{
    static int up;
    const char *url = utredis_shared(host, &port);
    snprintf(prefix, sizeof(prefix), "t%d_kp", (int)getpid());
    atexit(cleanup);
    UT_EQ_INT(uv_loop_init(&loop), 0);
    utloop_init(&lp, &loop, 0);
    struct rds *r;
    char err[256];
    struct rds_opts ro = {.url = url, .name = "test"};
    up = 0;
    UT_EQ_INT(rds_new(&loop, &ro, on_up, &up, &r, err, sizeof(err)), 0);
    UTLOOP_WAIT_FOR(&lp, up, 5000);
    return r;
}

static void redis_teardown(struct rds *r)
{
    int closed = 0;
    rds_close(r, on_flag, &closed);
    UTLOOP_WAIT_FOR(&lp, closed, 5000);
    utloop_shutdown(&lp);
}

/* A pool of keys (a list) mirrored to r as "openai" of "chat-1", its first
 * key out of quota and its second cooling for a minute. */
static struct keypool *mirrored_pool(struct rds *r, const char *keys, struct keypool_pick *pk)
{
    struct secret s = {0};
    secret_set(&s, keys);
    struct keypool *p;
    UT_EQ_INT(keypool_new(&loop, r, prefix, "openai", "chat-1", &s, NULL, &p), 0);
    secret_clear(&s);
    pick(p, uv_now(&loop), pk);
    keypool_report(p, uv_now(&loop), pk->index, KEYPOOL_QUOTA, 0);
    pick(p, uv_now(&loop), pk);
    keypool_report(p, uv_now(&loop), pk->index, KEYPOOL_RATE_LIMITED, 60000);
    return p;
}

static void test_redis_mirror_by_fingerprint(void)
{
    struct rds *r = redis_setup();

    struct keypool_pick pk;
    struct keypool *p = mirrored_pool(r, "sk-first-VALUE,sk-second-VALUE,sk-third-VALUE", &pk);
    pick(p, uv_now(&loop), &pk);
    keypool_report(p, uv_now(&loop), pk.index, KEYPOOL_OK, 0);

    char hash[4096];
    char fp1[SECRET_FP_LEN], fp2[SECRET_FP_LEN], fp3[SECRET_FP_LEN];
    secret_fingerprint("sk-first-VALUE", 14, fp1);
    secret_fingerprint("sk-second-VALUE", 15, fp2);
    secret_fingerprint("sk-third-VALUE", 14, fp3);
    int have = 0;
    for (int tries = 0; tries < 100 && !have; tries++) {
        utloop_run_for(&lp, 20);
        read_hash(hash, sizeof(hash));
        have = strstr(hash, "\"uses\":1,\"failures\":0") != NULL;
    }
    UT_ASSERT(have);
    UT_NOT_CONTAINS(hash, "VALUE");
    char line[256];
    snprintf(line, sizeof(line), "%s={\"state\":\"out\"", fp1);
    UT_CONTAINS(hash, line);
    UT_CONTAINS(hash, "\"reason\":\"quota\"");
    snprintf(line, sizeof(line), "%s={\"state\":\"cooling\",\"until_ms\":1", fp2);
    UT_CONTAINS(hash, line);
    snprintf(line, sizeof(line), "%s={\"state\":\"ok\",\"until_ms\":0,\"reason\":null,\"uses\":1", fp3);
    UT_CONTAINS(hash, line);

    /* freed with writes in flight, then the connection closes */
    keypool_report(p, uv_now(&loop), pk.index, KEYPOOL_OK, 0);
    keypool_free(p);
    redis_teardown(r);
}

static void test_redis_down_stays_local(void)
{
    UT_EQ_INT(uv_loop_init(&loop), 0);
    utloop_init(&lp, &loop, 0);
    utlog_start("test", "keypool", NULL);
    struct rds *r;
    int up = 0, closed = 0;
    char err[256];
    struct rds_opts ro = {.url = "redis://127.0.0.1:1/0", .name = "test"}; /* nothing listens */
    UT_EQ_INT(rds_new(&loop, &ro, on_up, &up, &r, err, sizeof(err)), 0);
    struct secret s = {0};
    secret_set(&s, "k1,k2");
    struct keypool *p;
    UT_EQ_INT(keypool_new(&loop, r, "t", "openai", "chat-1", &s, NULL, &p), 0);
    secret_clear(&s);
    struct keypool_pick pk;
    for (int i = 0; i < 2; i++) {
        pick(p, 10 + (uint64_t)i, &pk);
        keypool_report(p, 10 + (uint64_t)i, pk.index, KEYPOOL_RATE_LIMITED, 1000);
    }
    UT_EQ_INT(keypool_pick(p, 20, &pk), KEYPOOL_EAGAIN);
    UT_EQ_STR(pick(p, 1011, &pk), "k1");
    UT_EQ_INT(utlog_count("not mirrored to redis"), 1);
    keypool_free(p);
    rds_close(r, on_flag, &closed);
    UTLOOP_RUN_UNTIL(&lp, closed, 5000);
    utloop_shutdown(&lp);
}

/* ---- reading the cluster's key state back ------------------------------------- */

struct readout {
    int called, status;
    size_t n, more;
    int truncated;
    struct keypool_entry e[64];
    char prov[64][32], inst[64][32], reason[64][32];
};

static void on_state_read(int status, const struct keypool_state *st, void *arg)
{
    struct readout *o = arg;
    o->called++;
    o->status = status;
    o->n = st->n;
    o->more = st->more;
    o->truncated = st->truncated;
    UT_ASSERT(st->n <= 64);
    for (size_t i = 0; i < st->n; i++) { /* borrowed: keep copies */
        o->e[i] = st->entries[i];
        snprintf(o->prov[i], sizeof(o->prov[i]), "%.*s", (int)st->entries[i].provider_len, st->entries[i].provider);
        snprintf(o->inst[i], sizeof(o->inst[i]), "%.*s", (int)st->entries[i].instance_len, st->entries[i].instance);
        snprintf(o->reason[i], sizeof(o->reason[i]), "%s", st->entries[i].reason ? st->entries[i].reason : "-");
    }
}

static struct readout *read_state(struct rds *r, size_t max)
{
    static struct readout o;
    memset(&o, 0, sizeof(o));
    UT_EQ_INT(keypool_read_state(r, prefix, max, on_state_read, &o), 0);
    UT_EQ_INT(o.called, 0); /* never synchronously */
    UTLOOP_WAIT_FOR(&lp, o.called, 5000);
    utloop_run_for(&lp, 20);
    UT_EQ_INT(o.called, 1);
    return &o;
}

static int find_fp(const struct readout *o, const char *fp)
{
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->e[i].fp, fp))
            return (int)i;
    UT_FAIL("%s not read back", fp);
    return -1;
}

static void hset(redisContext *c, const char *key, const char *field, const char *value)
{
    char k[160];
    snprintf(k, sizeof(k), "%s:keys:%s", prefix, key);
    freeReplyObject(utredis_cmd(c, "HSET", k, field, value, NULL));
}

/* What the pools mirror is read back as they wrote it; what no pool
 * writes is skipped or marked unknown; the caller's cap is kept. */
static void test_read_state_as_mirrored(void)
{
    struct rds *r = redis_setup();

    struct readout *o = read_state(r, 10);
    UT_EQ_INT(o->status, 0);
    UT_EQ_INT(o->n, 0); /* nothing mirrored yet */

    struct keypool_pick pk;
    struct keypool *p = mirrored_pool(r, "sk-first-VALUE,sk-second-VALUE", &pk);
    char fp1[SECRET_FP_LEN], fp2[SECRET_FP_LEN];
    secret_fingerprint("sk-first-VALUE", 14, fp1);
    secret_fingerprint("sk-second-VALUE", 15, fp2);
    char hash[4096] = "";
    for (int tries = 0; tries < 100 && !strstr(hash, "cooling"); tries++) {
        utloop_run_for(&lp, 20);
        read_hash(hash, sizeof(hash));
    }
    UT_CONTAINS(hash, "cooling");

    redisContext *c = utredis_connect(host, port, 2000);
    hset(c, "minimax:image-2:x", "sha256:00ff", "{\"state\":\"weird\",\"reason\":\"r\"}");
    hset(c, "minimax:image-2:x", "sha256:abcd", "not json");
    hset(c, "minimax:image-2:x", "not-a-fingerprint", "{\"state\":\"ok\"}");
    hset(c, "minimax:image-2:x", "sha256:ABCD", "{\"state\":\"ok\"}");
    hset(c, "nocolon", "sha256:1234", "{\"state\":\"ok\"}"); /* not a pool's name */

    o = read_state(r, 10);
    UT_EQ_INT(o->status, 0);
    UT_EQ_INT(o->n, 4);
    UT_EQ_INT(o->more, 0);
    UT_EQ_INT(o->truncated, 0);
    int i = find_fp(o, fp1);
    UT_EQ_STR(o->prov[i], "openai");
    UT_EQ_STR(o->inst[i], "chat-1");
    UT_EQ_INT(o->e[i].state, KEYPOOL_KEY_OUT);
    UT_EQ_STR(o->reason[i], "quota");
    i = find_fp(o, fp2);
    UT_EQ_INT(o->e[i].state, KEYPOOL_KEY_COOLING);
    UT_ASSERT(o->e[i].until_ms > 1700000000000LL); /* wall clock, for operators */
    i = find_fp(o, "sha256:00ff");
    UT_EQ_STR(o->prov[i], "minimax");
    UT_EQ_STR(o->inst[i], "image-2:x"); /* split at the first ':' */
    UT_EQ_INT(o->e[i].state, KEYPOOL_KEY_UNKNOWN);
    UT_EQ_STR(o->reason[i], "r");
    i = find_fp(o, "sha256:abcd");
    UT_EQ_INT(o->e[i].state, KEYPOOL_KEY_UNKNOWN);
    UT_EQ_STR(o->reason[i], "-");
    UT_EQ_INT(o->e[i].until_ms, 0);

    o = read_state(r, 1); /* the cap: the rest is only counted */
    UT_EQ_INT(o->n, 1);
    UT_EQ_INT(o->more, 3);

    /* More pools than are read: said so, and what was read is there. */
    for (int n = 0; n < KEYPOOL_READ_HASHES_MAX; n++) {
        char key[64], f[32];
        snprintf(key, sizeof(key), "openai:video-%d", n);
        snprintf(f, sizeof(f), "sha256:%08x", n);
        hset(c, key, f, "{\"state\":\"ok\",\"until_ms\":0,\"reason\":null}");
    }
    o = read_state(r, 64);
    UT_EQ_INT(o->status, 0);
    UT_EQ_INT(o->truncated, 1);
    UT_ASSERT(o->n >= KEYPOOL_READ_HASHES_MAX - 2 && o->n < 4 + KEYPOOL_READ_HASHES_MAX);
    redisFree(c);

    keypool_free(p);
    redis_teardown(r);
}

/* The callback contract: refused means never called back; a read cut by
 * the connection's close is called back once, with what it had. */
static void test_read_state_errors(void)
{
    UT_EQ_INT(uv_loop_init(&loop), 0);
    utloop_init(&lp, &loop, 0);
    struct readout o = {0};
    struct rds *r;
    int up = 0, closed = 0;
    char err[256];
    struct rds_opts down = {.url = "redis://127.0.0.1:1/0", .name = "test"}; /* nothing listens */
    UT_EQ_INT(rds_new(&loop, &down, on_up, &up, &r, err, sizeof(err)), 0);
    UT_EQ_INT(keypool_read_state(NULL, prefix, 1, on_state_read, &o), -EINVAL);
    UT_EQ_INT(keypool_read_state(r, NULL, 1, on_state_read, &o), -EINVAL);
    UT_EQ_INT(keypool_read_state(r, prefix, 1, NULL, &o), -EINVAL);
    UT_EQ_INT(keypool_read_state(r, prefix, 1, on_state_read, &o), -ENOTCONN);
    utloop_run_for(&lp, 50);
    UT_EQ_INT(o.called, 0);
    rds_close(r, on_flag, &closed);
    UTLOOP_RUN_UNTIL(&lp, closed, 5000);
    utloop_shutdown(&lp);

    r = redis_setup();
    closed = 0;
    UT_EQ_INT(keypool_read_state(r, prefix, 1, on_state_read, &o), 0);
    rds_close(r, on_flag, &closed);
    UTLOOP_RUN_UNTIL(&lp, closed, 5000);
    UT_EQ_INT(o.called, 1);
    UT_EQ_INT(o.status, BC_ESHUTDOWN);
    UT_EQ_INT(o.n, 0);
    utloop_shutdown(&lp);
}

static const struct ut_case cases[] = {
    UT_CASE(test_rotation),
    UT_CASE(test_cooldown_and_recovery),
    UT_CASE(test_all_cooling_gives_soonest_retry),
    UT_CASE(test_quota_and_auth_leave_rotation),
    UT_CASE(test_breaker_opens_probes_and_closes),
    UT_CASE(test_lost_probe_is_retried),
    UT_CASE(test_snapshot_has_fingerprints_only),
    UT_CASE(test_hung_key_rests_and_feeds_breaker),
    UT_CASE(test_keys_masked_in_outside_values),
    UT_CASE(test_redis_mirror_by_fingerprint),
    UT_CASE(test_redis_down_stays_local),
    UT_CASE(test_read_state_as_mirrored),
    UT_CASE(test_read_state_errors),
    {NULL, NULL},
};

UT_MAIN(cases)
