/* Unit tests for usage, against a real PostgreSQL.
 *
 * Each case gets its own database (ut_pg.h) and a store on a private loop,
 * driven by ut_loop.h, whose guard timer fails a case whose callback never
 * comes instead of letting it hang. */
#include <errno.h>
#include <math.h>

#include <uv.h>

#include "base/err.h"
#include "base/log.h"
#include "io/store.h"
#include "service/usage.h"
#include "ut.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_pg.h"
#include "ut_store.h"
#include "ut_sys.h"

#define MAXR 16

static uv_loop_t loop;
static struct utloop lp;

#define WAIT_FOR(cond, ms) UTLOOP_WAIT_FOR(&lp, cond, ms)

/* ---- usage helpers -------------------------------------------------------------- */

static int count_called(const struct utstore_done *a, int n)
{
    int c = 0;
    for (int i = 0; i < n; i++)
        c += a[i].called;
    return c;
}

static int add_status(struct store *s, const struct usage_rec *r)
{
    struct utstore_done a = {0};
    UT_EQ_INT(usage_add(s, r, utstore_on_done, &a), 0);
    UT_EQ_INT(a.called, 0); /* never synchronously */
    WAIT_FOR(a.called, 10000);
    UT_EQ_INT(a.called, 1);
    return a.status;
}

static void add(struct store *s, const struct usage_rec *r)
{
    UT_EQ_INT(add_status(s, r), 0);
}

struct today {
    int called, status, null_rows;
    size_t n;
    struct usage_row rows[MAXR];
    char kind[MAXR][16], model[MAXR][256];
};

static void on_today(int status, const struct usage_row *rows, size_t n, void *arg)
{
    struct today *t = arg;
    t->called++;
    t->status = status;
    t->n = n;
    t->null_rows = rows == NULL;
    UT_ASSERT(n <= MAXR);
    for (size_t i = 0; i < n; i++) {
        t->rows[i] = rows[i];
        snprintf(t->kind[i], sizeof(t->kind[i]), "%s", rows[i].kind);
        snprintf(t->model[i], sizeof(t->model[i]), "%s", rows[i].model);
        t->rows[i].kind = t->kind[i]; /* the originals are borrowed */
        t->rows[i].model = t->model[i];
    }
}

static struct today today(struct store *s, const char *user)
{
    struct today t;
    memset(&t, 0, sizeof(t));
    UT_EQ_INT(usage_today(s, user, on_today, &t), 0);
    UT_EQ_INT(t.called, 0);
    WAIT_FOR(t.called, 10000);
    UT_EQ_INT(t.called, 1);
    UT_EQ_INT(t.status, 0);
    return t;
}

struct totals {
    int called, status, null_totals;
    size_t n;
    struct usage_total t[MAXR];
    char kind[MAXR][16];
};

static void on_totals(int status, const struct usage_total *t, size_t n, void *arg)
{
    struct totals *x = arg;
    x->called++;
    x->status = status;
    x->n = n;
    x->null_totals = t == NULL;
    UT_ASSERT(n <= MAXR);
    for (size_t i = 0; i < n; i++) {
        x->t[i] = t[i];
        snprintf(x->kind[i], sizeof(x->kind[i]), "%s", t[i].kind);
        x->t[i].kind = x->kind[i]; /* the original is borrowed */
    }
}

static struct totals totals(struct store *s)
{
    struct totals x;
    memset(&x, 0, sizeof(x));
    UT_EQ_INT(usage_totals_today(s, on_totals, &x), 0);
    UT_EQ_INT(x.called, 0);
    WAIT_FOR(x.called, 10000);
    UT_EQ_INT(x.called, 1);
    UT_EQ_INT(x.status, 0);
    return x;
}

static const char *sql1(const char *sql)
{
    static char out[1024];
    utpg_run(utpg.kv, sql, out, sizeof(out));
    return out;
}

#define UT_NEAR(a, b) UT_ASSERT(fabs((double)(a) - (double)(b)) < 1e-9)

/* ---- cases ---------------------------------------------------------------------- */

