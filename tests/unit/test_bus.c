/* Unit tests for bus, against a real redis-server (never a mock).
 *
 * TEST_REDIS_URL names the shared server (tests/run.py exports it). Cases
 * run in parallel on it, so each one uses its own prefix "t<pid>_<case>"
 * (streams <prefix>:jobs:<role>, <prefix>:dead) and deletes its keys at
 * the end, also when it fails (atexit). Each bus gets its own command
 * connection, as in a role process, whose state callback tells the bus
 * when it is up (what core.c does). Raw checks and the "other consumers"
 * (a dead one that never acks, a thief) use a blocking hiredis context,
 * which is fine in test code. The loop runs under a guard timer
 * (ut_loop.h) so a case waiting for something that never happens fails
 * instead of hanging, and every case closes everything and checks that the
 * loop closes with no handle left (ASan/LSan stay clean). */
#include <errno.h>
#include <signal.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "service/bus.h"
#include "service/jobctx.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "io/rds.h"
#include "ut.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_redis.h"
#include "ut_sys.h"

#define ROLE "role"

static uv_loop_t loop;
static struct utloop lp;
static char shared_url[512];
static char shared_host[256];
static int shared_port;
static char prefix[64]; /* "t<pid>_<case>" */
static char stream[128]; /* <prefix>:jobs:role */
static char dead_key[128];
static struct utredis_srv *own; /* a redis-server of this case's own, for a case that has to stop Redis */

/* ---- the loop ----------------------------------------------------------- */

#define WAIT_FOR(cond, ms) UTLOOP_WAIT_FOR(&lp, cond, ms)
#define HOLDS_FOR(cond, ms) UTLOOP_HOLDS_FOR(&lp, cond, ms)

static void run_for(int ms)
{
    utloop_run_for(&lp, ms);
}

/* BOT_TIMEOUT_SCALE (a slow runner), else 1. */
static double tscale(void)
{
    const char *s = getenv("BOT_TIMEOUT_SCALE");
    double v = s ? atof(s) : 0;
    return v > 0 ? v : 1.0;
}

/* ---- raw blocking client ---------------------------------------------------- */

static redisContext *rawc;

static redisContext *raw_conn(void)
{
    if (!rawc)
        rawc = utredis_connect(shared_host, shared_port, 5000);
    return rawc;
}

/* A command on the shared server; the caller frees the reply. */
#define RAW(...) utredis_cmd(raw_conn(), __VA_ARGS__, (const char *)NULL)

static void raw_void(redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR)
        UT_FAIL("raw command: %s", r->str);
    freeReplyObject(r);
}

/* XPENDING summary: entries pending in the group (0 if no group), and how
 * many of them belong to consumer (when given). */
static long long pending(const char *consumer)
{
    redisReply *r = RAW("XPENDING", stream, BUS_GROUP);
    long long n = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 4) {
        if (!consumer) {
            n = r->element[0]->integer;
        } else if (r->element[3]->type == REDIS_REPLY_ARRAY) {
            for (size_t i = 0; i < r->element[3]->elements; i++) {
                const redisReply *c = r->element[3]->element[i];
                if (!strcmp(c->element[0]->str, consumer))
                    n = strtoll(c->element[1]->str, NULL, 10);
            }
        }
    }
    freeReplyObject(r);
    return n;
}

static long long raw_int(redisReply *r)
{
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return v;
}

/* XADD a job as another process would; id into out. */
static void raw_add(const char *type, const char *payload, char *out, size_t len)
{
    char ts[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)clock_wall_ms());
    redisReply *r = type ? RAW("XADD", stream, "*", "type", type, "payload", payload, "ts", ts)
                         : RAW("XADD", stream, "*", "payload", payload, "ts", ts);
    UT_ASSERT(r->type == REDIS_REPLY_STRING);
    if (out)
        snprintf(out, len, "%s", r->str);
    freeReplyObject(r);
}

/* XADD two jobs in one MULTI/EXEC, so a blocked reader sees both at once. */
static void raw_add_two(char *id1, char *id2, size_t len)
{
    char ts[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)clock_wall_ms());
    raw_void(RAW("MULTI"));
    freeReplyObject(RAW("XADD", stream, "*", "type", "t.job", "payload", "{\"n\":\"b\"}", "ts", ts));
    freeReplyObject(RAW("XADD", stream, "*", "type", "t.job", "payload", "{\"n\":\"c\"}", "ts", ts));
    redisReply *r = RAW("EXEC");
    UT_ASSERT(r->type == REDIS_REPLY_ARRAY && r->elements == 2);
    snprintf(id1, len, "%s", r->element[0]->str);
    snprintf(id2, len, "%s", r->element[1]->str);
    freeReplyObject(r);
}

static void raw_group(void)
{
    redisReply *r = RAW("XGROUP", "CREATE", stream, BUS_GROUP, "0", "MKSTREAM");
    UT_ASSERT(r->type == REDIS_REPLY_STATUS || (r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "BUSYGROUP", 9)));
    freeReplyObject(r);
}

/* Read new entries as consumer and never ack them (a consumer that dies). */
static size_t raw_take(const char *consumer)
{
    redisReply *r = RAW("XREADGROUP", "GROUP", BUS_GROUP, consumer, "COUNT", "100", "STREAMS", stream, ">");
    size_t n = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1)
        n = r->element[0]->element[1]->elements;
    freeReplyObject(r);
    return n;
}

static void cleanup_keys(void)
{
    utredis_del_prefix(shared_host, shared_port, 1u << 0, prefix);
}

/* ---- per-case environment ---------------------------------------------- */

static void env_setup(const char *name)
{
    static int registered;
    utlog_setup("test", "bus", LOG_WARN);
    utredis_shared(shared_host, &shared_port);
    snprintf(shared_url, sizeof(shared_url), "redis://%s:%d/0", shared_host, shared_port);
    snprintf(prefix, sizeof(prefix), "t%d_%s", (int)getpid(), name);
    snprintf(stream, sizeof(stream), "%s:jobs:%s", prefix, ROLE);
    snprintf(dead_key, sizeof(dead_key), "%s:dead", prefix);
    if (!registered++)
        atexit(cleanup_keys); /* own servers: ut_redis kills them at exit */
    UT_EQ_INT(uv_loop_init(&loop), 0);
    utloop_init(&lp, &loop, 20);
}

static void env_teardown(void)
{
    utlog_stop(LOG_WARN);
    utloop_shutdown(&lp); /* every handle of every bus and rds was released */
    if (rawc) {
        redisFree(rawc);
        rawc = NULL;
    }
    utredis_kill_all();
    own = NULL;
    cleanup_keys();
}

/* ---- handlers ---------------------------------------------------------------- */

/* A bus as a role process has it: its own command connection. */
struct tb {
    struct rds *cmd;
    struct bus *bus;
    int cmd_ups;
    int bus_closed, cmd_closed;
};

static void on_flag(void *arg)
{
    (*(int *)arg)++;
}

static struct tb *close_in_handler; /* the next handler call closes this bus */

#define MAXCALLS 64

enum hmode {
    H_HOLD,       /* keep the job; the case finishes it */
    H_DONE,       /* finish at once with BUS_DONE */
    H_FAILED,     /* finish at once with BUS_FAILED */
    H_RETRY_ONCE, /* first delivery: BUS_RETRY; later ones: BUS_DONE */
    H_TIMED,      /* finish with BUS_DONE after run_ms */
    H_RETRY_HOLD, /* the very first call: BUS_RETRY; all later ones: hold */
    H_ALTERNATE,  /* even calls finish at once, odd ones after run_ms */
};

struct call {
    struct bus *bus;
    struct bus_job *job; /* while held */
    char id[48];
    char type[64];
    char role[32];
    char payload[512];
    size_t payload_len;
    int64_t queued_ms;
    int redelivered;
    int lease_lost_at_finish;
    uint64_t at_ms; /* monotonic */
};

/* What one handler (registered on one or more buses) saw. */
struct rec {
    enum hmode mode;
    int run_ms;
    int calls, running, max_running, cancels;
    struct call c[MAXCALLS];
    uv_timer_t timers[MAXCALLS];
    int timers_init;
};

static int rec_count_id(const struct rec *r, const char *id)
{
    int n = 0;
    for (int i = 0; i < r->calls; i++)
        n += !strcmp(r->c[i].id, id);
    return n;
}

static void finish_call(struct rec *r, int i, enum bus_result res)
{
    struct call *c = &r->c[i];
    UT_ASSERT(c->job != NULL);
    struct bus_job *job = c->job;
    c->job = NULL;
    c->lease_lost_at_finish = job->lease_lost;
    job->cancel = NULL;
    r->running--;
    bus_finish(job, res, res == BUS_FAILED ? "the test says so" : NULL);
}

/* Finish the first held job (of any bus); returns its call index. */
static int finish_one(struct rec *r, enum bus_result res)
{
    for (int i = 0; i < r->calls; i++)
        if (r->c[i].job) {
            finish_call(r, i, res);
            return i;
        }
    UT_FAIL("no job is held");
}

static void on_cancel(struct bus_job *job, void *arg)
{
    struct rec *r = arg;
    r->cancels++;
    for (int i = 0; i < r->calls; i++)
        if (r->c[i].job == job) {
            r->c[i].job = NULL;
            r->running--;
        }
    /* documented as a no-op once bus_close has begun */
    bus_finish(job, BUS_DONE, NULL);
}

static void on_timed(uv_timer_t *t)
{
    struct rec *r = t->data;
    int i = (int)(t - r->timers);
    finish_call(r, i, BUS_DONE);
}

static void on_job(struct bus *b, struct bus_job *job, void *arg)
{
    struct rec *r = arg;
    if (r->calls == MAXCALLS)
        UT_FAIL("more than %d jobs ran", MAXCALLS);
    int i = r->calls++;
    struct call *c = &r->c[i];
    memset(c, 0, sizeof(*c));
    c->bus = b;
    snprintf(c->id, sizeof(c->id), "%s", job->id);
    snprintf(c->type, sizeof(c->type), "%s", job->type);
    snprintf(c->role, sizeof(c->role), "%s", job->role);
    UT_ASSERT(job->payload_len < sizeof(c->payload));
    memcpy(c->payload, job->payload, job->payload_len);
    UT_EQ_INT(job->payload[job->payload_len], '\0');
    c->payload_len = job->payload_len;
    c->queued_ms = job->queued_ms;
    c->redelivered = job->redelivered;
    c->at_ms = utsys_mono_ms();
    c->job = job;
    r->running++;
    if (r->running > r->max_running)
        r->max_running = r->running;
    job->cancel = on_cancel;
    job->cancel_arg = r;
    if (close_in_handler) {
        struct tb *t = close_in_handler;
        close_in_handler = NULL;
        UT_ASSERT(t->bus == b);
        t->bus = NULL;
        bus_close(b, on_flag, &t->bus_closed); /* cancels this very job */
        UT_ASSERT(c->job == NULL);
        return;
    }
    switch (r->mode) {
    case H_HOLD:
        break;
    case H_DONE:
        finish_call(r, i, BUS_DONE);
        break;
    case H_FAILED:
        finish_call(r, i, BUS_FAILED);
        break;
    case H_RETRY_ONCE:
        finish_call(r, i, rec_count_id(r, c->id) == 1 ? BUS_RETRY : BUS_DONE);
        break;
    case H_RETRY_HOLD:
        if (i == 0)
            finish_call(r, i, BUS_RETRY);
        break;
    case H_ALTERNATE:
        if (i % 2 == 0) {
            finish_call(r, i, BUS_DONE);
            break;
        }
        /* fall through */
    case H_TIMED:
        if (!r->timers_init) {
            for (int k = 0; k < MAXCALLS; k++) {
                uv_timer_init(&loop, &r->timers[k]);
                r->timers[k].data = r;
            }
            r->timers_init = 1;
        }
        uv_timer_start(&r->timers[i], on_timed, (uint64_t)r->run_ms, 0);
        break;
    }
}

