/* Unit tests for conv, against a real PostgreSQL.
 *
 * Each case gets its own database (ut_pg.h) and a store on a private loop,
 * driven by ut_loop.h, whose guard timer fails a case whose callback never
 * comes instead of letting it hang. Time travel (an idle conversation) is done
 * by moving timestamps back with a direct UPDATE. */
#include <errno.h>

#include <uv.h>

#include "service/conv.h"
#include "base/err.h"
#include "base/log.h"
#include "io/store.h"
#include "ut.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_pg.h"
#include "ut_store.h"
#include "ut_sys.h"

#define TTL 60 /* minutes */
#define MAXT 32

static uv_loop_t loop;
static struct utloop lp;

#define WAIT_FOR(cond, ms) UTLOOP_WAIT_FOR(&lp, cond, ms)

/* ---- conv helpers ------------------------------------------------------------ */

struct hist {
    int called, status;
    size_t n;
    int null_turns;
    char role[MAXT][16];
    char content[MAXT][1024];
    size_t len[MAXT];
};

static void on_hist(int status, const struct conv_turn *turns, size_t n, void *arg)
{
    struct hist *h = arg;
    h->called++;
    h->status = status;
    h->n = n;
    h->null_turns = turns == NULL;
    UT_ASSERT(n <= MAXT);
    for (size_t i = 0; i < n; i++) {
        snprintf(h->role[i], sizeof(h->role[i]), "%s", turns[i].role);
        snprintf(h->content[i], sizeof(h->content[i]), "%s", turns[i].content);
        h->len[i] = turns[i].len;
        UT_EQ_INT(turns[i].len, strlen(turns[i].content));
    }
}

struct done {
    int called, status;
    long long affected;
};

static void on_done(int status, long long affected, void *arg)
{
    struct done *d = arg;
    d->called++;
    d->status = status;
    d->affected = affected;
}

static struct hist load(struct store *s, const char *scope, int turns, int tokens, int ttl)
{
    struct hist h;
    memset(&h, 0, sizeof(h));
    UT_EQ_INT(conv_load(s, scope, turns, tokens, ttl, on_hist, &h), 0);
    UT_EQ_INT(h.called, 0); /* never synchronously */
    WAIT_FOR(h.called, 10000);
    UT_EQ_INT(h.called, 1);
    UT_EQ_INT(h.status, 0);
    return h;
}

static struct done wait_done(int rc, struct done *d)
{
    UT_EQ_INT(rc, 0);
    UT_EQ_INT(d->called, 0);
    WAIT_FOR(d->called, 10000);
    UT_EQ_INT(d->called, 1);
    return *d;
}

static long long append_keep(struct store *s, const struct conv_key *k, const char *q,
                             const char *a, int keep)
{
    struct done d = {0};
    wait_done(conv_append(s, k, q, a, TTL, keep, on_done, &d), &d);
    UT_EQ_INT(d.status, 0);
    return d.affected;
}

static long long append(struct store *s, const struct conv_key *k, const char *q, const char *a)
{
    return append_keep(s, k, q, a, 100);
}

/* Append exchanges "q<i>"/"a<i>" for i in [from, to]. */
static void append_n(struct store *s, const struct conv_key *k, int from, int to)
{
    for (int i = from; i <= to; i++) {
        char q[16], a[16];
        snprintf(q, sizeof(q), "q%d", i);
        snprintf(a, sizeof(a), "a%d", i);
        append(s, k, q, a);
    }
}

/* The loaded history as "role:content,..." with u/a for the roles. */
static const char *flat(const struct hist *h)
{
    static char out[4096];
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < h->n; i++)
        o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%s:%s", i ? "," : "",
                              !strcmp(h->role[i], "user") ? "u" : h->role[i], h->content[i]);
    return out;
}

static const char *sql1(const char *sql)
{
    static char out[1024];
    utpg_run(utpg.kv, sql, out, sizeof(out));
    return out;
}

