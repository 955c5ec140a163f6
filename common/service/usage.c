/* usage: per-day usage counters. The contract is in usage.h; the table is
 * described in docs/store.md. */
#include "service/usage.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"

/* credits_estimate is numeric(18, 6): 12 digits before the point. */
#define USAGE_CREDITS_MAX 1e12

/* What a pending query needs to call its caller back. */
struct usage_req {
    usage_done_cb *done;
    usage_rows_cb *rows;
    usage_totals_cb *totals;
    void *arg;
};

static void log_failure(const char *op, int status, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    log_debug("usage query failed", LF_STR("op", op), LF_ERR(status),
              LF_STR("sqlstate", state ? state : ""));
}

/* ---- add ----------------------------------------------------------------- */

static const char ADD_SQL[] =
    "INSERT INTO usage_daily AS u (day, user_id, guild_id, kind, model, requests,"
    " prompt_tokens, completion_tokens, units, credits_estimate)"
    " VALUES ((now() AT TIME ZONE 'UTC')::date, $1, $2, $3, $4, $5, $6, $7, $8, $9)"
    " ON CONFLICT (day, user_id, guild_id, kind, model) DO UPDATE SET"
    "  requests = u.requests + excluded.requests,"
    "  prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,"
    "  completion_tokens = u.completion_tokens + excluded.completion_tokens,"
    "  units = u.units + excluded.units,"
    "  credits_estimate = u.credits_estimate + excluded.credits_estimate,"
    "  updated_at = now()";

static void on_added(struct store *s, int status, const PGresult *res, void *arg)
{
    (void)s;
    struct usage_req *r = arg;
    if (status != 0)
        log_failure("add", status, res);
    r->done(status, r->arg);
    mem_free(r);
}

int usage_add(struct store *s, const struct usage_rec *r, usage_done_cb *cb, void *arg)
{
    if (!s || !r || !r->user_id || !r->kind || !r->model || r->requests < 0 ||
        r->prompt_tokens < 0 || r->completion_tokens < 0 || r->units < 0 ||
        !isfinite(r->credits) || r->credits < 0 || r->credits >= USAGE_CREDITS_MAX)
        return -EINVAL;
    char n[4][24], credits[40];
    snprintf(n[0], sizeof(n[0]), "%lld", r->requests);
    snprintf(n[1], sizeof(n[1]), "%lld", r->prompt_tokens);
    snprintf(n[2], sizeof(n[2]), "%lld", r->completion_tokens);
    snprintf(n[3], sizeof(n[3]), "%lld", r->units);
    /* numeric(18, 6) rounds to 6 places; %.6f never uses an exponent. */
    snprintf(credits, sizeof(credits), "%.6f", r->credits);
    const char *p[] = {r->user_id, r->guild_id ? r->guild_id : "", r->kind, r->model,
                       n[0], n[1], n[2], n[3], credits};
    if (!cb)
        return store_query(s, ADD_SQL, 9, p, NULL, NULL);
    struct usage_req *q = mem_calloc(1, sizeof(*q));
    q->done = cb;
    q->arg = arg;
    int rc = store_query(s, ADD_SQL, 9, p, on_added, q);
    if (rc < 0)
        mem_free(q);
    return rc;
}

/* ---- today ------------------------------------------------------------------ */

/* usage_daily_user_idx (user_id, day) finds the rows; COLLATE "C" makes the
 * order bytewise whatever the database's collation. */
static const char TODAY_SQL[] =
    "SELECT kind, model, sum(requests), sum(prompt_tokens), sum(completion_tokens),"
    " sum(units), sum(credits_estimate)"
    " FROM usage_daily WHERE user_id = $1 AND day = (now() AT TIME ZONE 'UTC')::date"
    " GROUP BY kind, model ORDER BY kind COLLATE \"C\", model COLLATE \"C\"";

static void on_today(struct store *s, int status, const PGresult *res, void *arg)
{
    (void)s;
    struct usage_req *r = arg;
    struct usage_row *rows = NULL;
    size_t n = 0;
    if (status == 0) {
        n = (size_t)PQntuples(res);
        if (n)
            rows = mem_calloc(n, sizeof(*rows));
        for (size_t i = 0; i < n; i++) {
            int row = (int)i;
            rows[i].kind = PQgetvalue(res, row, 0);
            rows[i].model = PQgetvalue(res, row, 1);
            rows[i].requests = strtoll(PQgetvalue(res, row, 2), NULL, 10);
            rows[i].prompt_tokens = strtoll(PQgetvalue(res, row, 3), NULL, 10);
            rows[i].completion_tokens = strtoll(PQgetvalue(res, row, 4), NULL, 10);
            rows[i].units = strtoll(PQgetvalue(res, row, 5), NULL, 10);
            rows[i].credits = strtod(PQgetvalue(res, row, 6), NULL);
        }
    } else {
        log_failure("today", status, res);
    }
    r->rows(status, rows, n, r->arg);
    mem_free(rows);
    mem_free(r);
}

int usage_today(struct store *s, const char *user_id, usage_rows_cb *cb, void *arg)
{
    if (!s || !user_id || !cb)
        return -EINVAL;
    struct usage_req *q = mem_calloc(1, sizeof(*q));
    q->rows = cb;
    q->arg = arg;
    const char *p[] = {user_id};
    int rc = store_query(s, TODAY_SQL, 1, p, on_today, q);
    if (rc < 0)
        mem_free(q);
    return rc;
}

/* ---- totals ----------------------------------------------------------------- */

/* The inner query sums each user's amount of a kind over guilds and models;
 * the outer one sums those per kind and takes the largest. */
static const char TOTALS_SQL[] =
    "SELECT kind, sum(n), count(*), max(n) FROM ("
    " SELECT kind, user_id, sum(CASE WHEN kind = 'chat' THEN requests ELSE units END) AS n"
    " FROM usage_daily WHERE day = (now() AT TIME ZONE 'UTC')::date GROUP BY kind, user_id) per"
    " GROUP BY kind ORDER BY kind COLLATE \"C\"";

static void on_totals(struct store *s, int status, const PGresult *res, void *arg)
{
    (void)s;
    struct usage_req *r = arg;
    struct usage_total *t = NULL;
    size_t n = 0;
    if (status == 0 && PQnfields(res) == 4) {
        n = (size_t)PQntuples(res);
        if (n)
            t = mem_calloc(n, sizeof(*t));
        for (size_t i = 0; i < n; i++) {
            int row = (int)i;
            t[i].kind = PQgetvalue(res, row, 0);
            t[i].amount = strtoll(PQgetvalue(res, row, 1), NULL, 10);
            t[i].users = strtoll(PQgetvalue(res, row, 2), NULL, 10);
            t[i].busiest = strtoll(PQgetvalue(res, row, 3), NULL, 10);
        }
    } else if (status) {
        log_failure("totals", status, res);
    }
    r->totals(status, t, n, r->arg);
    mem_free(t);
    mem_free(r);
}

int usage_totals_today(struct store *s, usage_totals_cb *cb, void *arg)
{
    if (!s || !cb)
        return -EINVAL;
    struct usage_req *q = mem_calloc(1, sizeof(*q));
    q->totals = cb;
    q->arg = arg;
    int rc = store_query(s, TOTALS_SQL, 0, NULL, on_totals, q);
    if (rc < 0)
        mem_free(q);
    return rc;
}