static void rec_release(struct rec *r)
{
    if (!r->timers_init)
        return;
    for (int k = 0; k < MAXCALLS; k++)
        uv_close((uv_handle_t *)&r->timers[k], NULL);
    r->timers_init = 0;
}

/* ---- a bus as a role process has it ----------------------------------------- */

static void on_cmd_state(struct rds *r, int up, void *arg)
{
    (void)r;
    struct tb *t = arg;
    if (up) {
        t->cmd_ups++;
        if (t->bus)
            bus_cmd_up(t->bus);
    }
}

static struct bus_opts default_opts(void)
{
    struct bus_opts o = {.redis_url = shared_url,
                         .prefix = prefix,
                         .consumer = "role-1",
                         .stream_maxlen = 1000,
                         .max_inflight = 8,
                         .block_ms = 500,
                         .claim_idle_ms = 1000};
    return o;
}

/* Open the command connection and the bus, register "t.job" (and more
 * types when given), consume ROLE and wait until jobs can flow. */
static int cmd_stall_ms; /* stall_timeout_ms of the command connections (0: default) */

static void tb_open(struct tb *t, const struct bus_opts *o, struct rec *r)
{
    memset(t, 0, sizeof(*t));
    char err[200] = "";
    struct rds_opts ro = {.url = o->redis_url, .name = "cmd", .connect_timeout_ms = 500,
                          .stall_timeout_ms = cmd_stall_ms};
    UT_EQ_INT(rds_new(&loop, &ro, on_cmd_state, t, &t->cmd, err, sizeof(err)), 0);
    int rc = bus_new(&loop, t->cmd, o, &t->bus, err, sizeof(err));
    if (rc)
        UT_FAIL("bus_new: %s: %s", bc_strerror(rc), err);
    UT_EQ_INT(bus_register(t->bus, "t.job", on_job, r), 0);
    UT_EQ_INT(bus_register(t->bus, "t.job", on_job, r), -EEXIST);
    UT_EQ_INT(bus_consume(t->bus, ROLE), 0);
    UT_EQ_INT(bus_consume(t->bus, ROLE), -EEXIST);
    WAIT_FOR(t->cmd_ups >= 1 && (!t->bus || bus_reader_up(t->bus)), 10000);
}

/* Close as core.c does: the command connection first, then the bus. */
static void tb_close(struct tb *t)
{
    if (t->cmd) {
        rds_close(t->cmd, on_flag, &t->cmd_closed);
        t->cmd = NULL;
    }
    if (t->bus) {
        bus_close(t->bus, on_flag, &t->bus_closed);
        t->bus = NULL;
    }
    WAIT_FOR(t->cmd_closed == 1 && t->bus_closed == 1, 5000);
}

struct added {
    int called, status;
    char id[48];
};

static void on_added(int status, const char *id, void *arg)
{
    struct added *a = arg;
    a->called++;
    a->status = status;
    snprintf(a->id, sizeof(a->id), "%s", id ? id : "");
}

/* bus_add and wait for its confirmation. */
static void add_wait(struct tb *t, const char *type, const char *payload, size_t len, struct added *a)
{
    memset(a, 0, sizeof(*a));
    UT_EQ_INT(bus_add(t->bus, ROLE, type, payload, len, on_added, a), 0);
    WAIT_FOR(a->called, 5000);
    UT_EQ_INT(a->called, 1);
    UT_EQ_INT(a->status, 0);
    UT_ASSERT(a->id[0] != '\0');
}

static struct bus_stats stats(const struct tb *t)
{
    struct bus_stats s;
    bus_stats(t->bus, &s);
    return s;
}

/* ---- cases ------------------------------------------------------------------ */

static void test_dispatch_fields_then_ack(void)
{
    env_setup("dispatch");
    struct rec r = {.mode = H_HOLD};
    struct bus_opts o = default_opts();
    struct tb t;
    tb_open(&t, &o, &r);
    char key[160];
    bus_stream_key(t.bus, ROLE, key, sizeof(key));
    UT_EQ_STR(key, stream);

    static const char korean[] = "{\"text\":\"안녕하세요, 세계! 오늘 날씨는 어때요?\",\"emoji\":\"🎉\"}";
    static const char binary[] = "a\0b\xed\x95\x9c";
    int64_t before = clock_wall_ms();
    struct added a1, a2;
    add_wait(&t, "t.job", korean, strlen(korean), &a1);
    add_wait(&t, "t.job", binary, sizeof(binary) - 1, &a2);
    int64_t after = clock_wall_ms();
    WAIT_FOR(r.calls == 2, 5000);

    const struct call *c1 = &r.c[0], *c2 = &r.c[1];
    UT_EQ_STR(c1->id, a1.id);
    UT_EQ_STR(c1->type, "t.job");
    UT_EQ_STR(c1->role, ROLE);
    UT_EQ_INT(c1->payload_len, strlen(korean));
    UT_EQ_STR(c1->payload, korean);
    UT_ASSERT(c1->queued_ms >= before && c1->queued_ms <= after);
    UT_EQ_INT(c1->redelivered, 0);
    UT_EQ_STR(c2->id, a2.id);
    UT_EQ_INT(c2->payload_len, sizeof(binary) - 1);
    UT_ASSERT(!memcmp(c2->payload, binary, sizeof(binary) - 1));
    UT_EQ_INT(stats(&t).inflight, 2);

    /* not acked while the handlers run */
    run_for(300);
    UT_EQ_INT(pending(NULL), 2);
    UT_EQ_INT(pending("role-1"), 2);
    UT_EQ_INT(r.calls, 2);

    finish_call(&r, 0, BUS_DONE);
    WAIT_FOR(pending(NULL) == 1, 5000);
    finish_call(&r, 1, BUS_DONE);
    WAIT_FOR(pending(NULL) == 0, 5000);
    struct bus_stats s = stats(&t);
    UT_EQ_INT(s.processed, 2);
    UT_EQ_INT(s.failed + s.retried + s.dead + s.reclaimed, 0);
    UT_EQ_INT(s.inflight, 0);
    run_for(1500); /* past claim_idle_ms: nothing comes back */
    UT_EQ_INT(r.calls, 2);
    tb_close(&t);
    env_teardown();
}

static void test_max_inflight(void)
{
    env_setup("inflight");
    struct rec r = {.mode = H_HOLD};
    struct bus_opts o = default_opts();
    o.max_inflight = 3;
    struct tb t;
    tb_open(&t, &o, &r);
    struct added a[10];
    for (int i = 0; i < 10; i++) {
        char p[32];
        snprintf(p, sizeof(p), "{\"n\":%d}", i);
        add_wait(&t, "t.job", p, strlen(p), &a[i]);
    }
    int finished = 0;
    while (finished < 10) {
        int expect = 10 - finished < 3 ? 10 - finished : 3;
        WAIT_FOR(r.running == expect, 5000);
        HOLDS_FOR(r.running == expect, 300); /* no more than that start */
        UT_EQ_INT(stats(&t).inflight, expect);
        finish_one(&r, BUS_DONE);
        finished++;
    }
    WAIT_FOR(pending(NULL) == 0, 5000);
    UT_EQ_INT(r.calls, 10);
    UT_EQ_INT(r.max_running, 3);
    for (int i = 0; i < 10; i++)
        UT_EQ_INT(rec_count_id(&r, a[i].id), 1);
    /* in stream order */
    for (int i = 0; i < 10; i++)
        UT_EQ_STR(r.c[i].id, a[i].id);
    UT_EQ_INT(stats(&t).processed, 10);
    tb_close(&t);
    env_teardown();
}

static void test_max_inflight_with_reclaim(void)
{
    env_setup("inflightclaim");
    /* A reclaim (XAUTOCLAIM on the command connection) lands while a read
     * asked for as many entries as there was room for before it: the two
     * together must still not run more than max_inflight jobs. */
    struct rec r = {.mode = H_RETRY_HOLD};
    struct bus_opts o = default_opts();
    o.max_inflight = 2;
    o.block_ms = 5000; /* the read stays on the wire with COUNT 2 */
    struct tb t;
    tb_open(&t, &o, &r);
    struct added a;
    char b[48], c[48];
    /* a is retried from inside its handler: nothing runs, so the next
     * read asks for 2 and blocks; then a comes back after claim_idle_ms */
    add_wait(&t, "t.job", "{\"n\":\"a\"}", 9, &a);
    WAIT_FOR(r.calls == 2, 5000);
    UT_EQ_STR(r.c[1].id, a.id);
    UT_EQ_INT(r.c[1].redelivered, 1);
    UT_EQ_INT(r.running, 1);
    raw_add_two(b, c, sizeof(b)); /* the read still asks for 2 */
    run_for(500);
    UT_ASSERT(r.max_running <= 2);
    /* finish whatever runs until all three are done */
    while (rec_count_id(&r, b) == 0 || rec_count_id(&r, c) == 0 || r.running) {
        WAIT_FOR(r.running > 0, 5000);
        finish_one(&r, BUS_DONE);
        run_for(50);
        UT_ASSERT(r.max_running <= 2);
    }
    WAIT_FOR(pending(NULL) == 0, 5000);
    UT_EQ_INT(rec_count_id(&r, a.id), 2);
    UT_EQ_INT(rec_count_id(&r, b), 1);
    UT_EQ_INT(rec_count_id(&r, c), 1);
    UT_ASSERT(r.max_running <= 2);
    tb_close(&t);
    env_teardown();
}

/* Back-pressure: with every slot taken, what was read beyond the room there
 * was must start as soon as a slot frees, not after a reclaim. Handlers
 * that finish from inside the dispatch (every other job here) used to make
 * the bus send a new read in the middle of a batch; the entries it brought
 * found no room and sat pending until XAUTOCLAIM, claim_idle_ms later. */
