/* Unit tests for gwhold: who holds the cluster's one gateway session.
 *
 * Two holders ("admin-1" and "admin-2") are built alone, each with what
 * core would give it (a config, its own Redis connection, a drest, an
 * ingress), against the shared test Redis and the Discord simulator of
 * ut_dsim.h, which serves GET /gateway/bot, the channel list and the
 * gateway. Each case keeps its keys under its own prefix. What a case
 * checks is what Discord and the cluster would see: how many connections
 * and identifies reached the simulator, whether the session was resumed,
 * and what the lease key says. */
#include <hiredis/hiredis.h>
#include <json.h>
#include <uv.h>

#include "base/buf.h"
#include "base/config.h"
#include "discord/drest.h"
#include "base/err.h"
#include "discord/gwhold.h"
#include "io/hcl.h"
#include "discord/ingress.h"
#include "base/log.h"
#include "base/mem.h"
#include "io/rds.h"
#include "ut.h"
#include "ut_dsim.h"
#include "ut_loop.h"
#include "ut_redis.h"
#include "ut_sys.h"

#define TOKEN "Bot.sim-token.gwhold"
#define NHOLD 2

struct holder {
    struct config cfg;
    struct rds *redis;
    struct drest *rest;
    struct ingress *in;
    struct gwhold *h;
    int rest_closed;
};

static uv_loop_t loop;
static struct utloop ul;
static struct hcl *http;
static struct utdsim sim;
static struct holder hold[NHOLD];
static char prefix[64], lease_key[128], fatal_key[128];
static char host[256];
static int port;
static redisContext *rawc;

#define WAIT_FOR(cond, ms) UTLOOP_WAIT_FOR(&ul, cond, ms)
#define HOLDS_FOR(cond, ms) UTLOOP_HOLDS_FOR(&ul, cond, ms)
#define RAW(...) utredis_cmd(rawc, __VA_ARGS__, (const char *)NULL)

static void cleanup(void)
{
    if (prefix[0])
        utredis_del_prefix(host, port, 1, prefix);
}

static void on_rds_state(struct rds *r, int up, void *arg)
{
    (void)r;
    (void)up;
    (void)arg;
}

static void holder_new(struct holder *x, int number, const char *api_base)
{
    char e_url[400], e_prefix[100], e_api[200], e_num[40], e_tok[100];
    snprintf(e_url, sizeof(e_url), "REDIS_URL=%s", getenv("TEST_REDIS_URL"));
    snprintf(e_prefix, sizeof(e_prefix), "REDIS_PREFIX=%s", prefix);
    snprintf(e_api, sizeof(e_api), "DISCORD_API_BASE=%s", api_base);
    snprintf(e_num, sizeof(e_num), "INSTANCE_NUMBER=%d", number);
    snprintf(e_tok, sizeof(e_tok), "DISCORD_TOKEN=%s", TOKEN);
    char *envp[] = {e_url, e_prefix, e_api, e_num, e_tok, "GATEWAY_LEASE_MS=1500", "ENV_FILE=/dev/null", NULL};
    char *argv[] = {"test_gwhold", NULL};
    struct buf out;
    buf_init(&out, 1 << 16);
    int rc = cfg_load(&x->cfg, ROLE_ADMIN, 1, argv, envp, &out);
    if (rc != CFG_RUN)
        UT_FAIL("config: %d %s", rc, buf_str(&out));
    buf_free(&out);
    char err[200];
    struct rds_opts ro = {.url = x->cfg.redis_url, .name = "cmd"};
    UT_EQ_INT(rds_new(&loop, &ro, on_rds_state, NULL, &x->redis, err, sizeof(err)), 0);
    WAIT_FOR(rds_up(x->redis), 5000);
    struct drest_opts dopt = {.api_base = x->cfg.discord_api_base, .token = &x->cfg.discord_token, .http = http,
                              .redis = x->redis, .redis_prefix = prefix};
    UT_EQ_INT(drest_new(&loop, &dopt, &x->rest), 0);
    UT_EQ_INT(ingress_new(&loop, &x->cfg, x->redis, x->rest, &x->in), 0);
    UT_EQ_INT(gwhold_new(&loop, &x->cfg, x->redis, x->rest, x->in, &x->h), 0);
}

