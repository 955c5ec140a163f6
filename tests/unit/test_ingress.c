/* Unit tests for ingress, against a real redis-server and a fake Discord.
 *
 * The ingress is built alone: a config loaded from a few variables, an rds
 * connection to the shared test Redis (or a private one a case stops), and
 * a drest talking to the fake Discord of ut_fakehttp.h, whose routes answer
 * the interaction callbacks (and can hold them, to play a slow Discord).
 * Each case keeps its keys under its own prefix "ti<pid>_<case>" and the
 * lease key is set to the case's token, as gwhold would. Events are handed
 * over exactly as gw hands them: parsed JSON plus the raw bytes, many
 * within one loop iteration when a case plays a burst. */
#include <sodium.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <json.h>
#include <uv.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/config.h"
#include "discord/drest.h"
#include "base/err.h"
#include "discord/ingress.h"
#include "discord/ixjob.h"
#include "base/log.h"
#include "base/mem.h"
#include "io/rds.h"
#include "ut.h"
#include "ut_fakehttp.h"
#include "ut_loop.h"
#include "ut_redis.h"
#include "ut_sys.h"

#define TOKEN "inst-1:7"
#define DISCORD_EPOCH_MS 1420070400000LL

static struct utfake f;
static struct config cfg;
static struct rds *redis;
static struct drest *rest;
static struct ingress *in;
static char prefix[64], lease_key[128], session_key[128], chat_stream[128], admin_stream[128];
static char host[256];
static int port;
static char redis_url[300];
static struct utredis_srv *own;
static int troubles[2];
static char pk_hex[2 * crypto_sign_PUBLICKEYBYTES + 1];
static unsigned char sk[crypto_sign_SECRETKEYBYTES];

#define WAIT_FOR(cond, ms) UTLOOP_WAIT_FOR(&f.ul, cond, ms)
#define HOLDS_FOR(cond, ms) UTLOOP_HOLDS_FOR(&f.ul, cond, ms)

/* ---- the fake Discord's interaction callbacks ------------------------------- */

struct cbroute {
    int n;                   /* callbacks received */
    int hold;                /* keep them unanswered */
    struct httpd_req *held;  /* the last held one */
    int status;              /* 0 = 204 */
    const char *body;        /* answer body */
    char last[256];          /* last callback body */
};
static struct cbroute cb;

static void on_callback(struct httpd_req *r, void *arg)
{
    struct cbroute *c = arg;
    size_t n;
    const char *b = httpd_req_body(r, &n);
    snprintf(c->last, sizeof(c->last), "%.*s", (int)n, b);
    c->n++;
    if (c->hold) {
        c->held = r;
        return;
    }
    const char *body = c->body ? c->body : "";
    httpd_respond(r, c->status ? c->status : 204, "application/json", body, strlen(body));
}

static void route_callback(const char *id, const char *token)
{
    char path[256];
    snprintf(path, sizeof(path), "/interactions/%s/%s/callback", id, token);
    UT_EQ_INT(httpd_route(f.h, "POST", path, on_callback, &cb), 0);
}

/* ---- Redis from outside ------------------------------------------------------- */

static redisContext *rawc;

#define RAW(...) utredis_cmd(rawc ? rawc : (rawc = utredis_connect(host, port, 5000)), __VA_ARGS__, (const char *)NULL)

static long long raw_int(redisReply *r)
{
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer
                  : r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10)
                                                  : -1;
    freeReplyObject(r);
    return v;
}

static long long xlen(const char *stream)
{
    return raw_int(RAW("XLEN", stream));
}

static long long stored_seq(void)
{
    return raw_int(RAW("HGET", session_key, "seq"));
}

/* Batches not yet confirmed by Redis. */
static size_t held(void)
{
    struct ingress_stats st;
    ingress_stats(in, &st);
    return st.held_batches;
}

static void cleanup(void)
{
    if (prefix[0] && !own)
        utredis_del_prefix(host, port, 1, prefix);
}

/* ---- building the ingress ------------------------------------------------------ */

static void on_trouble(enum ingress_trouble t, void *arg)
{
    (void)arg;
    troubles[t]++;
}

static void on_rds_state(struct rds *r, int up, void *arg)
{
    (void)r;
    (void)up;
    (void)arg;
}

