/* Unit tests for ingress: POST /interactions without httpd and Redis
 * (ingress__verify, ingress__http_decide). The Redis side is covered by
 * tests/integration; these pin down what tests/fuzz/fuzz_interactions.c
 * found. */
#include <sodium.h>
#include <string.h>
#include <uv.h>

#include "config.h"
#include "ingress.h"
#include "mem.h"
#include "ut.h"

static struct config cfg;
static uv_loop_t loop;
static unsigned char sk[crypto_sign_SECRETKEYBYTES];
static char pk_hex[2 * crypto_sign_PUBLICKEYBYTES + 1];

static struct ingress *make(void)
{
    unsigned char pk[crypto_sign_PUBLICKEYBYTES], seed[crypto_sign_SEEDBYTES] = {7};
    UT_ASSERT(sodium_init() >= 0);
    crypto_sign_seed_keypair(pk, sk, seed);
    sodium_bin2hex(pk_hex, sizeof(pk_hex), pk, sizeof(pk));
    cfg.redis_prefix = "t";
    cfg.stream_maxlen = 100;
    cfg.discord_public_key = pk_hex;
    cfg.chat_channels = "chat*";
    cfg.image_channels = "img*";
    cfg.video_channels = "video";
    UT_EQ_INT(uv_loop_init(&loop), 0);
    struct ingress *in;
    UT_EQ_INT(ingress_new(&loop, &cfg, NULL, NULL, &in), 0);
    return in;
}

static void done(struct ingress *in)
{
    ingress_close(in);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}

static void test_signature(void)
{
    struct ingress *in = make();
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
    done(in);
}

static void test_ping_and_job(void)
{
    struct ingress *in = make();
    struct ingress__http d;
    const char *ping = "{\"type\":1}";
    ingress__http_decide(in, ping, strlen(ping), &d);
    UT_EQ_INT(d.status, 200);
    UT_EQ_STR(d.body, "{\"type\":1}");
    mem_free(d.body);
    const char *ix = "{\"type\":2,\"id\":\"123\",\"application_id\":\"2\",\"token\":\"t\",\"channel_id\":\"8\","
                     "\"user\":{\"id\":\"5\"},\"data\":{\"name\":\"chat\"}}";
    ingress__http_decide(in, ix, strlen(ix), &d);
    UT_EQ_INT(d.status, 0);
    UT_EQ_STR(d.id, "123");
    UT_CONTAINS(d.body, "\"command\":\"chat\"");
    mem_free(d.body);
    done(in);
}

/* Regression (fuzz_interactions): "id":"" was accepted. Every interaction
 * with an empty id then shares one dedup key (<prefix>:ix:seen:), so all
 * but the first within its TTL were deferred and never stored: the user
 * saw "thinking..." forever. An empty id is a 400 like a missing one. */
static void test_empty_id_is_refused(void)
{
    struct ingress *in = make();
    struct ingress__http d;
    const char *ix = "{\"type\":2,\"id\":\"\",\"application_id\":\"2\",\"token\":\"t\",\"channel_id\":\"8\","
                     "\"user\":{\"id\":\"5\"},\"data\":{\"name\":\"chat\"}}";
    ingress__http_decide(in, ix, strlen(ix), &d);
    UT_EQ_INT(d.status, 400);
    UT_CONTAINS(d.body, "valid id");
    mem_free(d.body);
    done(in);
}

static const struct ut_case cases[] = {
    UT_CASE(test_signature),
    UT_CASE(test_ping_and_job),
    UT_CASE(test_empty_id_is_refused),
    {NULL, NULL},
};

UT_MAIN(cases)
