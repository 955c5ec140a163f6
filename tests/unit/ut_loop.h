/* ut_loop: run a unit test's libuv loop under a guard timer.
 *
 * Test code is straight-line: UTLOOP_WAIT_FOR turns the loop until a
 * condition holds and fails the case when it does not within the time
 * given, instead of hanging; utloop_run_for turns it for a while, whatever
 * happens. A repeating tick (tick_ms, 0 for none) wakes the loop while it
 * runs, so a condition that only a blocking check sees (a raw Redis query,
 * a simulator's counter) is polled even when no handle of the loop fires.
 *
 * The two timers live on the caller's loop: utloop_init after uv_loop_init;
 * at the end utloop_shutdown closes them, runs the loop dry and checks that
 * it closes (or utloop_close, before the caller's own final uv_run). Both
 * only run while a wait or run is under way. Header-only: every function is static and marked unused.
 *
 * The time a wait for a condition may take (UTLOOP_RUN_UNTIL,
 * UTLOOP_WAIT_FOR) is scaled by the runner's --timeout-scale (ut_scale_ms,
 * ut_sys.h): on a slow machine an event only comes later. A fixed run
 * (utloop_run_for) and UTLOOP_HOLDS_FOR are not: they are windows set
 * against the code's own timers, which do not scale. */
#ifndef UT_LOOP_H
#define UT_LOOP_H

#include <string.h>

#include <uv.h>

#include "ut.h"
#include "ut_sys.h"

#ifndef UT_UNUSED
#define UT_UNUSED __attribute__((unused))
#endif

struct utloop {
    uv_loop_t *loop; /* borrowed: the caller's */
    uv_timer_t guard, tick;
    int tick_ms;
    int expired; /* the guard fired: the time of the current wait is up */
};

static UT_UNUSED void utloop__on_guard(uv_timer_t *t)
{
    ((struct utloop *)t->data)->expired = 1;
}

static UT_UNUSED void utloop__on_tick(uv_timer_t *t)
{
    (void)t; /* only wakes the loop so that conditions are polled */
}

static UT_UNUSED void utloop_init(struct utloop *l, uv_loop_t *loop, int tick_ms)
{
    memset(l, 0, sizeof *l);
    l->loop = loop;
    l->tick_ms = tick_ms;
    UT_EQ_INT(uv_timer_init(loop, &l->guard), 0);
    UT_EQ_INT(uv_timer_init(loop, &l->tick), 0);
    l->guard.data = l;
    l->tick.data = l;
}

/* Closes both timers; the caller's next uv_run completes the close. */
static UT_UNUSED void utloop_close(struct utloop *l)
{
    uv_close((uv_handle_t *)&l->guard, NULL);
    uv_close((uv_handle_t *)&l->tick, NULL);
}

/* The end of a case: closes both timers, runs the loop until every handle
 * is closed and fails the case unless uv_loop_close succeeds, that is
 * unless the code under test released every handle it opened (ASan/LSan
 * then see any leak). The caller closes its own handles first. */
static UT_UNUSED void utloop_shutdown(struct utloop *l)
{
    utloop_close(l);
    uv_run(l->loop, UV_RUN_DEFAULT);
    UT_EQ_INT(uv_loop_close(l->loop), 0);
}

/* Starts a wait of ms. The loop's clock stood still while the case made
 * blocking calls, so it is brought up to date first: the guard measures ms
 * from now, not from the loop's last turn. */
static UT_UNUSED void utloop_arm(struct utloop *l, int ms)
{
    l->expired = 0;
    uv_update_time(l->loop);
    uv_timer_start(&l->guard, utloop__on_guard, (uint64_t)ms, 0);
    if (l->tick_ms > 0)
        uv_timer_start(&l->tick, utloop__on_tick, (uint64_t)l->tick_ms, (uint64_t)l->tick_ms);
}

static UT_UNUSED void utloop_disarm(struct utloop *l)
{
    uv_timer_stop(&l->guard);
    uv_timer_stop(&l->tick);
}

/* Turns the loop for ms, whatever happens meanwhile. */
static UT_UNUSED void utloop_run_for(struct utloop *l, int ms)
{
    utloop_arm(l, ms);
    while (!l->expired)
        uv_run(l->loop, UV_RUN_ONCE);
    utloop_disarm(l);
}

/* Turns the loop until cond holds or ms (scaled) pass; no verdict (cond is
 * checked before the first turn and after each). */
#define UTLOOP_RUN_UNTIL(l, cond, ms)                                                              \
    do {                                                                                           \
        utloop_arm((l), ut_scale_ms(ms));                                                          \
        while (!(cond) && !(l)->expired)                                                           \
            uv_run((l)->loop, UV_RUN_ONCE);                                                        \
        utloop_disarm(l);                                                                          \
    } while (0)

/* Turns the loop until cond holds; fails the case if ms (scaled) pass first. */
#define UTLOOP_WAIT_FOR(l, cond, ms)                                                               \
    do {                                                                                           \
        UTLOOP_RUN_UNTIL(l, cond, ms);                                                             \
        if (!(cond))                                                                               \
            UT_FAIL("timed out after %d ms waiting for %s", ut_scale_ms(ms), #cond);               \
    } while (0)

/* Turns the loop for ms; fails the case at once if cond stops holding. */
#define UTLOOP_HOLDS_FOR(l, cond, ms)                                                              \
    do {                                                                                           \
        utloop_arm((l), (ms));                                                                     \
        while ((cond) && !(l)->expired)                                                            \
            uv_run((l)->loop, UV_RUN_ONCE);                                                        \
        utloop_disarm(l);                                                                          \
        if (!(cond))                                                                               \
            UT_FAIL("no longer true: %s", #cond);                                                  \
    } while (0)

#endif
