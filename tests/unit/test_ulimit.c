/* Unit tests for ulimit, against a real redis-server (never a mock).
 *
 * TEST_REDIS_URL names the shared server; each case keeps its keys under
 * "t<pid>_<case>" and deletes them at exit. The limits are judged at a time
 * the case chooses (ulimit_req.now_ms), so the edges of a sliding window
 * and of a UTC day are reached to the millisecond without sleeping; one
 * case uses Redis's own clock, as the roles do. The callback contract is
 * checked too: the callback never runs from inside ulimit_check, and runs
 * exactly once. */
#include <errno.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "io/rds.h"
#include "service/ulimit.h"
#include "ut.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_redis.h"
#include "ut_sys.h"

#define DAY_MS 86400000LL

static uv_loop_t loop;
static struct utloop lp;
static char shared_url[512];
static char shared_host[256];
static int shared_port;
static char prefix[64];
static struct rds *conn;
static int conn_up, conn_closed;
static redisContext *rawc;

#define WAIT_FOR(cond, ms) UTLOOP_WAIT_FOR(&lp, cond, ms)

static void cleanup_keys(void)
{
    utredis_del_prefix(shared_host, shared_port, 1u << 0, prefix);
}

static void on_state(struct rds *r, int up, void *arg)
{
    (void)r;
    (void)arg;
    conn_up = up;
}

static void on_closed(void *arg)
{
    (*(int *)arg)++;
}

/* The loop and (url given) a connection, or (url NULL) none. url may be
 * shared_url, which is filled in here first. */
static void env_setup(const char *name, const char *url)
{
    static int registered;
    utlog_setup("test", "ulimit", LOG_WARN);
    utredis_shared(shared_host, &shared_port);
    snprintf(shared_url, sizeof(shared_url), "redis://%s:%d/0", shared_host, shared_port);
    snprintf(prefix, sizeof(prefix), "t%d_%s", (int)getpid(), name);
    if (!registered++)
        atexit(cleanup_keys);
    UT_EQ_INT(uv_loop_init(&loop), 0);
    utloop_init(&lp, &loop, 20);
    conn_up = conn_closed = 0;
    if (url) {
        char err[200] = "";
        struct rds_opts ro = {.url = url, .name = "cmd", .connect_timeout_ms = 500};
        UT_EQ_INT(rds_new(&loop, &ro, on_state, NULL, &conn, err, sizeof(err)), 0);
    }
}

static void env_teardown(void)
{
    if (conn) {
        rds_close(conn, on_closed, &conn_closed);
        conn = NULL;
        WAIT_FOR(conn_closed == 1, 5000);
    }
    utlog_stop(LOG_WARN);
    utloop_shutdown(&lp);
    if (rawc) {
        redisFree(rawc);
        rawc = NULL;
    }
    cleanup_keys();
}

#define RAW(...) utredis_cmd(rawc ? rawc : (rawc = utredis_connect(shared_host, shared_port, 5000)), __VA_ARGS__, \
                             (const char *)NULL)

/* The day counter of kind "chat", user "u1" for day d, as Redis holds it. */
static long long day_count(long long d)
{
    char key[200], suffix[32];
    snprintf(suffix, sizeof(suffix), "%lld", d);
    snprintf(key, sizeof(key), "%s:ulimit:chat:u1:day:%s", prefix, suffix);
    redisReply *r = RAW("GET", key);
    long long v = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
    freeReplyObject(r);
    return v;
}

/* ---- one check ------------------------------------------------------------------ */

struct verdict {
    int calls;
    enum ulimit_verdict v;
    int64_t wait_ms;
};

static void on_verdict(enum ulimit_verdict v, int64_t wait_ms, void *arg)
{
    struct verdict *r = arg;
    r->calls++;
    r->v = v;
    r->wait_ms = wait_ms;
}

static struct ulimit_req req(int rate, int window_s, int daily, int64_t now_ms)
{
    struct ulimit_req q = {.prefix = prefix, .kind = "chat", .user_id = "u1", .rate = rate, .window_s = window_s,
                           .daily = daily, .now_ms = now_ms};
    return q;
}

/* ulimit_check and its verdict; the callback must not run from inside the
 * call and must run exactly once. */