/* Move a conversation (and its messages) back in time by `ago`. */
static void age(const char *scope, const char *ago)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "UPDATE conversations SET created_at = created_at - interval '%s', updated_at = "
             "updated_at - interval '%s' WHERE scope_key = '%s'",
             ago, ago, scope);
    utpg_run(utpg.kv, sql, NULL, 0);
    snprintf(sql, sizeof(sql),
             "UPDATE messages SET created_at = created_at - interval '%s' WHERE conversation_id "
             "= (SELECT id FROM conversations WHERE scope_key = '%s')",
             ago, scope);
    utpg_run(utpg.kv, sql, NULL, 0);
}

static const struct conv_key key_a = {"c:100:u:1", "9", "100", NULL, "1"};

/* ---- cases ---------------------------------------------------------------------- */

static size_t est(const char *s)
{
    return conv_estimate_tokens(s, strlen(s));
}

static void test_estimate_tokens(void)
{
    UT_EQ_INT(conv_estimate_tokens(NULL, 0), 0);
    UT_EQ_INT(est(""), 0);
    UT_EQ_INT(est("a"), 1);
    UT_EQ_INT(est("abcd"), 1);
    UT_EQ_INT(est("abcde"), 2);
    UT_EQ_INT(est("Hello, world! How are you?"), 7); /* 26 bytes */
    UT_EQ_INT(est("안녕하세요"), 5);                 /* one per Hangul syllable */
    UT_EQ_INT(est("日本語のテキスト"), 8);           /* kanji and kana */
    UT_EQ_INT(est("Hi 안녕"), 3);                    /* "Hi " 1 + 2 */
    UT_EQ_INT(est("héllo"), 2);                      /* 4 ASCII + é (2 bytes) */
    UT_EQ_INT(est("🌏"), 2);                         /* 4 bytes of emoji */
    UT_EQ_INT(est("\xff"), 1);                       /* an invalid byte counts too */
    UT_EQ_INT(est("\xEC\x95"), 1);                   /* a truncated Hangul syllable */
    UT_EQ_INT(conv_estimate_tokens("abcdefgh", 4), 1); /* len, not the NUL, ends it */
    UT_EQ_INT(conv_estimate_tokens("안녕", 3), 1);     /* "안" only */
    for (int c = 1; c < 256; c++) {
        char b[2] = {(char)c, 0};
        UT_ASSERT(conv_estimate_tokens(b, 1) >= 1);
    }
    /* Korean costs far more per byte than English: the point of the estimate. */
    UT_ASSERT(est("오늘 날씨가 정말 좋네요") > est("The weather is lovely today"));
}

