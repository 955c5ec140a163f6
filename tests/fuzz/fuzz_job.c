/* fuzz_job: job payload decoding, i.e. what a worker reads from a Redis
 * stream entry that the ingress (or anyone who can write to Redis) stored:
 *  - ixjob_parse and its accessors (string, number and attachment options,
 *    the attachment's metadata from resolved data) in common/discord/ixjob.c;
 *  - each role's reading of it: imgjob__decode (/이미지, /img: ratio, count,
 *    strength, attachment), vidjob__decode (/비디오: prompt, length,
 *    resolution, upload limit), and chatjob__parse_message (a channel
 *    message frame: the question without bot mentions).
 * The whole input is one payload (NUL-terminated copy, as Redis hands it).
 * Checks: what the decoders promise (ranges, never-NULL strings). */
#include <math.h>
#include <stdlib.h>
#include "chat-instance/chatjob.h"
#include "fuzz.h"
#include "image-instance/imgjob.h"
#include "discord/ixjob.h"
#include "video-instance/vidjob.h"

static void options(const struct ixjob *ix)
{
    static const char *const names[] = {"question", "mode",     "prompt",     "ratio", "count",
                                        "strength", "image", "length", "resolution", "질문"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *s = ixjob_option(ix, names[i]);
        double d;
        struct ixjob_attachment a;
        if (s)
            (void)strlen(s);
        ixjob_option_num(ix, names[i], &d);
        if (ixjob_attachment(ix, names[i], &a) && !a.url)
            abort();
    }
}

static void image(const struct ixjob *ix)
{
    struct imgjob__req rq;
    if (imgjob__decode(ix, 0.35, &rq))
        return;
    if (rq.count < 1 || rq.count > 4 || !(rq.strength >= 0 && rq.strength <= 1) ||
        (!rq.stability && !rq.ratio) || (rq.has_image && !rq.att.url))
        abort(); /* out of the promised range (NaN included) */
}

static void video(const struct ixjob *ix)
{
    struct vidjob__req rq;
    vidjob__decode(ix, &rq);
    if (!rq.prompt || !rq.resolution || rq.upload_limit <= 0)
        abort();
}

static void message(const char *payload)
{
    struct chatjob__msg m;
    if (chatjob__parse_message(payload, &m))
        return;
    if (!m.frame || !m.message_id || !m.channel_id || !m.user_id || !m.question)
        abort();
    json_object_put(m.frame);
    mem_free(m.question);
}

FUZZ_INIT_DEFAULT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *payload = mem_strndup((const char *)data, size);
    struct ixjob ix;
    if (!ixjob_parse(&ix, payload)) {
        if (!ix.root || !ix.id || !ix.token || !ix.app_id || !ix.command)
            abort();
        options(&ix);
        image(&ix);
        video(&ix);
        ixjob_free(&ix);
    } else if (ix.root) {
        abort(); /* a failed parse leaves nothing to free */
    }
    message(payload);
    mem_free(payload);
    return 0;
}