static void setup(const char *name, const char *url)
{
    UT_ASSERT(sodium_init() >= 0);
    unsigned char pk[crypto_sign_PUBLICKEYBYTES];
    crypto_sign_keypair(pk, sk);
    sodium_bin2hex(pk_hex, sizeof(pk_hex), pk, sizeof(pk));
    utredis_shared(host, &port);
    snprintf(redis_url, sizeof(redis_url), "%s", url ? url : getenv("TEST_REDIS_URL"));
    snprintf(prefix, sizeof(prefix), "ti%d_%s", (int)getpid(), name);
    snprintf(lease_key, sizeof(lease_key), "%s:gw:0:lease", prefix);
    snprintf(session_key, sizeof(session_key), "%s:gw:0:session", prefix);
    snprintf(chat_stream, sizeof(chat_stream), "%s:jobs:chat", prefix);
    snprintf(admin_stream, sizeof(admin_stream), "%s:jobs:admin", prefix);
    atexit(cleanup);

    char e_url[400], e_prefix[100], e_pk[120];
    snprintf(e_url, sizeof(e_url), "REDIS_URL=%s", redis_url);
    snprintf(e_prefix, sizeof(e_prefix), "REDIS_PREFIX=%s", prefix);
    snprintf(e_pk, sizeof(e_pk), "DISCORD_PUBLIC_KEY=%s", pk_hex);
    char *envp[] = {e_url, e_prefix, e_pk, "STREAM_MAXLEN=1000000", "ENV_FILE=/dev/null", NULL};
    char *argv[] = {"test_ingress", NULL};
    struct buf out;
    buf_init(&out, 1 << 16);
    int rc = cfg_load(&cfg, ROLE_ADMIN, 1, argv, envp, &out);
    if (rc != CFG_RUN)
        UT_FAIL("config: %d %s", rc, buf_str(&out));
    buf_free(&out);

    utfake_init(&f, "test", "application/json");
    char err[200];
    struct rds_opts ro = {.url = redis_url, .name = "cmd"};
    UT_EQ_INT(rds_new(&f.loop, &ro, on_rds_state, NULL, &redis, err, sizeof(err)), 0);
    WAIT_FOR(rds_up(redis), 5000);
    struct drest_opts dopt = {.api_base = utfake_url(&f, ""), .http = f.c, .max_attempts = 1};
    UT_EQ_INT(drest_new(&f.loop, &dopt, &rest), 0);
    UT_EQ_INT(ingress_new(&f.loop, &cfg, redis, rest, &in), 0);
    if (!own) {
        redisReply *r = RAW("SET", lease_key, TOKEN);
        freeReplyObject(r);
    }
}

static void take_holder(void)
{
    ingress_set_holder(in, lease_key, session_key, TOKEN, on_trouble, NULL);
}

static int closed_rest;
static void on_rest_closed(void *arg)
{
    (void)arg;
    closed_rest = 1;
}

static void teardown(void)
{
    if (cb.held)
        httpd_respond(cb.held, 204, "application/json", "", 0);
    cb.held = NULL;
    ingress_set_holder(in, NULL, NULL, NULL, NULL, NULL);
    rds_close(redis, NULL, NULL);
    drest_close(rest, on_rest_closed, NULL);
    WAIT_FOR(closed_rest, 5000);
    ingress_close(in);
    utfake_end(&f);
    utfake_free(&f);
    cfg_free(&cfg);
    if (rawc)
        redisFree(rawc);
    rawc = NULL;
}

/* ---- events ------------------------------------------------------------------- */

/* One dispatch as gw hands it over: the frame as received, d inside it. */
static void feed(int64_t seq, const char *type, const char *json)
{
    static struct buf frame;
    if (!frame.max)
        buf_init(&frame, (size_t)64 << 20);
    buf_reset(&frame);
    UT_EQ_INT(buf_printf(&frame, "{\"op\":0,\"s\":%lld,\"t\":\"%s\",\"d\":", (long long)seq, type), 0);
    size_t d_at = frame.len;
    UT_EQ_INT(buf_puts(&frame, json), 0);
    UT_EQ_INT(buf_puts(&frame, "}"), 0);
    struct gw_event ev = {.seq = seq, .type = type, .d = frame.p + d_at, .d_len = strlen(json),
                          .raw = frame.p, .raw_len = frame.len};
    ingress_gateway_event(in, &ev);
}

/* The chat channel the messages go to, as GUILD_CREATE teaches it. */
static void feed_guild(int64_t seq)
{
    feed(seq, "GUILD_CREATE",
         "{\"id\":\"1\",\"channels\":[{\"id\":\"10\",\"name\":\"채팅방-1\"},{\"id\":\"11\",\"name\":\"일반\"}]}");
}

