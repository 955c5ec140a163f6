/* Unit tests for lease, the gateway's fencing lock, against real Redis.
 *
 * Two or three leases on one key play the instances of a cluster. A case
 * that has to take Redis away (kill it, stop it) uses a private server;
 * the others share the test server under their own key. Time is the loop's:
 * the ttl is short (600 ms, the smallest allowed is 300) so a case sees
 * several renewals and expiries in a second or two. */
#include <signal.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "base/err.h"
#include "service/lease.h"
#include "base/log.h"
#include "io/rds.h"
#include "ut.h"
#include "ut_loop.h"
#include "ut_redis.h"
#include "ut_sys.h"

#define TTL 600

static uv_loop_t loop;
static struct utloop lp;
static char host[256];
static int port;
static char url[300], key[128];
static redisContext *rawc;
static struct utredis_srv *own;

#define WAIT_FOR(cond, ms) UTLOOP_WAIT_FOR(&lp, cond, ms)
#define HOLDS_FOR(cond, ms) UTLOOP_HOLDS_FOR(&lp, cond, ms)
#define RAW(...) utredis_cmd(rawc ? rawc : (rawc = utredis_connect(host, port, 5000)), __VA_ARGS__, (const char *)NULL)

struct member {
    struct rds *r;
    struct lease *l;
    int held, gained, lost;
    uint64_t gained_at;
};

static void on_lease(struct lease *l, int held, void *arg)
{
    (void)l;
    struct member *m = arg;
    m->held = held;
    if (held) {
        m->gained++;
        m->gained_at = uv_now(&loop);
    } else {
        m->lost++;
    }
}

static void on_state(struct rds *r, int up, void *arg)
{
    (void)r;
    (void)up;
    (void)arg;
}

static void setup(const char *name, int private_redis)
{
    if (private_redis) {
        own = utredis_start(name, NULL);
        utredis_url(own, NULL, 0, url, sizeof(url));
        snprintf(host, sizeof(host), "127.0.0.1");
        port = own->port;
    } else {
        snprintf(url, sizeof(url), "%s", utredis_shared(host, &port));
    }
    snprintf(key, sizeof(key), "tl%d_%s:gw:0:lease", (int)getpid(), name);
    UT_EQ_INT(uv_loop_init(&loop), 0);
    utloop_init(&lp, &loop, 0);
}

static void join(struct member *m, const char *owner, int stall_ms)
{
    memset(m, 0, sizeof(*m));
    char err[200];
    struct rds_opts o = {.url = url, .name = owner, .stall_timeout_ms = stall_ms};
    UT_EQ_INT(rds_new(&loop, &o, on_state, NULL, &m->r, err, sizeof(err)), 0);
    WAIT_FOR(rds_up(m->r), 5000);
    UT_EQ_INT(lease_new(&loop, m->r, key, owner, TTL, on_lease, m, &m->l), 0);
    lease_start(m->l);
}

/* Dies as kill -9 would: no release, the key stays until it expires. */
static void die(struct member *m)
{
    lease_close(m->l);
    rds_close(m->r, NULL, NULL);
    m->l = NULL;
    m->r = NULL;
    m->held = 0;
}

static void leave(struct member *m)
{
    if (!m->l)
        return;
    lease_release(m->l);
    die(m);
}

static void teardown(void)
{
    utloop_close(&lp);
    uv_run(&loop, UV_RUN_DEFAULT);
    UT_EQ_INT(uv_loop_close(&loop), 0);
    if (rawc)
        redisFree(rawc);
    rawc = NULL;
    if (own) {
        utredis_kill_all();
    } else {
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "tl%d_", (int)getpid());
        utredis_del_prefix(host, port, 1, prefix);
    }
}

static long long fence_of(const char *token)
{
    const char *c = strrchr(token, ':');
    return c ? strtoll(c + 1, NULL, 10) : -1;
}