static void test_back_pressure_never_waits_for_a_reclaim(void)
{
    env_setup("backpressure");
    enum { N = 50, WORK_MS = 20 };
    struct rec r = {.mode = H_ALTERNATE, .run_ms = WORK_MS};
    struct bus_opts o = default_opts();
    o.max_inflight = 2;
    o.claim_idle_ms = 15000; /* a stall would show as a 7.5 s+ wait */
    struct tb t;
    tb_open(&t, &o, &r);
    char ids[N][48];
    for (int i = 0; i < N; i++) {
        char p[32];
        snprintf(p, sizeof(p), "{\"n\":%d}", i);
        raw_add("t.job", p, ids[i], sizeof(ids[i]));
    }
    uint64_t t0 = utsys_mono_ms();
    int slack = (int)(1000 * tscale());
    /* all of them in about their work (25 jobs x 20 ms run one at a time),
     * far below the reclaim period */
    WAIT_FOR(r.calls == N && r.running == 0, (N / 2) * WORK_MS + 2 * slack);
    UT_ASSERT(r.max_running <= 2);
    /* none waited longer than the work of those before it */
    int work_before = 0;
    for (int i = 0; i < N; i++) {
        int waited = (int)(r.c[i].at_ms - t0);
        if (waited > work_before + slack)
            UT_FAIL("job %d started %d ms after the start, its predecessors' work was %d ms", i, waited,
                    work_before);
        work_before += i % 2 ? WORK_MS : 0;
    }
    for (int i = 0; i < N; i++)
        UT_EQ_INT(rec_count_id(&r, ids[i]), 1);
    WAIT_FOR(pending(NULL) == 0, 5000);
    struct bus_stats s = stats(&t);
    UT_EQ_INT(s.processed, N);
    UT_EQ_INT(s.reclaimed, 0);
    rec_release(&r);
    tb_close(&t);
    env_teardown();
}

static void test_failed_is_acked_and_counted(void)
{
    env_setup("failed");
    struct rec r = {.mode = H_FAILED};
    struct bus_opts o = default_opts();
    struct tb t;
    tb_open(&t, &o, &r);
    struct added a;
    add_wait(&t, "t.job", "{}", 2, &a);
    WAIT_FOR(r.calls == 1, 5000);
    WAIT_FOR(pending(NULL) == 0, 5000);
    struct bus_stats s = stats(&t);
    UT_EQ_INT(s.failed, 1);
    UT_EQ_INT(s.processed, 0);
    UT_EQ_INT(s.inflight, 0);
    run_for(1500); /* past claim_idle_ms: it does not come back */
    UT_EQ_INT(r.calls, 1);
    tb_close(&t);
    env_teardown();
}

static void test_retry_redelivered_after_claim_idle(void)
{
    env_setup("retry");
    struct rec r = {.mode = H_RETRY_ONCE};
    struct bus_opts o = default_opts();
    struct tb t;
    tb_open(&t, &o, &r);
    struct added a;
    add_wait(&t, "t.job", "{\"try\":1}", 9, &a);
    WAIT_FOR(r.calls == 1, 5000);
    UT_EQ_INT(r.c[0].redelivered, 0);
    run_for(200);
    UT_EQ_INT(pending("role-1"), 1); /* left pending */
    UT_EQ_INT(stats(&t).retried, 1);
    WAIT_FOR(r.calls == 2, 5000);
    UT_EQ_STR(r.c[1].id, a.id);
    UT_EQ_INT(r.c[1].redelivered, 1);
    UT_EQ_STR(r.c[1].payload, "{\"try\":1}");
    UT_ASSERT(r.c[1].at_ms - r.c[0].at_ms >= 900); /* claim_idle_ms, not at once */
    WAIT_FOR(pending(NULL) == 0, 5000);
    struct bus_stats s = stats(&t);
    UT_EQ_INT(s.processed, 1);
    UT_EQ_INT(s.retried, 1);
    UT_EQ_INT(s.reclaimed, 1);
    run_for(1500);
    UT_EQ_INT(r.calls, 2);
    tb_close(&t);
    env_teardown();
}

/* Value of field name in a flat [k, v, ...] array, or NULL. */
static const char *fieldv(const redisReply *kv, const char *name)
{
    for (size_t i = 0; i + 1 < kv->elements; i += 2)
        if (!strcmp(kv->element[i]->str, name))
            return kv->element[i + 1]->str;
    return NULL;
}

static void test_dead_letters(void)
{
    env_setup("dead");
    utlog_start("test", "bus", NULL);
    struct rec r = {.mode = H_DONE};
    struct bus_opts o = default_opts();
    struct tb t;
    tb_open(&t, &o, &r);
    char unknown[48], notype[48], emptytype[48];
    raw_add("no.such.type", "{\"x\":\"한글\"}", unknown, sizeof(unknown));
    raw_add(NULL, "{\"x\":2}", notype, sizeof(notype));
    raw_add("", "{\"x\":3}", emptytype, sizeof(emptytype));
    struct added ok;
    add_wait(&t, "t.job", "{}", 2, &ok);
    WAIT_FOR(r.calls == 1 && stats(&t).dead == 3 && pending(NULL) == 0, 5000);
    UT_EQ_STR(r.c[0].id, ok.id);

    redisReply *d = RAW("XRANGE", dead_key, "-", "+");
    UT_EQ_INT(d->elements, 3);
    const char *ids[3] = {unknown, notype, emptytype};
    const char *types[3] = {"no.such.type", "", ""};
    const char *reasons[3] = {"no handler for this job type", "entry has no type field", "entry has no type field"};
    const char *payloads[3] = {"{\"x\":\"한글\"}", "{\"x\":2}", "{\"x\":3}"};
    for (int i = 0; i < 3; i++) {
        const redisReply *kv = d->element[i]->element[1];
        UT_EQ_STR(fieldv(kv, "stream"), stream);
        UT_EQ_STR(fieldv(kv, "id"), ids[i]);
        UT_EQ_STR(fieldv(kv, "type"), types[i]);
        UT_EQ_STR(fieldv(kv, "reason"), reasons[i]);
        UT_EQ_STR(fieldv(kv, "consumer"), "role-1");
        UT_EQ_STR(fieldv(kv, "payload"), payloads[i]);
    }
    freeReplyObject(d);
    run_for(1500); /* nothing comes back after claim_idle_ms */
    UT_EQ_INT(stats(&t).dead, 3);
    UT_EQ_INT(raw_int(RAW("XLEN", dead_key)), 3);
    UT_EQ_INT(r.calls, 1);
    tb_close(&t);
    const char *text = utlog_text();
    UT_CONTAINS(text, "job dead-lettered");
    env_teardown();
}

static void test_reclaim_from_dead_consumer(void)
{
    env_setup("reclaim");
    struct rec r = {.mode = H_DONE};
    raw_group();
    char ids[3][48];
    for (int i = 0; i < 3; i++) {
        char p[32];
        snprintf(p, sizeof(p), "{\"ghost\":%d}", i);
        raw_add("t.job", p, ids[i], sizeof(ids[i]));
    }
    UT_EQ_INT(raw_take("ghost-9"), 3); /* then it dies without acking */
    uint64_t taken = utsys_mono_ms();
    UT_EQ_INT(pending("ghost-9"), 3);

    struct bus_opts o = default_opts();
    o.consumer = "role-2";
    struct tb t;
    tb_open(&t, &o, &r);
    WAIT_FOR(r.calls == 3, 5000);
    for (int i = 0; i < 3; i++) {
        UT_EQ_INT(rec_count_id(&r, ids[i]), 1);
        UT_EQ_INT(r.c[i].redelivered, 1);
        UT_ASSERT(r.c[i].at_ms - taken >= 900); /* only once idle for claim_idle_ms */
    }
    WAIT_FOR(pending(NULL) == 0, 5000);
    run_for(1500);
    UT_EQ_INT(r.calls, 3);
    struct bus_stats s = stats(&t);
    UT_EQ_INT(s.reclaimed, 3);
    UT_EQ_INT(s.processed, 3);
    tb_close(&t);
    env_teardown();
}

static void test_lease_renewal_keeps_long_job(void)
{
    env_setup("lease");
    struct rec r1 = {.mode = H_TIMED, .run_ms = 3000}, r2 = {.mode = H_DONE};
    struct bus_opts o1 = default_opts(), o2 = default_opts();
    o2.consumer = "role-2";
    struct tb t1, t2;
    tb_open(&t1, &o1, &r1);
    struct added a;
    add_wait(&t1, "t.job", "{\"long\":true}", 13, &a);
    WAIT_FOR(r1.calls == 1, 5000);
    tb_open(&t2, &o2, &r2); /* alive, with its reclaim timer running */
    WAIT_FOR(r1.running == 0, 6000); /* 3 x claim_idle_ms */
    WAIT_FOR(pending(NULL) == 0, 5000);
    run_for(1500);
    UT_EQ_INT(r1.calls, 1);
    UT_EQ_INT(r2.calls, 0);
    UT_EQ_INT(r1.c[0].lease_lost_at_finish, 0);
    UT_EQ_INT(stats(&t2).reclaimed, 0);
    UT_EQ_INT(stats(&t1).processed, 1);
    tb_close(&t2);
    tb_close(&t1);
    rec_release(&r1);
    env_teardown();
}

static void test_lease_lost_to_thief(void)
{
    env_setup("leaselost");
    struct rec r = {.mode = H_HOLD};
    struct bus_opts o = default_opts();
    o.claim_idle_ms = 3000; /* our own reclaim stays out of the way */
    struct tb t;
    tb_open(&t, &o, &r);
    struct added a;
    add_wait(&t, "t.job", "{}", 2, &a);
    WAIT_FOR(r.calls == 1, 5000);
    run_for(1200); /* renewals keep it ours */
    UT_EQ_INT(r.c[0].job->lease_lost, 0);
    redisReply *x = RAW("XCLAIM", stream, BUS_GROUP, "thief", "0", a.id, "JUSTID");
    UT_EQ_INT(x->elements, 1);
    freeReplyObject(x);
    WAIT_FOR(r.c[0].job->lease_lost, 2500); /* the next renewal notices */
    UT_EQ_INT(pending("thief"), 1);
    finish_call(&r, 0, BUS_DONE);
    WAIT_FOR(stats(&t).inflight == 0, 1000);
    tb_close(&t);
    env_teardown();
}

