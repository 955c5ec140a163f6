/* fuzz_interactions: POST /interactions without httpd and Redis
 * (common/discord/ingress.c): the signature check (ingress__verify: the two
 * headers, hex, Ed25519 over timestamp + body) and, for a verified body,
 * ingress__http_decide: JSON parsing, PING, the command and channel
 * decision, the immediate answers, and the job payload a worker will read.
 *
 * Input: [mode] then
 *   mode % 16 == 0: [timestamp \n][signature hex \n][body]: verify only
 *                   (a forged signature must never pass);
 *   mode % 16 == 1: [body], signed here with the configured key: it must
 *                   verify, and with one byte changed it must not;
 *   otherwise:      [body], decided as if verified.
 * Checks: every answer is a JSON object; a job has an id of 1..20 bytes
 * and a JSON object payload naming its command. */
#include <sodium.h>
#include <stdlib.h>
#include <uv.h>
#include "base/config.h"
#include "fuzz.h"
#include "discord/ingress.h"

static uv_loop_t loop;
static struct config cfg;
static struct ingress *in;
static unsigned char sk[crypto_sign_SECRETKEYBYTES];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_setup();
    if (sodium_init() < 0 || uv_loop_init(&loop))
        abort();
    unsigned char pk[crypto_sign_PUBLICKEYBYTES], seed[crypto_sign_SEEDBYTES] = {1, 2, 3};
    static char pk_hex[2 * sizeof(pk) + 1];
    crypto_sign_seed_keypair(pk, sk, seed);
    sodium_bin2hex(pk_hex, sizeof(pk_hex), pk, sizeof(pk));
    cfg.redis_prefix = "fz";
    cfg.stream_maxlen = 1000;
    cfg.discord_public_key = pk_hex;
    cfg.chat_channels = "chat*,ai-?";
    cfg.image_channels = "img-*";
    cfg.video_channels = "video";
    cfg.enforce_channels = 1;
    if (ingress_new(&loop, &cfg, NULL, NULL, &in))
        abort();
    /* ids in the corpus are fixed, time goes on: decide as if each were new */
    ingress__set_stale_ms(in, INT64_MAX / 2);
    return 0;
}

static struct json_object *json_obj(const char *s)
{
    struct json_object *o = json_tokener_parse(s);
    if (!o || !json_object_is_type(o, json_type_object))
        abort(); /* we answered with something that is not a JSON object */
    return o;
}

static void decide(const uint8_t *p, size_t n)
{
    char *body = mem_strndup((const char *)p, n);
    struct ingress__http d;
    ingress__http_decide(in, body, n, &d);
    if (!d.body)
        abort();
    struct json_object *o = json_obj(d.body), *cmd;
    if (d.status == 0) {
        size_t il = strlen(d.id);
        if (!il || il > 20 || !json_object_object_get_ex(o, "command", &cmd))
            abort();
    } else if (d.status != 200 && d.status != 400) {
        abort();
    }
    json_object_put(o);
    mem_free(d.body);
    mem_free(body);
}

static void verify_forged(struct fz *f)
{
    size_t tl, sl;
    const uint8_t *t = fz_until(f, '\n', &tl), *s = fz_until(f, '\n', &sl);
    char *ts = fz_str(t, tl), *sig = fz_str(s, sl);
    if (ingress__verify(in, ts, sig, (const char *)f->p, f->n))
        abort(); /* nobody but the key holder can sign */
    mem_free(ts);
    mem_free(sig);
}

static void verify_signed(struct fz *f)
{
    const char *ts = "1700000000";
    size_t tl = strlen(ts), n = f->n;
    unsigned char *msg = mem_alloc(tl + n + 1), sig[crypto_sign_BYTES];
    char hex[2 * crypto_sign_BYTES + 1];
    memcpy(msg, ts, tl);
    memcpy(msg + tl, f->p, n);
    crypto_sign_detached(sig, NULL, msg, tl + n, sk);
    sodium_bin2hex(hex, sizeof(hex), sig, sizeof(sig));
    if (!ingress__verify(in, ts, hex, (const char *)f->p, n))
        abort();
    if (n) {
        char *body = mem_strndup((const char *)f->p, n);
        body[n / 2] ^= 0x01;
        if (ingress__verify(in, ts, hex, body, n))
            abort(); /* a changed body must not verify */
        mem_free(body);
    }
    mem_free(msg);
    decide(f->p, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    unsigned mode = fz_byte(&f) % 16;
    if (mode == 0)
        verify_forged(&f);
    else if (mode == 1)
        verify_signed(&f);
    else
        decide(f.p, f.n);
    return 0;
}
