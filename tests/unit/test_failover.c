/* Unit tests for failover, against a real redis-server (never a mock), with
 * a clock the case controls.
 *
 * Each case builds what failover needs and nothing more: the loop, a
 * command connection, a bus of its own (so takeovers really start reading a
 * stream) and a config. The case plays the other instances by writing their
 * heartbeats itself, with stream ids at the times it chooses, and steps the
 * clock failover is given; sync() then waits until failover has read every
 * beat written and judged at the new time, so each verdict is checked at an
 * exact millisecond: up, suspect, down, draining; a role starting, dead or
 * absent; takeover and handback, and who takes the admin role. Keys live
 * under "t<pid>_<case>" and are deleted at exit. */
#include <errno.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "base/buf.h"
#include "service/bus.h"
#include "base/clock.h"
#include "base/config.h"
#include "base/err.h"
#include "process/failover.h"
#include "base/log.h"
#include "io/rds.h"
#include "ut.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_redis.h"
#include "ut_sys.h"

static uv_loop_t loop;
static struct utloop lp;
static char shared_url[512];
static char shared_host[256];
static int shared_port;
static char prefix[64];
static char beats_key[128];
static redisContext *rawc;

static struct config cfg;
static struct rds *cmd;
static struct bus *bus;
static struct failover *fo;
static int cmd_closed, bus_closed;
static int64_t fake_now;
static long long seq;

#define WAIT_FOR(cond, ms) UTLOOP_WAIT_FOR(&lp, cond, ms)
#define RAW(...) utredis_cmd(rawc, __VA_ARGS__, (const char *)NULL)

/* ---- takeovers seen ------------------------------------------------------------- */

#define MAXTAKE 32
static struct take {
    enum role role;
    int on;
    char dead[128];
} takes[MAXTAKE];
static int ntakes;

static void on_takeover(enum role r, int on, const char *dead, void *arg)
{
    (void)arg;
    UT_ASSERT(ntakes < MAXTAKE);
    takes[ntakes].role = r;
    takes[ntakes].on = on;
    snprintf(takes[ntakes].dead, sizeof(takes[ntakes].dead), "%s", dead);
    ntakes++;
}

static int64_t clock_fn(void *arg)
{
    (void)arg;
    return fake_now;
}

/* ---- jobs a takeover runs -------------------------------------------------------------- */

static int jobs_run, jobs_redelivered;

static void on_job(struct bus *b, struct bus_job *job, void *arg)
{
    (void)b;
    (void)arg;
    jobs_run++;
    jobs_redelivered += job->redelivered;
    bus_finish(job, BUS_DONE, NULL);
}

/* ---- the beats of the others ------------------------------------------------------------ */

#define MAXNAMES 8
static struct {
    char name[32];
    int64_t last;
} beaten[MAXNAMES];
static int nbeaten;

/* name (of role) beats at time at, with state "running" or "draining". */
static void beat_as(const char *name, enum role r, const char *state, int64_t at, const char *serving)
{
    char id[48];
    snprintf(id, sizeof(id), "%lld-%lld", (long long)at, ++seq);
    redisReply *rep = RAW("XADD", beats_key, id, "name", name, "role", role_name(r), "pid", "1", "version", "t",
                          "uptime_s", "1", "inflight", "0", "processed", "0", "failed", "0", "state", state,
                          "serving", serving ? serving : role_name(r), "health_port", "1");
    if (rep->type == REDIS_REPLY_ERROR)
        UT_FAIL("XADD %s: %s", id, rep->str);
    freeReplyObject(rep);
    int i = 0;
    while (i < nbeaten && strcmp(beaten[i].name, name))
        i++;
    if (i == nbeaten) {
        UT_ASSERT(nbeaten < MAXNAMES);
        snprintf(beaten[nbeaten++].name, sizeof(beaten[0].name), "%s", name);
    }
    beaten[i].last = at;
}

static void beat(const char *name, enum role r, int64_t at)
{
    beat_as(name, r, "running", at, NULL);
}

static int peer(const char *name, struct peer *out)
{
    struct peer all[16];
    size_t n = failover_peers(fo, all, 16);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(all[i].name, name)) {
            *out = all[i];
            return 1;
        }
    return 0;
}

