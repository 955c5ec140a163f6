/* reply: a streamed answer delivered into Discord.
 *
 * The answer grows in a buffer the caller owns; reply shows it as it grows
 * and delivers it whole at the end, to one of two targets:
 *  - an interaction: the deferred response (@original) is edited, and the
 *    parts after the first go out as follow-up messages of its webhook;
 *  - a channel message: the bot answers with a reply to that message
 *    (created with the first text, then edited), the further parts as
 *    plain messages in the channel; until the first text is posted the
 *    typing indicator runs (Discord shows it for 10 s, so it is renewed
 *    every 8 s).
 * Progress edits carry the part of the text that fits one message and are
 * sent at most once per EDIT_INTERVAL_MS, one at a time (drest's rate-limit
 * lanes may space them further). The final delivery also keeps the
 * interval. It splits the text at paragraph, sentence or code-block
 * boundaries (split.h); an answer that would need more than REPLY_MAX_PARTS
 * messages comes as its first part plus the whole text attached as
 * answer.txt. No mention in an answer ever pings anybody.
 *
 * It needs only a loop, a way to the Discord REST client and the edit
 * interval (struct reply_env), so that it runs, and is tested, without a
 * whole core.
 *
 * Ownership: reply_new copies the env and the target; the text buffer is borrowed and
 * must stay valid (it may grow) until the done callback runs or
 * reply_cancel returns. A reply frees itself after done, or after cancel
 * once its requests have come back. */
#ifndef BC_REPLY_H
#define BC_REPLY_H

#include <stddef.h>
#include <uv.h>

#include "base/buf.h"

#define REPLY_MAX_PARTS 5

struct drest;
struct reply;

struct reply_env {
    uv_loop_t *loop;
    /* The Discord REST client, asked before each request, since it may go
     * away (shutdown) while a reply lives: NULL makes that request fail
     * with -ENOTCONN. rest_arg is passed back; both borrowed. */
    struct drest *(*rest)(void *rest_arg);
    void *rest_arg;
    int edit_interval_ms; /* EDIT_INTERVAL_MS: at most one edit per this */
};

struct reply_target {
    /* an interaction ... */
    const char *app_id, *token;
    /* ... or a message to answer in channel_id (then app_id/token are NULL) */
    const char *channel_id, *message_id;
    int ko; /* the reply's own words in Korean */
};

/* status 0: everything was delivered; else the drest error or the negated
 * HTTP status of the request that failed (Discord's code in code). */
typedef void reply_done_cb(int status, int code, void *arg);

/* A reply on env (copied) to t, showing text (borrowed, see above). Never
 * fails; a message target starts its typing indicator now. */
struct reply *reply_new(const struct reply_env *env, const struct reply_target *t, const struct buf *text);

/* The text grew: show it soon. */
void reply_changed(struct reply *r);

/* The text is complete: deliver it, with note appended after a blank line
 * (note may be "" or NULL; when the text is empty the note alone is sent).
 * done runs exactly once, never from inside this call. */
void reply_finish(struct reply *r, const char *note, reply_done_cb *done, void *arg);

/* The caller goes away (shutdown): nothing more is sent, done never runs. */
void reply_cancel(struct reply *r);

#endif
