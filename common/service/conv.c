/* conv: conversation memory. The contract is in conv.h; the tables are
 * described in docs/store.md.
 *
 * Every operation is one statement because the store's connection is shared:
 * a BEGIN in one call would take other callers' queries into the transaction.
 * conv_append therefore does its whole job (upsert the conversation, detect
 * and clear an expired one, insert the pair, prune) in one CTE; see the
 * comment above APPEND_SQL for how the parts, which all see the same
 * snapshot, avoid stepping on each other. */
#include "service/conv.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/utf8.h"

/* ---- text ---------------------------------------------------------------- */

/* Hangul, kana and CJK ideographs (with their punctuation and fullwidth
 * forms): tokenizers spend about one token on each of these. */
static int cp_wide(unsigned int cp)
{
    return (cp >= 0x1100 && cp <= 0x11FF) || (cp >= 0x2E80 && cp <= 0x9FFF) ||
           (cp >= 0xA960 && cp <= 0xA97F) || (cp >= 0xAC00 && cp <= 0xD7FF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0xFF00 && cp <= 0xFFEF) ||
           (cp >= 0x20000 && cp <= 0x3FFFF);
}

size_t conv_estimate_tokens(const char *text, size_t len)
{
    size_t ascii = 0, wide = 0, other = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp = 0;
        size_t n = utf8_decode(text + i, len - i, &cp);
        if (n == 0) {
            other++; /* an invalid byte */
            n = 1;
        } else if (cp < 0x80) {
            ascii++;
        } else if (cp_wide(cp)) {
            wide++;
        } else {
            other += n;
        }
        i += n;
    }
    return ascii / 4 + (ascii % 4 != 0) + wide + other / 2 + other % 2;
}

/* NULL when s is valid UTF-8 (send it as is); otherwise a copy, to be
 * mem_free'd, with every byte that does not start a valid sequence replaced
 * by U+FFFD, as PostgreSQL rejects invalid UTF-8 in text. */