static void feed_message(int64_t seq, size_t pad)
{
    static char *big;
    static size_t bigcap;
    if (pad + 512 > bigcap) {
        bigcap = pad + 512;
        big = realloc(big, bigcap);
    }
    int n = snprintf(big, bigcap,
                     "{\"id\":\"%lld\",\"channel_id\":\"10\",\"guild_id\":\"1\",\"author\":{\"id\":\"5\"},"
                     "\"content\":\"",
                     (long long)seq);
    memset(big + n, 'x', pad);
    snprintf(big + n + pad, bigcap - (size_t)n - pad, "\",\"mentions\":[]}");
    feed(seq, "MESSAGE_CREATE", big);
}

static void snowflake_now(char *out, size_t len, int64_t age_ms)
{
    snprintf(out, len, "%llu", (unsigned long long)((clock_wall_ms() - age_ms - DISCORD_EPOCH_MS) << 22));
}

static void interaction_json(char *out, size_t len, const char *id, const char *token)
{
    snprintf(out, len,
             "{\"id\":\"%s\",\"token\":\"%s\",\"type\":2,\"application_id\":\"9\",\"guild_id\":\"1\","
             "\"channel_id\":\"11\",\"locale\":\"ko\",\"member\":{\"user\":{\"id\":\"5\"},\"permissions\":\"0\"},"
             "\"data\":{\"name\":\"핑\"}}",
             id, token);
}

/* ---- cases: batches --------------------------------------------------------------- */

/* Defects 1 and 9: a burst far beyond one batch, handed over inside one
 * loop iteration (a resume replaying a takeover gap does exactly this),
 * overflowed the argument arrays at the 206th event and the stack argv at
 * the 256th. Every event must arrive, in order, and the stored sequence
 * must be the last one. */
static void test_burst_of_10000_in_one_iteration(void)
{
    setup("burst", NULL);
    take_holder();
    feed_guild(1);
    for (int64_t s = 2; s <= 10001; s++)
        feed_message(s, 200);
    WAIT_FOR(xlen(chat_stream) == 10000 && stored_seq() == 10001 && held() == 0, 30000);
    redisReply *r = RAW("XRANGE", chat_stream, "-", "+", "COUNT", "1");
    UT_ASSERT(r->type == REDIS_REPLY_ARRAY && r->elements == 1);
    freeReplyObject(r);
    UT_EQ_INT(troubles[INGRESS_RESYNC], 0);
    struct ingress_stats st;
    ingress_stats(in, &st);
    UT_EQ_INT(st.routed, 10000);
    UT_EQ_INT(st.held_batches, 0);
    teardown();
}

static void feed_message_in(int64_t seq, const char *channel_id)
{
    char m[300];
    snprintf(m, sizeof(m),
             "{\"id\":\"%lld\",\"channel_id\":\"%s\",\"guild_id\":\"1\",\"author\":{\"id\":\"5\"},"
             "\"content\":\"hi\",\"mentions\":[]}",
             (long long)seq, channel_id);
    feed(seq, "MESSAGE_CREATE", m);
}

/* The channel cache decides where a message goes: a thread by its parent's
 * name, a channel by its latest name, and a deleted one no more. Ids are
 * numbers ("010" is channel 10). */
static void test_channel_cache_learns_renames_and_forgets(void)
{
    setup("chans", NULL);
    take_holder();
    feed(1, "GUILD_CREATE",
         "{\"id\":\"1\",\"channels\":[{\"id\":\"10\",\"name\":\"채팅방-1\"},{\"id\":\"11\",\"name\":\"일반\"}],"
         "\"threads\":[{\"id\":\"20\",\"name\":\"질문\",\"parent_id\":\"10\"}]}");
    feed_message_in(2, "10");  /* routed */
    feed_message_in(3, "20");  /* routed: the parent is a chat channel */
    feed_message_in(4, "11");  /* not a chat channel */
    feed_message_in(5, "010"); /* routed: channel 10 */
    feed(6, "CHANNEL_UPDATE", "{\"id\":\"11\",\"name\":\"채팅방-2\"}");
    feed_message_in(7, "11"); /* routed: renamed into the chat channels */
    feed(8, "THREAD_DELETE", "{\"id\":\"20\",\"parent_id\":\"10\"}");
    feed(9, "CHANNEL_DELETE", "{\"id\":\"10\"}");
    feed_message_in(10, "20"); /* unknown now */
    feed_message_in(11, "10"); /* unknown now */
    feed_message_in(12, "11"); /* routed */
    WAIT_FOR(stored_seq() == 12 && held() == 0, 10000);
    UT_EQ_INT(xlen(chat_stream), 5);
    redisReply *r = RAW("XRANGE", chat_stream, "-", "+");
    UT_ASSERT(r->type == REDIS_REPLY_ARRAY && r->elements == 5);
    static const char *const want[] = {"\"id\":\"2\"", "\"id\":\"3\"", "\"id\":\"5\"", "\"id\":\"7\"",
                                       "\"id\":\"12\""};
    for (size_t i = 0; i < r->elements; i++)
        UT_CONTAINS(r->element[i]->element[1]->element[3]->str, want[i]);
    freeReplyObject(r);
    teardown();
}

