/* Unit tests for cmdreg: registering the slash commands through the real
 * drest client against a fake Discord (ut_fakehttp.h) and a real Redis
 * (the hash of the registered set).
 *
 * What the cases hold to: the set is PUT only when its hash differs from
 * the stored one, and the hash is stored only after Discord accepted it;
 * done runs once per attempt, never from inside cmdreg_start; a once
 * registration gives up at the first failure; after cmdreg_close nothing
 * runs and nothing leaks (ASan), also with a reply still owed. */
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "base/config.h"
#include "base/log.h"
#include "base/mem.h"
#include "discord/cmdreg.h"
#include "discord/cmds.h"
#include "discord/drest.h"
#include "io/hcl.h"
#include "io/httpd.h"
#include "io/rds.h"
#include "ut.h"
#include "ut_fakehttp.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_redis.h"

#define APP "223456789012345678"
#define PUT_PATH "/api/applications/" APP "/commands"

static struct utfake F;
static struct config cfg;
static struct rds *redis;
static struct drest *rest;
static char host[256], prefix[64], hash_key[160];
static int port, rest_closed, puts_seen;
static redisContext *rawc;

struct done {
    int calls, ok, inside;
};
static int starting; /* set while cmdreg_start runs */

static void on_done(int ok, void *arg)
{
    struct done *d = arg;
    d->calls++;
    d->ok = ok;
    d->inside |= starting;
}

static void serve_put(struct httpd_req *r, void *arg)
{
    (void)arg;
    puts_seen++;
    utfake_answer(&F, r, &F.cn);
}

static void on_flag(void *arg)
{
    (*(int *)arg)++;
}

static void no_state(struct rds *r, int up, void *arg)
{
    (void)r, (void)up, (void)arg;
}

static redisReply *raw(const char *a, const char *b, const char *c)
{
    if (!rawc)
        rawc = utredis_connect(host, port, 5000);
    return utredis_cmd(rawc, a, b, c, (const char *)NULL);
}

static void setup(const char *name, const char *app_id)
{
    utlog_setup("test", "cmdreg", LOG_WARN);
    utredis_shared(host, &port);
    snprintf(prefix, sizeof(prefix), "tcr%d_%s", (int)getpid(), name);
    snprintf(hash_key, sizeof(hash_key), "%s:commands:%s:global", prefix, APP);
    char e_url[300], e_prefix[100], e_app[100];
    snprintf(e_url, sizeof(e_url), "REDIS_URL=%s", getenv("TEST_REDIS_URL"));
    snprintf(e_prefix, sizeof(e_prefix), "REDIS_PREFIX=%s", prefix);
    snprintf(e_app, sizeof(e_app), "DISCORD_APPLICATION_ID=%s", app_id);
    char *envp[] = {e_url, e_prefix, e_app, "DISCORD_TOKEN=MTIzNDU2Nzg5.bot-SECRET-token_Zx9", "ENV_FILE=/dev/null",
                    NULL};
    char *argv[] = {"test_cmdreg", NULL};
    struct buf out;
    buf_init(&out, 1 << 16);
    int rc = cfg_load(&cfg, ROLE_ADMIN, 1, argv, envp, &out);
    if (rc != CFG_RUN)
        UT_FAIL("config: %d %s", rc, buf_str(&out));
    buf_free(&out);
    utfake_init(&F, "ut-cmdreg", "application/json");
    F.cn = (struct utfake_canned){200, "application/json", "[]"};
    puts_seen = rest_closed = 0;
    utfake_route(&F, "PUT", PUT_PATH, serve_put, NULL);
    char err[200];
    struct rds_opts ro = {.url = getenv("TEST_REDIS_URL"), .name = "cmd"};
    UT_EQ_INT(rds_new(&F.loop, &ro, no_state, NULL, &redis, err, sizeof(err)), 0);
    UTLOOP_WAIT_FOR(&F.ul, rds_up(redis), 5000);
    struct drest_opts o = {
        .api_base = utfake_url(&F, "/api"), .token = &cfg.discord_token, .http = F.c, .max_attempts = 1};
    UT_EQ_INT(drest_new(&F.loop, &o, &rest), 0);
    freeReplyObject(raw("DEL", hash_key, NULL));
}

static void teardown(void)
{
    rds_close(redis, NULL, NULL);
    drest_close(rest, on_flag, &rest_closed);
    UTLOOP_WAIT_FOR(&F.ul, rest_closed == 1, 5000);
    utfake_end(&F);
    utfake_free(&F);
    cfg_free(&cfg);
    freeReplyObject(raw("DEL", hash_key, NULL));
    utlog_stop(LOG_WARN);
}

static struct cmdreg *start(int once, struct done *d)
{
    struct cmdreg *r = NULL;
    starting = 1;
    UT_EQ_INT(cmdreg_start(&F.loop, &cfg, redis, rest, once, on_done, d, &r), 0);
    starting = 0;
    return r;
}

