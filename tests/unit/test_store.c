/* Unit tests for store, against a real PostgreSQL.
 *
 * TEST_PG_ADMIN_URL names a superuser connection (tests/run.py exports it).
 * Each case that needs a database creates a fresh one (ut_pg.h), points the
 * store at it and drops it at the end, also when the case fails (atexit). The
 * loop is driven by ut_loop.h, whose guard timer fails a case that waits for
 * something that never happens instead of letting it hang; ut_log.h captures
 * the log for the cases that check it. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <uv.h>

#include "base/err.h"
#include "base/log.h"
#include "base/utf8.h"
#include "io/store.h"
#include "ut.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_pg.h"

static uv_loop_t loop;
static struct utloop lp;

#define WAIT_FOR(cond, ms) UTLOOP_WAIT_FOR(&lp, cond, ms)

static void run_for(int ms)
{
    utloop_run_for(&lp, ms);
}

/* ---- per-case environment ---------------------------------------------- */

static void env_setup(int need_db)
{
    utlog_setup("test", "store", LOG_INFO); /* TEST_LOG_LEVEL=debug when chasing a failure */
    UT_EQ_INT(uv_loop_init(&loop), 0);
    utloop_init(&lp, &loop, 0);
    if (need_db)
        utpg_create_db("store");
}

static void env_teardown(void)
{
    utlog_stop(LOG_INFO); /* a case may have captured the log (utlog_start) */
    utloop_shutdown(&lp); /* every handle of every store was released */
    utpg_drop_db();
}

/* ---- store helpers -------------------------------------------------------- */

struct tstate {
    int ups, downs, up;
    int repeated; /* called with the value it already had */
};

static void on_state(struct store *s, int up, void *arg)
{
    (void)s;
    struct tstate *t = arg;
    if (up == t->up)
        t->repeated++;
    t->up = up;
    if (up)
        t->ups++;
    else
        t->downs++;
}

struct qres {
    int called;
    int status;
    int had_res;
    int isnull;
    int ntuples;
    char val[512];
    char sqlstate[8];
    char err[512];
};

static void on_qres(struct store *s, int status, const PGresult *res, void *arg)
{
    struct qres *r = arg;
    r->called++;
    r->status = status;
    r->had_res = res != NULL;
    snprintf(r->err, sizeof(r->err), "%s", store_errstr(s));
    if (res && status == 0 && PQresultStatus(res) == PGRES_TUPLES_OK) {
        r->ntuples = PQntuples(res);
        if (r->ntuples > 0 && PQnfields(res) > 0) {
            r->isnull = PQgetisnull(res, 0, 0);
            snprintf(r->val, sizeof(r->val), "%s", PQgetvalue(res, 0, 0));
        }
    }
    if (res && status == BC_EPG) {
        const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", st ? st : "");
    }
}

static struct store *open_store(const char *conninfo, const struct store_opts *base,
                                struct tstate *st)
{
    struct store_opts o = {0};
    if (base)
        o = *base;
    o.conninfo = conninfo;
    struct store *s = NULL;
    UT_EQ_INT(store_new(&loop, &o, on_state, st, &s), 0);
    UT_ASSERT(s != NULL);
    return s;
}

static void wait_up(struct store *s, struct tstate *st, int ups)
{
    WAIT_FOR(st->ups >= ups, 20000);
    UT_ASSERT(store_up(s));
}

/* Submit one query and run the loop until its callback ran. */
static struct qres query_wait(struct store *s, const char *sql, int n, const char *const *params)
{
    struct qres r;
    memset(&r, 0, sizeof(r));
    UT_EQ_INT(store_query(s, sql, n, params, on_qres, &r), 0);
    WAIT_FOR(r.called, 20000);
    UT_EQ_INT(r.called, 1);
    return r;
}

static struct qres query_ok(struct store *s, const char *sql, int n, const char *const *params)
{
    struct qres r = query_wait(s, sql, n, params);
    if (r.status != 0)
        UT_FAIL("%s: status %d (%s)", sql, r.status, r.err);
    return r;
}

static void on_done(void *arg)
{
    (*(int *)arg)++;
}

static void close_wait(struct store *s)
{
    int done = 0;
    store_close(s, on_done, &done);
    UT_EQ_INT(done, 0); /* done comes from the loop, after the handles closed */
    WAIT_FOR(done, 5000);
    UT_EQ_INT(done, 1);
}