/* Every entry of the chat stream is the message of the sequence it was
 * routed for, whole, in order from first_seq. */
static void check_chat_entries(int64_t first_seq, size_t pad)
{
    redisReply *r = RAW("XRANGE", chat_stream, "-", "+");
    UT_ASSERT(r->type == REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *fields = r->element[i]->element[1];
        UT_EQ_INT(fields->elements, 6);
        char want[64];
        snprintf(want, sizeof(want), "\"d\":{\"id\":\"%lld\",", (long long)(first_seq + (int64_t)i));
        if (!strstr(fields->element[3]->str, want))
            UT_FAIL("entry %zu is not the message of sequence %lld", i, (long long)(first_seq + (int64_t)i));
        UT_ASSERT(fields->element[3]->len > pad);
    }
    freeReplyObject(r);
}

/* Defect 2: the argument buffer is capped (it was 64 MiB for a batch of
 * 256 events); a burst beyond it overran it and the offsets pointed past
 * the data, sending out-of-bounds bytes to Redis. Now a burst is split
 * into batches of at most 8 MiB (all of them arrive, whole), and a burst
 * beyond what may be held at once (64 MiB here: 300 events of 256 KiB in
 * one iteration) fails cleanly: what was stored is whole and continuous,
 * and the holder is asked to resync so Discord replays the rest. */
static void test_burst_of_big_events_is_split(void)
{
    setup("big", NULL);
    take_holder();
    feed_guild(1);
    for (int64_t s = 2; s <= 151; s++)
        feed_message(s, 256 * 1024);
    WAIT_FOR(xlen(chat_stream) == 150 && stored_seq() == 151 && held() == 0, 30000);
    check_chat_entries(2, 256 * 1024);
    struct ingress_stats st;
    ingress_stats(in, &st);
    if (st.batches < 5) /* 8 MiB per batch */
        UT_FAIL("only %llu batches", (unsigned long long)st.batches);
    UT_EQ_INT(troubles[INGRESS_RESYNC], 0);
    for (int64_t s = 152; s <= 451; s++)
        feed_message(s, 256 * 1024);
    WAIT_FOR(troubles[INGRESS_RESYNC] == 1, 30000);
    utloop_run_for(&f.ul, 300);
    long long n = xlen(chat_stream);
    UT_EQ_INT(stored_seq(), 1 + n);
    UT_ASSERT(n < 450);
    check_chat_entries(2, 256 * 1024);
    teardown();
}

/* An event bigger than a whole batch can hold fails its batch cleanly:
 * nothing of it is written, the stored sequence does not move, and the
 * holder is asked to resync (Discord replays from the stored sequence). */
static void test_event_beyond_the_cap_fails_cleanly(void)
{
    setup("cap", NULL);
    ingress__set_limits(in, 0, 4096, 0);
    take_holder();
    feed_guild(1);
    WAIT_FOR(stored_seq() == 1, 5000);
    feed_message(2, 100);
    feed_message(3, 10000);
    feed_message(4, 100);
    WAIT_FOR(troubles[INGRESS_RESYNC] == 1, 5000);
    HOLDS_FOR(stored_seq() <= 2, 300);
    UT_ASSERT(xlen(chat_stream) <= 1);
    redisReply *r = RAW("XRANGE", chat_stream, "-", "+");
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *fields = r->element[i]->element[1];
        UT_EQ_INT(fields->elements, 6);
        UT_CONTAINS(fields->element[3]->str, "\"id\":\"2\"");
    }
    freeReplyObject(r);
    teardown();
}

/* Fencing: once another instance holds the lease, a batch collected under
 * the old token writes nothing and the holder is told to step down. A
 * lease key that is simply gone (Redis restarted) is set again for the
 * token, and routing goes on. */