static void test_append_load_korean(void)
{
    utstore_env_setup(&loop, &lp, "conv", 1);
    struct store *s = utstore_open_up(&lp);
    const char *q = "안녕하세요! 오늘 날씨 어때요? 🌏";
    const char *a = "맑고 따뜻해요. 산책하기 좋은 날이에요 ✓";
    UT_EQ_INT(append(s, &key_a, q, a), 0);
    struct hist h = load(s, key_a.scope_key, 10, 100000, TTL);
    UT_EQ_INT(h.n, 2);
    UT_EQ_STR(h.role[0], "user");
    UT_EQ_STR(h.content[0], q);
    UT_EQ_INT(h.len[0], strlen(q));
    UT_EQ_STR(h.role[1], "assistant");
    UT_EQ_STR(h.content[1], a);

    /* The row carries the key and the estimates. */
    UT_EQ_STR(sql1("SELECT guild_id || '/' || channel_id || '/' || coalesce(thread_id, 'null') "
                   "|| '/' || user_id FROM conversations WHERE scope_key = 'c:100:u:1'"),
              "9/100/null/1");
    char want[64];
    snprintf(want, sizeof(want), "%zu,%zu", est(q), est(a));
    UT_EQ_STR(sql1("SELECT string_agg(token_estimate::text, ',' ORDER BY id) FROM messages"),
              want);

    /* Text is data, never SQL. */
    const char *evil = "'); DROP TABLE messages; --";
    append(s, &key_a, evil, "$1 \\ \" %s");
    h = load(s, key_a.scope_key, 10, 100000, TTL);
    UT_EQ_INT(h.n, 4);
    UT_EQ_STR(h.content[2], evil);
    UT_EQ_STR(h.content[3], "$1 \\ \" %s");

    /* No conversation is not an error. */
    h = load(s, "c:100:u:777", 10, 100000, TTL);
    UT_EQ_INT(h.n, 0);
    UT_EQ_INT(h.null_turns, 1);
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_invalid_utf8_sanitized(void)
{
    utstore_env_setup(&loop, &lp, "conv", 1);
    struct store *s = utstore_open_up(&lp);
    /* A stray continuation byte, a truncated sequence, an overlong '/', a
     * UTF-16 surrogate, and a byte that never appears in UTF-8. */
    const char *q = "ok\x80 \xED\x95 x\xC0\xAF y";
    const char *a = "\xED\xA0\x80 \xFF" " end 한국어";
    append(s, &key_a, q, a);
    struct hist h = load(s, key_a.scope_key, 10, 100000, TTL);
    UT_EQ_INT(h.n, 2);
    UT_EQ_STR(h.content[0], "ok\xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD x\xEF\xBF\xBD\xEF\xBF\xBD y");
    UT_EQ_STR(h.content[1], "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD" " end 한국어");
    /* The estimate is of the text that was stored. */
    char want[64];
    snprintf(want, sizeof(want), "%zu,%zu", est(h.content[0]), est(h.content[1]));
    UT_EQ_STR(sql1("SELECT string_agg(token_estimate::text, ',' ORDER BY id) FROM messages"),
              want);
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_trim_by_turns(void)
{
    utstore_env_setup(&loop, &lp, "conv", 1);
    struct store *s = utstore_open_up(&lp);
    append_n(s, &key_a, 1, 5);
    struct hist h = load(s, key_a.scope_key, 2, 100000, TTL);
    UT_EQ_STR(flat(&h), "u:q4,assistant:a4,u:q5,assistant:a5");
    h = load(s, key_a.scope_key, 1, 100000, TTL);
    UT_EQ_STR(flat(&h), "u:q5,assistant:a5");
    h = load(s, key_a.scope_key, 0, 100000, TTL);
    UT_EQ_INT(h.n, 0);
    h = load(s, key_a.scope_key, 50, 100000, TTL);
    UT_EQ_INT(h.n, 10);
    UT_EQ_STR(h.content[0], "q1");
    UT_EQ_STR(h.content[9], "a5");
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_trim_by_tokens(void)
{
    utstore_env_setup(&loop, &lp, "conv", 1);
    struct store *s = utstore_open_up(&lp);
    /* Questions of 4 tokens (16 ASCII bytes), answers of 8 (32 bytes):
     * newest first the running sums are a3 8, q3 12, a2 20, q2 24, a1 32,
     * q1 36. */
    const char *q[] = {"question one....", "question two....", "question three.."};
    const char *a[] = {"answer one......................", "answer two......................",
                       "answer three...................."};
    for (int i = 0; i < 3; i++) {
        UT_EQ_INT(est(q[i]), 4);
        UT_EQ_INT(est(a[i]), 8);
        append(s, &key_a, q[i], a[i]);
    }
    struct hist h = load(s, key_a.scope_key, 10, 36, TTL);
    UT_EQ_INT(h.n, 6);
    h = load(s, key_a.scope_key, 10, 35, TTL); /* q1 does not fit: a1 would lead, dropped */
    UT_EQ_INT(h.n, 4);
    UT_EQ_STR(h.role[0], "user");
    UT_EQ_STR(h.content[0], q[1]);
    h = load(s, key_a.scope_key, 10, 24, TTL); /* exactly q2..a3 */
    UT_EQ_INT(h.n, 4);
    UT_EQ_STR(h.content[0], q[1]);
    h = load(s, key_a.scope_key, 10, 22, TTL); /* a2 fits, its question does not */
    UT_EQ_INT(h.n, 2);
    UT_EQ_STR(h.role[0], "user");
    UT_EQ_STR(h.content[0], q[2]);
    UT_EQ_STR(h.content[1], a[2]);
    h = load(s, key_a.scope_key, 10, 11, TTL); /* only a3 fits: never lead with it */
    UT_EQ_INT(h.n, 0);
    h = load(s, key_a.scope_key, 10, 7, TTL);
    UT_EQ_INT(h.n, 0);
    h = load(s, key_a.scope_key, 2, 1000, TTL); /* both limits: turns win here */
    UT_EQ_INT(h.n, 4);
    UT_EQ_STR(h.content[0], q[1]);
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_scope_isolation(void)
{
    utstore_env_setup(&loop, &lp, "conv", 1);
    struct store *s = utstore_open_up(&lp);
    /* Two users in one channel, and user 1 again in a thread of it: a thread
     * is a scope of its own. */
    const struct conv_key u2 = {"c:100:u:2", "9", "100", NULL, "2"};
    const struct conv_key th = {"t:200:u:1", "9", "100", "200", "1"};
    const struct conv_key dm = {"c:300:u:1", NULL, "300", NULL, "1"};
    append(s, &key_a, "from one", "to one");
    append(s, &u2, "from two", "to two");
    append(s, &th, "in thread", "thread answer");
    append(s, &dm, "in dm", "dm answer");
    struct hist h = load(s, key_a.scope_key, 10, 1000, TTL);
    UT_EQ_STR(flat(&h), "u:from one,assistant:to one");
    h = load(s, u2.scope_key, 10, 1000, TTL);
    UT_EQ_STR(flat(&h), "u:from two,assistant:to two");
    h = load(s, th.scope_key, 10, 1000, TTL);
    UT_EQ_STR(flat(&h), "u:in thread,assistant:thread answer");
    h = load(s, dm.scope_key, 10, 1000, TTL);
    UT_EQ_STR(flat(&h), "u:in dm,assistant:dm answer");
    UT_EQ_STR(sql1("SELECT coalesce(thread_id, '-') || '/' || coalesce(guild_id, '-') FROM "
                   "conversations WHERE scope_key = 't:200:u:1'"),
              "200/9");
    UT_EQ_STR(sql1("SELECT coalesce(guild_id, 'null') FROM conversations WHERE scope_key = "
                   "'c:300:u:1'"),
              "null");

    /* A reset touches only its own scope. */
    struct done d = {0};
    wait_done(conv_reset(s, th.scope_key, on_done, &d), &d);
    UT_EQ_INT(d.affected, 1);
    UT_EQ_INT(load(s, th.scope_key, 10, 1000, TTL).n, 0);
    UT_EQ_INT(load(s, key_a.scope_key, 10, 1000, TTL).n, 2);
    UT_EQ_INT(load(s, u2.scope_key, 10, 1000, TTL).n, 2);
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_reset(void)
{
    utstore_env_setup(&loop, &lp, "conv", 1);
    struct store *s = utstore_open_up(&lp);
    append_n(s, &key_a, 1, 3);
    struct done d = {0};
    wait_done(conv_reset(s, key_a.scope_key, on_done, &d), &d);
    UT_EQ_INT(d.status, 0);
    UT_EQ_INT(d.affected, 1);
    UT_EQ_INT(load(s, key_a.scope_key, 10, 1000, TTL).n, 0);
    UT_EQ_STR(sql1("SELECT count(*) FROM messages"), "0"); /* cascaded */
    memset(&d, 0, sizeof(d));
    wait_done(conv_reset(s, key_a.scope_key, on_done, &d), &d);
    UT_EQ_INT(d.status, 0);
    UT_EQ_INT(d.affected, 0);
    UT_EQ_INT(conv_reset(s, key_a.scope_key, NULL, NULL), 0); /* no callback is fine */

    append(s, &key_a, "again", "fresh");
    struct hist h = load(s, key_a.scope_key, 10, 1000, TTL);
    UT_EQ_STR(flat(&h), "u:again,assistant:fresh");
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_ttl_expiry(void)
{
    utstore_env_setup(&loop, &lp, "conv", 1);
    struct store *s = utstore_open_up(&lp);
    append_n(s, &key_a, 1, 2);
    age(key_a.scope_key, "61 minutes");
    UT_EQ_INT(load(s, key_a.scope_key, 10, 1000, 60).n, 0); /* idle > 60 min: expired */
    UT_EQ_INT(load(s, key_a.scope_key, 10, 1000, 62).n, 4); /* not for a longer TTL */

    /* Appending to it starts afresh: the old turns never come back. */
    UT_EQ_INT(append(s, &key_a, "new q", "new a"), 4);
    struct hist h = load(s, key_a.scope_key, 10, 1000, 60);
    UT_EQ_STR(flat(&h), "u:new q,assistant:new a");
    h = load(s, key_a.scope_key, 10, 1000, 100000);
    UT_EQ_INT(h.n, 2);
    UT_EQ_STR(sql1("SELECT count(*) FROM messages"), "2");
    UT_EQ_STR(sql1("SELECT created_at > now() - interval '1 minute' AND updated_at >= created_at "
                   "FROM conversations"),
              "t");

    /* Not expired: appending keeps the history and moves updated_at. */
    age(key_a.scope_key, "30 minutes");
    UT_EQ_INT(append(s, &key_a, "q3", "a3"), 0);
    UT_EQ_INT(load(s, key_a.scope_key, 10, 1000, 60).n, 4);
    UT_EQ_STR(sql1("SELECT updated_at > now() - interval '1 minute' AND created_at < now() - "
                   "interval '29 minutes' FROM conversations"),
              "t");
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_expire_sweep(void)
{
    utstore_env_setup(&loop, &lp, "conv", 1);
    struct store *s = utstore_open_up(&lp);
    const struct conv_key k2 = {"c:100:u:2", "9", "100", NULL, "2"};
    const struct conv_key k3 = {"c:100:u:3", "9", "100", NULL, "3"};
    append_n(s, &key_a, 1, 2);
    append_n(s, &k2, 1, 1);
    append_n(s, &k3, 1, 1);
    age(key_a.scope_key, "2 hours");
    age(k2.scope_key, "3 hours");

    struct done d = {0};
    wait_done(conv_expire(s, 60, 1, on_done, &d), &d); /* the longest idle first */
    UT_EQ_INT(d.status, 0);
    UT_EQ_INT(d.affected, 1);
    UT_EQ_STR(sql1("SELECT string_agg(scope_key, ',' ORDER BY scope_key) FROM conversations"),
              "c:100:u:1,c:100:u:3");
    memset(&d, 0, sizeof(d));
    wait_done(conv_expire(s, 60, 10, on_done, &d), &d);
    UT_EQ_INT(d.affected, 1);
    memset(&d, 0, sizeof(d));
    wait_done(conv_expire(s, 60, 10, on_done, &d), &d);
    UT_EQ_INT(d.affected, 0);
    UT_EQ_STR(sql1("SELECT string_agg(scope_key, ',') FROM conversations"), "c:100:u:3");
    UT_EQ_STR(sql1("SELECT count(*) FROM messages"), "2"); /* the others' went with them */
    UT_EQ_INT(load(s, k3.scope_key, 10, 1000, 60).n, 2);
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_keep_messages(void)
{
    utstore_env_setup(&loop, &lp, "conv", 1);
    struct store *s = utstore_open_up(&lp);
    UT_EQ_INT(append_keep(s, &key_a, "q1", "a1", 4), 0);
    UT_EQ_INT(append_keep(s, &key_a, "q2", "a2", 4), 0);
    UT_EQ_INT(append_keep(s, &key_a, "q3", "a3", 4), 2); /* q1, a1 */
    UT_EQ_STR(sql1("SELECT string_agg(content, ',' ORDER BY id) FROM messages"), "q2,a2,q3,a3");
    struct hist h = load(s, key_a.scope_key, 10, 1000, TTL);
    UT_EQ_STR(flat(&h), "u:q2,assistant:a2,u:q3,assistant:a3");

    /* An odd budget keeps a lone answer in the table, never in a history. */
    UT_EQ_INT(append_keep(s, &key_a, "q4", "a4", 3), 3);
    UT_EQ_STR(sql1("SELECT string_agg(content, ',' ORDER BY id) FROM messages"), "a3,q4,a4");
    h = load(s, key_a.scope_key, 10, 1000, TTL);
    UT_EQ_STR(flat(&h), "u:q4,assistant:a4");

    /* The smallest budget: just the new exchange. */
    UT_EQ_INT(append_keep(s, &key_a, "q5", "a5", 2), 3);
    UT_EQ_STR(sql1("SELECT string_agg(content, ',' ORDER BY id) FROM messages"), "q5,a5");
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

/* An append repeated with the same turn key (its first outcome was lost to
 * a connection drop) stores the exchange once and deletes nothing. */
static void test_turn_key_stores_once(void)
{
    utstore_env_setup(&loop, &lp, "conv", 1);
    struct store *s = utstore_open_up(&lp);
    struct conv_key k = key_a;
    k.turn_key = "1100000000000000001";
    UT_EQ_INT(append_keep(s, &k, "q1", "a1", 4), 0);
    UT_EQ_INT(append_keep(s, &k, "q1", "a1", 4), 0);
    k.turn_key = "1100000000000000002";
    UT_EQ_INT(append_keep(s, &k, "q2", "a2", 4), 0);
    UT_EQ_INT(append_keep(s, &k, "q2", "a2", 4), 0); /* full budget: still nothing cut */
    UT_EQ_STR(sql1("SELECT string_agg(content, ',' ORDER BY id) FROM messages"), "q1,a1,q2,a2");
    k.turn_key = NULL; /* without a key every append is new */
    UT_EQ_INT(append_keep(s, &k, "q3", "a3", 4), 2);
    UT_EQ_INT(append_keep(s, &k, "q3", "a3", 4), 2);
    UT_EQ_STR(sql1("SELECT string_agg(content, ',' ORDER BY id) FROM messages"), "q3,a3,q3,a3");
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_schema_rejects_bad_key(void)
{
    utstore_env_setup(&loop, &lp, "conv", 1);
    struct store *s = utstore_open_up(&lp);
    const struct conv_key bad = {"not a scope", NULL, "100", NULL, "1"};
    struct done d = {0};
    wait_done(conv_append(s, &bad, "q", "a", TTL, 10, on_done, &d), &d);
    UT_EQ_INT(d.status, BC_EPG);
    UT_EQ_INT(d.affected, 0);
    const struct conv_key bad_id = {"c:100:u:1", NULL, "100", NULL, "someone"};
    memset(&d, 0, sizeof(d));
    wait_done(conv_append(s, &bad_id, "q", "a", TTL, 10, on_done, &d), &d);
    UT_EQ_INT(d.status, BC_EPG);
    UT_EQ_STR(sql1("SELECT count(*) FROM messages"), "0"); /* one statement: all or nothing */
    append(s, &key_a, "still", "works");
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_invalid_arguments(void)
{
    utstore_env_setup(&loop, &lp, "conv", 1);
    struct store *s = utstore_open_up(&lp);
    struct hist h = {0};
    struct done d = {0};
    const struct conv_key no_user = {"c:1:u:2", NULL, "1", NULL, NULL};
    UT_EQ_INT(conv_load(NULL, "c:1:u:2", 1, 1, 1, on_hist, &h), -EINVAL);
    UT_EQ_INT(conv_load(s, NULL, 1, 1, 1, on_hist, &h), -EINVAL);
    UT_EQ_INT(conv_load(s, "c:1:u:2", 1, 1, 1, NULL, &h), -EINVAL);
    UT_EQ_INT(conv_load(s, "c:1:u:2", -1, 1, 1, on_hist, &h), -EINVAL);
    UT_EQ_INT(conv_load(s, "c:1:u:2", 1, -1, 1, on_hist, &h), -EINVAL);
    UT_EQ_INT(conv_load(s, "c:1:u:2", 1, 1, 0, on_hist, &h), -EINVAL);
    UT_EQ_INT(conv_append(s, NULL, "q", "a", 1, 2, on_done, &d), -EINVAL);
    UT_EQ_INT(conv_append(s, &no_user, "q", "a", 1, 2, on_done, &d), -EINVAL);
    UT_EQ_INT(conv_append(s, &key_a, NULL, "a", 1, 2, on_done, &d), -EINVAL);
    UT_EQ_INT(conv_append(s, &key_a, "q", NULL, 1, 2, on_done, &d), -EINVAL);
    UT_EQ_INT(conv_append(s, &key_a, "q", "a", 0, 2, on_done, &d), -EINVAL);
    UT_EQ_INT(conv_append(s, &key_a, "q", "a", 1, 1, on_done, &d), -EINVAL);
    UT_EQ_INT(conv_reset(s, NULL, on_done, &d), -EINVAL);
    UT_EQ_INT(conv_expire(s, 0, 1, on_done, &d), -EINVAL);
    UT_EQ_INT(conv_expire(s, 1, 0, on_done, &d), -EINVAL);
    utloop_run_for(&lp, 50);
    UT_EQ_INT(h.called + d.called, 0);
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_store_down(void)
{
    utstore_env_setup(&loop, &lp, "conv", 0);
    char ci[128]; /* a port where nothing listens */
    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d dbname=x user=x", utsys_free_port());
    struct store *s = utstore_open(&lp, ci, NULL);
    utloop_run_for(&lp, 300);
    UT_EQ_INT(store_up(s), 0);
    struct hist h = {0};
    struct done d = {0};
    UT_EQ_INT(conv_load(s, key_a.scope_key, 5, 1000, TTL, on_hist, &h), -ENOTCONN);
    UT_EQ_INT(conv_append(s, &key_a, "q", "a", TTL, 10, on_done, &d), -ENOTCONN);
    UT_EQ_INT(conv_append(s, &key_a, "q", "a", TTL, 10, NULL, NULL), -ENOTCONN);
    UT_EQ_INT(conv_reset(s, key_a.scope_key, on_done, &d), -ENOTCONN);
    UT_EQ_INT(conv_expire(s, TTL, 10, on_done, &d), -ENOTCONN);
    utloop_run_for(&lp, 100);
    utstore_close_wait(&lp, s);
    UT_EQ_INT(h.called, 0); /* refused means never called back */
    UT_EQ_INT(d.called, 0);
    utstore_env_teardown(&lp);
}

static void test_close_calls_back(void)
{
    utstore_env_setup(&loop, &lp, "conv", 1);
    struct store *s = utstore_open_up(&lp);
    struct hist h = {0};
    struct done d = {0};
    UT_EQ_INT(conv_load(s, key_a.scope_key, 5, 1000, TTL, on_hist, &h), 0);
    UT_EQ_INT(conv_append(s, &key_a, "q", "a", TTL, 10, on_done, &d), 0);
    int done = 0;
    store_close(s, utstore_on_closed, &done); /* both still queued: called back now */
    UT_EQ_INT(h.called, 1);
    UT_EQ_INT(h.status, BC_ESHUTDOWN);
    UT_EQ_INT(h.n, 0);
    UT_EQ_INT(d.called, 1);
    UT_EQ_INT(d.status, BC_ESHUTDOWN);
    WAIT_FOR(done, 5000);
    utloop_run_for(&lp, 50);
    UT_EQ_INT(h.called + d.called, 2);
    utstore_env_teardown(&lp);
}

static const struct ut_case cases[] = {
    UT_CASE(test_estimate_tokens),
    UT_CASE(test_append_load_korean),
    UT_CASE(test_invalid_utf8_sanitized),
    UT_CASE(test_trim_by_turns),
    UT_CASE(test_trim_by_tokens),
    UT_CASE(test_scope_isolation),
    UT_CASE(test_reset),
    UT_CASE(test_ttl_expiry),
    UT_CASE(test_expire_sweep),
    UT_CASE(test_keep_messages),
    UT_CASE(test_turn_key_stores_once),
    UT_CASE(test_schema_rejects_bad_key),
    UT_CASE(test_invalid_arguments),
    UT_CASE(test_store_down),
    UT_CASE(test_close_calls_back),
    {0},
};
UT_MAIN(cases)