/* failover has read every beat written and judged at fake_now. */
static int synced(void)
{
    for (int i = 0; i < nbeaten; i++) {
        struct peer p;
        if (!peer(beaten[i].name, &p) || p.age_ms != fake_now - beaten[i].last)
            return 0;
    }
    return 1;
}

static void sync_at(int64_t t)
{
    fake_now = t;
    WAIT_FOR(synced(), 5000);
}

static enum peer_state state_of(const char *name)
{
    struct peer p;
    if (!peer(name, &p))
        UT_FAIL("%s not in the peer table", name);
    return p.state;
}

#define EXPECT_STATE(name, st) UT_EQ_STR(failover_state_name(state_of(name)), failover_state_name(st))
#define EXPECT_ROLE(r, st)                                                                         \
    UT_EQ_STR(failover_role_state_name(failover_role_state(fo, (r))), failover_role_state_name(st))

/* ---- setup -------------------------------------------------------------------------------- */

static void cleanup_keys(void)
{
    utredis_del_prefix(shared_host, shared_port, 1u << 0, prefix);
}

static void on_cmd_state(struct rds *r, int up, void *arg)
{
    (void)r;
    (void)arg;
    if (up && bus)
        bus_cmd_up(bus);
}

static void on_flag(void *arg)
{
    (*(int *)arg)++;
}

/* This instance is self (of role me); failover starts at the returned time
 * T, its first read not made yet (the loop has not turned since). */
static int64_t env_setup(const char *name, const char *self, enum role me, int interval_ms, int after_ms)
{
    static int registered;
    utlog_setup("test", "failover", LOG_WARN);
    utredis_shared(shared_host, &shared_port);
    snprintf(shared_url, sizeof(shared_url), "redis://%s:%d/0", shared_host, shared_port);
    snprintf(prefix, sizeof(prefix), "t%d_%s", (int)getpid(), name);
    snprintf(beats_key, sizeof(beats_key), "%s:heartbeats", prefix);
    if (!registered++)
        atexit(cleanup_keys);
    rawc = utredis_connect(shared_host, shared_port, 5000);
    UT_EQ_INT(uv_loop_init(&loop), 0);
    utloop_init(&lp, &loop, 5);
    memset(&cfg, 0, sizeof(cfg));
    cfg.role = me;
    snprintf(cfg.name, sizeof(cfg.name), "%s", self);
    cfg.redis_prefix = prefix;
    cfg.heartbeat_interval_ms = interval_ms;
    cfg.failover_after_ms = after_ms;
    ntakes = nbeaten = 0;
    jobs_run = jobs_redelivered = 0;
    cmd_closed = bus_closed = 0;
    char err[200] = "";
    struct rds_opts ro = {.url = shared_url, .name = "cmd", .connect_timeout_ms = 1000};
    UT_EQ_INT(rds_new(&loop, &ro, on_cmd_state, NULL, &cmd, err, sizeof(err)), 0);
    struct bus_opts bo = {.redis_url = shared_url, .prefix = prefix, .consumer = self, .stream_maxlen = 1000,
                          .max_inflight = 8, .block_ms = 300, .claim_idle_ms = 60000};
    int rc = bus_new(&loop, cmd, &bo, &bus, err, sizeof(err));
    if (rc)
        UT_FAIL("bus_new: %s", err);
    UT_EQ_INT(bus_register(bus, "t.job", on_job, NULL), 0);
    UT_EQ_INT(bus_consume(bus, role_name(me)), 0);
    WAIT_FOR(rds_up(cmd) && bus_reader_up(bus), 10000);
    fake_now = clock_wall_ms();
    struct failover_opts fopts = {.loop = &loop, .redis = cmd, .bus = bus, .cfg = &cfg, .clock = clock_fn,
                                  .takeover = on_takeover, .tick_ms = 5};
    UT_EQ_INT(failover_new(&fopts, &fo), 0);
    return fake_now;
}

static void env_teardown(void)
{
    failover_close(fo);
    fo = NULL;
    rds_close(cmd, on_flag, &cmd_closed);
    bus_close(bus, on_flag, &bus_closed);
    WAIT_FOR(cmd_closed == 1 && bus_closed == 1, 5000);
    cmd = NULL;
    bus = NULL;
    utlog_stop(LOG_WARN);
    utloop_shutdown(&lp);
    redisFree(rawc);
    rawc = NULL;
    cleanup_keys();
}

