/* chat: /채팅 and /chat — a streamed answer from an OpenAI-compatible model.
 *
 * The deferred response is edited as the answer streams in, at most once
 * per EDIT_INTERVAL_MS (the REST client's rate-limit lanes may slow it
 * further), with the part that fits one message; at the end the whole
 * answer is split at paragraph, sentence or code-block boundaries and the
 * rest follows as follow-up messages. Keys come from the instance's key
 * pool: a key that hits a rate limit cools down, one out of quota or
 * refused is taken out, and the next is tried; when none is left, or the
 * provider keeps failing, the user is told when to try again. */
#ifndef CHAT_CHAT_H
#define CHAT_CHAT_H

struct core;

/* Register the chat role's job handlers. */
int chat_setup(struct core *c);

#endif