/* ---- cases ------------------------------------------------------------------ */

static void test_connect_migrate_up(void)
{
    env_setup(1);
    struct tstate st = {0};
    struct qres early = {0};
    struct store *s = open_store(utpg.uri, NULL, &st);
    UT_EQ_INT(store_up(s), 0);
    UT_EQ_INT(store_schema_version(s), 0);
    UT_EQ_INT(store_query(s, "SELECT 1", 0, NULL, on_qres, &early), -ENOTCONN);

    wait_up(s, &st, 1);
    UT_EQ_INT(st.ups, 1);
    UT_EQ_INT(st.downs, 0);
    UT_EQ_INT(st.repeated, 0);
    UT_ASSERT(store_schema_latest() >= 1);
    UT_EQ_INT(store_schema_version(s), store_schema_latest());

    struct qres r =
        query_ok(s,
                 "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN "
                 "('schema_migrations', 'conversations', 'messages', 'usage_daily', 'jobs', "
                 "'audit_log')",
                 0, NULL);
    UT_EQ_STR(r.val, "6");
    r = query_ok(s, "SHOW statement_timeout", 0, NULL);
    UT_EQ_STR(r.val, "10s");
    r = query_ok(s, "SHOW TimeZone", 0, NULL);
    UT_EQ_STR(r.val, "UTC");

    close_wait(s);
    UT_EQ_INT(st.ups, 1);
    UT_EQ_INT(st.downs, 0); /* store_close does not report down */
    UT_EQ_INT(early.called, 0);
    env_teardown();
}

static void test_concurrent_migrations(void)
{
    env_setup(1);
    struct tstate st1 = {0}, st2 = {0}, st3 = {0};
    /* Both start before the loop runs, so their migration transactions race
     * for the advisory lock; one conninfo of each form. */
    struct store *a = open_store(utpg.uri, NULL, &st1);
    struct store *b = open_store(utpg.kv, NULL, &st2);
    WAIT_FOR(st1.ups == 1 && st2.ups == 1, 20000);
    int latest = store_schema_latest();
    UT_EQ_INT(store_schema_version(a), latest);
    UT_EQ_INT(store_schema_version(b), latest);

    char want[64], got[64], before[1024], after[1024];
    snprintf(want, sizeof(want), "%d/%d/%d", latest, latest, latest);
    utpg_run(utpg.kv,
           "SELECT count(*) || '/' || count(DISTINCT version) || '/' || max(version) FROM "
           "schema_migrations",
           got, sizeof(got));
    UT_EQ_STR(got, want);
    const char *rows =
        "SELECT string_agg(version || ':' || name || '@' || applied_at, ',' ORDER BY version) "
        "FROM schema_migrations";
    utpg_run(utpg.kv, rows, before, sizeof(before));

    struct store *c = open_store(utpg.kv, NULL, &st3);
    wait_up(c, &st3, 1);
    UT_EQ_INT(store_schema_version(c), latest);
    utpg_run(utpg.kv, rows, after, sizeof(after));
    UT_EQ_STR(after, before); /* a later instance changes nothing */

    close_wait(a);
    close_wait(b);
    close_wait(c);
    UT_EQ_INT(st1.downs + st2.downs + st3.downs, 0);
    env_teardown();
}