static struct verdict check(const struct ulimit_req *q)
{
    struct verdict r = {0};
    UT_EQ_INT(ulimit_check(&loop, conn, q, on_verdict, &r), 0);
    UT_EQ_INT(r.calls, 0);
    WAIT_FOR(r.calls == 1, 5000);
    return r;
}

#define EXPECT(q, want_v, want_wait)                                                               \
    do {                                                                                           \
        struct ulimit_req ex_q = (q);                                                              \
        struct verdict ex_r = check(&ex_q);                                                        \
        UT_EQ_INT(ex_r.v, (want_v));                                                               \
        UT_EQ_INT(ex_r.wait_ms, (want_wait));                                                      \
    } while (0)

/* ---- the callback contract ------------------------------------------------------- */

static void test_nothing_to_check_calls_back_later_once(void)
{
    env_setup("nolimits", NULL);
    struct verdict r = {0};
    struct ulimit_req q = req(0, 60, 0, 0); /* both limits off */
    UT_EQ_INT(ulimit_check(&loop, NULL, &q, on_verdict, &r), 0);
    UT_EQ_INT(r.calls, 0); /* not from inside the call */
    WAIT_FOR(r.calls == 1, 2000);
    UT_EQ_INT(r.v, ULIMIT_OK);
    struct verdict r2 = {0};
    struct ulimit_req anon = req(5, 60, 5, 0);
    anon.user_id = NULL; /* nobody to count */
    UT_EQ_INT(ulimit_check(&loop, NULL, &anon, on_verdict, &r2), 0);
    UT_EQ_INT(r2.calls, 0);
    utloop_run_for(&lp, 200);
    UT_EQ_INT(r.calls, 1);
    UT_EQ_INT(r2.calls, 1);
    UT_EQ_INT(r2.v, ULIMIT_OK);
    env_teardown();
}

static void test_redis_away_allows_later_once(void)
{
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", utsys_free_port()); /* nothing listens */
    env_setup("away", url);
    utlog_start("test", "ulimit", NULL);
    struct verdict r = {0};
    struct ulimit_req q = req(1, 60, 1, 0);
    UT_EQ_INT(ulimit_check(&loop, conn, &q, on_verdict, &r), 0);
    UT_EQ_INT(r.calls, 0); /* the send failed at once: still not from inside */
    WAIT_FOR(r.calls == 1, 2000);
    UT_EQ_INT(r.v, ULIMIT_OK); /* fail open */
    utloop_run_for(&lp, 200);
    UT_EQ_INT(r.calls, 1);
    UT_CONTAINS(utlog_text(), "user limits not checked");
    env_teardown();
}

static void test_bad_input_never_calls_back(void)
{
    env_setup("badinput", NULL);
    struct verdict r = {0};
    struct ulimit_req q = req(1, 60, 1, 0);
    UT_EQ_INT(ulimit_check(&loop, NULL, NULL, on_verdict, &r), -EINVAL);
    UT_EQ_INT(ulimit_check(&loop, NULL, &q, NULL, &r), -EINVAL);
    UT_EQ_INT(ulimit_check(NULL, NULL, &q, on_verdict, &r), -EINVAL);
    q.kind = NULL;
    UT_EQ_INT(ulimit_check(&loop, NULL, &q, on_verdict, &r), -EINVAL);
    utloop_run_for(&lp, 100);
    UT_EQ_INT(r.calls, 0);
    env_teardown();
}

static void test_shutdown_answers_once(void)
{
    env_setup("shutdown", NULL);
    char err[200];
    struct rds_opts ro = {.url = shared_url, .name = "cmd2"};
    struct rds *c2;
    int closed = 0;
    UT_EQ_INT(rds_new(&loop, &ro, on_state, NULL, &c2, err, sizeof(err)), 0);
    WAIT_FOR(rds_up(c2), 5000);
    struct verdict r = {0};
    struct ulimit_req q = req(1, 60, 1, 0);
    UT_EQ_INT(ulimit_check(&loop, c2, &q, on_verdict, &r), 0);
    rds_close(c2, on_closed, &closed); /* the command is still on the wire */
    WAIT_FOR(closed == 1 && r.calls == 1, 5000);
    utloop_run_for(&lp, 100);
    UT_EQ_INT(r.calls, 1);
    UT_EQ_INT(r.v, ULIMIT_OK);
    env_teardown();
}

