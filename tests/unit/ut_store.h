/* ut_store: a store (io/store.h) on a unit-test case's loop, over the
 * case's own database (ut_pg.h). The tests of the modules that run over a
 * store (conv, usage, audit) share these instead of each keeping a copy.
 * Header-only: everything is static and marked unused.
 *
 *     utstore_env_setup(&loop, &lp, "usage", 1);  loop, guard, log, database
 *     struct store *s = utstore_open_up(&lp);     connected and migrated
 *     utstore_close_wait(&lp, s);
 *     utstore_env_teardown(&lp);                  loop closed, database dropped
 */
#ifndef UT_STORE_H
#define UT_STORE_H

#include <uv.h>

#include "base/log.h"
#include "io/store.h"
#include "ut.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_pg.h"

#ifndef UT_UNUSED
#define UT_UNUSED __attribute__((unused))
#endif

/* Log as <name>, start loop under the guard l and, when need_db, create
 * this case's database. */
static UT_UNUSED void utstore_env_setup(uv_loop_t *loop, struct utloop *l, const char *name, int need_db)
{
    utlog_setup("test", name, LOG_INFO);
    UT_EQ_INT(uv_loop_init(loop), 0);
    utloop_init(l, loop, 0);
    if (need_db)
        utpg_create_db(name);
}

static UT_UNUSED void utstore_env_teardown(struct utloop *l)
{
    utloop_shutdown(l); /* every handle of every store was released */
    utpg_drop_db();
}

static UT_UNUSED void utstore__on_state(struct store *s, int up, void *arg)
{
    (void)s;
    if (up && arg)
        (*(int *)arg)++;
}

/* A store connecting to conninfo; *ups (if ups is not NULL) counts its
 * "up" reports and must outlive the store. */
static UT_UNUSED struct store *utstore_open(struct utloop *l, const char *conninfo, int *ups)
{
    struct store_opts o = {.conninfo = conninfo, .connect_timeout_ms = 1000};
    struct store *s = NULL;
    UT_EQ_INT(store_new(l->loop, &o, utstore__on_state, ups, &s), 0);
    return s;
}

/* A store on this case's database, once it is up (fails the case after 20 s). */
static UT_UNUSED struct store *utstore_open_up(struct utloop *l)
{
    static int ups;
    ups = 0;
    struct store *s = utstore_open(l, utpg.kv, &ups);
    UTLOOP_WAIT_FOR(l, ups == 1, 20000);
    return s;
}

/* store_close's done: counts into *(int *)arg. */
static UT_UNUSED void utstore_on_closed(void *arg)
{
    (*(int *)arg)++;
}

static UT_UNUSED void utstore_close_wait(struct utloop *l, struct store *s)
{
    int done = 0;
    store_close(s, utstore_on_closed, &done);
    UTLOOP_WAIT_FOR(l, done, 5000);
}

/* A record of a done callback of the shape (int status, void *arg), as
 * usage_add's and audit_add's: how often it ran and with what. */
struct utstore_done {
    int called, status;
};

static UT_UNUSED void utstore_on_done(int status, void *arg)
{
    struct utstore_done *d = arg;
    d->called++;
    d->status = status;
}

#endif
