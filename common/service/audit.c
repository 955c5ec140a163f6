/* audit: the audit log. The contract is in audit.h; the table is described
 * in docs/store.md. */
#include "service/audit.h"

#include <errno.h>
#include <stdio.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"

#define FIXED_PARAMS 4 /* instance, guild_id, user_id, action */

struct audit_req {
    audit_done_cb *done;
    void *arg;
};

static void on_added(struct store *s, int status, const PGresult *res, void *arg)
{
    (void)s;
    struct audit_req *r = arg;
    if (status) {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        log_debug("audit query failed", LF_ERR(status), LF_STR("sqlstate", state ? state : ""));
    }
    r->done(status, r->arg);
    mem_free(r);
}

/* The INSERT for n detail pairs: only parameter numbers are written into
 * it, never a value. */
static int add_sql(struct buf *b, size_t n)
{
    buf_puts(b, "INSERT INTO audit_log (instance, guild_id, user_id, action, detail)"
                " VALUES ($1, $2, $3, $4, jsonb_build_object(");
    for (size_t i = 0; i < 2 * n; i++)
        buf_printf(b, "%s$%zu::text", i ? ", " : "", FIXED_PARAMS + 1 + i);
    buf_puts(b, "))");
    return buf_error(b);
}

static int valid(const struct store *s, const struct audit_rec *r)
{
    if (!s || !r || !r->instance || !r->action || r->ndetail > AUDIT_DETAIL_MAX || (r->ndetail && !r->detail))
        return 0;
    for (size_t i = 0; i < r->ndetail; i++)
        if (!r->detail[2 * i])
            return 0;
    return 1;
}

int audit_add(struct store *s, const struct audit_rec *r, audit_done_cb *cb, void *arg)
{
    if (!valid(s, r))
        return -EINVAL;
    const char *p[FIXED_PARAMS + 2 * AUDIT_DETAIL_MAX] = {r->instance, r->guild_id, r->user_id, r->action};
    for (size_t i = 0; i < 2 * r->ndetail; i++)
        p[FIXED_PARAMS + i] = r->detail[i];
    struct buf sql;
    buf_init(&sql, 4096);
    int rc = add_sql(&sql, r->ndetail);
    if (rc) {
        buf_free(&sql);
        return rc;
    }
    int np = FIXED_PARAMS + 2 * (int)r->ndetail;
    struct audit_req *q = NULL;
    if (cb) {
        q = mem_calloc(1, sizeof(*q));
        q->done = cb;
        q->arg = arg;
    }
    rc = store_query(s, buf_str(&sql), np, p, cb ? on_added : NULL, q);
    if (rc < 0)
        mem_free(q);
    buf_free(&sql);
    return rc;
}