/* ---- the sliding window ------------------------------------------------------------ */

static void test_sliding_window_edges(void)
{
    env_setup("window", shared_url);
    WAIT_FOR(conn_up, 5000);
    const int64_t T = 1800000000000LL; /* any time: the case's own clock */
    /* rate 2 in 10 s */
    EXPECT(req(2, 10, 0, T), ULIMIT_OK, 0);
    EXPECT(req(2, 10, 0, T + 5000), ULIMIT_OK, 0);
    /* full: the wait is exactly until the oldest leaves the window */
    EXPECT(req(2, 10, 0, T + 5001), ULIMIT_RATE, 4999);
    EXPECT(req(2, 10, 0, T + 9999), ULIMIT_RATE, 1);
    /* one window after the first request it no longer counts: one passes */
    EXPECT(req(2, 10, 0, T + 10000), ULIMIT_OK, 0);
    /* and only one: the request of T + 5000 is still in the window (a fixed
     * window would let a burst of two through at its edge) */
    EXPECT(req(2, 10, 0, T + 10000), ULIMIT_RATE, 5000);
    EXPECT(req(2, 10, 0, T + 14999), ULIMIT_RATE, 1);
    EXPECT(req(2, 10, 0, T + 15000), ULIMIT_OK, 0);
    /* refusals are not counted: after a quiet window everything is free */
    EXPECT(req(2, 10, 0, T + 40000), ULIMIT_OK, 0);
    EXPECT(req(2, 10, 0, T + 40000), ULIMIT_OK, 0);
    EXPECT(req(2, 10, 0, T + 40000), ULIMIT_RATE, 10000);
    env_teardown();
}

/* ---- the day (UTC) ---------------------------------------------------------------------- */

static void test_daily_quota_ends_at_utc_midnight(void)
{
    env_setup("day", shared_url);
    WAIT_FOR(conn_up, 5000);
    const long long D = 20833; /* a day number; midnight is D * DAY_MS */
    const int64_t midnight = D * DAY_MS;
    EXPECT(req(0, 60, 3, midnight - 3000), ULIMIT_OK, 0);
    EXPECT(req(0, 60, 3, midnight - 2000), ULIMIT_OK, 0);
    EXPECT(req(0, 60, 3, midnight - 1500), ULIMIT_OK, 0);
    UT_EQ_INT(day_count(D - 1), 3);
    /* the fourth of the day waits until midnight UTC, to the millisecond */
    EXPECT(req(0, 60, 3, midnight - 1000), ULIMIT_DAILY, 1000);
    EXPECT(req(0, 60, 3, midnight - 1), ULIMIT_DAILY, 1);
    UT_EQ_INT(day_count(D - 1), 3); /* a refusal is not counted */
    /* at midnight the new day starts from zero */
    EXPECT(req(0, 60, 3, midnight), ULIMIT_OK, 0);
    UT_EQ_INT(day_count(D), 1);
    UT_EQ_INT(day_count(D - 1), 3);
    EXPECT(req(0, 60, 3, midnight + 1), ULIMIT_OK, 0);
    EXPECT(req(0, 60, 3, midnight + DAY_MS - 1), ULIMIT_OK, 0);
    EXPECT(req(0, 60, 3, midnight + DAY_MS - 1), ULIMIT_DAILY, 1);
    env_teardown();
}

static void test_daily_cost_and_refund_across_midnight(void)
{
    env_setup("cost", shared_url);
    WAIT_FOR(conn_up, 5000);
    const long long D = 20834;
    const int64_t midnight = D * DAY_MS;
    struct ulimit_req q = req(0, 60, 5, midnight - 10000);
    q.cost = 2;
    EXPECT(q, ULIMIT_OK, 0);
    EXPECT(q, ULIMIT_OK, 0);
    EXPECT(q, ULIMIT_DAILY, 10000); /* 4 + 2 > 5 */
    struct ulimit_req one = q;
    one.cost = 1;
    EXPECT(one, ULIMIT_OK, 0); /* 4 + 1 = 5: exactly the limit passes */
    UT_EQ_INT(day_count(D - 1), 5);
    /* a failed request gives its units back */
    ulimit_refund(conn, &q);
    EXPECT(one, ULIMIT_OK, 0); /* (ordered after the refund on the connection) */
    UT_EQ_INT(day_count(D - 1), 4);
    /* a refund after midnight goes to the new day, never below zero */
    struct ulimit_req late = q;
    late.now_ms = midnight + 5;
    ulimit_refund(conn, &late);
    EXPECT(one, ULIMIT_OK, 0); /* the day before kept its own count */
    UT_EQ_INT(day_count(D), 0);
    UT_EQ_INT(day_count(D - 1), 5);
    env_teardown();
}

