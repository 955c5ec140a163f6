/* bus: jobs carried by Redis/Valkey streams.
 *
 * Each role has one stream, <prefix>:jobs:<role>, read through the consumer
 * group "workers" by consumers named <role>-<instance>. A job is a stream
 * entry with fields type, payload (JSON text) and ts (ms since the epoch when
 * queued). The bus reads on a connection of its own (XREADGROUP ... BLOCK),
 * hands each entry to the handler registered for its type, and XACKs it only
 * when the handler reports it finished, so a crash never loses a job: it
 * stays in the group's pending list. Promises:
 *  - at (re)connect it first re-reads its own pending entries (those it took
 *    before a crash or outage), then new ones;
 *  - at most max_inflight jobs run at once; the rest wait in the stream
 *    (a read asks only for as many as there are free slots). Entries that
 *    arrive beyond the room anyway (a reclaim and a read racing) wait in a
 *    local queue, renewed like running jobs, and start in order as soon as
 *    a slot frees, never after a reclaim timeout;
 *  - a finishing job never starts the next one or reads from inside
 *    bus_finish: that happens on the next turn of the loop, so a handler
 *    may call bus_finish from inside its own call;
 *  - while a job runs its pending entry is renewed every claim_idle_ms/3, so
 *    only jobs of a consumer that went silent become idle; those (and jobs a
 *    handler asked to retry) are reclaimed with XAUTOCLAIM after
 *    claim_idle_ms;
 *  - an entry with no type, or a type no handler accepts, goes to
 *    <prefix>:dead with a reason and is acked (logged once each);
 *  - acks that cannot be sent while Redis is away are kept and sent when it
 *    returns; entries read again meanwhile are not run twice by this process.
 * Everything runs on the loop; handlers are called from it. */
#ifndef BC_BUS_H
#define BC_BUS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "io/rds.h"

#define BUS_GROUP "workers"
#define BUS_MAX_STREAMS 4

struct bus;

/* A job being processed. Fields are owned by the bus and valid until
 * bus_finish(job, ...) returns. */
struct bus_job {
    const char *id;        /* stream entry id */
    const char *role;      /* role whose stream it came from */
    const char *type;
    const char *payload;   /* NUL-terminated */
    size_t payload_len;
    int64_t queued_ms;     /* wall clock when queued (0 if unknown) */
    int redelivered;       /* read from a pending list: it may have run before */
    int lease_lost;        /* another consumer owns it now: do not answer */
    int lease_unsure;      /* the process stood still: hold any answer until
                            * the next renewal confirms (clears) or loses it */
    /* Set by a handler that holds resources (timers, transfers) for the job:
     * bus_close calls cancel(job, cancel_arg) for each job still running, and
     * the handler releases them there and must never touch the job again: the
 * bus frees it when cancel returns (calling bus_finish inside cancel is a
 * harmless no-op, calling it later is a use after free). */
    void (*cancel)(struct bus_job *job, void *arg);
    void *cancel_arg;
};

enum bus_result {
    BUS_DONE = 0, /* finished: ack */
    BUS_FAILED,   /* finished unsuccessfully (the user was told): ack, count as failed */
    BUS_RETRY,    /* not finished: leave pending, run again after claim_idle_ms */
};

/* Called on the loop for each job; must eventually call bus_finish exactly
 * once (from inside or later; from inside, the next job still starts only
 * on the next turn of the loop). */
typedef void bus_handler(struct bus *b, struct bus_job *job, void *arg);
typedef void bus_add_cb(int status, const char *id, void *arg);

struct bus_opts {
    const char *redis_url;
    const char *prefix;
    const char *consumer;     /* "<role>-<instance>" */
    int stream_maxlen;
    int max_inflight;
    int block_ms;
    int claim_idle_ms;
    int renew_ms;             /* lease renewal period; 0 or more than claim_idle_ms/3: claim_idle_ms/3 */
    /* every finished job (not retries): its role, type, result and run time */
    void (*on_finish)(const char *role, const char *type, enum bus_result r, uint64_t ms, void *arg);
    void *finish_arg;
};

