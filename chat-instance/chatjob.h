/* chatjob: the chat role — streamed answers from an OpenAI-compatible model.
 *
 * Jobs it serves (see docs/chat.md):
 *  - discord.interaction: /채팅 /chat (a streamed answer in the deferred
 *    response), /초기화 /reset (forget the caller's conversation here),
 *    /채팅모드 /chatmode (answer every message of the channel, kept in
 *    Redis), /사용량 /usage (the caller's usage today);
 *  - discord.mention (a chat-channel message mentioning the bot, or a DM)
 *    and discord.message (other chat-channel messages: answered only while
 *    the channel's chat mode is on), answered as a streamed reply.
 * A question goes through the per-user limits (ulimit), moderation when
 * MODERATION is on, the conversation's history (conv; skipped while
 * PostgreSQL is away), then the model with a key from the key pool; the
 * answer streams through reply.h; a complete answer is remembered and its
 * usage recorded. */
#ifndef BC_CHATJOB_H
#define BC_CHATJOB_H

struct core;

/* Register the chat role's job handlers (for the chat stream only). */
int chatjob_setup(struct core *c);

/* ---- internal: shared with the tests and the fuzz target ---------------- */

#include <json.h>

/* A discord.message / discord.mention job: the gateway frame as routed. */
struct chatjob__msg {
    struct json_object *frame; /* owned: json_object_put */
    const char *message_id, *channel_id, *guild_id, *user_id; /* borrowed from frame */
    char *question;            /* owned (mem_free): content without bot mentions, trimmed */
    int ko;                    /* answer in Korean */
};

/* Read payload. Pure. Returns 0 and fills out, or BC_EPROTO (nothing to
 * free) when it is not a frame whose "d" has id, channel_id and author.id. */
int chatjob__parse_message(const char *payload, struct chatjob__msg *out);

#endif