static int taken(enum role r, int on)
{
    int n = 0;
    for (int i = 0; i < ntakes; i++)
        n += takes[i].role == r && takes[i].on == on;
    return n;
}

/* The events stream holds an entry of type what for role r. */
static int event_logged(const char *what, enum role r)
{
    char key[128];
    snprintf(key, sizeof(key), "%s:events", prefix);
    redisReply *rep = RAW("XRANGE", key, "-", "+");
    int found = 0;
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++) {
        const redisReply *kv = rep->element[i]->element[1];
        int t = 0, ro = 0, by = 0;
        for (size_t k = 0; k + 1 < kv->elements; k += 2) {
            t |= !strcmp(kv->element[k]->str, "type") && !strcmp(kv->element[k + 1]->str, what);
            ro |= !strcmp(kv->element[k]->str, "role") && !strcmp(kv->element[k + 1]->str, role_name(r));
            by |= !strcmp(kv->element[k]->str, "by") && !strcmp(kv->element[k + 1]->str, cfg.name);
        }
        found |= t && ro && by;
    }
    freeReplyObject(rep);
    return found;
}

/* ---- cases ------------------------------------------------------------------------------- */

static void test_bad_options(void)
{
    utlog_setup("test", "failover", LOG_WARN);
    struct failover *f = NULL;
    struct config c;
    memset(&c, 0, sizeof(c));
    UT_EQ_INT(failover_new(NULL, &f), -EINVAL);
    struct failover_opts o = {.cfg = &c};
    UT_EQ_INT(failover_new(&o, &f), -EINVAL); /* no loop, no redis, no name */
    UT_ASSERT(f == NULL);
}

/* Interval 1000 ms: suspect after 2 x 1000 + 300 ms of silence, down after
 * FAILOVER_AFTER_MS (3000), draining at once. */
static void test_peer_states(void)
{
    int64_t T = env_setup("states", "admin-4", ROLE_ADMIN, 1000, 3000);
    beat_as("admin-4", ROLE_ADMIN, "running", T, "admin,image");
    beat("chat-1", ROLE_CHAT, T);
    beat("image-2", ROLE_IMAGE, T);
    sync_at(T);
    EXPECT_STATE("admin-4", PEER_UP);
    EXPECT_STATE("chat-1", PEER_UP);
    struct peer p;
    UT_ASSERT(peer("chat-1", &p));
    UT_EQ_INT(p.role, ROLE_CHAT);
    UT_EQ_INT(p.instance, 1);
    char servers[64];
    failover_servers(fo, ROLE_IMAGE, servers, sizeof(servers));
    UT_EQ_STR(servers, "admin-4,image-2");
    sync_at(T + 2300);
    EXPECT_STATE("chat-1", PEER_UP);
    sync_at(T + 2301);
    EXPECT_STATE("chat-1", PEER_SUSPECT);
    EXPECT_STATE("admin-4", PEER_UP); /* ourselves: alive by definition */
    sync_at(T + 3000);
    EXPECT_STATE("chat-1", PEER_SUSPECT);
    sync_at(T + 3001);
    EXPECT_STATE("chat-1", PEER_DOWN);
    /* a beat saying it is stopping: draining at once, not after a delay */
    beat_as("image-2", ROLE_IMAGE, "draining", T + 3001, NULL);
    sync_at(T + 3001);
    EXPECT_STATE("image-2", PEER_DRAINING);
    failover_servers(fo, ROLE_IMAGE, servers, sizeof(servers));
    UT_EQ_STR(servers, "admin-4");
    /* back */
    beat("chat-1", ROLE_CHAT, T + 4000);
    sync_at(T + 4000);
    EXPECT_STATE("chat-1", PEER_UP);
    struct buf m;
    buf_init(&m, 1 << 16);
    failover_metrics(fo, &m);
    UT_CONTAINS(buf_str(&m), "discordbot_peer_up{peer=\"image-2\",role=\"image\",state=\"draining\"} 0");
    UT_CONTAINS(buf_str(&m), "discordbot_peer_up{peer=\"chat-1\",role=\"chat\",state=\"up\"} 1");
    buf_free(&m);
    env_teardown();
}

/* Redis came up late: the first read is 10 s after the start. Nobody is
 * judged on that first picture; only after a full window of watching. */
