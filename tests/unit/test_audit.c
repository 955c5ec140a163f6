/* Unit tests for audit, against a real PostgreSQL.
 *
 * Each case gets its own database (ut_pg.h) and a store on a private loop,
 * driven by ut_loop.h, whose guard timer fails a case whose callback never
 * comes instead of letting it hang. */
#include <errno.h>

#include <uv.h>

#include "base/err.h"
#include "base/log.h"
#include "io/store.h"
#include "service/audit.h"
#include "ut.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_pg.h"
#include "ut_store.h"
#include "ut_sys.h"

static uv_loop_t loop;
static struct utloop lp;

#define WAIT_FOR(cond, ms) UTLOOP_WAIT_FOR(&lp, cond, ms)

static int add_status(struct store *s, const struct audit_rec *r)
{
    struct utstore_done a = {0};
    UT_EQ_INT(audit_add(s, r, utstore_on_done, &a), 0);
    UT_EQ_INT(a.called, 0); /* never synchronously */
    WAIT_FOR(a.called, 10000);
    utloop_run_for(&lp, 20);
    UT_EQ_INT(a.called, 1);
    return a.status;
}

static const char *sql1(const char *sql)
{
    static char out[1024];
    utpg_run(utpg.kv, sql, out, sizeof(out));
    return out;
}

/* ---- cases ---------------------------------------------------------------------- */

/* A row says who did what, with the detail as a JSON object of text whose
 * values arrive as they were given, quotes and all. */
static void test_add_writes_a_row(void)
{
    utstore_env_setup(&loop, &lp, "audit", 1);
    struct store *s = utstore_open_up(&lp);
    const char *detail[] = {"categories", "violence,hate", "channel_id", NULL, "excerpt", "say \"hi\"'; --\n한국어"};
    struct audit_rec r = {"chat-1", "9", "42", "moderation_flagged", detail, 3};
    UT_EQ_INT(add_status(s, &r), 0);
    UT_EQ_STR(sql1("SELECT instance || '/' || guild_id || '/' || user_id || '/' || action FROM audit_log"),
              "chat-1/9/42/moderation_flagged");
    UT_EQ_STR(sql1("SELECT detail->>'categories' FROM audit_log"), "violence,hate");
    UT_EQ_STR(sql1("SELECT jsonb_typeof(detail->'channel_id') FROM audit_log"), "null");
    UT_EQ_STR(sql1("SELECT detail->>'excerpt' FROM audit_log"), "say \"hi\"'; --\n한국어");
    UT_EQ_STR(sql1("SELECT count(*) FROM jsonb_object_keys((SELECT detail FROM audit_log))"), "3");

    /* Outside a guild, with no user and no detail; and without a callback. */
    r = (struct audit_rec){"admin-1", NULL, NULL, "restart", NULL, 0};
    UT_EQ_INT(add_status(s, &r), 0);
    UT_EQ_INT(audit_add(s, &r, NULL, NULL), 0);
    r.action = "marker"; /* queries run in order: once this one is back, so is the one before */
    UT_EQ_INT(add_status(s, &r), 0);
    r.action = "restart";
    UT_EQ_STR(sql1("SELECT count(*) FROM audit_log WHERE action = 'restart' AND guild_id IS NULL AND user_id IS "
                   "NULL AND detail = '{}'"),
              "2");

    /* As many pairs as a detail may hold. */
    const char *many[2 * AUDIT_DETAIL_MAX];
    char names[AUDIT_DETAIL_MAX][16];
    for (int i = 0; i < AUDIT_DETAIL_MAX; i++) {
        snprintf(names[i], sizeof(names[i]), "k%d", i);
        many[2 * i] = names[i];
        many[2 * i + 1] = "v";
    }
    r = (struct audit_rec){"chat-1", "9", "42", "many", many, AUDIT_DETAIL_MAX};
    UT_EQ_INT(add_status(s, &r), 0);
    UT_EQ_STR(sql1("SELECT count(*) FROM jsonb_object_keys((SELECT detail FROM audit_log WHERE action = 'many'))"),
              "16");
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_rejects(void)
{
    utstore_env_setup(&loop, &lp, "audit", 1);
    struct store *s = utstore_open_up(&lp);
    struct utstore_done a = {0};
    const char *detail[] = {"k", "v"}, *unnamed[] = {NULL, "v"};
    struct audit_rec ok = {"chat-1", NULL, "42", "x", detail, 1}, r = ok;
    UT_EQ_INT(audit_add(NULL, &r, utstore_on_done, &a), -EINVAL);
    UT_EQ_INT(audit_add(s, NULL, utstore_on_done, &a), -EINVAL);
    r = ok, r.instance = NULL;
    UT_EQ_INT(audit_add(s, &r, utstore_on_done, &a), -EINVAL);
    r = ok, r.action = NULL;
    UT_EQ_INT(audit_add(s, &r, utstore_on_done, &a), -EINVAL);
    r = ok, r.detail = unnamed;
    UT_EQ_INT(audit_add(s, &r, utstore_on_done, &a), -EINVAL);
    r = ok, r.detail = NULL;
    UT_EQ_INT(audit_add(s, &r, utstore_on_done, &a), -EINVAL);
    r = ok, r.ndetail = AUDIT_DETAIL_MAX + 1;
    UT_EQ_INT(audit_add(s, &r, utstore_on_done, &a), -EINVAL);
    utloop_run_for(&lp, 50);
    UT_EQ_INT(a.called, 0);

    /* What the schema refuses comes back as a query error. */
    r = ok, r.action = "";
    UT_EQ_INT(add_status(s, &r), BC_EPG);
    r = ok, r.user_id = "someone";
    UT_EQ_INT(add_status(s, &r), BC_EPG);
    UT_EQ_STR(sql1("SELECT count(*) FROM audit_log"), "0");
    UT_EQ_INT(add_status(s, &ok), 0); /* and the connection goes on */
    UT_EQ_STR(sql1("SELECT count(*) FROM audit_log"), "1");
    utstore_close_wait(&lp, s);
    utstore_env_teardown(&lp);
}

static void test_store_down_and_close(void)
{
    utstore_env_setup(&loop, &lp, "audit", 1);
    char ci[128]; /* a port where nothing listens */
    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d dbname=x user=x", utsys_free_port());
    int never = 0;
    struct store *down = utstore_open(&lp, ci, &never);
    utloop_run_for(&lp, 300);
    struct utstore_done a = {0};
    struct audit_rec r = {"chat-1", NULL, "42", "x", NULL, 0};
    UT_EQ_INT(audit_add(down, &r, utstore_on_done, &a), -ENOTCONN);
    UT_EQ_INT(audit_add(down, &r, NULL, NULL), -ENOTCONN);
    utstore_close_wait(&lp, down);
    UT_EQ_INT(a.called, 0); /* refused means never called back */

    struct store *s = utstore_open_up(&lp);
    UT_EQ_INT(audit_add(s, &r, utstore_on_done, &a), 0);
    int done = 0;
    store_close(s, utstore_on_closed, &done);
    UT_EQ_INT(a.called, 1);
    UT_EQ_INT(a.status, BC_ESHUTDOWN);
    WAIT_FOR(done, 5000);
    utloop_run_for(&lp, 50);
    UT_EQ_INT(a.called, 1);
    utstore_env_teardown(&lp);
}

static const struct ut_case cases[] = {
    UT_CASE(test_add_writes_a_row),
    UT_CASE(test_rejects),
    UT_CASE(test_store_down_and_close),
    {0},
};
UT_MAIN(cases)