static void test_restart_recovers_own_pending(void)
{
    env_setup("restart");
    struct rec r = {.mode = H_HOLD};
    struct bus_opts o = default_opts();
    o.claim_idle_ms = 30000; /* only the re-read of its own pending list can bring them back */
    struct tb t;
    tb_open(&t, &o, &r);
    struct added a, b;
    add_wait(&t, "t.job", "{\"n\":1}", 7, &a);
    add_wait(&t, "t.job", "{\"n\":2}", 7, &b);
    WAIT_FOR(r.calls == 2, 5000);
    tb_close(&t); /* abandons both: their cancel callbacks run */
    UT_EQ_INT(r.cancels, 2);
    UT_EQ_INT(r.running, 0);
    UT_EQ_INT(pending("role-1"), 2);

    struct rec r2 = {.mode = H_DONE};
    uint64_t t0 = utsys_mono_ms();
    tb_open(&t, &o, &r2);
    WAIT_FOR(r2.calls == 2, 5000);
    UT_ASSERT(utsys_mono_ms() - t0 < (uint64_t)ut_scale_ms(5000));
    UT_EQ_INT(rec_count_id(&r2, a.id), 1);
    UT_EQ_INT(rec_count_id(&r2, b.id), 1);
    UT_EQ_INT(r2.c[0].redelivered, 1);
    UT_EQ_INT(r2.c[1].redelivered, 1);
    WAIT_FOR(pending(NULL) == 0, 5000);
    /* new jobs still flow after the re-read */
    struct added c;
    add_wait(&t, "t.job", "{\"n\":3}", 7, &c);
    WAIT_FOR(r2.calls == 3, 5000);
    UT_EQ_INT(r2.c[2].redelivered, 0);
    UT_EQ_INT(stats(&t).reclaimed, 0);
    tb_close(&t);
    env_teardown();
}

static void test_nogroup_recovery(void)
{
    env_setup("nogroup");
    struct rec r = {.mode = H_DONE};
    struct bus_opts o = default_opts();
    struct tb t;
    tb_open(&t, &o, &r);
    struct added first;
    add_wait(&t, "t.job", "{\"before\":1}", 12, &first);
    WAIT_FOR(r.calls == 1 && pending(NULL) == 0, 5000);

    raw_void(RAW("XGROUP", "DESTROY", stream, BUS_GROUP));
    struct added later[3];
    for (int i = 0; i < 3; i++)
        add_wait(&t, "t.job", "{\"after\":1}", 11, &later[i]);
    WAIT_FOR(rec_count_id(&r, later[0].id) && rec_count_id(&r, later[1].id) && rec_count_id(&r, later[2].id),
             10000);
    WAIT_FOR(pending(NULL) == 0, 5000);
    run_for(1500);
    for (int i = 0; i < 3; i++)
        UT_EQ_INT(rec_count_id(&r, later[i].id), 1);
    UT_ASSERT(bus_reader_up(t.bus));
    tb_close(&t);
    env_teardown();
}

static void test_drain_waits_for_jobs_and_acks(void)
{
    env_setup("drain");
    struct rec r = {.mode = H_HOLD};
    struct bus_opts o = default_opts();
    o.block_ms = 5000; /* the drain has to unblock the read */
    struct tb t;
    tb_open(&t, &o, &r);
    struct added a, b, late;
    add_wait(&t, "t.job", "{\"n\":1}", 7, &a);
    add_wait(&t, "t.job", "{\"n\":2}", 7, &b);
    WAIT_FOR(r.calls == 2, 5000);
    int drained = 0;
    bus_drain(t.bus, on_flag, &drained);
    run_for(300);
    UT_EQ_INT(drained, 0);
    add_wait(&t, "t.job", "{\"n\":3}", 7, &late); /* queued, never taken */
    finish_call(&r, 0, BUS_DONE);
    run_for(300);
    UT_EQ_INT(drained, 0);
    finish_call(&r, 1, BUS_DONE);
    UT_EQ_INT(drained, 0); /* its ack is not confirmed yet */
    WAIT_FOR(drained, 5000);
    UT_EQ_INT(pending(NULL), 0); /* both acks are in */
    run_for(1500);
    UT_EQ_INT(drained, 1);
    UT_EQ_INT(r.calls, 2);
    UT_EQ_INT(rec_count_id(&r, late.id), 0);
    UT_EQ_INT(raw_int(RAW("XLEN", stream)), 3);
    tb_close(&t);
    env_teardown();
}

static void test_trimmed_pending_entry(void)
{
    env_setup("trimmed");
    utlog_start("test", "bus", NULL);
    struct rec r = {.mode = H_DONE};
    raw_group();
    char gone[48], kept[48], ghost[48];
    raw_add("t.job", "{\"gone\":1}", gone, sizeof(gone));
    raw_add("t.job", "{\"kept\":1}", kept, sizeof(kept));
    UT_EQ_INT(raw_take("role-1"), 2); /* ours, from before a crash */
    raw_add("t.job", "{\"ghost\":1}", ghost, sizeof(ghost));
    UT_EQ_INT(raw_take("ghost-9"), 1); /* someone else's, dead */
    UT_EQ_INT(raw_int(RAW("XDEL", stream, gone)), 1);
    UT_EQ_INT(raw_int(RAW("XDEL", stream, ghost)), 1);
    UT_EQ_INT(pending(NULL), 3);

    struct bus_opts o = default_opts();
    struct tb t;
    tb_open(&t, &o, &r);
    WAIT_FOR(r.calls == 1 && pending(NULL) == 0, 5000);
    UT_EQ_STR(r.c[0].id, kept);
    UT_EQ_INT(r.c[0].redelivered, 1);
    struct added a;
    add_wait(&t, "t.job", "{}", 2, &a);
    WAIT_FOR(r.calls == 2, 5000);
    UT_EQ_STR(r.c[1].id, a.id);
    run_for(1500); /* the ghost's deleted entry is dropped by XAUTOCLAIM */
    WAIT_FOR(pending(NULL) == 0, 5000);
    UT_EQ_INT(r.calls, 2);
    UT_EQ_INT(stats(&t).dead, 0);
    tb_close(&t);
    const char *text = utlog_text();
    UT_CONTAINS(text, "pending job no longer in the stream");
    UT_CONTAINS(text, gone);
    env_teardown();
}

static void test_acks_kept_while_redis_away(void)
{
    env_setup("acksaway");
    /* Redis hangs (SIGSTOP) while a job runs: the job finishes while the
     * command connection is down, so its ack cannot be sent. It is kept
     * and sent when Redis is back, and the job, which the reader finds
     * again in its pending list after reconnecting, does not run twice. */
    own = utredis_start(prefix, NULL);
    char url[128];
    utredis_url(own, NULL, 0, url, sizeof(url));
    struct rec r = {.mode = H_HOLD};
    struct bus_opts o = default_opts();
    o.redis_url = url;
    cmd_stall_ms = 300;
    struct tb t;
    tb_open(&t, &o, &r);
    struct added a, refused;
    add_wait(&t, "t.job", "{\"away\":1}", 10, &a);
    WAIT_FOR(r.calls == 1, 5000);

    utredis_signal(own, SIGSTOP);
    WAIT_FOR(!rds_up(t.cmd), 5000); /* a renewal got no answer */
    memset(&refused, 0, sizeof(refused));
    UT_EQ_INT(bus_add(t.bus, ROLE, "t.job", "{}", 2, on_added, &refused), -ENOTCONN);
    finish_call(&r, 0, BUS_DONE); /* its ack has to wait */
    /* the reader's blocked read stalls too (block_ms + 5 s): both
     * connections come back, and the reader re-reads its pending list */
    WAIT_FOR(!bus_reader_up(t.bus), 10000);
    utredis_signal(own, SIGCONT);

    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", own->port, tv);
    UT_ASSERT(c && !c->err);
    long long n = -1;
    utloop_arm(&lp, 10000);
    while (n != 0 && !lp.expired) {
        uv_run(&loop, UV_RUN_ONCE);
        redisReply *x = redisCommand(c, "XPENDING %s %s", stream, BUS_GROUP);
        UT_ASSERT(x && x->type == REDIS_REPLY_ARRAY);
        n = x->element[0]->integer;
        freeReplyObject(x);
    }
    utloop_disarm(&lp);
    UT_EQ_INT(n, 0); /* the kept ack went out */
    redisFree(c);
    WAIT_FOR(bus_reader_up(t.bus), 10000);
    run_for(1500); /* past claim_idle_ms */
    UT_EQ_INT(r.calls, 1);
    UT_EQ_INT(refused.called, 0);
    struct bus_stats s = stats(&t);
    UT_EQ_INT(s.processed, 1);
    UT_EQ_INT(s.inflight, 0);
    tb_close(&t);
    cmd_stall_ms = 0;
    env_teardown();
}

static void test_close_with_ack_on_the_wire(void)
{
    env_setup("closeack");
    /* The command connection is shared and may outlive the bus: replies to
     * the bus's commands that arrive after bus_close must be harmless. */
    struct rec r = {.mode = H_HOLD};
    struct bus_opts o = default_opts();
    struct tb t;
    tb_open(&t, &o, &r);
    struct added a;
    add_wait(&t, "t.job", "{}", 2, &a);
    WAIT_FOR(r.calls == 1, 5000);
    finish_call(&r, 0, BUS_DONE); /* XACK queued on the command connection */
    bus_close(t.bus, on_flag, &t.bus_closed);
    t.bus = NULL;
    WAIT_FOR(t.bus_closed, 5000);
    run_for(300); /* the XACK's reply arrives now */
    WAIT_FOR(pending(NULL) == 0, 1000);
    rds_close(t.cmd, on_flag, &t.cmd_closed);
    t.cmd = NULL;
    WAIT_FOR(t.cmd_closed, 5000);
    env_teardown();
}

static void test_close_from_handler(void)
{
    env_setup("closeinhandler");
    /* Two entries come in one read; the first handler closes the bus. The
     * second must not be handed to a handler of a closed bus. */
    struct rec r = {.mode = H_HOLD};
    raw_group();
    raw_add("t.job", "{\"n\":1}", NULL, 0);
    raw_add("t.job", "{\"n\":2}", NULL, 0);
    struct bus_opts o = default_opts();
    struct tb t;
    close_in_handler = &t;
    tb_open(&t, &o, &r);
    WAIT_FOR(t.bus_closed, 5000);
    run_for(200);
    UT_EQ_INT(r.calls, 1);
    UT_EQ_INT(r.cancels, 1);
    UT_EQ_INT(pending("role-1"), 2); /* both stay pending for a later reclaim */
    tb_close(&t);
    env_teardown();
}

/* ---- helpers for the cases of several streams ------------------------------ */

/* Key of role's stream in this case: "<prefix>:jobs:<role>". */
static void role_key(const char *role, char *out, size_t len)
{
    snprintf(out, len, "%s:jobs:%s", prefix, role);
}

/* pending() for any stream: entries pending in its group, or those of
 * consumer when given. */