static void test_utf8_param_roundtrip(void)
{
    env_setup(1);
    struct tstate st = {0};
    struct store *s = open_store(utpg.kv, NULL, &st);
    wait_up(s, &st, 1);

    const char *conv[] = {"t:1234567890123456789:u:42", "98765", "111", NULL, "42"};
    struct qres r =
        query_ok(s,
                 "INSERT INTO conversations (scope_key, guild_id, channel_id, thread_id, user_id) "
                 "VALUES ($1, $2, $3, $4, $5) RETURNING id",
                 5, conv);
    char conv_id[32];
    snprintf(conv_id, sizeof(conv_id), "%lld", atoll(r.val));

    const char *ko = "안녕하세요! 오늘 날씨 어때요? 한국어 텍스트 🌏 ✓";
    const char *msg[] = {conv_id, ko, "17"};
    r = query_ok(s,
                 "INSERT INTO messages (conversation_id, role, content, token_estimate) "
                 "VALUES ($1, 'user', $2, $3) RETURNING id",
                 3, msg);
    char msg_id[32];
    snprintf(msg_id, sizeof(msg_id), "%lld", atoll(r.val));
    const char *idp[] = {msg_id};
    r = query_ok(s, "SELECT content FROM messages WHERE id = $1", 1, idp);
    UT_EQ_STR(r.val, ko);
    r = query_ok(s, "SELECT octet_length(content) FROM messages WHERE id = $1", 1, idp);
    UT_EQ_INT(atoi(r.val), strlen(ko));
    r = query_ok(s, "SELECT char_length(content) FROM messages WHERE id = $1", 1, idp);
    UT_EQ_INT(atoi(r.val), utf8_count(ko, strlen(ko))); /* the server sees characters, not bytes */

    /* A parameter is data, never SQL. */
    const char *evil[] = {conv_id, "'); DROP TABLE messages; --"};
    r = query_ok(
        s,
        "INSERT INTO messages (conversation_id, role, content) VALUES ($1, 'assistant', $2) "
        "RETURNING content",
        2, evil);
    UT_EQ_STR(r.val, evil[1]);
    const char *cid[] = {conv_id};
    r = query_ok(s, "SELECT thread_id FROM conversations WHERE id = $1", 1, cid);
    UT_EQ_INT(r.isnull, 1); /* a NULL parameter is SQL NULL */
    r = query_ok(s, "SELECT count(*) FROM messages WHERE conversation_id = $1", 1, cid);
    UT_EQ_STR(r.val, "2");

    close_wait(s);
    env_teardown();
}

static int order_seen[100], order_n;

static void on_order(struct store *s, int status, const PGresult *res, void *arg)
{
    (void)s;
    (void)arg;
    UT_EQ_INT(status, 0);
    order_seen[order_n++] = atoi(PQgetvalue(res, 0, 0));
}

static void test_fifo_order(void)
{
    env_setup(1);
    struct tstate st = {0};
    struct store *s = open_store(utpg.kv, NULL, &st);
    wait_up(s, &st, 1);
    order_n = 0;
    for (int i = 0; i < 100; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        const char *p[] = {v}; /* a stack temporary: store copies it */
        UT_EQ_INT(store_query(s, "SELECT $1::int", 1, p, on_order, NULL), 0);
    }
    WAIT_FOR(order_n == 100, 20000);
    for (int i = 0; i < 100; i++)
        UT_EQ_INT(order_seen[i], i);
    close_wait(s);
    env_teardown();
}

static void test_query_error_then_next_ok(void)
{
    env_setup(1);
    struct tstate st = {0};
    struct store *s = open_store(utpg.kv, NULL, &st);
    wait_up(s, &st, 1);
    struct qres pid1 = query_ok(s, "SELECT pg_backend_pid()", 0, NULL);

    struct qres r = query_wait(s, "SELEC 1", 0, NULL);
    UT_EQ_INT(r.status, BC_EPG);
    UT_EQ_INT(r.had_res, 1);
    UT_EQ_STR(r.sqlstate, "42601");
    UT_CONTAINS(r.err, "syntax error");
    UT_CONTAINS(store_errstr(s), "42601");
    r = query_ok(s, "SELECT 1", 0, NULL);
    UT_EQ_STR(r.val, "1");

    /* A constraint violation is a query error too. */
    const char *conv[] = {"c:1:u:2", "1", "2"};
    const char *ins =
        "INSERT INTO conversations (scope_key, channel_id, user_id) VALUES ($1, $2, $3)";
    query_ok(s, ins, 3, conv);
    r = query_wait(s, ins, 3, conv);
    UT_EQ_INT(r.status, BC_EPG);
    UT_EQ_STR(r.sqlstate, "23505");
    UT_CONTAINS(r.err, "already exists");

    /* Queued back to back: the failure does not disturb its neighbours. */
    struct qres q1 = {0}, q2 = {0}, q3 = {0};
    UT_EQ_INT(store_query(s, "SELECT 'before'", 0, NULL, on_qres, &q1), 0);
    UT_EQ_INT(store_query(s, "SELECT 1/0", 0, NULL, on_qres, &q2), 0);
    UT_EQ_INT(store_query(s, "SELECT 'after'", 0, NULL, on_qres, &q3), 0);
    WAIT_FOR(q3.called, 10000);
    UT_EQ_INT(q1.status, 0);
    UT_EQ_STR(q1.val, "before");
    UT_EQ_INT(q2.status, BC_EPG);
    UT_EQ_STR(q2.sqlstate, "22012");
    UT_EQ_INT(q3.status, 0);
    UT_EQ_STR(q3.val, "after");

    struct qres pid2 = query_ok(s, "SELECT pg_backend_pid()", 0, NULL);
    UT_EQ_STR(pid2.val, pid1.val); /* same connection throughout */
    UT_EQ_INT(st.downs, 0);
    close_wait(s);
    env_teardown();
}