static void test_no_judgement_before_a_full_window_of_watching(void)
{
    int64_t T = env_setup("warmup", "admin-4", ROLE_ADMIN, 1000, 3000);
    beat("chat-1", ROLE_CHAT, T + 2000); /* a beat of before we watched */
    beat("admin-4", ROLE_ADMIN, T + 10000);
    sync_at(T + 10000); /* the first read */
    EXPECT_STATE("chat-1", PEER_DOWN);
    EXPECT_ROLE(ROLE_CHAT, FO_ROLE_UNJUDGED);
    UT_EQ_INT(ntakes, 0);
    sync_at(T + 12999);
    UT_EQ_INT(ntakes, 0);
    UT_EQ_INT(bus_consuming(bus, "chat"), 0);
    /* a full window later: chat-1 was never alive while we watched, so the
     * role is not "dead" but nobody serves it: it is taken over */
    sync_at(T + 13000);
    EXPECT_ROLE(ROLE_CHAT, FO_ROLE_ABSENT);
    UT_EQ_INT(taken(ROLE_CHAT, 1), 1);
    UT_EQ_INT(bus_consuming(bus, "chat"), 1);
    env_teardown();
}

/* The incident: four instances started one after another, 2 s apart, then
 * 1 s idle. chat-1 judged the admin role before admin-4 had beaten once
 * and took it over. An instance that has not beaten yet is starting. */
static void test_instance_not_yet_beaten_is_starting_not_dead(void)
{
    int64_t T = env_setup("starting", "chat-1", ROLE_CHAT, 1000, 3000);
    static const struct {
        const char *name;
        enum role role;
        int start;
    } inst[] = {{"chat-1", ROLE_CHAT, 0}, {"image-2", ROLE_IMAGE, 2000}, {"video-3", ROLE_VIDEO, 4000},
                {"admin-4", ROLE_ADMIN, 6000}};
    for (int t = 0; t <= 12000; t += 250) {
        for (int i = 0; i < 4; i++)
            if (t >= inst[i].start && (t - inst[i].start) % 1000 == 0)
                beat(inst[i].name, inst[i].role, T + t);
        sync_at(T + t);
        if (t == 3000)
            EXPECT_ROLE(ROLE_ADMIN, FO_ROLE_STARTING);
        if (t >= 6000)
            EXPECT_ROLE(ROLE_ADMIN, FO_ROLE_ALIVE);
        if (ntakes)
            UT_FAIL("at +%d ms %s took over %s", t, cfg.name, role_name(takes[0].role));
    }
    UT_EQ_INT(bus_consuming(bus, "admin"), 0);
    env_teardown();
}

/* A role nobody ever started (a cluster without an image instance) is
 * served by admin once the cluster has been settled for a full window. */
static void test_absent_role_taken_over_once_the_cluster_settled(void)
{
    int64_t T = env_setup("absent", "admin-4", ROLE_ADMIN, 1000, 3000);
    beat("admin-4", ROLE_ADMIN, T);
    beat("chat-1", ROLE_CHAT, T);
    sync_at(T);
    for (int t = 1000; t < 3000; t += 1000) {
        beat("admin-4", ROLE_ADMIN, T + t);
        beat("chat-1", ROLE_CHAT, T + t);
        sync_at(T + t);
    }
    sync_at(T + 2999);
    UT_EQ_INT(ntakes, 0);
    EXPECT_ROLE(ROLE_IMAGE, FO_ROLE_UNJUDGED);
    sync_at(T + 3000);
    EXPECT_ROLE(ROLE_CHAT, FO_ROLE_ALIVE);
    EXPECT_ROLE(ROLE_IMAGE, FO_ROLE_ABSENT);
    UT_EQ_INT(taken(ROLE_IMAGE, 1), 1);
    UT_EQ_INT(taken(ROLE_VIDEO, 1), 1);
    UT_EQ_INT(taken(ROLE_CHAT, 1), 0);
    UT_EQ_INT(bus_consuming(bus, "image"), 1);
    UT_EQ_INT(bus_consuming(bus, "video"), 1);
    WAIT_FOR(event_logged("takeover", ROLE_IMAGE), 2000);
    /* the image instance arrives: handed back after HANDBACK_BEATS beats */
    for (int t = 4000; t <= 7000; t += 1000) {
        beat("admin-4", ROLE_ADMIN, T + t);
        beat("chat-1", ROLE_CHAT, T + t);
        beat("image-2", ROLE_IMAGE, T + t);
        sync_at(T + t - 1);
        UT_EQ_INT(taken(ROLE_IMAGE, 0), 0);
        sync_at(T + t);
    }
    UT_EQ_INT(taken(ROLE_IMAGE, 0), 1);
    UT_EQ_INT(bus_consuming(bus, "image"), 0);
    UT_EQ_INT(bus_consuming(bus, "video"), 1);
    WAIT_FOR(event_logged("handback", ROLE_IMAGE), 2000);
    env_teardown();
}