static void setup(const char *name, int n)
{
    if (getenv("UT_DEBUG"))
        log_set_level(LOG_DEBUG);
    utredis_shared(host, &port);
    rawc = utredis_connect(host, port, 5000);
    snprintf(prefix, sizeof(prefix), "tg%d_%s", (int)getpid(), name);
    snprintf(lease_key, sizeof(lease_key), "%s:gw:0:lease", prefix);
    snprintf(fatal_key, sizeof(fatal_key), "%s:gw:fatal", prefix);
    atexit(cleanup);
    utdsim_start(&sim, TOKEN);
    UT_EQ_INT(uv_loop_init(&loop), 0);
    utloop_init(&ul, &loop, 5);
    UT_EQ_INT(hcl_new(&loop, &(struct hcl_opts){.user_agent = "test"}, &http), 0);
    char api[128];
    snprintf(api, sizeof(api), "http://127.0.0.1:%d/api/v10", sim.port);
    for (int i = 0; i < n; i++)
        holder_new(&hold[i], i + 1, api);
}

static void on_rest_closed(void *arg)
{
    ((struct holder *)arg)->rest_closed = 1;
}

static void on_http_closed(void *arg)
{
    *(int *)arg = 1;
}

static void teardown(int n)
{
    for (int i = 0; i < n; i++) { /* in core's order (core.c: shutdown) */
        struct holder *x = &hold[i];
        gwhold_stop(x->h);
        rds_close(x->redis, NULL, NULL);
        drest_close(x->rest, on_rest_closed, x);
        WAIT_FOR(x->rest_closed, 5000);
        gwhold_close(x->h);
        ingress_close(x->in);
    }
    int http_closed = 0;
    hcl_close(http, on_http_closed, &http_closed);
    WAIT_FOR(http_closed, 5000);
    utloop_shutdown(&ul);
    for (int i = 0; i < n; i++)
        cfg_free(&hold[i].cfg);
    memset(hold, 0, sizeof(hold));
    utdsim_stop(&sim);
    redisFree(rawc);
    rawc = NULL;
}

/* ---- what the cluster and Discord see ----------------------------------------- */

static struct gwhold_status status_of(int i)
{
    struct gwhold_status st;
    gwhold_status(hold[i].h, &st);
    return st;
}

static int connected(int i)
{
    struct gwhold_status st = status_of(i);
    return st.holder && !strcmp(st.state, "connected");
}

/* The one connected holder, or -1 while there is none (or, wrongly, two). */
static int the_holder(int n)
{
    int who = -1;
    for (int i = 0; i < n; i++)
        if (connected(i)) {
            if (who >= 0)
                return -1;
            who = i;
        }
    return who;
}

/* Gateway connections the simulator has open. */
static int sim_open_connections(void)
{
    struct json_object *o = utdsim_http(&sim, "GET", "/_sim/gateway", NULL);
    struct json_object *conns = utdsim_jget(o, "connections");
    int n = 0;
    for (size_t i = 0; conns && i < json_object_array_length(conns); i++)
        n += !json_object_get_boolean(utdsim_jget(json_object_array_get_idx(conns, i), "closed"));
    json_object_put(o);
    return n;
}