static void test_schema_constraints(void)
{
    env_setup(1);
    struct tstate st = {0};
    struct store *s = open_store(utpg.kv, NULL, &st);
    wait_up(s, &st, 1);

    const char *conv[] = {"c:10:u:20", "10", "20"};
    struct qres r =
        query_ok(s,
                 "INSERT INTO conversations (scope_key, channel_id, user_id) VALUES ($1, $2, $3) "
                 "RETURNING id",
                 3, conv);
    char conv_id[32];
    snprintf(conv_id, sizeof(conv_id), "%lld", atoll(r.val));
    const char *cid[] = {conv_id};
    query_ok(s, "INSERT INTO messages (conversation_id, role, content) VALUES ($1, 'user', 'hi')",
             1, cid);
    r = query_wait(
        s, "INSERT INTO messages (conversation_id, role, content) VALUES ($1, 'robot', 'x')", 1,
        cid);
    UT_EQ_STR(r.sqlstate, "23514"); /* role is checked */
    const char *bad_id[] = {"c:1:u:2", "not-a-snowflake", "2"};
    r = query_wait(s,
                   "INSERT INTO conversations (scope_key, channel_id, user_id) VALUES ($1, $2, $3)",
                   3, bad_id);
    UT_EQ_STR(r.sqlstate, "23514"); /* Discord ids are digits */
    query_ok(s, "DELETE FROM conversations WHERE id = $1", 1, cid);
    r = query_ok(s, "SELECT count(*) FROM messages WHERE conversation_id = $1", 1, cid);
    UT_EQ_STR(r.val, "0"); /* messages go with their conversation */

    /* Usage counters accumulate through the primary key. */
    const char *upsert =
        "INSERT INTO usage_daily (day, user_id, guild_id, kind, model, requests, "
        "prompt_tokens, credits_estimate) VALUES (current_date, '5', '', 'chat', 'm1', 1, "
        "$1, 0.5) ON CONFLICT (day, user_id, guild_id, kind, model) DO UPDATE SET "
        "requests = usage_daily.requests + 1, prompt_tokens = usage_daily.prompt_tokens "
        "+ excluded.prompt_tokens RETURNING requests || '/' || prompt_tokens";
    const char *tok[] = {"100"};
    query_ok(s, upsert, 1, tok);
    r = query_ok(s, upsert, 1, tok);
    UT_EQ_STR(r.val, "2/200");

    /* Jobs: one per interaction, finished_at exactly when final. */
    const char *job =
        "INSERT INTO jobs (idempotency_key, kind, user_id, channel_id, application_id, "
        "provider, state, finished_at) VALUES ($1, 'video', '1', '2', '3', 'p', $2, "
        "CASE WHEN $2 IN ('done', 'failed') THEN now() END)";
    const char *j1[] = {"1111", "submitting"};
    query_ok(s, job, 2, j1);
    r = query_wait(s, job, 2, j1);
    UT_EQ_STR(r.sqlstate, "23505");
    const char *j2[] = {"2222", "bogus"};
    r = query_wait(s, job, 2, j2);
    UT_EQ_STR(r.sqlstate, "23514");
    r = query_wait(s, "UPDATE jobs SET state = 'done' WHERE idempotency_key = '1111'", 0, NULL);
    UT_EQ_STR(r.sqlstate, "23514"); /* done without finished_at */
    r = query_ok(s, "SELECT indexdef FROM pg_indexes WHERE indexname = 'jobs_unfinished_idx'", 0,
                 NULL);
    UT_CONTAINS(r.val, "WHERE");
    r = query_ok(s,
                 "SELECT data_type FROM information_schema.columns WHERE table_name = 'audit_log' "
                 "AND column_name = 'ts'",
                 0, NULL);
    UT_EQ_STR(r.val, "timestamp with time zone");

    close_wait(s);
    env_teardown();
}

