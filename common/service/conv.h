/* conv: conversation memory in PostgreSQL, over struct store.
 *
 * A conversation is the chat history of one scope: a user in a channel, or a
 * user in a thread (scope_key, e.g. "c:<channel>:u:<user>" or
 * "t:<thread>:u:<user>"; the schema checks that shape). This module reads the
 * newest turns of a scope trimmed to a context budget, appends question and
 * answer pairs, resets a scope, and expires idle conversations. What it
 * promises:
 *
 *  - Every operation is ONE SQL statement on the store's shared connection
 *    (no BEGIN/COMMIT across calls), so each one is atomic on its own.
 *  - Text is always sent as a parameter, never spliced into SQL, and invalid
 *    UTF-8 is replaced by U+FFFD before sending (PostgreSQL would reject the
 *    whole row otherwise). Message text is never logged.
 *  - A conversation idle for longer than its TTL is expired: conv_load returns
 *    nothing for it and conv_append starts it afresh (its old messages are
 *    deleted in the same statement), whether or not conv_expire has swept it
 *    yet. "Idle" is measured from updated_at, which conv_append moves.
 *  - The callback contract is store_query's: a function that returns 0 calls
 *    its callback exactly once and never synchronously (also at shutdown, with
 *    BC_ESHUTDOWN); one that returns an error never calls it. Statuses are the
 *    store's (store_result_cb in store.h): 0, BC_EPG, -ENOTCONN, -ETIMEDOUT,
 *    BC_ESHUTDOWN...; while the store is down every call returns -ENOTCONN at
 *    once, so the caller can answer without history.
 *
 * Strings passed in are copied before the function returns. Threading: the
 * store's (one loop thread). Design note: docs/store.md (tables). */
#ifndef BC_CONV_H
#define BC_CONV_H

#include <stddef.h>

#include "io/store.h"

struct conv_turn {
    const char *role;    /* "user" or "assistant" */
    const char *content; /* NUL-terminated valid UTF-8 */
    size_t len;          /* strlen(content) */
};

/* status 0 on success, else the store status (see store_result_cb). turns
 * are oldest first, borrowed for the callback's duration (turns is NULL when
 * n is 0, and always when status != 0). */
typedef void conv_history_cb(int status, const struct conv_turn *turns, size_t n, void *arg);

/* status as above; affected is the count the function documents (0 when
 * status != 0). */
typedef void conv_done_cb(int status, long long affected, void *arg);

/* Where a conversation lives. Ids are Discord snowflakes as decimal text;
 * guild_id is NULL in DMs and thread_id NULL outside threads. A malformed id
 * or scope_key is rejected by the schema's checks (status BC_EPG). */
struct conv_key {
    const char *scope_key, *guild_id, *channel_id, *thread_id, *user_id;
    const char *turn_key; /* NULL or the id of what the exchange answered:
                             conv_append stores one exchange per key once */
};

/* The newest turns of scope_key's conversation, trimmed so that there are at
 * most max_turns exchanges (2*max_turns messages) and the sum of their
 * token_estimate stays <= max_tokens. Trimming always drops whole oldest
 * messages, and the returned history never starts with an "assistant"
 * message (a leading one is dropped too). A conversation idle longer than
 * ttl_min minutes counts as expired: none returned. No conversation is not
 * an error: status 0, n 0. One SQL statement.
 * Returns 0 (cb runs exactly once, never synchronously) or, without calling
 * cb: -EINVAL (NULL s, scope_key or cb; max_turns or max_tokens < 0;
 * ttl_min < 1), or store_query's error (-ENOTCONN while the store is down,
 * -ENOBUFS, BC_ESHUTDOWN). */
int conv_load(struct store *s, const char *scope_key, int max_turns, int max_tokens, int ttl_min,
              conv_history_cb *cb, void *arg);

/* Append one exchange (question, then answer) to k's conversation, creating
 * it if needed and moving its updated_at to now. If it had expired (idle
 * longer than ttl_min minutes), its old messages are deleted first so nothing
 * stale comes back, and its created_at restarts. Then at most keep_messages
 * newest messages of the conversation are kept, the new two included; older
 * ones are deleted. Each message's token_estimate is conv_estimate_tokens of
 * its (sanitized) text. One SQL statement (a CTE). affected = older messages
 * this call deleted (stale or beyond keep_messages); on status 0 both new
 * messages were stored, or, when k->turn_key is set, were already there
 * (then nothing is deleted): an append whose outcome was lost (-ENOTCONN,
 * -ETIMEDOUT) can be repeated safely. cb may be NULL.
 * Returns 0 (cb, if any, runs exactly once, never synchronously) or, without
 * calling cb: -EINVAL (NULL s, k, k->scope_key, k->channel_id, k->user_id,
 * question or answer; ttl_min < 1; keep_messages < 2), or store_query's
 * error. */
int conv_append(struct store *s, const struct conv_key *k, const char *question,
                const char *answer, int ttl_min, int keep_messages, conv_done_cb *cb, void *arg);

/* Delete scope_key's conversation; its messages go with it (cascade).
 * affected = conversations deleted (0 or 1). cb may be NULL. Returns as
 * conv_append (-EINVAL for NULL s or scope_key). */
int conv_reset(struct store *s, const char *scope_key, conv_done_cb *cb, void *arg);

/* Delete conversations idle longer than ttl_min minutes, the longest idle
 * first, at most limit of them per call, so one sweep stays short; a
 * conversation being appended to at that moment is skipped. affected = number
 * deleted: call again while it equals limit. For a periodic sweep. cb may be
 * NULL. Returns as conv_append (-EINVAL: NULL s, ttl_min < 1, limit < 1). */
int conv_expire(struct store *s, int ttl_min, int limit, conv_done_cb *cb, void *arg);

/* Rough token count of UTF-8 text, for trimming a context window: one token
 * per 4 ASCII bytes, one per Hangul, kana or CJK character, one per 2 bytes
 * of anything else (other scripts, emoji, invalid bytes), each rounded up.
 * Never 0 for non-empty text; 0 for len 0. Pure function; text need not be
 * NUL-terminated or valid. */
size_t conv_estimate_tokens(const char *text, size_t len);

#endif