/* Registered once, the hash stored after; the same set again is not PUT. */
static void test_registers_only_a_changed_set(void)
{
    setup("changed", APP);
    struct done d = {0};
    struct cmdreg *r = start(0, &d);
    UTLOOP_WAIT_FOR(&F.ul, d.calls == 1, 5000);
    UT_ASSERT(d.ok && !d.inside);
    UT_EQ_INT(puts_seen, 1);
    UT_CONTAINS(F.body, "\"name\":\"채팅\"");
    char want[65];
    cmds_hash(want);
    redisReply *h = NULL;
    for (int i = 0; i < 100; i++) { /* the SET follows done */
        freeReplyObject(h);
        h = raw("GET", hash_key, NULL);
        if (h && h->type == REDIS_REPLY_STRING)
            break;
        utloop_run_for(&F.ul, 20);
    }
    UT_ASSERT(h && h->type == REDIS_REPLY_STRING);
    UT_EQ_STR(h->str, want);
    freeReplyObject(h);
    cmdreg_close(r);
    struct done again = {0};
    r = start(1, &again);
    UTLOOP_WAIT_FOR(&F.ul, again.calls == 1, 5000);
    UT_ASSERT(again.ok);
    UT_EQ_INT(puts_seen, 1); /* unchanged: not sent again */
    cmdreg_close(r);
    teardown();
}

/* Discord refuses: done(0); once gives up (no second PUT, no hash); kept
 * would try again later (60 s: not waited for here). */
static void test_refused_set_stores_no_hash(void)
{
    setup("refused", APP);
    F.cn = (struct utfake_canned){400, "application/json", "{\"message\":\"Invalid Form Body\",\"code\":50035}"};
    struct done d = {0};
    struct cmdreg *r = start(1, &d);
    UTLOOP_WAIT_FOR(&F.ul, d.calls == 1, 5000);
    UT_ASSERT(!d.ok && !d.inside);
    utloop_run_for(&F.ul, 200);
    UT_EQ_INT(d.calls, 1);
    UT_EQ_INT(puts_seen, 1);
    redisReply *h = raw("GET", hash_key, NULL);
    UT_ASSERT(h && h->type == REDIS_REPLY_NIL);
    freeReplyObject(h);
    cmdreg_close(r);
    teardown();
}

/* No DISCORD_APPLICATION_ID and none in Redis: once says so and gives up;
 * kept waits for the gateway holder to store it, then registers. */
static void test_waits_for_the_application_id(void)
{
    setup("appid", "");
    struct done d = {0};
    struct cmdreg *once = start(1, &d);
    UTLOOP_WAIT_FOR(&F.ul, d.calls == 1, 5000);
    UT_ASSERT(!d.ok);
    cmdreg_close(once);
    struct done k = {0};
    struct cmdreg *kept = start(0, &k);
    utloop_run_for(&F.ul, 300);
    UT_EQ_INT(k.calls, 0);
    char app_key[128];
    snprintf(app_key, sizeof(app_key), "%s:discord:app_id", prefix);
    freeReplyObject(raw("SET", app_key, APP));
    UTLOOP_WAIT_FOR(&F.ul, k.calls == 1, 5000); /* looked for every 2 s */
    UT_ASSERT(k.ok);
    UT_EQ_INT(puts_seen, 1);
    cmdreg_close(kept);
    freeReplyObject(raw("DEL", app_key, NULL));
    teardown();
}

/* An application id that is not a Discord id (Redis is writable by
 * others) is never put into a path: no request, done(0). */
static void test_bad_application_id_sends_nothing(void)
{
    setup("badid", "");
    char app_key[128];
    snprintf(app_key, sizeof(app_key), "%s:discord:app_id", prefix);
    freeReplyObject(raw("SET", app_key, "1/../users/@me"));
    /* where curl's dot-segment removal would send it */
    utfake_route(&F, "PUT", "/api/applications/users/@me/commands", serve_put, NULL);
    struct done d = {0};
    struct cmdreg *r = start(1, &d);
    UTLOOP_WAIT_FOR(&F.ul, d.calls == 1, 5000);
    UT_ASSERT(!d.ok);
    utloop_run_for(&F.ul, 200);
    UT_EQ_INT(puts_seen, 0);
    cmdreg_close(r);
    freeReplyObject(raw("DEL", app_key, NULL));
    teardown();
}

/* Closed while the PUT is on its way: done never runs, nothing leaks. */
static void test_close_with_a_reply_owed(void)
{
    setup("close", APP);
    F.cn.hold = 1;
    struct done d = {0};
    struct cmdreg *r = start(0, &d);
    UTLOOP_WAIT_FOR(&F.ul, F.held != NULL, 5000);
    cmdreg_close(r);
    utfake_release(&F);
    utloop_run_for(&F.ul, 200);
    UT_EQ_INT(d.calls, 0);
    teardown();
}

static const struct ut_case cases[] = {
    UT_CASE(test_registers_only_a_changed_set),
    UT_CASE(test_refused_set_stores_no_hash),
    UT_CASE(test_waits_for_the_application_id),
    UT_CASE(test_bad_application_id_sends_nothing),
    UT_CASE(test_close_with_a_reply_owed),
    {0},
};
UT_MAIN(cases)
