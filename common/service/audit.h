/* audit: the audit log, who did what, in PostgreSQL over struct store.
 *
 * One row of audit_log per event: the instance that saw it, the guild and
 * user (either may be absent), an action name and a detail object. The
 * rows are append-only; moderators and incident review read them with SQL
 * of their own (docs/store.md). This module is the one place that knows
 * the table: callers say what happened, never how it is stored. What it
 * promises:
 *
 *  - Values are sent as parameters, never spliced into SQL; the detail is
 *    a JSON object of text values (NULL becomes JSON null) built by the
 *    database (jsonb_build_object), so no caller encodes JSON.
 *  - The callback contract is store_query's: a function that returns 0 calls
 *    its callback exactly once and never synchronously (also at shutdown,
 *    with BC_ESHUTDOWN); one that returns an error never calls it. While the
 *    store is down every call returns -ENOTCONN at once.
 *
 * Strings passed in are copied before the function returns. Threading: the
 * store's (one loop thread). */
#ifndef BC_AUDIT_H
#define BC_AUDIT_H

#include <stddef.h>

#include "io/store.h"

#define AUDIT_DETAIL_MAX 16 /* name/value pairs in one detail object */

/* One event. instance and action are required (the schema refuses an empty
 * action: status BC_EPG); guild_id and user_id are Discord snowflakes or
 * NULL (SQL NULL). detail holds ndetail pairs: detail[2i] a name (not
 * NULL), detail[2i+1] its value (NULL: JSON null). */
struct audit_rec {
    const char *instance, *guild_id, *user_id, *action;
    const char *const *detail;
    size_t ndetail;
};

typedef void audit_done_cb(int status, void *arg);

/* Append r to the audit log. cb may be NULL.
 * Returns 0 (cb, if any, runs exactly once, never synchronously, with 0 or
 * the store status) or, without calling cb: -EINVAL (NULL s, r, instance
 * or action; a detail name NULL; more than AUDIT_DETAIL_MAX pairs, or
 * pairs without detail), or store_query's error (-ENOTCONN while the store
 * is down, -ENOBUFS, BC_ESHUTDOWN). */
int audit_add(struct store *s, const struct audit_rec *r, audit_done_cb *cb, void *arg);

#endif