static char *raw_get(char *out, size_t len)
{
    redisReply *r = RAW("GET", key);
    snprintf(out, len, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return out;
}

/* One holder at a time; every new holder's fencing token is larger, so a
 * write under an old token can be told from one under the new. */
static void test_one_holder_and_growing_fence(void)
{
    setup("one", 0);
    struct member a, b;
    join(&a, "a", 0);
    join(&b, "b", 0);
    WAIT_FOR(a.held || b.held, 2000);
    HOLDS_FOR(a.held + b.held == 1, 3 * TTL);
    struct member *h = a.held ? &a : &b, *o = a.held ? &b : &a;
    char tok[160], now[160];
    snprintf(tok, sizeof(tok), "%s", lease_token(h->l));
    UT_EQ_STR(raw_get(now, sizeof(now)), tok);
    leave(h);
    WAIT_FOR(o->held, 2000);
    UT_ASSERT(fence_of(lease_token(o->l)) > fence_of(tok));
    leave(o);
    teardown();
}

/* Defect 14's part here: a holder killed with kill -9 is replaced within
 * the ttl plus one candidate tick, the window that has to fit in
 * Discord's 3 s (with the default ttl of 1.5 s: under 1.9 s). */
static void test_dead_holder_replaced_within_ttl(void)
{
    setup("dead", 0);
    struct member a, b;
    join(&a, "a", 0);
    WAIT_FOR(a.held, 2000);
    join(&b, "b", 0);
    HOLDS_FOR(!b.held, TTL);
    uint64_t t0 = uv_now(&loop);
    die(&a);
    WAIT_FOR(b.held, 3 * TTL);
    uint64_t took = b.gained_at - t0;
    fprintf(stderr, "replaced after %llu ms (ttl %d)\n", (unsigned long long)took, TTL);
    UT_ASSERT(took <= (uint64_t)(TTL + TTL / 5 + ut_scale_ms(200)));
    leave(&b);
    teardown();
}

/* Someone else's value in the key: the holder stops at its next renewal. */
static void test_stolen_lease_lost_at_once(void)
{
    setup("stolen", 0);
    struct member a;
    join(&a, "a", 0);
    WAIT_FOR(a.held, 2000);
    freeReplyObject(RAW("SET", key, "thief:999999", "PX", "60000"));
    WAIT_FOR(!a.held, TTL);
    UT_EQ_INT(a.lost, 1);
    leave(&a);
    teardown();
}

/* Defect 13's part here: with Redis gone (nobody can take the lease then)
 * the holder keeps holding, so the gateway and the acknowledgements stay
 * up; when Redis returns empty, the holder sets its key again. */
static void test_holder_keeps_lease_while_redis_is_away(void)
{
    setup("away", 1);
    struct member a;
    join(&a, "a", 0);
    WAIT_FOR(a.held, 2000);
    char tok[160], now[160];
    snprintf(tok, sizeof(tok), "%s", lease_token(a.l));
    redisFree(rawc);
    rawc = NULL;
    utredis_kill(own);
    WAIT_FOR(!rds_up(a.r), 5000);
    HOLDS_FOR(a.held, 5 * TTL);
    UT_EQ_INT(a.lost, 0);
    utredis_restart(own); /* no persistence: the key is gone */
    WAIT_FOR(rds_up(a.r), 10000);
    utloop_run_for(&lp, TTL);
    UT_EQ_STR(raw_get(now, sizeof(now)), tok);
    UT_ASSERT(a.held);
    /* and a candidate arriving now does not get it */
    struct member b;
    join(&b, "b", 0);
    HOLDS_FOR(!b.held && a.held, 3 * TTL);
    leave(&b);
    leave(&a);
    teardown();
}

/* Redis that answers nobody (stopped) is not "away": the connection is up
 * but renewals are not confirmed, and the holder must give up before the
 * ttl runs out, because the lease may expire under it. */
static void test_holder_gives_up_when_renewals_hang(void)
{
    setup("hang", 1);
    struct member a;
    join(&a, "a", 10000);
    WAIT_FOR(a.held, 2000);
    uint64_t t0 = uv_now(&loop);
    utredis_signal(own, SIGSTOP);
    WAIT_FOR(!a.held, 2 * TTL);
    UT_ASSERT(uv_now(&loop) - t0 < (uint64_t)TTL + ut_scale_ms(100));
    utredis_signal(own, SIGCONT);
    leave(&a);
    teardown();
}

static const struct ut_case cases[] = {
    UT_CASE(test_one_holder_and_growing_fence),
    UT_CASE(test_dead_holder_replaced_within_ttl),
    UT_CASE(test_stolen_lease_lost_at_once),
    UT_CASE(test_holder_keeps_lease_while_redis_is_away),
    UT_CASE(test_holder_gives_up_when_renewals_hang),
    {NULL, NULL},
};

UT_MAIN(cases)