static void test_fenced_holder_writes_nothing(void)
{
    setup("fence", NULL);
    take_holder();
    feed_guild(1);
    feed_message(2, 10);
    WAIT_FOR(stored_seq() == 2 && held() == 0, 5000);
    freeReplyObject(RAW("DEL", lease_key));
    feed_message(3, 10);
    WAIT_FOR(stored_seq() == 3 && held() == 0, 5000);
    redisReply *r = RAW("GET", lease_key);
    UT_EQ_STR(r->str, TOKEN);
    freeReplyObject(r);
    freeReplyObject(RAW("SET", lease_key, "inst-2:8"));
    feed_message(4, 10);
    WAIT_FOR(troubles[INGRESS_FENCED] == 1, 5000);
    UT_EQ_INT(stored_seq(), 3);
    UT_EQ_INT(xlen(chat_stream), 2);
    teardown();
}

/* ---- cases: interactions over the gateway ------------------------------------------ */

/* Defect 16: the job of an interaction must not reach a worker before
 * Discord has the acknowledgement, or the worker's first edit gets 10008
 * Unknown Message. The acknowledgement goes out at once; the job follows
 * its answer. */
static void test_job_waits_for_the_acknowledgement(void)
{
    setup("ackfirst", NULL);
    take_holder();
    char id[32], json[1024];
    snowflake_now(id, sizeof(id), 0);
    route_callback(id, "tokA");
    cb.hold = 1;
    interaction_json(json, sizeof(json), id, "tokA");
    feed(1, "INTERACTION_CREATE", json);
    WAIT_FOR(cb.n == 1, 5000);
    UT_CONTAINS(cb.last, "\"type\":5");
    HOLDS_FOR(xlen(admin_stream) == 0, 300);
    /* a message after it waits too: order is kept */
    feed_guild(2);
    feed_message(3, 10);
    HOLDS_FOR(xlen(chat_stream) == 0, 200);
    httpd_respond(cb.held, 204, "application/json", "", 0);
    cb.held = NULL;
    WAIT_FOR(xlen(admin_stream) == 1 && xlen(chat_stream) == 1 && stored_seq() == 3, 5000);
    teardown();
}

/* A replay of an interaction nobody acknowledged in time (10062): no
 * answer can reach the user, so no job is made; its sequence is stored. A
 * replay another holder acknowledged (40060) is routed. */
static void test_replayed_interactions(void)
{
    setup("replay", NULL);
    take_holder();
    char id1[32], id2[32], json[1024];
    snowflake_now(id1, sizeof(id1), 5000);
    snowflake_now(id2, sizeof(id2), 4000);
    route_callback(id1, "tok1");
    cb.status = 404;
    cb.body = "{\"message\":\"Unknown interaction\",\"code\":10062}";
    interaction_json(json, sizeof(json), id1, "tok1");
    feed(1, "INTERACTION_CREATE", json);
    WAIT_FOR(stored_seq() == 1, 5000);
    UT_EQ_INT(xlen(admin_stream), 0);
    route_callback(id2, "tok2");
    cb.status = 400;
    cb.body = "{\"message\":\"Interaction has already been acknowledged.\",\"code\":40060}";
    interaction_json(json, sizeof(json), id2, "tok2");
    feed(2, "INTERACTION_CREATE", json);
    WAIT_FOR(stored_seq() == 2 && xlen(admin_stream) == 1, 5000);
    teardown();
}

/* A replay older than 10 s was handled before (the stored sequence went
 * back: Redis restored from a backup) or cannot be answered: it is not
 * routed, not even when Discord says it was acknowledged. Except what this
 * holder acknowledged itself and then dropped unstored (here: fenced,
 * then the lease comes back): that one is routed when it is replayed. */
static void test_old_replays(void)
{
    setup("oldreplay", NULL);
    take_holder();
    char old[32], mine[32], json[1024];
    snowflake_now(old, sizeof(old), 60000);
    route_callback(old, "tokOld");
    cb.status = 400;
    cb.body = "{\"message\":\"Interaction has already been acknowledged.\",\"code\":40060}";
    interaction_json(json, sizeof(json), old, "tokOld");
    feed(1, "INTERACTION_CREATE", json);
    WAIT_FOR(stored_seq() == 1 && held() == 0, 5000);
    UT_EQ_INT(xlen(admin_stream), 0);
    UT_EQ_INT(cb.n, 0); /* not even acknowledged */

    cb.status = 0;
    cb.body = NULL;
    snowflake_now(mine, sizeof(mine), 9000);
    route_callback(mine, "tokMine");
    freeReplyObject(RAW("SET", lease_key, "inst-2:8"));
    interaction_json(json, sizeof(json), mine, "tokMine");
    feed(2, "INTERACTION_CREATE", json);
    WAIT_FOR(troubles[INGRESS_FENCED] == 1 && cb.n == 1, 5000);
    UT_EQ_INT(xlen(admin_stream), 0);
    utloop_run_for(&f.ul, 1500); /* now older than 10 s */
    freeReplyObject(RAW("SET", lease_key, TOKEN));
    take_holder();
    cb.status = 400;
    cb.body = "{\"message\":\"Interaction has already been acknowledged.\",\"code\":40060}";
    feed(2, "INTERACTION_CREATE", json);
    WAIT_FOR(stored_seq() == 2 && xlen(admin_stream) == 1, 5000);
    teardown();
}