static long long pending_in(const char *key, const char *consumer)
{
    redisReply *r = RAW("XPENDING", key, BUS_GROUP);
    long long n = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 4) {
        if (!consumer) {
            n = r->element[0]->integer;
        } else if (r->element[3]->type == REDIS_REPLY_ARRAY) {
            for (size_t i = 0; i < r->element[3]->elements; i++) {
                const redisReply *c = r->element[3]->element[i];
                if (!strcmp(c->element[0]->str, consumer))
                    n = strtoll(c->element[1]->str, NULL, 10);
            }
        }
    }
    freeReplyObject(r);
    return n;
}

/* The consumer entry id of key is pending on ("" when not pending) and
 * for how long it has been idle (ms; -1 when not pending). */
static long long pending_entry(const char *key, const char *id, char *owner, size_t len)
{
    redisReply *r = RAW("XPENDING", key, BUS_GROUP, id, id, "1");
    long long idle = -1;
    snprintf(owner, len, "%s", "");
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        const redisReply *e = r->element[0];
        snprintf(owner, len, "%s", e->element[1]->str);
        idle = e->element[2]->integer;
    }
    freeReplyObject(r);
    return idle;
}

/* raw_add for any stream. */
static void raw_add_to(const char *key, const char *type, const char *payload, char *out, size_t len)
{
    char ts[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)clock_wall_ms());
    redisReply *r = RAW("XADD", key, "*", "type", type, "payload", payload, "ts", ts);
    UT_ASSERT(r->type == REDIS_REPLY_STRING);
    snprintf(out, len, "%s", r->str);
    freeReplyObject(r);
}

/* XADD an entry and read it as consumer in one MULTI/EXEC, so that a bus
 * blocked on key never sees it as new: it is pending on consumer at once
 * (a consumer that takes a job and dies). The group must exist. */
static void raw_add_taken(const char *key, const char *consumer, char *out, size_t len)
{
    char ts[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)clock_wall_ms());
    raw_void(RAW("MULTI"));
    raw_void(RAW("XADD", key, "*", "type", "t.job", "payload", "{}", "ts", ts));
    raw_void(RAW("XREADGROUP", "GROUP", BUS_GROUP, consumer, "COUNT", "1", "STREAMS", key, ">"));
    redisReply *r = RAW("EXEC");
    UT_ASSERT(r->type == REDIS_REPLY_ARRAY && r->elements == 2);
    UT_ASSERT(r->element[0]->type == REDIS_REPLY_STRING);
    snprintf(out, len, "%s", r->element[0]->str);
    /* the read got exactly that entry */
    const redisReply *rd = r->element[1];
    UT_ASSERT(rd->type == REDIS_REPLY_ARRAY && rd->elements == 1);
    UT_EQ_INT(rd->element[0]->element[1]->elements, 1);
    UT_EQ_STR(rd->element[0]->element[1]->element[0]->element[0]->str, out);
    freeReplyObject(r);
}

/* Field name of the group "workers" of key, from XINFO GROUPS, into out
 * ("" when missing). */
static void group_field(const char *key, const char *name, char *out, size_t len)
{
    redisReply *r = RAW("XINFO", "GROUPS", key);
    snprintf(out, len, "%s", "");
    UT_ASSERT(r->type == REDIS_REPLY_ARRAY);
    for (size_t g = 0; g < r->elements; g++) {
        const redisReply *kv = r->element[g];
        if (strcmp(fieldv(kv, "name"), BUS_GROUP))
            continue;
        for (size_t i = 0; i + 1 < kv->elements; i += 2)
            if (!strcmp(kv->element[i]->str, name)) {
                const redisReply *v = kv->element[i + 1];
                if (v->type == REDIS_REPLY_INTEGER)
                    snprintf(out, len, "%lld", v->integer);
                else if (v->type == REDIS_REPLY_STRING)
                    snprintf(out, len, "%s", v->str);
            }
    }
    freeReplyObject(r);
}

/* Open the command connection and the bus only: the case registers its
 * handlers and consumes its streams, then calls tb_wait_up. */
static void tb_start(struct tb *t, const struct bus_opts *o)
{
    memset(t, 0, sizeof(*t));
    char err[200] = "";
    struct rds_opts ro = {.url = o->redis_url, .name = "cmd", .connect_timeout_ms = 500,
                          .stall_timeout_ms = cmd_stall_ms};
    UT_EQ_INT(rds_new(&loop, &ro, on_cmd_state, t, &t->cmd, err, sizeof(err)), 0);
    int rc = bus_new(&loop, t->cmd, o, &t->bus, err, sizeof(err));
    if (rc)
        UT_FAIL("bus_new: %s: %s", bc_strerror(rc), err);
}

static void tb_wait_up(struct tb *t)
{
    WAIT_FOR(t->cmd_ups >= 1 && bus_reader_up(t->bus), 10000);
}

/* Index of the last call that ran entry id of role's stream (-1 if none):
 * entry ids are per stream, two streams can have the same one. */
static int call_of(const struct rec *r, const char *role, const char *id)
{
    int at = -1;
    for (int i = 0; i < r->calls; i++)
        if (!strcmp(r->c[i].role, role) && !strcmp(r->c[i].id, id))
            at = i;
    return at;
}

static int runs_of(const struct rec *r, const char *role, const char *id)
{
    int n = 0;
    for (int i = 0; i < r->calls; i++)
        n += !strcmp(r->c[i].role, role) && !strcmp(r->c[i].id, id);
    return n;
}

/* Finish the held job of entry id of role's stream. */
static void finish_id(struct rec *r, const char *role, const char *id, enum bus_result res)
{
    int i = call_of(r, role, id);
    UT_ASSERT(i >= 0);
    finish_call(r, i, res);
}

/* ---- cases: roles, handback, claiming, done markers, stalls ----------------- */

static void test_role_handlers(void)
{
    env_setup("roles");
    /* One instance serving two roles: a handler for one role gets only
     * that role's jobs of its type, a handler for any role the rest, and
     * which one was registered first does not matter. */
    struct rec chat = {.mode = H_DONE}, any = {.mode = H_DONE};
    struct bus_opts o = default_opts();
    struct tb t;
    tb_start(&t, &o);
    UT_EQ_INT(bus_register_role(t.bus, "chat", "t.job", on_job, &chat), 0); /* role first */
    UT_EQ_INT(bus_register(t.bus, "t.job", on_job, &any), 0);
    UT_EQ_INT(bus_register(t.bus, "t.two", on_job, &any), 0); /* any role first */
    UT_EQ_INT(bus_register_role(t.bus, "chat", "t.two", on_job, &chat), 0);
    UT_EQ_INT(bus_register_role(t.bus, "chat", "t.only", on_job, &chat), 0);
    UT_EQ_INT(bus_register_role(t.bus, "chat", "t.job", on_job, &any), -EEXIST);
    UT_EQ_INT(bus_register_role(t.bus, "chat", "t.two", on_job, &chat), -EEXIST);
    UT_EQ_INT(bus_register(t.bus, "t.job", on_job, &chat), -EEXIST);
    UT_EQ_INT(bus_register_role(t.bus, "image", "t.job", on_job, &chat), 0); /* another role is free */
    UT_EQ_INT(bus_register_role(t.bus, "image", "t.job", on_job, &chat), -EEXIST);
    UT_EQ_INT(bus_consume(t.bus, "chat"), 0);
    UT_EQ_INT(bus_consume(t.bus, "admin"), 0);
    tb_wait_up(&t);

    char ck[128], ak[128], c1[48], c2[48], a1[48], a2[48], only[48];
    role_key("chat", ck, sizeof(ck));
    role_key("admin", ak, sizeof(ak));
    raw_add_to(ck, "t.job", "{\"c\":1}", c1, sizeof(c1));
    raw_add_to(ak, "t.job", "{\"a\":1}", a1, sizeof(a1));
    raw_add_to(ck, "t.two", "{\"c\":2}", c2, sizeof(c2));
    raw_add_to(ak, "t.two", "{\"a\":2}", a2, sizeof(a2));
    raw_add_to(ak, "t.only", "{\"a\":3}", only, sizeof(only)); /* chat's type on admin's stream */
    WAIT_FOR(chat.calls == 2 && any.calls == 2 && stats(&t).dead == 1 && pending_in(ck, NULL) == 0 &&
                 pending_in(ak, NULL) == 0,
             5000);
    UT_EQ_INT(runs_of(&chat, "chat", c1), 1);
    UT_EQ_INT(runs_of(&chat, "chat", c2), 1);
    UT_EQ_INT(runs_of(&any, "admin", a1), 1);
    UT_EQ_INT(runs_of(&any, "admin", a2), 1);
    for (int i = 0; i < 2; i++) {
        UT_EQ_STR(chat.c[i].role, "chat");
        UT_EQ_STR(any.c[i].role, "admin");
    }
    /* a type registered for one role only is unknown on another's stream */
    redisReply *d = RAW("XRANGE", dead_key, "-", "+");
    UT_EQ_INT(d->elements, 1);
    UT_EQ_STR(fieldv(d->element[0]->element[1], "id"), only);
    UT_EQ_STR(fieldv(d->element[0]->element[1], "stream"), ak);
    UT_EQ_STR(fieldv(d->element[0]->element[1], "reason"), "no handler for this job type");
    freeReplyObject(d);
    run_for(1500); /* past claim_idle_ms: nothing runs again */
    UT_EQ_INT(chat.calls, 2);
    UT_EQ_INT(any.calls, 2);
    tb_close(&t);
    env_teardown();
}