static void test_dead_worker_taken_over_and_handed_back(void)
{
    int64_t T = env_setup("dead", "admin-4", ROLE_ADMIN, 1000, 3000);
    for (int t = 0; t <= 5000; t += 1000) {
        beat("admin-4", ROLE_ADMIN, T + t);
        beat("chat-1", ROLE_CHAT, T + t);
        beat("image-2", ROLE_IMAGE, T + t);
        beat("video-3", ROLE_VIDEO, T + t);
        sync_at(T + t);
    }
    UT_EQ_INT(ntakes, 0);
    /* chat-1 is killed after its beat of T + 5000; the others go on */
    for (int t = 6000; t <= 8000; t += 1000) {
        beat("admin-4", ROLE_ADMIN, T + t);
        beat("image-2", ROLE_IMAGE, T + t);
        beat("video-3", ROLE_VIDEO, T + t);
        sync_at(T + t);
    }
    UT_EQ_INT(ntakes, 0); /* 3000 ms of silence: not yet down */
    sync_at(T + 8001);
    EXPECT_STATE("chat-1", PEER_DOWN);
    EXPECT_ROLE(ROLE_CHAT, FO_ROLE_DEAD);
    UT_EQ_INT(taken(ROLE_CHAT, 1), 1);
    UT_EQ_STR(takes[0].dead, "chat-1");
    UT_EQ_INT(bus_consuming(bus, "chat"), 1);
    WAIT_FOR(event_logged("takeover", ROLE_CHAT), 2000);
    /* chat-1 is back: handed back once it has beaten for 3 intervals */
    for (int t = 10000; t <= 13000; t += 1000) {
        beat("admin-4", ROLE_ADMIN, T + t);
        beat("image-2", ROLE_IMAGE, T + t);
        beat("video-3", ROLE_VIDEO, T + t);
        beat("chat-1", ROLE_CHAT, T + t);
        sync_at(T + t - 1);
        UT_EQ_INT(taken(ROLE_CHAT, 0), 0);
        sync_at(T + t);
    }
    UT_EQ_INT(taken(ROLE_CHAT, 0), 1);
    UT_EQ_INT(bus_consuming(bus, "chat"), 0);
    WAIT_FOR(event_logged("handback", ROLE_CHAT), 2000);
    UT_EQ_INT(taken(ROLE_CHAT, 1), 1); /* once each */
    env_teardown();
}

static void test_draining_is_taken_over_at_once(void)
{
    int64_t T = env_setup("draining", "admin-4", ROLE_ADMIN, 1000, 3000);
    for (int t = 0; t <= 4000; t += 1000) {
        beat("admin-4", ROLE_ADMIN, T + t);
        beat("chat-1", ROLE_CHAT, T + t);
        beat("image-2", ROLE_IMAGE, T + t);
        beat("video-3", ROLE_VIDEO, T + t);
        sync_at(T + t);
    }
    beat_as("chat-1", ROLE_CHAT, "draining", T + 4100, NULL); /* SIGTERM */
    sync_at(T + 4100);
    EXPECT_STATE("chat-1", PEER_DRAINING);
    UT_EQ_INT(taken(ROLE_CHAT, 1), 1);
    UT_EQ_INT(ntakes, 1);
    env_teardown();
}

/* The admin role goes to the lowest-numbered live instance: not to
 * image-2 while chat-1 lives, to image-2 once chat-1 is down too. */