/* Defect 13: with Redis away, interactions are still acknowledged at once
 * (Discord allows 3 s), their jobs are held and stored when Redis returns:
 * nobody gets an error and nothing is lost. */
static void test_redis_away_acks_and_holds(void)
{
    own = utredis_start("ing", NULL);
    char url[300];
    utredis_url(own, NULL, 0, url, sizeof(url));
    setup("away", url);
    host[0] = 0;
    snprintf(host, sizeof(host), "127.0.0.1");
    port = own->port;
    redisReply *r = RAW("SET", lease_key, TOKEN);
    freeReplyObject(r);
    redisFree(rawc);
    rawc = NULL;
    take_holder();
    feed_guild(1);
    WAIT_FOR(stored_seq() == 1, 5000);
    redisFree(rawc);
    rawc = NULL;
    utredis_kill(own);
    WAIT_FOR(!rds_up(redis), 5000);
    char ids[20][32], tok[20][16], json[1024];
    for (int i = 0; i < 20; i++) {
        snowflake_now(ids[i], sizeof(ids[i]), 0);
        snprintf(tok[i], sizeof(tok[i]), "tok%d", i);
        /* distinct ids: the snowflake's increment bits */
        snprintf(ids[i], sizeof(ids[i]), "%llu", strtoull(ids[i], NULL, 10) + (unsigned)i);
        route_callback(ids[i], tok[i]);
        interaction_json(json, sizeof(json), ids[i], tok[i]);
        feed(2 + i, "INTERACTION_CREATE", json);
    }
    feed_message(22, 10);
    WAIT_FOR(cb.n == 20, 5000);
    UT_CONTAINS(cb.last, "\"type\":5"); /* a deferral, not an error reply */
    utloop_run_for(&f.ul, 1000);
    struct ingress_stats st;
    ingress_stats(in, &st);
    UT_ASSERT(st.held_batches >= 1);
    utredis_restart(own);
    WAIT_FOR(rds_up(redis), 10000);
    WAIT_FOR(xlen(admin_stream) == 20 && xlen(chat_stream) == 1 && stored_seq() == 22, 10000);
    UT_EQ_INT(cb.n, 20);
    UT_EQ_INT(troubles[INGRESS_RESYNC], 0);
    teardown();
    utredis_kill_all();
}

/* ---- cases: POST /interactions -------------------------------------------------- */

struct post {
    int done;
    long status;
    char body[512];
};

static void on_posted(const struct hcl_response *r, void *arg)
{
    struct post *p = arg;
    p->done = 1;
    p->status = r->err ? -1 : r->status;
    snprintf(p->body, sizeof(p->body), "%s", r->body);
}

/* POST body signed with timestamp ts (seconds, as text). */
static void post_signed(struct httpd *h, const char *ts, const char *body, struct post *p)
{
    unsigned char sig[crypto_sign_BYTES];
    size_t tl = strlen(ts), bl = strlen(body);
    unsigned char *msg = malloc(tl + bl);
    memcpy(msg, ts, tl);
    memcpy(msg + tl, body, bl);
    crypto_sign_detached(sig, NULL, msg, tl + bl, sk);
    free(msg);
    char hex[2 * crypto_sign_BYTES + 1], h1[200], h2[100], url[100];
    sodium_bin2hex(hex, sizeof(hex), sig, sizeof(sig));
    snprintf(h1, sizeof(h1), "X-Signature-Ed25519: %s", hex);
    snprintf(h2, sizeof(h2), "X-Signature-Timestamp: %s", ts);
    const char *hdrs[] = {h1, h2, "Content-Type: application/json", NULL};
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/interactions", httpd_port(h));
    memset(p, 0, sizeof(*p));
    struct hcl_request rq = {.method = "POST", .url = url, .headers = hdrs, .body = body, .body_len = bl};
    UT_EQ_INT(hcl_request(f.c, &rq, on_posted, p, NULL), 0);
    WAIT_FOR(p->done, 5000);
}