static void test_copy_not_supported(void)
{
    env_setup(1);
    struct tstate st = {0};
    struct store *s = open_store(utpg.kv, NULL, &st);
    wait_up(s, &st, 1);
    struct qres r = query_wait(s, "COPY (SELECT 1) TO STDOUT", 0, NULL);
    UT_EQ_INT(r.status, -ENOTSUP);
    UT_CONTAINS(store_errstr(s), "COPY");
    wait_up(s, &st, 2); /* the connection was mid-COPY: it is replaced */
    r = query_ok(s, "SELECT 1", 0, NULL);
    UT_EQ_STR(r.val, "1");
    close_wait(s);
    env_teardown();
}

static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    UT_EQ_INT(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    UT_EQ_INT(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd); /* nothing listens there now */
    return ntohs(a.sin_port);
}

static void test_unreachable_never_up(void)
{
    env_setup(0);
    char ci[256];
    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d dbname=nowhere user=nobody password=sekrit-pw",
             closed_port());
    struct tstate st = {0};
    struct qres q = {0};
    struct store_opts o = {.connect_timeout_ms = 1000};
    struct store *s = open_store(ci, &o, &st);
    run_for(1500); /* several attempts: 100-200 ms, then 200-400 ms, ... */
    UT_EQ_INT(st.ups, 0);
    UT_EQ_INT(st.downs, 0);
    UT_EQ_INT(store_up(s), 0);
    UT_EQ_INT(store_schema_version(s), 0);
    UT_EQ_INT(store_query(s, "SELECT 1", 0, NULL, on_qres, &q), -ENOTCONN);
    UT_ASSERT(store_errstr(s)[0] != '\0');
    UT_CONTAINS(store_errstr(s), "127.0.0.1");
    UT_NOT_CONTAINS(store_errstr(s), "sekrit");
    close_wait(s);
    UT_EQ_INT(q.called, 0);
    UT_EQ_INT(st.ups, 0);
    env_teardown();
}

static void test_host_fallback(void)
{
    env_setup(1);
    /* A host list whose first entry refuses: libpq moves on to the second.
     * On loopback the refusal usually shows inside PQconnectStart already;
     * test_socket_change_during_connect covers a change mid-connect. */
    char ci[1024];
    snprintf(ci, sizeof(ci), "host=%s,%s port=%d,%s user=%s dbname=%s", utpg.host, utpg.host,
             closed_port(), utpg.port, utpg.user, utpg.name);
    struct tstate st = {0};
    struct store *s = open_store(ci, NULL, &st);
    wait_up(s, &st, 1);
    struct qres r = query_ok(s, "SELECT current_database()", 0, NULL);
    UT_EQ_STR(r.val, utpg.name);
    close_wait(s);
    env_teardown();
}

static void test_socket_change_during_connect(void)
{
    env_setup(1);
    /* With target_session_attrs=prefer-standby libpq first looks for a
     * standby: it completes a whole connection, finds a primary, drops it and
     * connects again on a NEW socket, after the store already watched the
     * first one (and typically with the same fd number). A store that misses
     * the change never sees the second socket and times out (or trips
     * libuv); one that follows it comes up. */
    char ci[1100];
    snprintf(ci, sizeof(ci), "%s target_session_attrs=prefer-standby", utpg.kv);
    struct tstate st = {0};
    struct store_opts o = {.connect_timeout_ms = 5000};
    struct store *s = open_store(ci, &o, &st);
    wait_up(s, &st, 1);
    UT_EQ_INT(st.ups, 1);
    struct qres r = query_ok(s, "SELECT 1", 0, NULL);
    UT_EQ_STR(r.val, "1");
    close_wait(s);
    env_teardown();
}

static void test_outage_logged_once_redacted(void)
{
    env_setup(0);
    utlog_start("test", "store", NULL);
    char ci[256];
    snprintf(ci, sizeof(ci), "postgresql://bot:sekrit-pw@127.0.0.1:%d/nowhere", closed_port());
    struct tstate st = {0};
    struct store *s = open_store(ci, NULL, &st);
    run_for(1000); /* several attempts */
    close_wait(s);
    const char *text = utlog_text();
    /* The retries are logged at debug level only; the outage once, as a warning. */
    UT_ASSERT(utlog_count_in(text, "postgres connect attempt failed") >= 2);
    UT_EQ_INT(utlog_count_in(text, "\"level\":\"warn\""), 1);
    UT_CONTAINS(text, "postgres unavailable");
    UT_CONTAINS(text, "bot:***@127.0.0.1");
    UT_NOT_CONTAINS(text, "sekrit");
    env_teardown();
}