static void test_daily_refusal_does_not_use_the_rate(void)
{
    env_setup("both", shared_url);
    WAIT_FOR(conn_up, 5000);
    const int64_t T = 1800000000000LL;
    EXPECT(req(2, 60, 1, T), ULIMIT_OK, 0);
    EXPECT(req(2, 60, 1, T + 10), ULIMIT_DAILY, (T / DAY_MS + 1) * DAY_MS - (T + 10));
    /* the refused request did not take a rate slot: raising the day limit
     * shows one rate slot left */
    EXPECT(req(2, 60, 10, T + 20), ULIMIT_OK, 0);
    EXPECT(req(2, 60, 10, T + 30), ULIMIT_RATE, 60000 - 30);
    env_teardown();
}

/* As the roles run it: Redis's own clock. */
static void test_redis_clock(void)
{
    env_setup("redisclock", shared_url);
    WAIT_FOR(conn_up, 5000);
    EXPECT(req(1, 60, 0, 0), ULIMIT_OK, 0);
    struct ulimit_req q = req(1, 60, 0, 0);
    struct verdict r = check(&q);
    UT_EQ_INT(r.v, ULIMIT_RATE);
    UT_ASSERT(r.wait_ms > 50000 && r.wait_ms <= 60000);
    /* the day: the wait ends at the next UTC midnight (by this host's clock,
     * which is Redis's here: same machine) */
    struct ulimit_req d = req(0, 60, 1, 0);
    d.user_id = "u2";
    r = check(&d);
    UT_EQ_INT(r.v, ULIMIT_OK);
    r = check(&d);
    UT_EQ_INT(r.v, ULIMIT_DAILY);
    int64_t now = clock_wall_ms();
    int64_t to_midnight = (now / DAY_MS + 1) * DAY_MS - now;
    UT_ASSERT(r.wait_ms > to_midnight - 5000 && r.wait_ms <= to_midnight + 5000);
    env_teardown();
}

/* ---- the sentence ---------------------------------------------------------------------- */

static void test_say(void)
{
    char out[300];
    ulimit_say(ULIMIT_RATE, 1500, 0, 0, "요청", "requests", out, sizeof(out));
    UT_EQ_STR(out, "Too many requests; please try again in 2 s.");
    ulimit_say(ULIMIT_RATE, 1000, 0, 1, "요청", "requests", out, sizeof(out));
    UT_CONTAINS(out, "1초 후에");
    ulimit_say(ULIMIT_DAILY, 2 * 3600000 + 60000, 30, 0, "이미지", "images", out, sizeof(out));
    UT_CONTAINS(out, "today's images (30 a day)");
    UT_CONTAINS(out, "2h 1m");
    ulimit_say(ULIMIT_DAILY, 1, 30, 1, "이미지", "images", out, sizeof(out));
    UT_CONTAINS(out, "0시간 1분");
}

static const struct ut_case cases[] = {
    UT_CASE(test_nothing_to_check_calls_back_later_once),
    UT_CASE(test_redis_away_allows_later_once),
    UT_CASE(test_bad_input_never_calls_back),
    UT_CASE(test_shutdown_answers_once),
    UT_CASE(test_sliding_window_edges),
    UT_CASE(test_daily_quota_ends_at_utc_midnight),
    UT_CASE(test_daily_cost_and_refund_across_midnight),
    UT_CASE(test_daily_refusal_does_not_use_the_rate),
    UT_CASE(test_redis_clock),
    UT_CASE(test_say),
    {NULL, NULL},
};

UT_MAIN(cases)
