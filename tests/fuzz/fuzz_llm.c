/* fuzz_llm: the OpenAI-compatible answer decoder (common/service/llm.c): a
 * streamed chat completion (Server-Sent Events of JSON chunks, or a plain
 * JSON answer from a server that ignored "stream"), error bodies, rate
 * limit headers, and the /moderations answer. Reached through
 * llm__decode_chat / llm__decode_moderation, which run the same code as a
 * real transfer's callbacks.
 *
 * Input: [mode][status][headers up to NUL][body]. mode bit 0: moderation;
 * else the body is fed in pieces of (mode >> 1) bytes (0: one piece).
 * Checks: the callback runs exactly once; the result's strings are never
 * NULL and the error texts never carry the API key; the deltas add up to text_len. */
#include <stdlib.h>
#include "fuzz.h"
#include "service/llm.h"

struct seen {
    size_t delta_bytes;
    int done;
};

static void on_delta(const char *text, size_t len, void *arg)
{
    struct seen *s = arg;
    if (!text || !len || text[len] != '\0')
        abort();
    s->delta_bytes += len;
}

static void on_done(const struct llm_result *r, void *arg)
{
    struct seen *s = arg;
    s->done++;
    if (!r->finish_reason || !r->error_code || !r->error_type || !r->error_message || !r->request_id)
        abort(); /* llm.h: never NULL */
    if (r->text_len != s->delta_bytes)
        abort();
    fz_no_key(r->error_message);
    fz_no_key(r->error_code);
    fz_no_key(r->error_type);
}

static void on_moderated(int status, int flagged, const char *categories, void *arg)
{
    struct seen *s = arg;
    (void)status, (void)flagged;
    s->done++;
    if (!categories)
        abort(); /* (category names are the provider's keys, not free text) */
}

FUZZ_INIT_DEFAULT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    unsigned mode = fz_byte(&f);
    struct fz_response r;
    fz_response(&f, &r);
    struct seen s = {0};
    if (mode & 1)
        llm__decode_moderation(&r.h, FUZZ_KEY, on_moderated, &s);
    else
        llm__decode_chat(&r.h, FUZZ_KEY, mode >> 1, on_delta, on_done, &s);
    if (s.done != 1)
        abort(); /* the callback runs exactly once */
    fz_response_free(&r);
    return 0;
}