static void test_connect_timeout(void)
{
    env_setup(0);
    /* A listener that never accepts: the kernel completes the TCP handshake,
     * then nobody ever answers libpq's first packet. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    UT_EQ_INT(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    UT_EQ_INT(listen(fd, 16), 0);
    UT_EQ_INT(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    char ci[128];
    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d dbname=x user=x", ntohs(a.sin_port));
    struct tstate st = {0};
    struct store_opts o = {.connect_timeout_ms = 200};
    struct store *s = open_store(ci, &o, &st);
    run_for(700);
    UT_EQ_INT(st.ups, 0);
    UT_EQ_INT(store_up(s), 0);
    UT_CONTAINS(store_errstr(s), "timed out");
    close_wait(s);
    close(fd);
    env_teardown();
}

static void test_invalid_arguments(void)
{
    env_setup(0);
    struct store *s = NULL;
    struct store_opts o = {0};
    UT_EQ_INT(store_new(&loop, &o, NULL, NULL, &s), -EINVAL);
    UT_EQ_INT(store_new(NULL, &o, NULL, NULL, &s), -EINVAL);
    o.conninfo = "host=127.0.0.1 no_such_option=1";
    UT_EQ_INT(store_new(&loop, &o, NULL, NULL, &s), BC_ECONFIG);
    o.conninfo = "postgresql://u:pw@127.0.0.1:1/db?bogus=1";
    UT_EQ_INT(store_new(&loop, &o, NULL, NULL, &s), BC_ECONFIG);
    UT_ASSERT(s == NULL);

    char ci[64];
    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d", closed_port());
    o.conninfo = ci;
    UT_EQ_INT(store_new(&loop, &o, NULL, NULL, &s), 0);
    struct qres q = {0};
    UT_EQ_INT(store_query(s, NULL, 0, NULL, on_qres, &q), -EINVAL);
    UT_EQ_INT(store_query(s, "SELECT 1", -1, NULL, on_qres, &q), -EINVAL);
    UT_EQ_INT(store_query(s, "SELECT $1", 1, NULL, on_qres, &q), -EINVAL);
    close_wait(s);
    UT_EQ_INT(q.called, 0);
    env_teardown();
}

static void test_queue_full(void)
{
    env_setup(1);
    struct tstate st = {0};
    struct store_opts o = {.max_queue = 2};
    struct store *s = open_store(utpg.kv, &o, &st);
    wait_up(s, &st, 1);
    struct qres q[3];
    memset(q, 0, sizeof(q));
    UT_EQ_INT(store_query(s, "SELECT 1", 0, NULL, on_qres, &q[0]), 0);
    UT_EQ_INT(store_query(s, "SELECT 2", 0, NULL, on_qres, &q[1]), 0);
    UT_EQ_INT(store_query(s, "SELECT 3", 0, NULL, on_qres, &q[2]), -ENOBUFS);
    WAIT_FOR(q[0].called && q[1].called, 10000);
    run_for(50);
    UT_EQ_INT(q[0].status, 0);
    UT_EQ_INT(q[1].status, 0);
    UT_EQ_INT(q[2].called, 0); /* refused means never called back */
    struct qres again = query_ok(s, "SELECT 3", 0, NULL);
    UT_EQ_STR(again.val, "3");
    close_wait(s);
    env_teardown();
}

static void test_statement_timeout_recovers(void)
{
    env_setup(1);
    struct tstate st = {0};
    struct store_opts o = {.query_timeout_ms = 300};
    struct store *s = open_store(utpg.kv, &o, &st);
    wait_up(s, &st, 1);
    uint64_t t0 = uv_now(&loop);
    struct qres r = query_wait(s, "SELECT pg_sleep(3)", 0, NULL);
    uint64_t took = uv_now(&loop) - t0;
    UT_EQ_INT(r.status, BC_EPG);
    UT_EQ_STR(r.sqlstate, "57014");
    UT_CONTAINS(r.err, "statement timeout");
    UT_ASSERT(took < (uint64_t)ut_scale_ms(2000)); /* the server's statement_timeout, not the local one */
    r = query_ok(s, "SELECT 'still here'", 0, NULL);
    UT_EQ_STR(r.val, "still here");
    UT_EQ_INT(st.downs, 0);
    close_wait(s);
    env_teardown();
}

