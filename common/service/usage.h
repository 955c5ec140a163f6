/* usage: per-day usage counters in PostgreSQL, over struct store.
 *
 * One row of usage_daily per (UTC day, user, guild, kind, model) holds what
 * that user spent there: requests, prompt and completion tokens, units
 * (images, video seconds) and estimated credits. Quota checks and cost
 * reports read it, through this module only: the SQL against usage_daily
 * lives here. What this module promises:
 *
 *  - usage_add is one atomic upsert (INSERT .. ON CONFLICT DO UPDATE) that
 *    adds to the counters, so instances may count the same user at once
 *    without losing an increment.
 *  - The day is the UTC day at the database: (now() AT TIME ZONE 'UTC')::date,
 *    the same for every instance whatever its clock or time zone.
 *  - Values are sent as parameters, never spliced into SQL.
 *  - The callback contract is store_query's: a function that returns 0 calls
 *    its callback exactly once and never synchronously (also at shutdown,
 *    with BC_ESHUTDOWN); one that returns an error never calls it. Statuses
 *    are the store's (store_result_cb in store.h); while the store is down
 *    every call returns -ENOTCONN at once, and the caller decides whether to
 *    serve without counting.
 *
 * Strings passed in are copied before the function returns. Threading: the
 * store's (one loop thread). */
#ifndef BC_USAGE_H
#define BC_USAGE_H

#include <stddef.h>

#include "io/store.h"

/* What to add. user_id is a Discord snowflake (decimal text); guild_id is
 * NULL (stored as '') outside a guild; kind is "chat", "image" or "video";
 * model is 1-200 bytes. A value the schema refuses (malformed id, unknown
 * kind) comes back as status BC_EPG. Counts are added as given. */
struct usage_rec {
    const char *user_id, *guild_id, *kind, *model;
    long long requests, prompt_tokens, completion_tokens, units;
    double credits;
};

typedef void usage_done_cb(int status, void *arg);

/* Add r's counts to the current UTC day's row of (user, guild, kind, model),
 * creating it if needed. cb may be NULL.
 * Returns 0 (cb, if any, runs exactly once, never synchronously) or, without
 * calling cb: -EINVAL (NULL s, r, r->user_id, r->kind or r->model; a
 * negative count; credits negative, not finite or >= 1e12, more than the
 * column holds), or store_query's error
 * (-ENOTCONN while the store is down, -ENOBUFS, BC_ESHUTDOWN). */
int usage_add(struct store *s, const struct usage_rec *r, usage_done_cb *cb, void *arg);

/* One (kind, model) total. kind and model are borrowed like the rows. */
struct usage_row {
    const char *kind, *model;
    long long requests, prompt_tokens, completion_tokens, units;
    double credits;
};

/* status 0 on success, else the store status. rows are borrowed for the
 * callback's duration (NULL when n is 0, and always when status != 0). */
typedef void usage_rows_cb(int status, const struct usage_row *rows, size_t n, void *arg);

/* The user's counters of the current UTC day, all guilds (and DMs) summed per
 * (kind, model), ordered by kind then model (bytewise). No usage: status 0,
 * n 0. Returns as usage_add (-EINVAL: NULL s, user_id or cb). */
int usage_today(struct store *s, const char *user_id, usage_rows_cb *cb, void *arg);

/* Today's (UTC) totals of one kind over every user: amount is what the
 * per-user daily limit counts (chat requests; images and video units),
 * users how many users spent any of it, busiest the amount of the user who
 * spent the most. kind is borrowed like the rows. */
struct usage_total {
    const char *kind;
    long long amount, users, busiest;
};

/* status 0 on success, else the store status. totals are borrowed for the
 * callback's duration (NULL when n is 0, and always when status != 0). */
typedef void usage_totals_cb(int status, const struct usage_total *totals, size_t n, void *arg);

/* The current UTC day's totals per kind (the cluster status report), one
 * entry per kind anyone used today, ordered by kind (bytewise); no usage:
 * status 0, n 0. Returns as usage_add (-EINVAL: NULL s or cb). */
int usage_totals_today(struct store *s, usage_totals_cb *cb, void *arg);

#endif
