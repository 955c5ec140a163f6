/* Unit tests for jobctx: the lifetime rules on their own. The bus's side of
 * a cancel is what bus_close does (job->cancel(job, job->cancel_arg), then
 * the job is gone); acks through a real bus are in test_bus
 * (test_jobctx_acks_through_the_bus). */
#include <string.h>

#include "service/jobctx.h"
#include "ut.h"

struct owner {
    struct jobctx jc;
    int stops, releases;
};

static void own_stop(void *arg)
{
    ((struct owner *)arg)->stops++;
}

static void own_release(void *arg)
{
    ((struct owner *)arg)->releases++;
}

static void start(struct owner *o, struct bus_job *job)
{
    memset(o, 0, sizeof(*o));
    memset(job, 0, sizeof(*job));
    jobctx_start(&o->jc, job, own_stop, own_release, o);
}

/* what bus_close does for a job still running */
static void bus_cancels(struct bus_job *job)
{
    UT_ASSERT(job->cancel != NULL);
    job->cancel(job, job->cancel_arg);
}

static void test_start_hooks_the_cancel(void)
{
    struct owner o;
    struct bus_job job;
    start(&o, &job);
    UT_ASSERT(job.cancel_arg == &o.jc);
    UT_EQ_INT(o.releases, 0); /* never synchronously */
    UT_EQ_INT(jobctx_ours(&o.jc), 1);
    job.lease_lost = 1;
    UT_EQ_INT(jobctx_ours(&o.jc), 0);
}

static void test_cancel_with_nothing_owed_releases_once(void)
{
    struct owner o;
    struct bus_job job;
    start(&o, &job);
    bus_cancels(&job);
    UT_EQ_INT(o.stops, 1);
    UT_EQ_INT(o.releases, 1);
    UT_ASSERT(o.jc.job == NULL);
}

static void test_cancel_waits_for_owed_callbacks(void)
{
    struct owner o;
    struct bus_job job;
    start(&o, &job);
    jobctx_wait(&o.jc);
    jobctx_wait(&o.jc);
    UT_EQ_INT(jobctx_back(&o.jc), 1); /* one came back while the job is on */
    bus_cancels(&job);
    UT_EQ_INT(o.stops, 1);
    UT_EQ_INT(o.releases, 0); /* one still owed */
    UT_EQ_INT(jobctx_back(&o.jc), 0);
    UT_EQ_INT(o.releases, 1);
    UT_EQ_INT(o.stops, 1);
}

static void test_forget_does_not_release(void)
{
    /* stop() cancels a request that never calls back: forgotten, and the
     * release comes when the cancel is over, once */
    struct owner o;
    struct bus_job job;
    start(&o, &job);
    jobctx_wait(&o.jc);
    jobctx_forget(&o.jc);
    UT_EQ_INT(o.releases, 0);
    bus_cancels(&job);
    UT_EQ_INT(o.releases, 1);
}

static void test_end_keeps_an_unacked_entry(void)
{
    /* ended without an ack: the bus still points at us, so no release
     * until it cancels (or the entry is acked) */
    struct owner o;
    struct bus_job job;
    start(&o, &job);
    jobctx_end(&o.jc);
    UT_EQ_INT(o.releases, 0);
    bus_cancels(&job);
    UT_EQ_INT(o.stops, 0); /* the work had ended: nothing to stop */
    UT_EQ_INT(o.releases, 1);
}

static void test_back_after_end_releases(void)
{
    struct owner o;
    struct bus_job job;
    start(&o, &job);
    jobctx_wait(&o.jc);
    bus_cancels(&job);
    UT_EQ_INT(o.releases, 0);
    jobctx_end(&o.jc); /* harmless twice */
    UT_EQ_INT(o.releases, 0);
    UT_EQ_INT(jobctx_back(&o.jc), 0);
    UT_EQ_INT(o.releases, 1);
    jobctx_end(&o.jc);
    UT_EQ_INT(o.releases, 1);
}

static const struct ut_case cases[] = {
    UT_CASE(test_start_hooks_the_cancel),
    UT_CASE(test_cancel_with_nothing_owed_releases_once),
    UT_CASE(test_cancel_waits_for_owed_callbacks),
    UT_CASE(test_forget_does_not_release),
    UT_CASE(test_end_keeps_an_unacked_entry),
    UT_CASE(test_back_after_end_releases),
    {NULL, NULL},
};

UT_MAIN(cases)