static void test_add_accumulates(void)
{
    utstore_env_setup(&loop, &lp, "usage", 1);
    struct store *s = utstore_open_up(&lp);
    struct usage_rec r = {"42", "9", "chat", "gpt-x", 1, 100, 20, 0, 0.5};
    add(s, &r);
    add(s, &r);
    r.prompt_tokens = 7;
    r.credits = 0.000001;
    add(s, &r);
    UT_EQ_STR(sql1("SELECT requests || '/' || prompt_tokens || '/' || completion_tokens || '/' || "
                   "units || '/' || credits_estimate FROM usage_daily"),
              "3/207/60/0/1.000001");
    /* The row is on today's UTC date, whatever the session's time zone. */
    UT_EQ_STR(sql1("SELECT count(*) FROM usage_daily WHERE day = (now() AT TIME ZONE "
                   "'UTC')::date"),
              "1");

    /* Many queued back to back, and from a second connection at the same
     * time: the upsert adds every one. */
    int ups2 = 0;
    struct store *s2 = utstore_open(&lp, utpg.kv, &ups2);
    WAIT_FOR(ups2 == 1, 20000);
    struct usage_rec one = {"42", "9", "chat", "gpt-x", 1, 0, 0, 0, 0};
    struct utstore_done a[100];
    memset(a, 0, sizeof(a));
    for (int i = 0; i < 100; i++)
        UT_EQ_INT(usage_add(i % 2 ? s : s2, &one, utstore_on_done, &a[i]), 0);
    UT_EQ_INT(usage_add(s, &one, NULL, NULL), 0); /* no callback is fine */
    WAIT_FOR(count_called(a, 100) == 100, 10000);
    for (int i = 0; i < 100; i++) {
        UT_EQ_INT(a[i].called, 1);
        UT_EQ_INT(a[i].status, 0);
    }
    struct today t = today(s, "42");
    UT_EQ_INT(t.n, 1);
    UT_EQ_INT(t.rows[0].requests, 104);
    utstore_close_wait(&lp, s2);
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_today_sums_guilds(void)
{
    utstore_env_setup(&loop, &lp, "usage", 1);
    struct store *s = utstore_open_up(&lp);
    struct today t = today(s, "42");
    UT_EQ_INT(t.n, 0); /* nothing yet is not an error */
    UT_EQ_INT(t.null_rows, 1);

    add(s, &(struct usage_rec){"42", "9", "chat", "m-b", 1, 10, 20, 0, 0.25});
    add(s, &(struct usage_rec){"42", NULL, "chat", "m-b", 2, 1, 2, 0, 0.5}); /* a DM */
    add(s, &(struct usage_rec){"42", "8", "chat", "m-b", 1, 100, 200, 0, 1});
    add(s, &(struct usage_rec){"42", "9", "video", "clip", 1, 0, 0, 8, 3});
    add(s, &(struct usage_rec){"42", "9", "image", "pic", 1, 0, 0, 4, 0.04});
    add(s, &(struct usage_rec){"42", "9", "chat", "M-a", 1, 5, 5, 0, 0}); /* 'M' < 'm' */
    add(s, &(struct usage_rec){"43", "9", "chat", "m-b", 5, 5, 5, 0, 5}); /* someone else */
    UT_EQ_STR(sql1("SELECT count(*) FROM usage_daily WHERE user_id = '42' AND kind = 'chat' AND "
                   "model = 'm-b'"),
              "3"); /* one row per guild, '' for the DM */
    UT_EQ_STR(sql1("SELECT count(*) FROM usage_daily WHERE guild_id = ''"), "1");
    /* Yesterday does not count today. */
    utpg_run(utpg.kv,
             "INSERT INTO usage_daily (day, user_id, guild_id, kind, model, requests) VALUES "
             "((now() AT TIME ZONE 'UTC')::date - 1, '42', '9', 'chat', 'm-b', 1000)",
             NULL, 0);

    t = today(s, "42");
    UT_EQ_INT(t.n, 4);
    UT_EQ_STR(t.rows[0].kind, "chat");
    UT_EQ_STR(t.rows[0].model, "M-a");
    UT_EQ_STR(t.rows[1].kind, "chat");
    UT_EQ_STR(t.rows[1].model, "m-b");
    UT_EQ_INT(t.rows[1].requests, 4);
    UT_EQ_INT(t.rows[1].prompt_tokens, 111);
    UT_EQ_INT(t.rows[1].completion_tokens, 222);
    UT_EQ_INT(t.rows[1].units, 0);
    UT_NEAR(t.rows[1].credits, 1.75);
    UT_EQ_STR(t.rows[2].kind, "image");
    UT_EQ_INT(t.rows[2].units, 4);
    UT_NEAR(t.rows[2].credits, 0.04);
    UT_EQ_STR(t.rows[3].kind, "video");
    UT_EQ_STR(t.rows[3].model, "clip");
    UT_EQ_INT(t.rows[3].units, 8);
    UT_NEAR(t.rows[3].credits, 3);

    t = today(s, "43");
    UT_EQ_INT(t.n, 1);
    UT_EQ_INT(t.rows[0].requests, 5);
    UT_EQ_INT(today(s, "44").n, 0);
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

/* What the cluster status shows: per kind, the amount the daily limit
 * counts (requests for chat, units else), users, and the busiest user's
 * amount over every guild and model. */
static void test_totals_today(void)
{
    utstore_env_setup(&loop, &lp, "usage", 1);
    struct store *s = utstore_open_up(&lp);
    struct totals x = totals(s);
    UT_EQ_INT(x.n, 0); /* nothing yet is not an error */
    UT_EQ_INT(x.null_totals, 1);

    add(s, &(struct usage_rec){"42", "9", "chat", "m-a", 3, 100, 200, 0, 1});
    add(s, &(struct usage_rec){"42", NULL, "chat", "m-b", 2, 1, 2, 0, 0});
    add(s, &(struct usage_rec){"43", "8", "chat", "m-a", 4, 5, 5, 0, 0});
    add(s, &(struct usage_rec){"44", "8", "chat", "m-a", 1, 5, 5, 0, 0});
    add(s, &(struct usage_rec){"42", "9", "image", "pic", 1, 0, 0, 4, 0});
    add(s, &(struct usage_rec){"43", "9", "image", "pic", 2, 0, 0, 6, 0});
    add(s, &(struct usage_rec){"43", "9", "video", "clip", 1, 0, 0, 8, 0});
    /* Yesterday does not count today. */
    utpg_run(utpg.kv,
             "INSERT INTO usage_daily (day, user_id, guild_id, kind, model, requests, units) VALUES "
             "((now() AT TIME ZONE 'UTC')::date - 1, '45', '9', 'video', 'clip', 1, 1000)",
             NULL, 0);

    x = totals(s);
    UT_EQ_INT(x.n, 3);
    UT_EQ_STR(x.t[0].kind, "chat");
    UT_EQ_INT(x.t[0].amount, 10);
    UT_EQ_INT(x.t[0].users, 3);
    UT_EQ_INT(x.t[0].busiest, 5); /* 42: 3 + 2 over two guilds and models */
    UT_EQ_STR(x.t[1].kind, "image");
    UT_EQ_INT(x.t[1].amount, 10); /* units, not requests */
    UT_EQ_INT(x.t[1].users, 2);
    UT_EQ_INT(x.t[1].busiest, 6);
    UT_EQ_STR(x.t[2].kind, "video");
    UT_EQ_INT(x.t[2].amount, 8);
    UT_EQ_INT(x.t[2].users, 1);
    UT_EQ_INT(x.t[2].busiest, 8);
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_rejects(void)
{
    utstore_env_setup(&loop, &lp, "usage", 1);
    struct store *s = utstore_open_up(&lp);
    struct utstore_done a = {0};
    struct usage_rec ok = {"42", NULL, "chat", "m", 1, 0, 0, 0, 0};
    struct usage_rec r = ok;
    UT_EQ_INT(usage_add(NULL, &r, utstore_on_done, &a), -EINVAL);
    UT_EQ_INT(usage_add(s, NULL, utstore_on_done, &a), -EINVAL);
    r.user_id = NULL;
    UT_EQ_INT(usage_add(s, &r, utstore_on_done, &a), -EINVAL);
    r = ok, r.kind = NULL;
    UT_EQ_INT(usage_add(s, &r, utstore_on_done, &a), -EINVAL);
    r = ok, r.model = NULL;
    UT_EQ_INT(usage_add(s, &r, utstore_on_done, &a), -EINVAL);
    r = ok, r.requests = -1;
    UT_EQ_INT(usage_add(s, &r, utstore_on_done, &a), -EINVAL);
    r = ok, r.prompt_tokens = -1;
    UT_EQ_INT(usage_add(s, &r, utstore_on_done, &a), -EINVAL);
    r = ok, r.completion_tokens = -1;
    UT_EQ_INT(usage_add(s, &r, utstore_on_done, &a), -EINVAL);
    r = ok, r.units = -1;
    UT_EQ_INT(usage_add(s, &r, utstore_on_done, &a), -EINVAL);
    r = ok, r.credits = -0.5;
    UT_EQ_INT(usage_add(s, &r, utstore_on_done, &a), -EINVAL);
    r = ok, r.credits = NAN;
    UT_EQ_INT(usage_add(s, &r, utstore_on_done, &a), -EINVAL);
    r = ok, r.credits = INFINITY;
    UT_EQ_INT(usage_add(s, &r, utstore_on_done, &a), -EINVAL);
    r = ok, r.credits = 1e12;
    UT_EQ_INT(usage_add(s, &r, utstore_on_done, &a), -EINVAL);
    struct today t = {0};
    UT_EQ_INT(usage_today(NULL, "42", on_today, &t), -EINVAL);
    UT_EQ_INT(usage_today(s, NULL, on_today, &t), -EINVAL);
    UT_EQ_INT(usage_today(s, "42", NULL, &t), -EINVAL);
    struct totals x = {0};
    UT_EQ_INT(usage_totals_today(NULL, on_totals, &x), -EINVAL);
    UT_EQ_INT(usage_totals_today(s, NULL, &x), -EINVAL);
    utloop_run_for(&lp, 50);
    UT_EQ_INT(a.called + t.called + x.called, 0);

    /* What the schema refuses comes back as a query error. */
    r = ok, r.kind = "audio";
    UT_EQ_INT(add_status(s, &r), BC_EPG);
    r = ok, r.user_id = "someone";
    UT_EQ_INT(add_status(s, &r), BC_EPG);
    r = ok, r.guild_id = "not-a-guild";
    UT_EQ_INT(add_status(s, &r), BC_EPG);
    r = ok, r.model = "";
    UT_EQ_INT(add_status(s, &r), BC_EPG);
    UT_EQ_STR(sql1("SELECT count(*) FROM usage_daily"), "0");
    add(s, &ok); /* and the connection goes on */
    UT_EQ_INT(today(s, "42").n, 1);
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_store_down(void)
{
    utstore_env_setup(&loop, &lp, "usage", 0);
    char ci[128]; /* a port where nothing listens */
    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d dbname=x user=x", utsys_free_port());
    int never = 0;
    struct store *s = utstore_open(&lp, ci, &never);
    utloop_run_for(&lp, 300);
    UT_EQ_INT(store_up(s), 0);
    struct utstore_done a = {0};
    struct today t = {0};
    struct usage_rec r = {"42", NULL, "chat", "m", 1, 0, 0, 0, 0};
    UT_EQ_INT(usage_add(s, &r, utstore_on_done, &a), -ENOTCONN);
    UT_EQ_INT(usage_add(s, &r, NULL, NULL), -ENOTCONN);
    UT_EQ_INT(usage_today(s, "42", on_today, &t), -ENOTCONN);
    struct totals x = {0};
    UT_EQ_INT(usage_totals_today(s, on_totals, &x), -ENOTCONN);
    utloop_run_for(&lp, 100);
    utstore_close_wait(&lp, s);
    UT_EQ_INT(a.called, 0); /* refused means never called back */
    UT_EQ_INT(t.called, 0);
    UT_EQ_INT(x.called, 0);
    UT_EQ_INT(never, 0);
    utstore_env_teardown(&lp);
}

static void test_close_calls_back(void)
{
    utstore_env_setup(&loop, &lp, "usage", 1);
    struct store *s = utstore_open_up(&lp);
    struct utstore_done a = {0};
    struct today t = {0};
    struct usage_rec r = {"42", NULL, "chat", "m", 1, 0, 0, 0, 0};
    UT_EQ_INT(usage_add(s, &r, utstore_on_done, &a), 0);
    UT_EQ_INT(usage_today(s, "42", on_today, &t), 0);
    struct totals x = {0};
    UT_EQ_INT(usage_totals_today(s, on_totals, &x), 0);
    int done = 0;
    store_close(s, utstore_on_closed, &done);
    UT_EQ_INT(x.called, 1);
    UT_EQ_INT(x.status, BC_ESHUTDOWN);
    UT_EQ_INT(x.null_totals, 1);
    UT_EQ_INT(a.called, 1);
    UT_EQ_INT(a.status, BC_ESHUTDOWN);
    UT_EQ_INT(t.called, 1);
    UT_EQ_INT(t.status, BC_ESHUTDOWN);
    UT_EQ_INT(t.n, 0);
    WAIT_FOR(done, 5000);
    utloop_run_for(&lp, 50);
    UT_EQ_INT(a.called + t.called + x.called, 3);
    utstore_env_teardown(&lp);
}

static const struct ut_case cases[] = {
    UT_CASE(test_add_accumulates),
    UT_CASE(test_today_sums_guilds),
    UT_CASE(test_totals_today),
    UT_CASE(test_rejects),
    UT_CASE(test_store_down),
    UT_CASE(test_close_calls_back),
    {0},
};
UT_MAIN(cases)