static void test_admin_role_goes_to_the_lowest_live_instance(void)
{
    int64_t T = env_setup("lowest", "image-2", ROLE_IMAGE, 1000, 3000);
    for (int t = 0; t <= 3000; t += 1000) {
        beat("chat-1", ROLE_CHAT, T + t);
        beat("image-2", ROLE_IMAGE, T + t);
        beat("video-3", ROLE_VIDEO, T + t);
        beat("admin-4", ROLE_ADMIN, T + t);
        sync_at(T + t);
    }
    /* admin-4 dies after its beat of T + 3000 */
    for (int t = 4000; t <= 7000; t += 1000) {
        beat("chat-1", ROLE_CHAT, T + t);
        beat("image-2", ROLE_IMAGE, T + t);
        beat("video-3", ROLE_VIDEO, T + t);
        sync_at(T + t);
    }
    EXPECT_ROLE(ROLE_ADMIN, FO_ROLE_DEAD);
    UT_EQ_INT(ntakes, 0); /* chat-1 is the taker */
    /* chat-1 dies after its beat of T + 7000 */
    for (int t = 8000; t <= 10000; t += 1000) {
        beat("image-2", ROLE_IMAGE, T + t);
        beat("video-3", ROLE_VIDEO, T + t);
        sync_at(T + t);
    }
    UT_EQ_INT(ntakes, 0);
    sync_at(T + 10001);
    EXPECT_STATE("chat-1", PEER_DOWN);
    UT_EQ_INT(taken(ROLE_ADMIN, 1), 1);
    UT_EQ_INT(taken(ROLE_CHAT, 1), 0); /* a worker role is admin's to take, not ours */
    UT_EQ_INT(bus_consuming(bus, "admin"), 1);
    env_teardown();
}

/* A live replica claims what a dead replica of its role held (real idle
 * time in Redis: FAILOVER_AFTER_MS is 1000 here). */
static void test_replica_claims_a_dead_replicas_jobs(void)
{
    int64_t T = env_setup("replica", "chat-1", ROLE_CHAT, 300, 1000);
    char stream[128];
    snprintf(stream, sizeof(stream), "%s:jobs:chat", prefix);
    beat("chat-1", ROLE_CHAT, T);
    beat("chat-5", ROLE_CHAT, T);
    beat("admin-4", ROLE_ADMIN, T);
    sync_at(T);
    /* chat-5 takes a job and dies with it; in one transaction, so our own
     * blocked read cannot take the entry first */
    freeReplyObject(RAW("MULTI"));
    freeReplyObject(RAW("XADD", stream, "*", "type", "t.job", "payload", "{}", "ts", "1"));
    freeReplyObject(RAW("XREADGROUP", "GROUP", BUS_GROUP, "chat-5", "COUNT", "10", "STREAMS", stream, ">"));
    redisReply *rep = RAW("EXEC");
    UT_ASSERT(rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 && rep->element[1]->type == REDIS_REPLY_ARRAY);
    freeReplyObject(rep);
    for (int t = 300; t <= 900; t += 300) {
        beat("chat-1", ROLE_CHAT, T + t);
        beat("admin-4", ROLE_ADMIN, T + t);
        sync_at(T + t);
    }
    UT_EQ_INT(jobs_run, 0);
    utloop_run_for(&lp, 1100); /* the entry is idle for a failover window in Redis */
    beat("chat-1", ROLE_CHAT, T + 1200);
    beat("admin-4", ROLE_ADMIN, T + 1200);
    sync_at(T + 1200);
    EXPECT_STATE("chat-5", PEER_DOWN);
    WAIT_FOR(jobs_run == 1, 5000);
    UT_EQ_INT(jobs_redelivered, 1);
    UT_EQ_INT(ntakes, 0); /* the role was never without a live instance */
    env_teardown();
}

static const struct ut_case cases[] = {
    UT_CASE(test_bad_options),
    UT_CASE(test_peer_states),
    UT_CASE(test_no_judgement_before_a_full_window_of_watching),
    UT_CASE(test_instance_not_yet_beaten_is_starting_not_dead),
    UT_CASE(test_absent_role_taken_over_once_the_cluster_settled),
    UT_CASE(test_dead_worker_taken_over_and_handed_back),
    UT_CASE(test_draining_is_taken_over_at_once),
    UT_CASE(test_admin_role_goes_to_the_lowest_live_instance),
    UT_CASE(test_replica_claims_a_dead_replicas_jobs),
    {NULL, NULL},
};

UT_MAIN(cases)
