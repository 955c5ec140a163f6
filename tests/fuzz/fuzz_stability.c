/* fuzz_stability: the Stability answer decoder (common/service/stability.c): image
 * bytes with finish-reason/seed/content-type headers, or a JSON error
 * body, reached through st__decode, which runs the same code as a real
 * transfer's completion.
 *
 * Input: [endpoint][status][headers up to NUL][body].
 * Checks: cb runs exactly once; strings never NULL; the message never
 * carries the API key; an image is only handed out with a 2xx image/ content type. */
#include <stdlib.h>
#include <strings.h>
#include "fuzz.h"
#include "service/stability.h"

static void on_done(const struct st_result *r, void *arg)
{
    int *done = arg;
    (*done)++;
    if (!r->message || !r->finish_reason || !r->seed || !r->content_type)
        abort();
    if (r->image && (!r->image_len || r->http_status < 200 || r->http_status > 299 ||
                     strncasecmp(r->content_type, "image/", 6)))
        abort();
    fz_no_key(r->message);
}

FUZZ_INIT_DEFAULT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const endpoints[] = {"core", "ultra", "sd3"};
    struct fz f = {data, size};
    const char *ep = endpoints[fz_byte(&f) % 3];
    struct fz_response r;
    fz_response(&f, &r);
    int done = 0;
    st__decode(ep, &r.h, FUZZ_KEY, on_done, &done);
    if (done != 1)
        abort();
    fz_response_free(&r);
    return 0;
}