static void test_consume_release_while_blocked(void)
{
    env_setup("handback");
    struct rec r = {.mode = H_HOLD};
    struct bus_opts o = default_opts();
    o.block_ms = 5000; /* the read blocks far longer than any wait below */
    struct tb t;
    tb_start(&t, &o);
    UT_EQ_INT(bus_register(t.bus, "t.job", on_job, &r), 0);
    UT_EQ_INT(bus_consume(t.bus, ROLE), 0);
    tb_wait_up(&t);
    run_for(500); /* the pending re-read came back empty: a BLOCK read is on the wire now */
    char roles[64], ck[128], val[64];
    role_key("chat", ck, sizeof(ck));
    bus_roles(t.bus, roles, sizeof(roles));
    UT_EQ_STR(roles, ROLE);
    UT_EQ_INT(bus_consuming(t.bus, "chat"), 0);
    UT_EQ_INT(bus_release(t.bus, "chat"), -ENOENT);

    /* consuming a new stream interrupts the blocked read */
    uint64_t t0 = utsys_mono_ms();
    UT_EQ_INT(bus_consume(t.bus, "chat"), 0);
    UT_EQ_INT(bus_consume(t.bus, "chat"), -EEXIST);
    UT_EQ_INT(bus_consuming(t.bus, "chat"), 1);
    bus_roles(t.bus, roles, sizeof(roles));
    UT_EQ_STR(roles, ROLE ",chat");
    char j1[48];
    raw_add_to(ck, "t.job", "{\"j\":1}", j1, sizeof(j1));
    WAIT_FOR(r.calls == 1, 5000);
    UT_EQ_STR(r.c[0].id, j1);
    UT_EQ_STR(r.c[0].role, "chat");
    UT_ASSERT(r.c[0].at_ms - t0 < (uint64_t)ut_scale_ms(1000)); /* not after block_ms */

    /* hand chat back while its job j1 runs and a read is blocked again */
    run_for(300);
    UT_EQ_INT(bus_release(t.bus, "chat"), 0);
    UT_EQ_INT(bus_release(t.bus, "chat"), -ENOENT);
    UT_EQ_INT(bus_consuming(t.bus, "chat"), 0);
    UT_EQ_INT(bus_consuming(t.bus, ROLE), 1);
    bus_roles(t.bus, roles, sizeof(roles));
    UT_EQ_STR(roles, ROLE);
    run_for(300); /* the blocked read was interrupted and sent again without chat */
    char ghost[48], j2[48], j3[48];
    raw_add_taken(ck, "ghost-9", ghost, sizeof(ghost)); /* a dead consumer's, idle from now on */
    raw_add_to(ck, "t.job", "{\"j\":2}", j2, sizeof(j2));
    raw_add("t.job", "{\"j\":3}", j3, sizeof(j3)); /* the other stream still flows */
    WAIT_FOR(r.calls == 2, 5000);
    UT_EQ_STR(r.c[1].id, j3);
    UT_EQ_STR(r.c[1].role, ROLE);
    finish_id(&r, ROLE, j3, BUS_DONE);
    run_for(1500); /* past claim_idle_ms: the ghost's entry is idle enough to be reclaimed */
    UT_EQ_INT(r.calls, 2);
    UT_EQ_INT(runs_of(&r, "chat", j2), 0);
    /* j2 was never delivered to anyone: chat's group stopped at the ghost's entry */
    group_field(ck, "last-delivered-id", val, sizeof(val));
    UT_EQ_STR(val, ghost);
    UT_EQ_INT(raw_int(RAW("XLEN", ck)), 3);
    char owner[64];
    UT_EQ_INT(pending_entry(ck, j2, owner, sizeof(owner)), -1);
    /* nothing of a released stream is reclaimed */
    UT_ASSERT(pending_entry(ck, ghost, owner, sizeof(owner)) >= 1000);
    UT_EQ_STR(owner, "ghost-9");
    /* j1 still runs, and its lease is still renewed */
    long long idle = pending_entry(ck, j1, owner, sizeof(owner));
    UT_EQ_STR(owner, "role-1");
    UT_ASSERT(idle >= 0 && idle < ut_scale_ms(1000));
    UT_EQ_INT(pending_in(ck, NULL), 2);
    /* and it is acked when it finishes */
    finish_id(&r, "chat", j1, BUS_DONE);
    WAIT_FOR(pending_in(ck, "role-1") == 0, 5000);
    UT_EQ_INT(r.running, 0);

    /* taking chat again resumes it at once, reclaim included */
    t0 = utsys_mono_ms();
    UT_EQ_INT(bus_consume(t.bus, "chat"), 0);
    UT_EQ_INT(bus_consuming(t.bus, "chat"), 1);
    bus_roles(t.bus, roles, sizeof(roles));
    UT_EQ_STR(roles, ROLE ",chat");
    WAIT_FOR(runs_of(&r, "chat", j2) == 1, 5000);
    UT_ASSERT(r.c[call_of(&r, "chat", j2)].at_ms - t0 < (uint64_t)ut_scale_ms(1000));
    UT_EQ_INT(r.c[call_of(&r, "chat", j2)].redelivered, 0);
    WAIT_FOR(runs_of(&r, "chat", ghost) == 1, 5000);
    UT_EQ_INT(r.c[call_of(&r, "chat", ghost)].redelivered, 1);
    finish_id(&r, "chat", j2, BUS_DONE);
    finish_id(&r, "chat", ghost, BUS_DONE);
    WAIT_FOR(pending_in(ck, NULL) == 0 && pending(NULL) == 0, 5000);
    UT_EQ_INT(r.calls, 4);
    tb_close(&t);
    env_teardown();
}

static void test_claim_from_dead_consumer(void)
{
    env_setup("claimfrom");
    /* Entries of a consumer that died (failover) are taken over on
     * request: only that consumer's, and only those idle long enough. */
    struct rec r = {.mode = H_HOLD};
    raw_group();
    char old[48], other[48], fresh[48];
    raw_add("t.job", "{\"old\":1}", old, sizeof(old));
    UT_EQ_INT(raw_take("dead-1"), 1);
    raw_add("t.job", "{\"other\":1}", other, sizeof(other));
    UT_EQ_INT(raw_take("other-2"), 1); /* a live one's: never ours */

    struct bus_opts o = default_opts();
    o.max_inflight = 2;
    o.claim_idle_ms = 30000; /* our own XAUTOCLAIM stays out of the way */
    struct tb t;
    tb_start(&t, &o);
    UT_EQ_INT(bus_register(t.bus, "t.job", on_job, &r), 0);
    UT_EQ_INT(bus_claim_from(t.bus, ROLE, "dead-1", 0), -ENOENT); /* not consuming it yet */
    UT_EQ_INT(bus_consume(t.bus, ROLE), 0);
    tb_wait_up(&t);
    UT_EQ_INT(bus_claim_from(t.bus, "chat", "dead-1", 0), -ENOENT);
    run_for(1500); /* old and other are idle at least 1500 ms now */
    raw_add_taken(stream, "dead-1", fresh, sizeof(fresh)); /* idle ~0 */
    UT_EQ_INT(pending("dead-1"), 2);

    UT_EQ_INT(bus_claim_from(t.bus, ROLE, "dead-1", 1000), 0);
    WAIT_FOR(r.calls >= 1, 5000);
    run_for(300);
    UT_EQ_INT(rec_count_id(&r, other), 0); /* another consumer's */
    UT_EQ_INT(rec_count_id(&r, fresh), 0); /* not idle long enough */
    UT_EQ_INT(r.calls, 1);
    UT_EQ_STR(r.c[0].id, old);
    UT_EQ_STR(r.c[0].payload, "{\"old\":1}");
    UT_EQ_INT(r.c[0].redelivered, 1);
    UT_EQ_INT(pending("role-1"), 1);
    UT_EQ_INT(pending("dead-1"), 1);
    UT_EQ_INT(pending("other-2"), 1);

    run_for(1200); /* now it is */
    UT_EQ_INT(bus_claim_from(t.bus, ROLE, "dead-1", 1000), 0);
    WAIT_FOR(r.calls >= 2, 5000);
    UT_EQ_INT(r.calls, 2);
    UT_EQ_STR(r.c[1].id, fresh);
    UT_EQ_INT(r.c[1].redelivered, 1);
    UT_EQ_INT(bus_claim_from(t.bus, ROLE, "dead-1", 0), -EBUSY); /* max_inflight jobs run */
    UT_EQ_INT(pending("role-1"), 2);
    UT_EQ_INT(pending("dead-1"), 0);
    finish_id(&r, ROLE, old, BUS_DONE);
    finish_id(&r, ROLE, fresh, BUS_DONE);
    WAIT_FOR(pending("role-1") == 0, 5000);
    UT_EQ_INT(bus_claim_from(t.bus, ROLE, "dead-1", 0), 0); /* nothing left of it */
    run_for(300);
    UT_EQ_INT(r.calls, 2);
    UT_EQ_INT(rec_count_id(&r, other), 0);
    UT_EQ_INT(pending("other-2"), 1);
    UT_EQ_INT(stats(&t).reclaimed, 2);
    UT_EQ_INT(bus_release(t.bus, ROLE), 0);
    UT_EQ_INT(bus_claim_from(t.bus, ROLE, "other-2", 0), -ENOENT); /* handed back */
    tb_close(&t);
    env_teardown();
}

/* A handler that answers the user: it marks the job done, then finishes. */
static void on_job_mark(struct bus *b, struct bus_job *job, void *arg)
{
    bus_mark_done(job);
    on_job(b, job, arg);
}

static void done_marker(const char *role, const char *id, char *out, size_t len)
{
    snprintf(out, len, "%s:done:%s:%s", prefix, role, id);
}

static void test_mark_done_sets_marker(void)
{
    env_setup("markdone");
    struct rec marks = {.mode = H_DONE}, plain = {.mode = H_DONE};
    struct bus_opts o = default_opts();
    struct tb t;
    tb_start(&t, &o);
    UT_EQ_INT(bus_register(t.bus, "t.mark", on_job_mark, &marks), 0);
    UT_EQ_INT(bus_register(t.bus, "t.job", on_job, &plain), 0);
    UT_EQ_INT(bus_consume(t.bus, ROLE), 0);
    tb_wait_up(&t);
    struct added a, b;
    add_wait(&t, "t.mark", "{}", 2, &a);
    add_wait(&t, "t.job", "{}", 2, &b);
    WAIT_FOR(marks.calls == 1 && plain.calls == 1 && pending(NULL) == 0, 5000);
    char key[256];
    done_marker(ROLE, a.id, key, sizeof(key));
    redisReply *v = RAW("GET", key);
    UT_ASSERT(v->type == REDIS_REPLY_STRING);
    freeReplyObject(v);
    long long ttl = raw_int(RAW("TTL", key));
    UT_ASSERT(ttl > 86000 && ttl <= 86400); /* kept for a day */
    done_marker(ROLE, b.id, key, sizeof(key));
    UT_EQ_INT(raw_int(RAW("EXISTS", key)), 0); /* only a handler that answered marks */
    tb_close(&t);
    env_teardown();
}

static void test_done_marker_skips_answered_job(void)
{
    env_setup("donemarker");
    /* The process answered a job, marked it done and died before its ack:
     * after the restart the entry is acked without running it again. One
     * without a marker runs again, as before. A dead consumer's answered
     * entry, claimed on failover, is treated the same. */
    utlog_start("test", "bus", NULL);
    struct rec r = {.mode = H_DONE};
    raw_group();
    char answered[48], unanswered[48], theirs[48], key[256];
    raw_add("t.job", "{\"answered\":1}", answered, sizeof(answered));
    raw_add("t.job", "{\"answered\":0}", unanswered, sizeof(unanswered));
    UT_EQ_INT(raw_take("role-1"), 2); /* ours, before the crash */
    raw_add("t.job", "{\"theirs\":1}", theirs, sizeof(theirs));
    UT_EQ_INT(raw_take("dead-1"), 1);
    done_marker(ROLE, answered, key, sizeof(key));
    raw_void(RAW("SET", key, "1", "EX", "600"));
    done_marker(ROLE, theirs, key, sizeof(key));
    raw_void(RAW("SET", key, "1", "EX", "600"));

    struct bus_opts o = default_opts();
    o.claim_idle_ms = 30000; /* only the pending re-read and the claim bring them back */
    struct tb t;
    tb_start(&t, &o);
    UT_EQ_INT(bus_register(t.bus, "t.job", on_job, &r), 0);
    UT_EQ_INT(bus_consume(t.bus, ROLE), 0);
    tb_wait_up(&t);
    WAIT_FOR(r.calls == 1 && pending("role-1") == 0, 5000);
    UT_EQ_STR(r.c[0].id, unanswered);
    UT_EQ_INT(r.c[0].redelivered, 1);
    UT_EQ_INT(bus_claim_from(t.bus, ROLE, "dead-1", 0), 0);
    WAIT_FOR(pending(NULL) == 0, 5000);
    run_for(300);
    UT_EQ_INT(r.calls, 1);
    UT_EQ_INT(rec_count_id(&r, answered), 0);
    UT_EQ_INT(rec_count_id(&r, theirs), 0);
    UT_EQ_INT(stats(&t).inflight, 0);
    tb_close(&t);
    UT_EQ_INT(utlog_count("job was already answered"), 2);
    const char *text = utlog_text();
    UT_CONTAINS(text, answered);
    UT_CONTAINS(text, theirs);
    env_teardown();
}

