/* fuzz_minimax: the MiniMax answer decoder (common/service/minimax.c) for the four
 * calls (image generation with URLs or base64 images, video submit, video
 * query, file retrieve), reached through mm__decode, which runs the same
 * code as a real transfer's completion.
 *
 * Input: [op][status][headers up to NUL][body].
 * Checks: cb runs exactly once; strings are never NULL (where mm_result
 * promises it); the message never carries the API key; counts stay in
 * range; images are readable to their last byte. */
#include <stdlib.h>
#include <strings.h>
#include "fuzz.h"
#include "service/minimax.h"

static void on_done(const struct mm_result *r, void *arg)
{
    int *done = arg;
    (*done)++;
    if (!r->message || !r->task_id || !r->state || !r->file_id || !r->download_url || !r->filename)
        abort();
    if (r->nurls > MM_IMAGE_MAX || r->nimages > MM_IMAGE_MAX || (r->nurls && !r->urls) ||
        (r->nimages && !r->images) || r->bytes < 0 || r->width < 0 || r->height < 0)
        abort();
    for (size_t i = 0; i < r->nurls; i++)
        if (!r->urls[i] || strncasecmp(r->urls[i], "http", 4))
            abort();
    for (size_t i = 0; i < r->nimages; i++)
        if (!r->images[i].data || !r->images[i].len)
            abort();
        else
            (void)((volatile const unsigned char *)r->images[i].data)[r->images[i].len - 1];
    fz_no_key(r->message);
}

FUZZ_INIT_DEFAULT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    int op = (int)(fz_byte(&f) % 4);
    struct fz_response r;
    fz_response(&f, &r);
    int done = 0;
    mm__decode(op, &r.h, FUZZ_KEY, on_done, &done);
    if (done != 1)
        abort();
    fz_response_free(&r);
    return 0;
}