static char *fix_utf8(const char *s)
{
    size_t len = strlen(s), i = utf8_valid_len(s, len), n;
    if (i == len)
        return NULL;
    if (len > (SIZE_MAX - 1) / 3)
        abort(); /* cannot happen for a string that fits in memory */
    char *out = mem_alloc(len * 3 + 1);
    size_t o = i;
    memcpy(out, s, i);
    while (i < len) {
        n = utf8_decode(s + i, len - i, NULL);
        if (n) {
            memcpy(out + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(out + o, UTF8_REPLACEMENT, 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    return out;
}

static void fmt_int(char *buf, size_t n, long long v)
{
    snprintf(buf, n, "%lld", v);
}

/* ---- requests --------------------------------------------------------------- */

/* What a pending query needs to call its caller back. */
struct conv_req {
    conv_history_cb *hist;
    conv_done_cb *done;
    void *arg;
    const char *op; /* for the debug log */
};

static void log_failure(const char *op, int status, const PGresult *res)
{
    /* store_errstr may quote a failing row (message text): not logged. */
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    log_debug("conv query failed", LF_STR("op", op), LF_ERR(status),
              LF_STR("sqlstate", state ? state : ""));
}

/* Queue sql; cb_fn gets a conv_req holding hist/done and arg. With neither
 * callback nothing needs to come back, so nothing is allocated. */
static int submit(struct store *s, const char *op, const char *sql, int n,
                  const char *const *params, store_result_cb *cb_fn, conv_history_cb *hist,
                  conv_done_cb *done, void *arg)
{
    if (!hist && !done)
        return store_query(s, sql, n, params, NULL, NULL);
    struct conv_req *r = mem_alloc(sizeof(*r));
    r->hist = hist;
    r->done = done;
    r->arg = arg;
    r->op = op;
    int rc = store_query(s, sql, n, params, cb_fn, r);
    if (rc < 0)
        mem_free(r);
    return rc;
}

/* ---- load ------------------------------------------------------------------- */

/* The conversation's id comes from a scalar subquery so the planner can walk
 * messages_conversation_idx backwards and stop after $2 rows. The running
 * sum over newest-first rows is non-decreasing (estimates are >= 0), so
 * "tok <= $3" keeps a newest-first prefix: whole oldest messages go. Then
 * everything before the oldest kept "user" message is dropped. */
static const char LOAD_SQL[] =
    "WITH k AS ("
    " SELECT m.id, m.role, m.content,"
    "  sum(m.token_estimate) OVER (ORDER BY m.id DESC ROWS UNBOUNDED PRECEDING) AS tok"
    " FROM messages m"
    " WHERE m.conversation_id = (SELECT c.id FROM conversations c WHERE c.scope_key = $1"
    "   AND c.updated_at >= now() - make_interval(mins => $4::int))"
    "  AND m.role IN ('user', 'assistant')"
    " ORDER BY m.id DESC LIMIT $2::bigint"
    "), t AS (SELECT id, role, content FROM k WHERE tok <= $3::bigint) "
    "SELECT role, content FROM t WHERE id >= (SELECT min(id) FROM t WHERE role = 'user') "
    "ORDER BY id";

static void on_load(struct store *s, int status, const PGresult *res, void *arg)
{
    (void)s;
    struct conv_req *r = arg;
    struct conv_turn *turns = NULL;
    size_t n = 0;
    if (status == 0) {
        n = (size_t)PQntuples(res);
        if (n)
            turns = mem_calloc(n, sizeof(*turns));
        for (size_t i = 0; i < n; i++) {
            turns[i].role = PQgetvalue(res, (int)i, 0);
            turns[i].content = PQgetvalue(res, (int)i, 1);
            turns[i].len = (size_t)PQgetlength(res, (int)i, 1);
        }
    } else {
        log_failure(r->op, status, res);
    }
    r->hist(status, turns, n, r->arg);
    mem_free(turns);
    mem_free(r);
}

int conv_load(struct store *s, const char *scope_key, int max_turns, int max_tokens, int ttl_min,
              conv_history_cb *cb, void *arg)
{
    if (!s || !scope_key || !cb || max_turns < 0 || max_tokens < 0 || ttl_min < 1)
        return -EINVAL;
    char lim[24], tok[24], ttl[24];
    fmt_int(lim, sizeof(lim), 2LL * max_turns);
    fmt_int(tok, sizeof(tok), max_tokens);
    fmt_int(ttl, sizeof(ttl), ttl_min);
    const char *p[] = {scope_key, lim, tok, ttl};
    return submit(s, "load", LOAD_SQL, 4, p, on_load, cb, NULL, arg);
}

/* ---- append ----------------------------------------------------------------- */

/* All parts of one statement see the snapshot taken when it started, none
 * sees the others' changes except through RETURNING, so:
 *  - up: ON CONFLICT DO UPDATE works on the newest committed row version
 *    (locked), so the expiry test uses the real last activity. An expired
 *    conversation restarts: created_at = now(). Otherwise created_at only
 *    ever moves back (least), so every live message is at least as new as
 *    its conversation's created_at even when two appends race to create it.
 *  - ins: the pair, numbered in order (ids follow the ORDER BY), unless a
 *    pair with the same turn key ($12) is there already (a write repeated
 *    after its first one went unconfirmed); the unique index settles a race.
 *  - cut/del: only see messages that existed before this statement, so the
 *    newest keep-2 of those are kept next to the new two; and a message
 *    older than the conversation's created_at is from before a restart.
 *    Nothing is deleted when nothing was inserted. */
static const char APPEND_SQL[] =
    "WITH up AS ("
    " INSERT INTO conversations AS c (scope_key, guild_id, channel_id, thread_id, user_id)"
    " VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (scope_key) DO UPDATE SET"
    "  created_at = CASE WHEN c.updated_at < now() - make_interval(mins => $10::int)"
    "   THEN now() ELSE least(c.created_at, now()) END,"
    "  updated_at = greatest(c.updated_at, now())"
    " RETURNING c.id, c.created_at"
    "), ins AS ("
    " INSERT INTO messages (conversation_id, role, content, token_estimate, turn_key)"
    " SELECT up.id, v.role, v.content, v.tok, $12::text FROM up, (VALUES"
    "  (1, 'user', $6::text, $7::int), (2, 'assistant', $8::text, $9::int))"
    "  AS v (ord, role, content, tok)"
    " WHERE $12::text IS NULL OR NOT EXISTS (SELECT 1 FROM messages x"
    "  WHERE x.conversation_id = up.id AND x.turn_key = $12::text)"
    " ORDER BY v.ord ON CONFLICT DO NOTHING RETURNING id"
    "), cut AS ("
    " SELECT m.id FROM messages m WHERE m.conversation_id = (SELECT id FROM up)"
    " ORDER BY m.id DESC OFFSET $11::int LIMIT 1"
    "), del AS ("
    " DELETE FROM messages m USING up WHERE m.conversation_id = up.id"
    "  AND EXISTS (SELECT 1 FROM ins)"
    "  AND (m.created_at < up.created_at OR m.id <= (SELECT id FROM cut))"
    " RETURNING m.id"
    ") "
    "SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM del)";

static void on_append(struct store *s, int status, const PGresult *res, void *arg)
{
    (void)s;
    struct conv_req *r = arg;
    long long deleted = 0;
    if (status == 0 && PQntuples(res) == 1 && PQnfields(res) == 2)
        deleted = atoll(PQgetvalue(res, 0, 1));
    else if (status == 0)
        status = BC_EPROTO; /* not the row this statement always returns */
    if (status != 0)
        log_failure(r->op, status, res);
    r->done(status, deleted, r->arg);
    mem_free(r);
}

static void fmt_tokens(char *buf, size_t n, const char *text)
{
    size_t t = conv_estimate_tokens(text, strlen(text));
    fmt_int(buf, n, t > INT_MAX ? INT_MAX : (long long)t);
}

int conv_append(struct store *s, const struct conv_key *k, const char *question,
                const char *answer, int ttl_min, int keep_messages, conv_done_cb *cb, void *arg)
{
    if (!s || !k || !k->scope_key || !k->channel_id || !k->user_id || !question || !answer ||
        ttl_min < 1 || keep_messages < 2)
        return -EINVAL;
    char *q_fixed = fix_utf8(question), *a_fixed = fix_utf8(answer);
    const char *q = q_fixed ? q_fixed : question, *a = a_fixed ? a_fixed : answer;
    char q_tok[24], a_tok[24], ttl[24], keep_old[24];
    fmt_tokens(q_tok, sizeof(q_tok), q);
    fmt_tokens(a_tok, sizeof(a_tok), a);
    fmt_int(ttl, sizeof(ttl), ttl_min);
    fmt_int(keep_old, sizeof(keep_old), keep_messages - 2);
    const char *p[] = {k->scope_key, k->guild_id, k->channel_id, k->thread_id, k->user_id,
                       q, q_tok, a, a_tok, ttl, keep_old, k->turn_key && k->turn_key[0] ? k->turn_key : NULL};
    int rc = submit(s, "append", APPEND_SQL, 12, p, on_append, NULL, cb, arg);
    mem_free(q_fixed); /* store_query copied the parameters */
    mem_free(a_fixed);
    return rc;
}

/* ---- reset and expire ----------------------------------------------------------- */

static void on_deleted(struct store *s, int status, const PGresult *res, void *arg)
{
    (void)s;
    struct conv_req *r = arg;
    long long n = 0;
    if (status == 0)
        n = atoll(PQcmdTuples((PGresult *)res));
    else
        log_failure(r->op, status, res);
    r->done(status, n, r->arg);
    mem_free(r);
}

int conv_reset(struct store *s, const char *scope_key, conv_done_cb *cb, void *arg)
{
    if (!s || !scope_key)
        return -EINVAL;
    const char *p[] = {scope_key};
    return submit(s, "reset", "DELETE FROM conversations WHERE scope_key = $1", 1, p, on_deleted,
                  NULL, cb, arg);
}

/* FOR UPDATE re-checks updated_at on the newest row version, so a
 * conversation that an append just revived is not deleted; SKIP LOCKED
 * passes over one being appended to right now (it is alive). */
static const char EXPIRE_SQL[] =
    "WITH d AS ("
    " SELECT id FROM conversations"
    " WHERE updated_at < now() - make_interval(mins => $1::int)"
    " ORDER BY updated_at LIMIT $2::int FOR UPDATE SKIP LOCKED"
    ") DELETE FROM conversations c USING d WHERE c.id = d.id";

int conv_expire(struct store *s, int ttl_min, int limit, conv_done_cb *cb, void *arg)
{
    if (!s || ttl_min < 1 || limit < 1)
        return -EINVAL;
    char ttl[24], lim[24];
    fmt_int(ttl, sizeof(ttl), ttl_min);
    fmt_int(lim, sizeof(lim), limit);
    const char *p[] = {ttl, lim};
    return submit(s, "expire", EXPIRE_SQL, 2, p, on_deleted, NULL, cb, arg);
}