static struct httpd *start_endpoint(void)
{
    struct httpd *h;
    struct httpd_opts ho = {.bind = "127.0.0.1", .port = 0};
    UT_EQ_INT(httpd_start(&f.loop, &ho, &h), 0);
    UT_EQ_INT(ingress_http_route(in, h), 0);
    return h;
}

static void stop_endpoint(struct httpd *h)
{
    httpd_close(h, NULL, NULL);
}

/* Defect 3: a correctly signed request captured once was accepted again
 * later. The signed timestamp must be within INTERACTION_MAX_SKEW_SEC of
 * now, and the interaction itself fresh; a fresh one is deferred at once
 * and its job stored once, however often it is sent inside the window. */
static void test_http_replay_refused(void)
{
    setup("http", NULL);
    struct httpd *h = start_endpoint();
    char id[32], json[1024], ts[32];
    struct post p;

    /* captured in 2020: refused whatever its signature */
    snowflake_now(id, sizeof(id), 0);
    interaction_json(json, sizeof(json), id, "tokH");
    post_signed(h, "1600000000", json, &p);
    UT_EQ_INT(p.status, 401);
    /* a timestamp from a minute ago */
    snprintf(ts, sizeof(ts), "%lld", (long long)(clock_wall_ms() / 1000 - 60));
    post_signed(h, ts, json, &p);
    UT_EQ_INT(p.status, 401);
    /* fresh timestamp, but an interaction created an hour ago: a replay */
    char old[32], oldjson[1024];
    snowflake_now(old, sizeof(old), 3600 * 1000);
    interaction_json(oldjson, sizeof(oldjson), old, "tokO");
    snprintf(ts, sizeof(ts), "%lld", (long long)(clock_wall_ms() / 1000));
    post_signed(h, ts, oldjson, &p);
    UT_EQ_INT(p.status, 401);
    utloop_run_for(&f.ul, 100);
    UT_EQ_INT(xlen(admin_stream), 0);

    /* fresh: deferred; sent twice inside the window: stored once */
    post_signed(h, ts, json, &p);
    UT_EQ_INT(p.status, 200);
    UT_CONTAINS(p.body, "\"type\":5");
    post_signed(h, ts, json, &p);
    UT_EQ_INT(p.status, 200);
    WAIT_FOR(xlen(admin_stream) == 1, 5000);
    HOLDS_FOR(xlen(admin_stream) == 1, 200);
    /* a bad signature */
    json[10] ^= 1;
    post_signed(h, ts, json, &p);
    json[10] ^= 1;
    UT_EQ_INT(p.status, 401);
    stop_endpoint(h);
    teardown();
}

/* POST /interactions while Redis is away: deferred at once, stored when
 * Redis is back (it used to answer with an error). */
static void test_http_redis_away(void)
{
    own = utredis_start("inghttp", NULL);
    char url[300];
    utredis_url(own, NULL, 0, url, sizeof(url));
    setup("httpaway", url);
    snprintf(host, sizeof(host), "127.0.0.1");
    port = own->port;
    struct httpd *h = start_endpoint();
    utredis_kill(own);
    WAIT_FOR(!rds_up(redis), 5000);
    char id[32], json[1024], ts[32];
    struct post p;
    snowflake_now(id, sizeof(id), 0);
    interaction_json(json, sizeof(json), id, "tokR");
    snprintf(ts, sizeof(ts), "%lld", (long long)(clock_wall_ms() / 1000));
    post_signed(h, ts, json, &p);
    UT_EQ_INT(p.status, 200);
    UT_CONTAINS(p.body, "\"type\":5");
    struct ingress_stats st;
    ingress_stats(in, &st);
    UT_EQ_INT(st.held_http, 1);
    utredis_restart(own);
    WAIT_FOR(rds_up(redis), 10000);
    WAIT_FOR(xlen(admin_stream) == 1, 10000);
    stop_endpoint(h);
    teardown();
    utredis_kill_all();
}

/* ---- POST /interactions without httpd: what the fuzzer reaches ------------- */

