#include "service/jobctx.h"

#include <assert.h>

static void settle(struct jobctx *jc)
{
    /* the bus still points at us through job->cancel until it is acked
     * or cancelled: never free before */
    if (!jc->ended || jc->pending || jc->job || jc->released)
        return;
    jc->released = 1;
    jc->release(jc->owner);
}

static void on_cancel(struct bus_job *job, void *arg)
{
    (void)job;
    struct jobctx *jc = arg;
    jc->job = NULL; /* the bus frees it when we return */
    int was_ended = jc->ended;
    jc->ended = 1;
    if (!was_ended && jc->stop)
        jc->stop(jc->owner);
    settle(jc);
}

void jobctx_start(struct jobctx *jc, struct bus_job *job, void (*stop)(void *owner),
                  void (*release)(void *owner), void *owner)
{
    *jc = (struct jobctx){.job = job, .stop = stop, .release = release, .owner = owner};
    if (job) {
        job->cancel = on_cancel;
        job->cancel_arg = jc;
    }
}

void jobctx_wait(struct jobctx *jc)
{
    assert(!jc->released);
    jc->pending++;
}

int jobctx_back(struct jobctx *jc)
{
    assert(jc->pending > 0);
    jc->pending--;
    if (!jc->ended)
        return 1;
    settle(jc);
    return 0;
}

void jobctx_forget(struct jobctx *jc)
{
    assert(jc->pending > 0);
    jc->pending--;
}

void jobctx_ack(struct jobctx *jc, enum bus_result r, const char *why)
{
    struct bus_job *job = jc->job;
    if (!job)
        return;
    jc->job = NULL;
    job->cancel = NULL;
    bus_finish(job, r, why);
}

void jobctx_finish(struct jobctx *jc, enum bus_result r, const char *why)
{
    jobctx_ack(jc, r, why);
    jobctx_end(jc);
}

void jobctx_end(struct jobctx *jc)
{
    jc->ended = 1;
    settle(jc);
}

int jobctx_ours(const struct jobctx *jc)
{
    return jc->job && !jc->job->lease_lost;
}