static void test_hard_timeout_reconnects(void)
{
    env_setup(1);
    struct tstate st = {0};
    struct store_opts o = {.query_timeout_ms = 300};
    struct store *s = open_store(utpg.kv, &o, &st);
    wait_up(s, &st, 1);
    /* Switch the server-side limit off so only the local one is left. */
    query_ok(s, "SET statement_timeout = 0", 0, NULL);
    struct qres slow = {0}, behind = {0};
    uint64_t t0 = uv_now(&loop);
    UT_EQ_INT(store_query(s, "SELECT pg_sleep(5)", 0, NULL, on_qres, &slow), 0);
    UT_EQ_INT(store_query(s, "SELECT 1", 0, NULL, on_qres, &behind), 0);
    WAIT_FOR(slow.called, 10000);
    uint64_t took = uv_now(&loop) - t0;
    UT_EQ_INT(slow.status, -ETIMEDOUT);
    UT_EQ_INT(slow.had_res, 0);
    UT_ASSERT(took >= 2200 && took < (uint64_t)ut_scale_ms(4500)); /* 300 ms + the 2 s margin */
    UT_EQ_INT(behind.called, 1);
    UT_EQ_INT(behind.status, -ENOTCONN);
    UT_EQ_INT(st.downs, 1);
    UT_EQ_INT(store_up(s), 0);

    wait_up(s, &st, 2);
    struct qres r = query_ok(s, "SHOW statement_timeout", 0, NULL);
    UT_EQ_STR(r.val, "300ms"); /* the new session got the setting back */
    UT_EQ_INT(st.repeated, 0);
    close_wait(s);
    env_teardown();
}

static struct store *requery_store;
static int requery_rc;

static void on_requery(struct store *s, int status, const PGresult *res, void *arg)
{
    on_qres(s, status, res, arg);
    requery_rc = store_query(requery_store, "SELECT 1", 0, NULL, on_qres, arg);
}

static void test_close_fails_queued(void)
{
    env_setup(1);
    struct tstate st = {0};
    struct store *s = open_store(utpg.kv, NULL, &st);
    wait_up(s, &st, 1);
    struct qres q[6];
    memset(q, 0, sizeof(q));
    UT_EQ_INT(store_query(s, "SELECT pg_sleep(2)", 0, NULL, on_qres, &q[0]), 0);
    for (int i = 1; i < 5; i++)
        UT_EQ_INT(store_query(s, "SELECT 1", 0, NULL, on_qres, &q[i]), 0);
    run_for(100); /* the first is now in flight */
    UT_EQ_INT(q[0].called, 0);
    requery_store = s;
    requery_rc = 1;
    UT_EQ_INT(store_query(s, "SELECT 2", 0, NULL, on_requery, &q[5]), 0);

    int done = 0;
    store_close(s, on_done, &done);
    for (int i = 0; i < 6; i++) {
        UT_EQ_INT(q[i].called, 1);
        UT_EQ_INT(q[i].status, BC_ESHUTDOWN);
    }
    UT_EQ_INT(requery_rc, BC_ESHUTDOWN); /* and that callback was not queued */
    WAIT_FOR(done, 5000);
    run_for(100);
    for (int i = 0; i < 6; i++)
        UT_EQ_INT(q[i].called, 1);
    UT_EQ_INT(done, 1);
    UT_EQ_INT(st.downs, 0);

    /* Closing while still connecting is just as clean. */
    struct tstate st2 = {0};
    struct store *s2 = open_store(utpg.kv, NULL, &st2);
    close_wait(s2);
    run_for(100);
    UT_EQ_INT(st2.ups, 0);
    env_teardown();
}

static int cb_close_done;

static void on_close_in_result(struct store *s, int status, const PGresult *res, void *arg)
{
    on_qres(s, status, res, arg);
    store_close(s, on_done, &cb_close_done);
    store_close(s, on_done, &cb_close_done); /* ignored */
}

static void on_close_in_state(struct store *s, int up, void *arg)
{
    on_state(s, up, arg);
    if (up)
        store_close(s, on_done, &cb_close_done);
}

