/* fuzz_multipart: the multipart/form-data body sent to Stability
 * (common/stability.c), built from outside input: the user's prompt and
 * negative prompt, and an attachment's bytes and content type (Discord's
 * attachment metadata). Reached through st__valid / st__form, the same
 * code st_generate runs before sending.
 *
 * Input: [endpoint][strength] then NUL-separated prompt, negative prompt,
 * aspect ratio, output format, model, image type ("" = none), and the rest
 * is the image ("" = text-to-image).
 * Checks: for a request st_generate accepts, the form is well formed and
 * carries every value exactly: it opens with the boundary, closes with the
 * closing delimiter, and the boundary (never inside the data) delimits
 * exactly one part per field, whose body is the value given. */
#include <stdlib.h>
#include "buf.h"
#include "fuzz.h"
#include "stability.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_setup();
    return 0;
}

/* The body of the part named name (as given in Content-Disposition), or NULL. */
static const char *part(const struct buf *b, const char *bd, const char *name, size_t *len)
{
    char head[160], delim[96];
    snprintf(head, sizeof head, "name=\"%s\"", name);
    snprintf(delim, sizeof delim, "\r\n--%s", bd);
    const char *end = b->p + b->len;
    for (const char *p = b->p; (p = memmem(p, (size_t)(end - p), delim + 2, strlen(delim) - 2)) != NULL;) {
        const char *hdr_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!hdr_end)
            return NULL;
        const char *body = hdr_end + 4, *next = memmem(body, (size_t)(end - body), delim, strlen(delim));
        if (!next)
            return NULL;
        if (memmem(p, (size_t)(hdr_end - p), head, strlen(head))) {
            *len = (size_t)(next - body);
            return body;
        }
        p = next + 2;
    }
    return NULL;
}

static void expect(const struct buf *b, const char *bd, const char *name, const void *val, size_t vlen)
{
    size_t n;
    const char *p = part(b, bd, name, &n);
    if (!val) {
        if (p)
            abort(); /* a part for a field not given */
        return;
    }
    if (!p || n != vlen || memcmp(p, val, n))
        abort(); /* the value did not come through unchanged */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const endpoints[] = {"core", "ultra", "sd3"};
    struct fz f = {data, size};
    struct st_req rq = {.api_key = FUZZ_KEY, .endpoint = endpoints[fz_byte(&f) % 3]};
    rq.strength = fz_byte(&f) / 255.0;
    char *v[6];
    for (int i = 0; i < 6; i++) {
        size_t n;
        const uint8_t *s = fz_until(&f, 0, &n);
        v[i] = fz_str(s, n);
    }
    rq.prompt = v[0];
    rq.negative_prompt = *v[1] ? v[1] : NULL;
    rq.aspect_ratio = *v[2] ? v[2] : NULL;
    rq.output_format = *v[3] ? v[3] : NULL;
    rq.model = *v[4] ? v[4] : NULL;
    rq.image_type = *v[5] ? v[5] : NULL;
    if (f.n) {
        rq.image = f.p;
        rq.image_len = f.n;
    }
    if (st__valid(&rq)) {
        struct buf b;
        char bd[80];
        buf_init(&b, ST_MAX_BODY);
        int rc = st__form(&rq, &b, bd, sizeof bd);
        if (rc)
            abort(); /* small valid requests always make a form */
        char open[96], close[96];
        int ol = snprintf(open, sizeof open, "--%s\r\n", bd), cl = snprintf(close, sizeof close, "\r\n--%s--\r\n", bd);
        if (b.len < (size_t)(ol + cl) || memcmp(b.p, open, (size_t)ol) ||
            memcmp(b.p + b.len - cl, close, (size_t)cl))
            abort();
        int sd3 = !strcmp(rq.endpoint, "sd3");
        expect(&b, bd, "prompt", rq.prompt, strlen(rq.prompt));
        expect(&b, bd, "negative_prompt", rq.negative_prompt, rq.negative_prompt ? strlen(rq.negative_prompt) : 0);
        const char *ar = rq.image ? NULL : rq.aspect_ratio;
        expect(&b, bd, "aspect_ratio", ar, ar ? strlen(ar) : 0);
        const char *model = sd3 ? rq.model : NULL;
        expect(&b, bd, "model", model, model ? strlen(model) : 0);
        expect(&b, bd, "image", rq.image, rq.image_len);
        buf_free(&b);
    }
    for (int i = 0; i < 6; i++)
        mem_free(v[i]);
    return 0;
}