static void test_signature(void)
{
    setup("sig", NULL);
    const char *ts = "1700000000", *body = "{\"type\":1}";
    unsigned char msg[64], sig[crypto_sign_BYTES];
    char hex[2 * crypto_sign_BYTES + 1];
    size_t n = strlen(ts) + strlen(body);
    memcpy(msg, ts, strlen(ts));
    memcpy(msg + strlen(ts), body, strlen(body));
    crypto_sign_detached(sig, NULL, msg, n, sk);
    sodium_bin2hex(hex, sizeof(hex), sig, sizeof(sig));
    UT_EQ_INT(ingress__verify(in, ts, hex, body, strlen(body)), 1);
    UT_EQ_INT(ingress__verify(in, "1700000001", hex, body, strlen(body)), 0);
    UT_EQ_INT(ingress__verify(in, ts, NULL, body, strlen(body)), 0);
    UT_EQ_INT(ingress__verify(in, NULL, hex, body, strlen(body)), 0);
    hex[3] = 'x';
    UT_EQ_INT(ingress__verify(in, ts, hex, body, strlen(body)), 0);
    teardown();
}

static void test_ping_and_job(void)
{
    setup("decide", NULL);
    struct ingress__http d;
    const char *ping = "{\"type\":1}";
    ingress__http_decide(in, ping, strlen(ping), &d);
    UT_EQ_INT(d.status, 200);
    UT_EQ_STR(d.body, "{\"type\":1}");
    mem_free(d.body);
    char id[32], ix[1024];
    snowflake_now(id, sizeof(id), 0);
    interaction_json(ix, sizeof(ix), id, "t");
    ingress__http_decide(in, ix, strlen(ix), &d);
    UT_EQ_INT(d.status, 0);
    UT_EQ_STR(d.id, id);
    UT_CONTAINS(d.body, "\"command\":\"핑\"");
    mem_free(d.body);
    /* an English twin keeps the name that was used: its options go by
     * their English names (regression: the job said 채팅, and the worker
     * found no "질문" among the options of /chat) */
    snowflake_now(id, sizeof(id), 0);
    snprintf(ix, sizeof(ix),
             "{\"id\":\"%s\",\"token\":\"t\",\"type\":2,\"application_id\":\"9\",\"guild_id\":\"1\","
             "\"channel_id\":\"10\",\"channel\":{\"id\":\"10\",\"name\":\"채팅방-1\",\"type\":0},"
             "\"locale\":\"en-US\",\"member\":{\"user\":{\"id\":\"5\"},\"permissions\":\"0\"},"
             "\"data\":{\"name\":\"chat\",\"options\":[{\"name\":\"question\",\"type\":3,\"value\":\"hi\"}]}}",
             id);
    ingress__http_decide(in, ix, strlen(ix), &d);
    UT_EQ_INT(d.status, 0);
    UT_CONTAINS(d.body, "\"command\":\"chat\"");
    struct ixjob job;
    UT_EQ_INT(ixjob_parse(&job, d.body), 0);
    UT_EQ_STR(ixjob_option(&job, "question"), "hi");
    ixjob_free(&job);
    mem_free(d.body);
    teardown();
}

/* Regression (fuzz_interactions): "id":"" was accepted. Every interaction
 * with an empty id then shares one dedup key (<prefix>:ix:seen:), so all
 * but the first within its TTL were deferred and never stored: the user
 * saw "thinking..." forever. An empty id is a 400 like a missing one. */
static void test_empty_id_is_refused(void)
{
    setup("emptyid", NULL);
    struct ingress__http d;
    char ix[1024];
    interaction_json(ix, sizeof(ix), "", "t");
    ingress__http_decide(in, ix, strlen(ix), &d);
    UT_EQ_INT(d.status, 400);
    UT_CONTAINS(d.body, "valid id");
    mem_free(d.body);
    teardown();
}

static const struct ut_case cases[] = {
    UT_CASE(test_signature),
    UT_CASE(test_ping_and_job),
    UT_CASE(test_empty_id_is_refused),
    UT_CASE(test_burst_of_10000_in_one_iteration),
    UT_CASE(test_channel_cache_learns_renames_and_forgets),
    UT_CASE(test_burst_of_big_events_is_split),
    UT_CASE(test_event_beyond_the_cap_fails_cleanly),
    UT_CASE(test_fenced_holder_writes_nothing),
    UT_CASE(test_job_waits_for_the_acknowledgement),
    UT_CASE(test_replayed_interactions),
    UT_CASE(test_old_replays),
    UT_CASE(test_redis_away_acks_and_holds),
    UT_CASE(test_http_replay_refused),
    UT_CASE(test_http_redis_away),
    {NULL, NULL},
};

UT_MAIN(cases)