static void test_close_from_callback(void)
{
    env_setup(1);
    struct tstate st = {0};
    struct store *s = open_store(utpg.kv, NULL, &st);
    wait_up(s, &st, 1);
    struct qres q[3];
    memset(q, 0, sizeof(q));
    UT_EQ_INT(store_query(s, "SELECT 1", 0, NULL, on_close_in_result, &q[0]), 0);
    UT_EQ_INT(store_query(s, "SELECT 2", 0, NULL, on_qres, &q[1]), 0);
    UT_EQ_INT(store_query(s, "SELECT 3", 0, NULL, on_qres, &q[2]), 0);
    cb_close_done = 0;
    WAIT_FOR(cb_close_done, 10000);
    UT_EQ_INT(q[0].called, 1);
    UT_EQ_INT(q[0].status, 0);
    UT_EQ_STR(q[0].val, "1");
    UT_EQ_INT(q[1].called, 1);
    UT_EQ_INT(q[1].status, BC_ESHUTDOWN);
    UT_EQ_INT(q[2].called, 1);
    UT_EQ_INT(q[2].status, BC_ESHUTDOWN);
    run_for(50);
    UT_EQ_INT(cb_close_done, 1);

    /* From the state callback, right as the store comes up. */
    struct tstate st2 = {0};
    struct store_opts o = {.conninfo = utpg.kv};
    struct store *s2 = NULL;
    UT_EQ_INT(store_new(&loop, &o, on_close_in_state, &st2, &s2), 0);
    cb_close_done = 0;
    WAIT_FOR(cb_close_done, 20000);
    UT_EQ_INT(st2.ups, 1);
    UT_EQ_INT(st2.downs, 0);
    env_teardown();
}

static void test_backend_terminated_reconnects(void)
{
    env_setup(1);
    utlog_start("test", "store", NULL);
    struct tstate st = {0};
    struct store *s = open_store(utpg.kv, NULL, &st);
    wait_up(s, &st, 1);
    struct qres pid1 = query_ok(s, "SELECT pg_backend_pid()", 0, NULL);

    struct qres slow = {0}, behind = {0};
    UT_EQ_INT(store_query(s, "SELECT pg_sleep(30)", 0, NULL, on_qres, &slow), 0);
    UT_EQ_INT(store_query(s, "SELECT 1", 0, NULL, on_qres, &behind), 0);
    run_for(300); /* let it reach the server */
    UT_EQ_INT(slow.called, 0);

    char sql[128], ok[8];
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", atoi(pid1.val));
    utpg_run(utpg.admin_url, sql, ok, sizeof(ok));
    UT_EQ_STR(ok, "t");

    WAIT_FOR(slow.called, 5000);
    UT_EQ_INT(slow.status, -ENOTCONN);
    UT_EQ_INT(behind.called, 1);
    UT_EQ_INT(behind.status, -ENOTCONN);
    UT_EQ_INT(st.downs, 1);
    UT_EQ_INT(st.up, 0);
    UT_ASSERT(store_errstr(s)[0] != '\0');

    wait_up(s, &st, 2); /* by itself, without any call from us */
    UT_EQ_INT(st.repeated, 0);
    UT_EQ_INT(store_schema_version(s), store_schema_latest());
    struct qres pid2 = query_ok(s, "SELECT pg_backend_pid()", 0, NULL);
    UT_ASSERT(strcmp(pid1.val, pid2.val) != 0);
    close_wait(s);
    const char *text = utlog_text();
    UT_EQ_INT(utlog_count_in(text, "postgres connection lost"), 1);
    UT_EQ_INT(utlog_count_in(text, "postgres connection recovered"), 1);
    env_teardown();
}

static const struct ut_case cases[] = {
    UT_CASE(test_connect_migrate_up),
    UT_CASE(test_concurrent_migrations),
    UT_CASE(test_utf8_param_roundtrip),
    UT_CASE(test_fifo_order),
    UT_CASE(test_query_error_then_next_ok),
    UT_CASE(test_schema_constraints),
    UT_CASE(test_copy_not_supported),
    UT_CASE(test_unreachable_never_up),
    UT_CASE(test_host_fallback),
    UT_CASE(test_socket_change_during_connect),
    UT_CASE(test_outage_logged_once_redacted),
    UT_CASE(test_connect_timeout),
    UT_CASE(test_invalid_arguments),
    UT_CASE(test_queue_full),
    UT_CASE(test_statement_timeout_recovers),
    UT_CASE(test_hard_timeout_reconnects),
    UT_CASE(test_close_fails_queued),
    UT_CASE(test_close_from_callback),
    UT_CASE(test_backend_terminated_reconnects),
    {0},
};
UT_MAIN(cases)