struct bus_stats {
    uint64_t processed; /* finished with BUS_DONE */
    uint64_t failed;    /* BUS_FAILED */
    uint64_t retried;   /* BUS_RETRY */
    uint64_t dead;      /* dead-lettered */
    uint64_t reclaimed; /* taken over with XAUTOCLAIM */
    unsigned inflight;
};

/* cmd is the shared command connection (acks, XADD, renewals); the bus
 * opens its own connection for blocking reads. Strings in o are copied. */
int bus_new(uv_loop_t *loop, struct rds *cmd, const struct bus_opts *o, struct bus **out, char *err,
            size_t errlen);
/* Register fn for jobs of this type (copied), from any role's stream.
 * -EEXIST if taken. */
int bus_register(struct bus *b, const char *type, bus_handler *fn, void *arg);
/* The same for one role's stream only; it wins over a handler for any role
 * (an instance serving several roles has one handler per role). */
int bus_register_role(struct bus *b, const char *role, const char *type, bus_handler *fn, void *arg);
/* Start consuming role's stream (creates the group if needed), or resume
 * one handed back. Takes effect at once, also while a read is blocked.
 * -EEXIST when already consuming it. */
int bus_consume(struct bus *b, const char *role);
/* Stop reading role's stream (hand it back): no new entries are taken and
 * none reclaimed; jobs of it already running finish and are acked.
 * -ENOENT when not consuming it. */
int bus_release(struct bus *b, const char *role);
/* 1 when role's stream is being read. */
int bus_consuming(const struct bus *b, const char *role);
/* The roles being read, comma-separated ("admin,chat"), into out. */
void bus_roles(const struct bus *b, char *out, size_t len);
/* Take the entries pending on consumer dead in role's stream that were idle
 * at least min_idle_ms, and run them (as redelivered), as many as there is
 * room for. Returns 0 or an error (-ENOENT not consuming, -EBUSY no room). */
int bus_claim_from(struct bus *b, const char *role, const char *dead, int min_idle_ms);
/* The job's answer reached the user: remember it (24 h) so that if the
 * process dies before the ack, the redelivered entry is acked without
 * being run again. Redelivered entries are checked before their handler
 * runs. */
void bus_mark_done(struct bus_job *job);
/* Queue a job on role's stream (XADD with approximate MAXLEN). cb may be
 * NULL; if it returns an error cb never runs. */
int bus_add(struct bus *b, const char *role, const char *type, const char *payload, size_t len,
            bus_add_cb *cb, void *arg);
void bus_finish(struct bus_job *job, enum bus_result r, const char *reason);
/* Call right before answering. The renewal timer notices a stall (the
 * process stopped or starved) only when it runs, but after a stop the
 * replies that were waiting (a model's last chunk) run first: this checks
 * with a fresh clock and, after a stall, marks every job lease_unsure
 * (logged as the timer would) so the caller holds its answer. Then read
 * job->lease_lost and job->lease_unsure as usual. */
void bus_job_recheck(struct bus_job *job);
/* Tell the bus the command connection came up (flushes kept acks). */
void bus_cmd_up(struct bus *b);
/* The job reader is connected and its groups exist. */
int bus_reader_up(const struct bus *b);
void bus_stats(const struct bus *b, struct bus_stats *out);
/* Stop taking jobs; done(arg) once none are in flight (maybe immediately,
 * from the loop). Jobs still running keep running. */
void bus_drain(struct bus *b, void (*done)(void *arg), void *arg);
/* Key of role's stream: "<prefix>:jobs:<role>" into out. */
void bus_stream_key(const struct bus *b, const char *role, char *out, size_t len);
/* Close: in-flight jobs are abandoned unacked (they stay pending for a
 * later reclaim); their handlers must not call bus_finish after this.
 * done(arg) runs from the loop once the bus is freed, which waits for the
 * replies to its commands still on cmd (closing cmd first completes them). */
void bus_close(struct bus *b, void (*done)(void *arg), void *arg);

#endif
