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

#include "bus.h"
#include "err.h"
#include "log.h"
#include "rds.h"
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

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
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
    snprintf(ts, sizeof(ts), "%lld", (long long)wall_ms());
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
    snprintf(ts, sizeof(ts), "%lld", (long long)wall_ms());
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
    int64_t before = wall_ms();
    struct added a1, a2;
    add_wait(&t, "t.job", korean, strlen(korean), &a1);
    add_wait(&t, "t.job", binary, sizeof(binary) - 1, &a2);
    int64_t after = wall_ms();
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
    UT_ASSERT(utsys_mono_ms() - t0 < 5000);
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

static const struct ut_case cases[] = {
    UT_CASE(test_dispatch_fields_then_ack),
    UT_CASE(test_max_inflight),
    UT_CASE(test_max_inflight_with_reclaim),
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
    {NULL, NULL},
};

UT_MAIN(cases)