static char *raw_str(const char *key, char *out, size_t cap)
{
    redisReply *r = RAW("GET", key);
    snprintf(out, cap, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return out;
}

/* The holder stored its session for the next one to resume. */
static int stored_session(void)
{
    char key[160];
    snprintf(key, sizeof(key), "%s:gw:0:session", prefix);
    redisReply *r = RAW("HGET", key, "session_id");
    int ok = r->type == REDIS_REPLY_STRING && r->len > 0;
    freeReplyObject(r);
    return ok;
}

/* ---- cases ------------------------------------------------------------------- */

/* Two candidates: exactly one connects and identifies; the other waits
 * without a connection. Handed over, the session is resumed by the other,
 * not identified again, and the stored session carries over. */
static void test_one_holder_and_a_resumed_handover(void)
{
    setup("handover", 2);
    gwhold_start(hold[0].h);
    gwhold_start(hold[1].h);
    WAIT_FOR(the_holder(2) >= 0, 10000);
    int a = the_holder(2), b = 1 - a;
    HOLDS_FOR(the_holder(2) == a && !status_of(b).holder && !strcmp(status_of(b).state, "candidate"), 1000);
    UT_EQ_INT(sim_open_connections(), 1);
    UT_EQ_INT(utdsim_gw_int(&sim, "identifies"), 1);
    char tok[128];
    UT_CONTAINS(raw_str(lease_key, tok, sizeof(tok)), hold[a].cfg.name);

    gwhold_stop(hold[a].h);
    WAIT_FOR(connected(b), 10000);
    UT_EQ_INT(utdsim_gw_int(&sim, "identifies"), 1);
    UT_EQ_INT(utdsim_gw_int(&sim, "resumes"), 1);
    UT_CONTAINS(raw_str(lease_key, tok, sizeof(tok)), hold[b].cfg.name);
    UT_ASSERT(!status_of(a).holder);
    WAIT_FOR(sim_open_connections() == 1, 5000);
    teardown(2);
}

/* Fencing: when the lease key names someone else (a holder that came back
 * after a partition, an operator), the old holder drops its connection on
 * its next renewal, well within the lease, without ending the session;
 * once the key is free again it resumes the same session. */
static void test_stolen_lease_drops_the_connection_at_once(void)
{
    setup("stolen", 1);
    gwhold_start(hold[0].h);
    WAIT_FOR(connected(0), 10000);
    WAIT_FOR(stored_session(), 5000);
    utloop_run_for(&ul, 100);
    freeReplyObject(RAW("SET", lease_key, "intruder-9:1", "PX", "3000"));
    uint64_t t0 = utsys_mono_ms();
    WAIT_FOR(!status_of(0).holder && sim_open_connections() == 0, 5000);
    UT_ASSERT(utsys_mono_ms() - t0 < (uint64_t)ut_scale_ms(1500)); /* a renewal is every 500 ms */
    UT_EQ_INT(utdsim_gw_int(&sim, "sessions.0.connected"), 0);
    struct json_object *o = utdsim_http(&sim, "GET", "/_sim/gateway", NULL);
    UT_EQ_STR(json_object_get_string(utdsim_jget(o, "sessions.0.state")), "active"); /* not ended */
    json_object_put(o);
    WAIT_FOR(connected(0), 10000); /* the intruder's key expired */
    UT_EQ_INT(utdsim_gw_int(&sim, "identifies"), 1);
    UT_EQ_INT(utdsim_gw_int(&sim, "resumes"), 1);
    teardown(1);
}

/* A fatal close (4004: the token is wrong) stops the holder for good, says
 * why, and tells the cluster: the other candidate, taking the lease over,
 * does not burn an identify on the same cause. */
static void test_fatal_close_stops_every_holder(void)
{
    setup("fatal", 2);
    gwhold_start(hold[0].h);
    WAIT_FOR(the_holder(1) == 0, 10000);
    gwhold_start(hold[1].h);
    utdsim_post(&sim, "/_sim/gateway/close", "{\"code\": 4004}");
    WAIT_FOR(!strcmp(status_of(0).state, "stopped"), 10000);
    UT_CONTAINS(status_of(0).error, "4004");
    char why[256];
    WAIT_FOR(strstr(raw_str(fatal_key, why, sizeof(why)), "4004"), 5000);
    WAIT_FOR(!strcmp(status_of(1).state, "stopped"), 10000);
    UT_CONTAINS(status_of(1).error, "4004");
    UT_EQ_INT(utdsim_gw_int(&sim, "identifies"), 1);
    UT_EQ_INT(sim_open_connections(), 0);
    teardown(2);
}

static const struct ut_case cases[] = {
    UT_CASE(test_one_holder_and_a_resumed_handover),
    UT_CASE(test_stolen_lease_drops_the_connection_at_once),
    UT_CASE(test_fatal_close_stops_every_holder),
    {0},
};
UT_MAIN(cases)
