/* jobctx: the lifetime of one job's working state, the same for every role.
 *
 * A role's handler allocates its own struct for a bus job, embeds a struct
 * jobctx in it, and from then on asks the jobctx three questions instead of
 * keeping its own flags:
 *
 *   - is the job still wanted?       jobctx_back() after each callback
 *   - is the stream entry still ours? jc->job (NULL once acked or cancelled)
 *   - may the struct be freed now?    never the handler's question: release()
 *                                     runs exactly once, when the work is
 *                                     over and no callback is owed any more.
 *
 * Owed callbacks. Before starting anything that will call back (a Redis
 * command, a provider call, a REST edit, a download), call jobctx_wait();
 * the callback starts with `if (!jobctx_back(jc)) return;`. Something that
 * is cancelled without calling back (reply_cancel, ixjob_edit_cancel) is
 * taken off with jobctx_forget() by whoever cancelled it.
 *
 * Ending. jobctx_finish() acks the stream entry with the result and ends the
 * work. jobctx_ack() acks the entry but lets the work go on (a video whose
 * row in PostgreSQL now carries the job); jobctx_end() then ends it.
 *
 * Cancel. When the bus closes with the job in flight, the jobctx clears
 * jc->job, ends the work and calls the handler's stop() once, which cancels
 * what is in flight (each owed callback still comes back, or is forgotten).
 *
 * release() may free at once or start an asynchronous close (uv_close of a
 * timer) and free in its callback; it is never called synchronously from
 * jobctx_start. Single-threaded: everything runs on the loop. */
#ifndef BC_JOBCTX_H
#define BC_JOBCTX_H

#include "service/bus.h"

struct jobctx {
    struct bus_job *job;         /* the stream entry; NULL once acked or cancelled */
    int pending;                 /* callbacks still owed to us */
    int ended;                   /* no more work will start */
    int released;                /* release() ran */
    void (*stop)(void *owner);   /* bus closing: cancel what is in flight (may be NULL) */
    void (*release)(void *owner);
    void *owner;
};

/* Take the job: from now on a closing bus reaches stop() and release().
 * job may be NULL for work that no stream entry carries (a video resumed
 * from its row after a restart). */
void jobctx_start(struct jobctx *jc, struct bus_job *job, void (*stop)(void *owner),
                  void (*release)(void *owner), void *owner);

/* One more callback is owed (call before starting the request). */
void jobctx_wait(struct jobctx *jc);

/* An owed callback came back. Returns 1 when the work goes on; 0 when it
 * has ended (the owner may be freed by this call: touch nothing after). */
int jobctx_back(struct jobctx *jc);

/* An owed callback will not come: its request was cancelled without one.
 * Does not release (the caller is still using the owner). */
void jobctx_forget(struct jobctx *jc);

/* Ack the stream entry with r (why: a failure's reason, may be NULL) and end
 * the work. The owner may be freed by this call. */
void jobctx_finish(struct jobctx *jc, enum bus_result r, const char *why);

/* Ack the stream entry, keep working (no-op when it is not ours any more). */
void jobctx_ack(struct jobctx *jc, enum bus_result r, const char *why);

/* End the work. The owner is released once nothing is owed and the stream
 * entry was acked (jobctx_ack) or cancelled by the closing bus: an entry
 * left unacked stays pending for a later consumer. The owner may be freed
 * by this call. */
void jobctx_end(struct jobctx *jc);

/* 1 when the stream entry is ours and no other consumer took it over. */
int jobctx_ours(const struct jobctx *jc);

#endif