#define MAXFIN 16

/* What on_finish reported. */
struct fin {
    int n;
    struct {
        char role[16], type[32];
        enum bus_result r;
        uint64_t ms;
    } f[MAXFIN];
};

static void on_fin(const char *role, const char *type, enum bus_result r, uint64_t ms, void *arg)
{
    struct fin *f = arg;
    if (f->n == MAXFIN)
        UT_FAIL("on_finish called more than %d times", MAXFIN);
    snprintf(f->f[f->n].role, sizeof(f->f[0].role), "%s", role);
    snprintf(f->f[f->n].type, sizeof(f->f[0].type), "%s", type);
    f->f[f->n].r = r;
    f->f[f->n].ms = ms;
    f->n++;
}

/* The one on_finish report of type (fails unless exactly one). */
static int fin_of(const struct fin *f, const char *type)
{
    int at = -1, n = 0;
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->f[i].type, type)) {
            at = i;
            n++;
        }
    if (n != 1)
        UT_FAIL("on_finish reported %s %d times, not once", type, n);
    return at;
}

static int fin_count(const struct fin *f, const char *type)
{
    int n = 0;
    for (int i = 0; i < f->n; i++)
        n += !strcmp(f->f[i].type, type);
    return n;
}

static void test_on_finish_hook(void)
{
    env_setup("onfinish");
    struct rec done = {.mode = H_DONE}, failed = {.mode = H_FAILED}, retry = {.mode = H_RETRY_ONCE},
               timed = {.mode = H_TIMED, .run_ms = 300}, hold = {.mode = H_HOLD}, chat = {.mode = H_DONE};
    struct fin f = {0};
    struct bus_opts o = default_opts();
    o.claim_idle_ms = 3000; /* the retried job stays away while the first ones are checked */
    o.on_finish = on_fin;
    o.finish_arg = &f;
    struct tb t;
    tb_start(&t, &o);
    UT_EQ_INT(bus_register(t.bus, "t.done", on_job, &done), 0);
    UT_EQ_INT(bus_register(t.bus, "t.failed", on_job, &failed), 0);
    UT_EQ_INT(bus_register(t.bus, "t.retry", on_job, &retry), 0);
    UT_EQ_INT(bus_register(t.bus, "t.timed", on_job, &timed), 0);
    UT_EQ_INT(bus_register(t.bus, "t.hold", on_job, &hold), 0);
    UT_EQ_INT(bus_register_role(t.bus, "chat", "t.chat", on_job, &chat), 0);
    UT_EQ_INT(bus_consume(t.bus, ROLE), 0);
    UT_EQ_INT(bus_consume(t.bus, "chat"), 0);
    tb_wait_up(&t);
    char ck[128], cid[48];
    role_key("chat", ck, sizeof(ck));
    struct added a[5];
    add_wait(&t, "t.done", "{}", 2, &a[0]);
    add_wait(&t, "t.failed", "{}", 2, &a[1]);
    add_wait(&t, "t.retry", "{}", 2, &a[2]);
    add_wait(&t, "t.timed", "{}", 2, &a[3]);
    add_wait(&t, "t.hold", "{}", 2, &a[4]);
    raw_add_to(ck, "t.chat", "{}", cid, sizeof(cid));
    WAIT_FOR(done.calls == 1 && failed.calls == 1 && retry.calls == 1 && timed.calls == 1 && hold.calls == 1 &&
                 chat.calls == 1,
             5000);
    WAIT_FOR(timed.running == 0, 5000);
    run_for(200);
    UT_EQ_INT(stats(&t).retried, 1);
    UT_EQ_INT(fin_count(&f, "t.retry"), 0); /* left pending: not finished */
    UT_EQ_INT(f.n, 4);

    int i = fin_of(&f, "t.done");
    UT_EQ_STR(f.f[i].role, ROLE);
    UT_EQ_INT(f.f[i].r, BUS_DONE);
    UT_ASSERT(f.f[i].ms < (uint64_t)ut_scale_ms(1000));
    i = fin_of(&f, "t.failed");
    UT_EQ_STR(f.f[i].role, ROLE);
    UT_EQ_INT(f.f[i].r, BUS_FAILED);
    UT_ASSERT(f.f[i].ms < (uint64_t)ut_scale_ms(1000));
    i = fin_of(&f, "t.timed");
    UT_EQ_STR(f.f[i].role, ROLE);
    UT_EQ_INT(f.f[i].r, BUS_DONE);
    UT_ASSERT(f.f[i].ms >= 250 && f.f[i].ms < (uint64_t)ut_scale_ms(5000)); /* it ran 300 ms */
    i = fin_of(&f, "t.chat");
    UT_EQ_STR(f.f[i].role, "chat");
    UT_EQ_INT(f.f[i].r, BUS_DONE);

    /* the retried job comes back after claim_idle_ms and finishes: once */
    WAIT_FOR(retry.calls == 2 && retry.running == 0, 10000);
    UT_EQ_INT(retry.c[1].redelivered, 1);
    i = fin_of(&f, "t.retry");
    UT_EQ_STR(f.f[i].role, ROLE);
    UT_EQ_INT(f.f[i].r, BUS_DONE);
    UT_ASSERT(f.f[i].ms < (uint64_t)ut_scale_ms(1000)); /* the run that finished, not the wait before it */
    UT_EQ_INT(f.n, 5);
    tb_close(&t); /* the held job is abandoned, not finished */
    UT_EQ_INT(hold.cancels, 1);
    UT_EQ_INT(f.n, 5);
    UT_EQ_INT(fin_count(&f, "t.hold"), 0);
    rec_release(&timed);
    env_teardown();
}

/* Stall detection. The handler itself stands the loop still (a sleep) as
 * soon as it takes the job: no renewal of ours is on the wire then (none
 * ran before this first job), so the first renewal reply after the stall
 * is the one the stall detection sent. A uv_prepare_t watches the job
 * flags on every turn of the loop, after the timers (where the renewal
 * timer marks the job unsure) and before the poll (where the renewal
 * reply clears it): a timer could run before the renewal timer in the
 * same turn and miss the short time the mark stands. */
struct stall {
    struct rec rec;
    int ms;      /* how long the handler blocks */
    int steal;   /* a thief XCLAIMs the entry while we stand still */
    uv_prepare_t watch;
    int unsure_seen, cleared, lost_seen; /* after the stall */
    int stalled;
};

static void on_job_stall(struct bus *b, struct bus_job *job, void *arg)
{
    struct stall *s = arg;
    on_job(b, job, &s->rec); /* H_HOLD */
    if (s->stalled++)
        return;
    UT_EQ_INT(job->lease_unsure, 0);
    if (s->steal) {
        redisReply *x = RAW("XCLAIM", stream, BUS_GROUP, "thief", "0", job->id, "JUSTID");
        UT_EQ_INT(x->elements, 1);
        freeReplyObject(x);
    }
    utsys_sleep_ms(s->ms);
}

static void on_watch(uv_prepare_t *p)
{
    struct stall *s = p->data;
    const struct bus_job *job = s->rec.calls ? s->rec.c[0].job : NULL;
    if (!job)
        return;
    if (job->lease_unsure)
        s->unsure_seen = 1;
    else if (s->unsure_seen)
        s->cleared = 1;
    if (job->lease_lost)
        s->lost_seen = 1;
}

static void stall_open(struct stall *s, struct tb *t)
{
    struct bus_opts o = default_opts();
    o.renew_ms = 200;        /* a stall is what exceeds 2 x 200 + 500 ms */
    o.claim_idle_ms = 30000; /* our own XAUTOCLAIM stays out of the way */
    tb_start(t, &o);
    UT_EQ_INT(bus_register(t->bus, "t.job", on_job_stall, s), 0);
    UT_EQ_INT(bus_consume(t->bus, ROLE), 0);
    tb_wait_up(t);
    UT_EQ_INT(uv_prepare_init(&loop, &s->watch), 0);
    s->watch.data = s;
    UT_EQ_INT(uv_prepare_start(&s->watch, on_watch), 0);
    run_for(500); /* the renewal timer ran: it knows when it last ran */
    raw_conn();   /* connected before the stall */
}

static void test_stall_marks_lease_unsure(void)
{
    env_setup("stall");
    utlog_start("test", "bus", NULL);
    struct stall s = {.rec = {.mode = H_HOLD}, .ms = 1500};
    struct tb t;
    stall_open(&s, &t);
    struct added a;
    add_wait(&t, "t.job", "{}", 2, &a);
    WAIT_FOR(s.stalled && s.unsure_seen, 5000); /* the first renewal after the stall marks it */
    WAIT_FOR(s.cleared, 3000);                  /* and the reply to it confirms the lease */
    run_for(600); /* renewals go on confirming it */
    const struct bus_job *job = s.rec.c[0].job;
    UT_EQ_INT(job->lease_unsure, 0);
    UT_EQ_INT(job->lease_lost, 0);
    UT_EQ_INT(s.lost_seen, 0);
    UT_EQ_INT(s.rec.calls, 1);
    finish_call(&s.rec, 0, BUS_DONE);
    WAIT_FOR(pending(NULL) == 0, 5000);
    UT_CONTAINS(utlog_text(), "the process stood still");
    uv_close((uv_handle_t *)&s.watch, NULL);
    tb_close(&t);
    env_teardown();
}

/* After a stop, what was waiting on the sockets (a model's last chunk) runs
 * before the renewal timer: a handler about to answer asks
 * bus_job_recheck, which notices the stall with a fresh clock and marks
 * the job unsure at once; the next renewal confirms it. Here the loop
 * stands still outside any callback, so its clock is stale. */
static void test_recheck_notices_a_stall_before_the_timer(void)
{
    env_setup("recheck");
    utlog_start("test", "bus", NULL);
    struct stall s = {.rec = {.mode = H_HOLD}, .ms = 0};
    struct tb t;
    stall_open(&s, &t);
    struct added a;
    add_wait(&t, "t.job", "{}", 2, &a);
    WAIT_FOR(s.rec.calls == 1, 5000);
    struct bus_job *job = s.rec.c[0].job;
    UT_EQ_INT(job->lease_unsure, 0);
    utsys_sleep_ms(1500); /* stands still: more than 2 x 200 + 500 ms */
    bus_job_recheck(job);
    UT_EQ_INT(job->lease_unsure, 1); /* before any timer ran */
    UT_EQ_INT(job->lease_lost, 0);
    UT_CONTAINS(utlog_text(), "the process stood still");
    WAIT_FOR(!job->lease_unsure, 3000); /* the next renewal confirms it */
    bus_job_recheck(job);               /* nothing new: stays sure */
    UT_EQ_INT(job->lease_unsure, 0);
    finish_call(&s.rec, 0, BUS_DONE);
    WAIT_FOR(pending(NULL) == 0, 5000);
    uv_close((uv_handle_t *)&s.watch, NULL);
    tb_close(&t);
    env_teardown();
}

static void test_stall_with_lease_stolen(void)
{
    env_setup("stallstolen");
    utlog_start("test", "bus", NULL);
    struct stall s = {.rec = {.mode = H_HOLD}, .ms = 1500, .steal = 1};
    struct tb t;
    stall_open(&s, &t);
    struct added a;
    add_wait(&t, "t.job", "{}", 2, &a);
    WAIT_FOR(s.stalled && s.lost_seen, 5000);
    UT_EQ_INT(s.unsure_seen, 1);
    run_for(600); /* later renewals never confirm it either */
    const struct bus_job *job = s.rec.c[0].job;
    UT_EQ_INT(job->lease_lost, 1);
    UT_EQ_INT(s.cleared, 0);
    UT_EQ_INT(s.rec.calls, 1);
    finish_call(&s.rec, 0, BUS_DONE);
    UT_EQ_INT(s.rec.c[0].lease_lost_at_finish, 1);
    WAIT_FOR(stats(&t).inflight == 0, 1000);
    run_for(300);
    UT_EQ_INT(pending("thief"), 1); /* not acked: the thief's to finish */
    UT_EQ_INT(pending("role-1"), 0);
    const char *text = utlog_text();
    UT_CONTAINS(text, "the process stood still");
    UT_CONTAINS(text, "job lease lost to another consumer");
    uv_close((uv_handle_t *)&s.watch, NULL);
    tb_close(&t);
    env_teardown();
}

/* The stall as above, but with renewals of ours on the wire: their
 * answers were given before the stall ended and must not confirm a lease
 * the stall made unsure. A private Redis is stopped so that renewals queue
 * in it; then the loop stands still in a check callback (after the poll
 * phase, so nothing is read meanwhile): Redis is let go and answers them
 * ("ours"), and only then a thief XCLAIMs the entry. The turn after, the
 * renewal timer marks the job unsure before the poll reads those old
 * answers; only the answer to a renewal sent after the stall may decide. */
struct stale {
    struct stall s; /* its rec, watch and flags; s.ms the stall */
    uv_check_t check;
    redisContext *raw; /* to the private server */
    char key[128];
    const char *id;
    int armed;
};

static void on_stale_check(uv_check_t *c)
{
    struct stale *st = c->data;
    if (!st->armed)
        return;
    st->armed = 0;
    st->s.stalled = 1;
    utredis_signal(own, SIGCONT);
    utsys_sleep_ms(300); /* Redis answers the queued renewals: still ours */
    redisReply *x = utredis_cmd(st->raw, "XCLAIM", st->key, BUS_GROUP, "thief", "0", st->id, "JUSTID",
                                (const char *)NULL);
    UT_EQ_INT(x->elements, 1);
    freeReplyObject(x);
    utsys_sleep_ms(st->s.ms);
}

static long long own_pending(struct stale *st, const char *consumer)
{
    redisReply *r = utredis_cmd(st->raw, "XPENDING", st->key, BUS_GROUP, "-", "+", "10", consumer,
                                (const char *)NULL);
    long long n = r->type == REDIS_REPLY_ARRAY ? (long long)r->elements : -1;
    freeReplyObject(r);
    return n;
}

static void test_stall_old_renewal_does_not_confirm(void)
{
    env_setup("stallold");
    utlog_start("test", "bus", NULL);
    own = utredis_start(prefix, NULL);
    char url[128];
    utredis_url(own, NULL, 0, url, sizeof(url));
    struct stale st = {.s = {.rec = {.mode = H_HOLD}, .ms = 1200}};
    st.raw = utredis_connect("127.0.0.1", own->port, 5000);
    snprintf(st.key, sizeof(st.key), "%s", stream);
    struct bus_opts o = default_opts();
    o.redis_url = url;
    o.renew_ms = 200;
    o.claim_idle_ms = 30000;
    struct tb t;
    tb_start(&t, &o);
    UT_EQ_INT(bus_register(t.bus, "t.job", on_job, &st.s.rec), 0);
    UT_EQ_INT(bus_consume(t.bus, ROLE), 0);
    tb_wait_up(&t);
    UT_EQ_INT(uv_prepare_init(&loop, &st.s.watch), 0);
    st.s.watch.data = &st.s;
    UT_EQ_INT(uv_prepare_start(&st.s.watch, on_watch), 0);
    UT_EQ_INT(uv_check_init(&loop, &st.check), 0);
    st.check.data = &st;
    UT_EQ_INT(uv_check_start(&st.check, on_stale_check), 0);
    struct added a;
    add_wait(&t, "t.job", "{}", 2, &a);
    WAIT_FOR(st.s.rec.calls == 1, 5000);
    st.id = a.id;
    run_for(500); /* renewed and confirmed a few times */
    UT_EQ_INT(st.s.rec.c[0].job->lease_unsure, 0);

    utredis_signal(own, SIGSTOP);
    run_for(500); /* renewals are sent and wait in the stopped Redis */
    st.armed = 1;
    WAIT_FOR(st.s.stalled && st.s.lost_seen, 5000);
    UT_EQ_INT(st.s.unsure_seen, 1);
    UT_EQ_INT(st.s.cleared, 0); /* no answer from before the stall confirmed it */
    finish_call(&st.s.rec, 0, BUS_DONE);
    UT_EQ_INT(st.s.rec.c[0].lease_lost_at_finish, 1);
    run_for(300);
    UT_EQ_INT(own_pending(&st, "thief"), 1);
    uv_close((uv_handle_t *)&st.s.watch, NULL);
    uv_close((uv_handle_t *)&st.check, NULL);
    tb_close(&t);
    redisFree(st.raw);
    env_teardown();
}

/* ---- jobctx on a real bus ----------------------------------------------------- */

struct jowner {
    struct jobctx jc;
    int stops, releases;
};

static void jo_stop(void *arg)
{
    ((struct jowner *)arg)->stops++;
}

static void jo_release(void *arg)
{
    ((struct jowner *)arg)->releases++;
}

static void test_jobctx_acks_through_the_bus(void)
{
    env_setup("jobctx");
    struct rec r = {.mode = H_HOLD};
    struct bus_opts o = default_opts();
    struct tb t;
    tb_open(&t, &o, &r);
    struct added a;
    add_wait(&t, "t.job", "{}", 2, &a);
    add_wait(&t, "t.job", "{}", 2, &a);
    WAIT_FOR(r.calls == 2, 5000);
    /* the first: finished while a callback is still owed; acked at once,
     * released when the callback comes back */
    struct jowner j1, j2;
    memset(&j1, 0, sizeof(j1));
    memset(&j2, 0, sizeof(j2));
    struct bus_job *b1 = r.c[0].job, *b2 = r.c[1].job;
    r.c[0].job = r.c[1].job = NULL; /* the jobctx owns them now */
    r.running -= 2;
    jobctx_start(&j1.jc, b1, jo_stop, jo_release, &j1);
    jobctx_start(&j2.jc, b2, jo_stop, jo_release, &j2);
    jobctx_wait(&j1.jc);
    jobctx_finish(&j1.jc, BUS_DONE, NULL);
    UT_EQ_INT(j1.releases, 0);
    WAIT_FOR(pending(NULL) == 1, 5000);
    UT_EQ_INT(jobctx_back(&j1.jc), 0);
    UT_EQ_INT(j1.releases, 1);
    /* the second: in flight at close, with a callback owed: stopped once,
     * left pending for a later consumer, released after the callback */
    jobctx_wait(&j2.jc);
    bus_close(t.bus, on_flag, &t.bus_closed);
    t.bus = NULL;
    UT_EQ_INT(j2.stops, 1);
    UT_EQ_INT(j2.releases, 0);
    UT_EQ_INT(jobctx_back(&j2.jc), 0);
    UT_EQ_INT(j2.releases, 1);
    WAIT_FOR(t.bus_closed, 5000);
    UT_EQ_INT(pending(NULL), 1);
    UT_EQ_INT(j1.stops, 0);
    tb_close(&t);
    env_teardown();
}

static const struct ut_case cases[] = {
    UT_CASE(test_dispatch_fields_then_ack),
    UT_CASE(test_max_inflight),
    UT_CASE(test_max_inflight_with_reclaim),
    UT_CASE(test_back_pressure_never_waits_for_a_reclaim),
    UT_CASE(test_failed_is_acked_and_counted),
    UT_CASE(test_retry_redelivered_after_claim_idle),
    UT_CASE(test_dead_letters),
    UT_CASE(test_reclaim_from_dead_consumer),
    UT_CASE(test_lease_renewal_keeps_long_job),
    UT_CASE(test_lease_lost_to_thief),
    UT_CASE(test_restart_recovers_own_pending),
    UT_CASE(test_nogroup_recovery),
    UT_CASE(test_drain_waits_for_jobs_and_acks),
    UT_CASE(test_trimmed_pending_entry),
    UT_CASE(test_acks_kept_while_redis_away),
    UT_CASE(test_close_with_ack_on_the_wire),
    UT_CASE(test_close_from_handler),
    UT_CASE(test_role_handlers),
    UT_CASE(test_consume_release_while_blocked),
    UT_CASE(test_claim_from_dead_consumer),
    UT_CASE(test_mark_done_sets_marker),
    UT_CASE(test_done_marker_skips_answered_job),
    UT_CASE(test_on_finish_hook),
    UT_CASE(test_stall_marks_lease_unsure),
    UT_CASE(test_stall_with_lease_stolen),
    UT_CASE(test_recheck_notices_a_stall_before_the_timer),
    UT_CASE(test_stall_old_renewal_does_not_confirm),
    UT_CASE(test_jobctx_acks_through_the_bus),
    {NULL, NULL},
};

UT_MAIN(cases)
