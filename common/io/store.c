/* store: PostgreSQL on the libuv loop. See store.h for the contract and
 * docs/store.md for the design.
 *
 * The connection moves through four states, each with its own handler:
 *   WAITING     no connection; conn_timer is the backoff before the next try
 *   CONNECTING  PQconnectPoll in progress; conn_timer is the connect timeout
 *   MIGRATING   connected; the migration script is the query in flight
 *   READY       up; user queries run one at a time
 * and CLOSED once store_close was called. Every way of losing the connection
 * goes through conn_fail(), which tears down, fails the queries and arms the
 * retry. The migration script travels through the same queue as user
 * queries, so timeouts and connection loss need no special case for it.
 *
 * Lifetime: a user callback may call store_close, which drops the
 * connection at once but frees the store only from the uv_close callback of
 * its last handle, i.e. from the loop with none of our functions on the
 * stack. Each function that runs a callback then checks the connection epoch
 * (bumped by every drop) before touching the connection again. */
#include "io/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "io/store_schema.h"

#define STORE_CONNECT_TIMEOUT_MS 5000
#define STORE_QUERY_TIMEOUT_MS 10000
#define STORE_MIGRATE_TIMEOUT_MS 60000
#define STORE_MAX_QUEUE 1024
#define STORE_HARD_MARGIN_MS 2000
#define STORE_BACKOFF_MIN_MS 200
#define STORE_BACKOFF_MAX_MS 10000
#define STORE_SETUP_MAX (1024 * 1024)
#define STORE_MAX_PARAMS 65535 /* the protocol's limit */

enum store_state { ST_WAITING, ST_CONNECTING, ST_MIGRATING, ST_READY, ST_CLOSED };

/* One query, allocated as a single block: the struct, the params array, then
 * the copied strings. nparams < 0 marks the internal migration script, which
 * is several statements and goes through the simple query protocol. */
struct store_q {
    struct store_q *next;
    store_result_cb *cb;
    void *arg;
    const char *sql;
    const char **params;
    int nparams;
    int timeout_ms; /* the server-side budget; the local one adds a margin */
};

struct store {
    uv_loop_t *loop;
    char *conninfo; /* owned; may hold a password: only ever logged via LF_URL */
    char *setup_sql;
    int connect_timeout_ms, query_timeout_ms, migrate_timeout_ms;
    size_t max_queue;
    store_state_cb *state_cb;
    void *state_arg;

    enum store_state state;
    unsigned epoch;
    PGconn *conn;
    uv_poll_t *poll; /* heap: a new one whenever libpq's socket changes */
    int poll_fd;
    int poll_events;
    int flushing; /* PQflush left data behind: wait for writable */
    uv_timer_t conn_timer;
    uv_timer_t query_timer; /* hard timeout of the in-flight query, or a 0 ms kick */
    int handles;            /* libuv handles not yet through their close callback */

    struct store_q *inflight;
    PGresult *res; /* what the in-flight query produced so far */
    struct store_q *qhead, *qtail;
    size_t qlen;

    int up;
    int schema_version;
    int outage_logged;
    uint64_t down_since;
    unsigned backoff_ms;
    uint64_t rng;

    void (*done)(void *arg);
    void *done_arg;
    char errstr[512];
};

static void conn_start(struct store *s);
static void conn_fail(struct store *s, int err);
static void send_next(struct store *s);
static void poll_update(struct store *s);
static void on_poll(uv_poll_t *h, int status, int events);

/* ---- error text ------------------------------------------------------ */

/* Write prefix + msg into dst on one line: libpq's messages carry newlines,
 * tabs and alignment spaces, which we fold into single spaces. */
static void fold_text(char *dst, size_t cap, const char *prefix, const char *msg)
{
    size_t o = 0;
    int space = 0;
    if (prefix)
        o = (size_t)snprintf(dst, cap, "%s", prefix);
    if (o >= cap)
        o = cap - 1;
    for (const char *p = msg ? msg : ""; *p && o + 1 < cap; p++) {
        if (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') {
            space = 1;
            continue;
        }
        if (space && o > 0 && o + 2 < cap)
            dst[o++] = ' ';
        space = 0;
        dst[o++] = *p;
    }
    dst[o] = '\0';
}

static void set_err_text(struct store *s, const char *prefix, const char *msg)
{
    fold_text(s->errstr, sizeof(s->errstr), prefix, msg);
}

static void set_err_conn(struct store *s)
{
    set_err_text(s, NULL, s->conn ? PQerrorMessage(s->conn) : "no connection");
}

/* "ERROR 42601: syntax error at or near ..." from a failed result. */
static void set_err_result(struct store *s, const PGresult *r)
{
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    char prefix[64];
    if (!primary) {
        set_err_text(s, NULL, PQresultErrorMessage(r));
        return;
    }
    snprintf(prefix, sizeof(prefix), "%s %s: ", sev ? sev : "ERROR", state ? state : "?????");
    if (!detail) {
        set_err_text(s, prefix, primary);
        return;
    }
    char text[sizeof(s->errstr)];
    snprintf(text, sizeof(text), "%s (%s)", primary, detail);
    set_err_text(s, prefix, text);
}

/* Server notices (e.g. "relation already exists, skipping") would go to
 * stderr by default; they are only interesting when debugging. */
static void on_notice(void *arg, const char *msg)
{
    (void)arg;
    if (log__level > LOG_DEBUG)
        return;
    char line[512];
    fold_text(line, sizeof(line), NULL, msg);
    log_debug("postgres notice", LF_STR("notice", line));
}

/* ---- queue ----------------------------------------------------------- */

static int size_add(size_t *acc, size_t n)
{
    if (n > SIZE_MAX - *acc)
        return -EOVERFLOW;
    *acc += n;
    return 0;
}

static struct store_q *q_new(const char *sql, int nparams, const char *const *params)
{
    size_t n = sizeof(struct store_q), off;
    int np = nparams > 0 ? nparams : 0;
    if (size_add(&n, (size_t)np * sizeof(char *)) || size_add(&n, strlen(sql) + 1))
        return NULL;
    for (int i = 0; i < np; i++)
        if (params[i] && size_add(&n, strlen(params[i]) + 1))
            return NULL;
    struct store_q *q = mem_calloc(1, n);
    q->params = (const char **)(q + 1);
    off = sizeof(struct store_q) + (size_t)np * sizeof(char *);
    for (int i = 0; i < np; i++) {
        if (!params[i])
            continue;
        size_t len = strlen(params[i]) + 1;
        memcpy((char *)q + off, params[i], len);
        q->params[i] = (char *)q + off;
        off += len;
    }
    memcpy((char *)q + off, sql, strlen(sql) + 1);
    q->sql = (char *)q + off;
    q->nparams = nparams;
    return q;
}

static void q_push(struct store *s, struct store_q *q)
{
    if (s->qtail)
        s->qtail->next = q;
    else
        s->qhead = q;
    s->qtail = q;
    s->qlen++;
}

static struct store_q *q_pop(struct store *s)
{
    struct store_q *q = s->qhead;
    s->qhead = q->next;
    if (!s->qhead)
        s->qtail = NULL;
    s->qlen--;
    q->next = NULL;
    return q;
}

/* Run and free every callback of a detached list. The list is private to
 * the caller, so a callback that closes the store cannot double-fail it. */
static void q_fail_list(struct store *s, struct store_q *q, int err)
{
    while (q) {
        struct store_q *next = q->next;
        if (q->cb)
            q->cb(s, err, NULL, q->arg);
        mem_free(q);
        q = next;
    }
}

/* ---- handles --------------------------------------------------------- */

static void store_free(struct store *s)
{
    void (*done)(void *) = s->done;
    void *arg = s->done_arg;
    mem_free(s->conninfo);
    mem_free(s->setup_sql);
    mem_free(s);
    if (done)
        done(arg);
}

static void handle_closed(struct store *s)
{
    s->handles--;
    if (s->state == ST_CLOSED && s->handles == 0)
        store_free(s);
}

static void on_timer_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void on_poll_closed(uv_handle_t *h)
{
    struct store *s = h->data;
    mem_free(h);
    handle_closed(s);
}

static void poll_close(struct store *s)
{
    uv_close((uv_handle_t *)s->poll, on_poll_closed);
    s->poll = NULL;
    s->poll_fd = -1;
    s->poll_events = 0;
}

/* Watch fd for events. A different fd needs a new handle (libuv binds a poll
 * handle to one fd). rearm restarts the watch even when nothing seems to
 * have changed: while connecting, libpq may close its socket and open
 * another that gets the same number, and only a fresh start (which removes
 * and re-adds the fd in epoll) watches the new one. */
static int poll_watch(struct store *s, int fd, int events, int rearm)
{
    int rc;
    if (fd < 0)
        return -EBADF;
    if (s->poll && s->poll_fd != fd)
        poll_close(s);
    if (!s->poll) {
        uv_poll_t *p = mem_alloc(sizeof(*p));
        rc = uv_poll_init(s->loop, p, fd);
        if (rc < 0) {
            mem_free(p);
            return rc;
        }
        log_debug("postgres socket", LF_INT("fd", fd));
        p->data = s;
        s->handles++;
        s->poll = p;
        s->poll_fd = fd;
        rearm = 1;
    }
    if (!rearm && events == s->poll_events)
        return 0;
    rc = uv_poll_start(s->poll, events, on_poll);
    if (rc < 0)
        return rc;
    s->poll_events = events;
    return 0;
}

/* Tear the connection down; the store stays usable for a reconnect. */
static void conn_drop(struct store *s)
{
    if (s->poll)
        poll_close(s); /* before PQfinish closes the fd under it */
    if (s->res) {
        PQclear(s->res);
        s->res = NULL;
    }
    if (s->conn) {
        PQfinish(s->conn);
        s->conn = NULL;
    }
    uv_timer_stop(&s->conn_timer);
    uv_timer_stop(&s->query_timer);
    s->flushing = 0;
    s->up = 0;
    s->epoch++;
}

/* ---- reconnect ------------------------------------------------------- */

static uint64_t rng_next(struct store *s)
{
    /* xorshift64: jitter only needs to spread instances apart */
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return s->rng;
}

static void on_retry_timer(uv_timer_t *t)
{
    conn_start(t->data);
}

/* Arm the next attempt somewhere in [backoff/2, backoff], then double. */
static unsigned schedule_retry(struct store *s)
{
    unsigned base = s->backoff_ms;
    unsigned delay = base / 2 + (unsigned)(rng_next(s) % (base / 2 + 1));
    s->backoff_ms = base * 2 > STORE_BACKOFF_MAX_MS ? STORE_BACKOFF_MAX_MS : base * 2;
    s->state = ST_WAITING;
    uv_timer_start(&s->conn_timer, on_retry_timer, delay, 0);
    return delay;
}

static void log_outage(struct store *s, int was_up, int err, unsigned retry_ms)
{
    if (was_up || !s->outage_logged) {
        if (!s->outage_logged)
            s->down_since = uv_now(s->loop);
        log_warn(was_up ? "postgres connection lost" : "postgres unavailable",
                 LF_URL("db", s->conninfo), LF_ERR(err), LF_STR("detail", s->errstr),
                 LF_INT("retry_ms", retry_ms));
        s->outage_logged = 1;
        return;
    }
    log_debug("postgres connect attempt failed", LF_ERR(err), LF_STR("detail", s->errstr),
              LF_INT("retry_ms", retry_ms));
}

/* The one path for a lost, failed or abandoned connection: err goes to the
 * query in flight (if any), -ENOTCONN to the queued ones. */
static void conn_fail(struct store *s, int err)
{
    int was_up = s->up;
    struct store_q *inflight = s->inflight, *queued = s->qhead;
    s->inflight = NULL;
    s->qhead = s->qtail = NULL;
    s->qlen = 0;
    conn_drop(s);
    unsigned retry_ms = schedule_retry(s);
    log_outage(s, was_up, err, retry_ms);
    q_fail_list(s, inflight, err);
    q_fail_list(s, queued, -ENOTCONN);
    if (was_up && s->state != ST_CLOSED && s->state_cb)
        s->state_cb(s, 0, s->state_arg);
}

/* ---- CONNECTING ------------------------------------------------------ */

static void connect_wait(struct store *s, int events)
{
    int rc = poll_watch(s, PQsocket(s->conn), events, 1);
    if (rc < 0) {
        set_err_text(s, "cannot watch the postgres socket: ", uv_strerror(rc));
        conn_fail(s, -ENOTCONN);
    }
}

static void on_connect_timeout(uv_timer_t *t)
{
    struct store *s = t->data;
    char msg[96];
    snprintf(msg, sizeof(msg), "connection attempt timed out after %d ms", s->connect_timeout_ms);
    set_err_text(s, NULL, msg);
    conn_fail(s, -ETIMEDOUT);
}

static void on_migrated(struct store *s, int status, const PGresult *res, void *arg);

static void connect_done(struct store *s)
{
    uv_timer_stop(&s->conn_timer);
    if (PQsetnonblocking(s->conn, 1) != 0) {
        set_err_conn(s);
        conn_fail(s, -ENOTCONN);
        return;
    }
    log_debug("postgres connected, migrating", LF_INT("backend_pid", PQbackendPID(s->conn)));
    struct store_q *q = q_new(s->setup_sql, -1, NULL);
    q->cb = on_migrated;
    q->timeout_ms = s->migrate_timeout_ms;
    unsigned epoch = s->epoch;
    s->state = ST_MIGRATING;
    q_push(s, q);
    send_next(s);
    if (epoch == s->epoch)
        poll_update(s);
}

static void connect_step(struct store *s)
{
    switch (PQconnectPoll(s->conn)) {
    case PGRES_POLLING_READING:
        connect_wait(s, UV_READABLE);
        return;
    case PGRES_POLLING_WRITING:
        connect_wait(s, UV_WRITABLE);
        return;
    case PGRES_POLLING_OK:
        connect_done(s);
        return;
    default:
        set_err_conn(s);
        conn_fail(s, -ENOTCONN);
        return;
    }
}

static void conn_start(struct store *s)
{
    s->state = ST_CONNECTING;
    s->conn = PQconnectStart(s->conninfo);
    if (!s->conn || PQstatus(s->conn) == CONNECTION_BAD) {
        set_err_conn(s);
        conn_fail(s, -ENOTCONN);
        return;
    }
    PQsetNoticeProcessor(s->conn, on_notice, s);
    uv_timer_start(&s->conn_timer, on_connect_timeout, (uint64_t)s->connect_timeout_ms, 0);
    /* libpq's rule: start as if PQconnectPoll had asked for writable. */
    connect_wait(s, UV_WRITABLE);
}

/* ---- MIGRATING ------------------------------------------------------- */

static void mark_up(struct store *s, const PGresult *res)
{
    int version = 0;
    if (PQntuples(res) == 1 && PQnfields(res) == 1)
        version = atoi(PQgetvalue(res, 0, 0));
    s->schema_version = version;
    s->state = ST_READY;
    s->up = 1;
    s->backoff_ms = STORE_BACKOFF_MIN_MS;
    if (version > store_schema_latest())
        log_warn("postgres schema is newer than this build", LF_INT("schema", version),
                 LF_INT("latest_known", store_schema_latest()));
    if (s->outage_logged)
        log_info("postgres connection recovered", LF_URL("db", s->conninfo),
                 LF_INT("schema", version), LF_INT("down_ms", uv_now(s->loop) - s->down_since));
    else
        log_info("postgres connected", LF_URL("db", s->conninfo), LF_INT("schema", version));
    s->outage_logged = 0;
    if (s->state_cb)
        s->state_cb(s, 1, s->state_arg);
}

static void on_migrated(struct store *s, int status, const PGresult *res, void *arg)
{
    (void)arg;
    if (status == 0) {
        mark_up(s, res);
        return;
    }
    /* A lost connection or a timeout already went through conn_fail, and
     * BC_ESHUTDOWN means we are closing: only a refused migration is left. */
    if (status != BC_EPG)
        return;
    if (!s->outage_logged) {
        log_error("postgres schema migration failed", LF_URL("db", s->conninfo),
                  LF_STR("detail", s->errstr));
        s->outage_logged = 1;
        s->down_since = uv_now(s->loop);
    }
    conn_fail(s, BC_EPG);
}

/* ---- MIGRATING and READY: one query at a time ----------------------- */

static void poll_update(struct store *s)
{
    int rc = poll_watch(s, PQsocket(s->conn), UV_READABLE | (s->flushing ? UV_WRITABLE : 0), 0);
    if (rc < 0) {
        set_err_text(s, "cannot watch the postgres socket: ", uv_strerror(rc));
        conn_fail(s, -ENOTCONN);
    }
}

static int flush_out(struct store *s)
{
    int rc = PQflush(s->conn);
    if (rc < 0) {
        set_err_conn(s);
        conn_fail(s, -ENOTCONN);
        return -1;
    }
    s->flushing = rc;
    return 0;
}

static void on_query_timeout(uv_timer_t *t)
{
    struct store *s = t->data;
    char msg[128];
    snprintf(msg, sizeof(msg), "no answer within the local hard timeout of %d ms; reconnecting",
             s->inflight->timeout_ms + STORE_HARD_MARGIN_MS);
    set_err_text(s, NULL, msg);
    log_warn("postgres query hard timeout",
             LF_INT("timeout_ms", s->inflight->timeout_ms + STORE_HARD_MARGIN_MS));
    conn_fail(s, -ETIMEDOUT);
}

static void on_kick(uv_timer_t *t)
{
    struct store *s = t->data;
    unsigned epoch = s->epoch;
    if (s->state != ST_READY || s->inflight || !s->qhead)
        return;
    send_next(s);
    if (epoch == s->epoch)
        poll_update(s);
}

static void send_next(struct store *s)
{
    struct store_q *q = q_pop(s);
    int ok;
    s->inflight = q;
    if (q->nparams < 0)
        ok = PQsendQuery(s->conn, q->sql);
    else
        ok = PQsendQueryParams(s->conn, q->sql, q->nparams, NULL, q->params, NULL, NULL, 0);
    if (!ok) {
        set_err_conn(s);
        conn_fail(s, -ENOTCONN);
        return;
    }
    uv_timer_start(&s->query_timer, on_query_timeout,
                   (uint64_t)q->timeout_ms + STORE_HARD_MARGIN_MS, 0);
    flush_out(s);
}

/* Map a finished query's last result to its status. A FATAL error that
 * ended the session (admin shutdown, connection failure) is a lost
 * connection, not a query error. */
static int result_status(struct store *s, const PGresult *r)
{
    if (PQstatus(s->conn) == CONNECTION_BAD) {
        set_err_conn(s);
        return -ENOTCONN;
    }
    if (!r) {
        set_err_text(s, NULL, "postgres returned no result");
        return -ENOTCONN;
    }
    switch (PQresultStatus(r)) {
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
        return 0;
    case PGRES_EMPTY_QUERY:
        set_err_text(s, NULL, "empty query");
        return BC_EPG;
    default:
        break;
    }
    set_err_result(s, r);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (state && (!strncmp(state, "57P", 3) || !strncmp(state, "08", 2)))
        return -ENOTCONN;
    return BC_EPG;
}

static void complete(struct store *s)
{
    int status = result_status(s, s->res);
    if (status == -ENOTCONN) {
        conn_fail(s, -ENOTCONN);
        return;
    }
    struct store_q *q = s->inflight;
    PGresult *r = s->res;
    s->inflight = NULL;
    s->res = NULL;
    uv_timer_stop(&s->query_timer);
    if (q->cb)
        q->cb(s, status, r, q->arg);
    PQclear(r);
    mem_free(q);
}

/* Keep what the caller must see: the first error, else the last result (the
 * migration script's final SELECT carries the version). */
static int stash(struct store *s, PGresult *r)
{
    switch (PQresultStatus(r)) {
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        PQclear(r);
        set_err_text(s, NULL, "COPY is not supported by store_query");
        conn_fail(s, -ENOTSUP);
        return -1;
    default:
        break;
    }
    if (s->res && PQresultStatus(s->res) == PGRES_FATAL_ERROR) {
        PQclear(r);
        return 0;
    }
    PQclear(s->res);
    s->res = r;
    return 0;
}

/* Collect whatever results are complete; finish queries and start the next
 * one. Returns -1 when the connection went away meanwhile. */
static int collect(struct store *s)
{
    unsigned epoch = s->epoch;
    while (s->inflight && !PQisBusy(s->conn)) {
        PGresult *r = PQgetResult(s->conn);
        if (r) {
            if (stash(s, r) < 0)
                return -1;
            continue;
        }
        complete(s);
        if (epoch != s->epoch)
            return -1;
        if (s->qhead && s->state == ST_READY) {
            send_next(s);
            if (epoch != s->epoch)
                return -1;
        }
    }
    return 0;
}

static void query_io(struct store *s, int events)
{
    if ((events & UV_READABLE) && !PQconsumeInput(s->conn)) {
        set_err_conn(s);
        conn_fail(s, -ENOTCONN);
        return;
    }
    if (s->flushing && flush_out(s) < 0)
        return;
    PGnotify *n;
    while ((n = PQnotifies(s->conn)))
        PQfreemem(n);
    if (collect(s) < 0)
        return;
    if (PQstatus(s->conn) == CONNECTION_BAD) {
        set_err_conn(s);
        conn_fail(s, -ENOTCONN);
        return;
    }
    poll_update(s);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct store *s = h->data;
    if (status < 0) {
        /* libuv reports a socket error (POLLERR, e.g. connection refused)
         * as UV_EBADF and stops the handle. libpq reads the real error from
         * the socket, so let it look, and make sure the watch is re-armed. */
        s->poll_events = 0;
        events = UV_READABLE | UV_WRITABLE;
    }
    if (s->state == ST_CONNECTING)
        connect_step(s);
    else
        query_io(s, events);
}

/* ---- setup ----------------------------------------------------------- */

/* The one script run at every (re)connect: session settings, then all
 * migrations in one transaction under the advisory lock, then the version. */
static int build_setup_sql(struct store *s)
{
    struct buf b;
    int rc = 0, prev = 0;
    buf_init(&b, STORE_SETUP_MAX);
    rc |= buf_printf(&b,
                     "SET statement_timeout = %d;\nSET client_encoding = 'UTF8';\n"
                     "SET TimeZone = 'UTC';\nBEGIN;\nSET LOCAL statement_timeout = %d;\n"
                     "SELECT pg_advisory_xact_lock(%lld);\n"
                     "CREATE TABLE IF NOT EXISTS schema_migrations (\n"
                     "  version integer PRIMARY KEY CHECK (version > 0),\n"
                     "  name text NOT NULL,\n"
                     "  applied_at timestamptz NOT NULL DEFAULT now()\n);\n",
                     s->query_timeout_ms, s->migrate_timeout_ms, STORE_MIGRATION_LOCK_KEY);
    for (int i = 0; i < store__nmigrations; i++) {
        const struct store_migration *m = &store__migrations[i];
        if (m->version != prev + 1 || strchr(m->name, '\'') || strstr(m->sql, "$store_migrate$")) {
            log_error("invalid embedded migration", LF_INT("version", m->version));
            buf_free(&b);
            return BC_ECONFIG;
        }
        prev = m->version;
        rc |=
            buf_printf(&b,
                       "DO $store_migrate$ BEGIN\n"
                       "IF NOT EXISTS (SELECT 1 FROM schema_migrations WHERE version = %d) THEN\n",
                       m->version);
        rc |= buf_puts(&b, m->sql);
        rc |= buf_printf(&b,
                         "INSERT INTO schema_migrations (version, name) VALUES (%d, '%s');\n"
                         "END IF;\nEND $store_migrate$;\n",
                         m->version, m->name);
    }
    rc |= buf_puts(&b, "COMMIT;\nSELECT coalesce(max(version), 0) FROM schema_migrations;\n");
    if (rc) {
        buf_free(&b);
        return BC_ETOOBIG;
    }
    s->setup_sql = buf_detach(&b);
    return 0;
}

static int is_address(const char *h, size_t len)
{
    char tmp[64];
    unsigned char addr[16];
    if (len == 0 || h[0] == '/' || h[0] == '@')
        return 1; /* default or a Unix socket: no name lookup */
    if (len >= sizeof(tmp))
        return 0;
    memcpy(tmp, h, len);
    tmp[len] = '\0';
    return inet_pton(AF_INET, tmp, addr) == 1 || inet_pton(AF_INET6, tmp, addr) == 1;
}

/* Parse the conninfo the way libpq will, and warn when connecting would
 * resolve a host name on the loop. */
static int conninfo_check(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    if (!opts) {
        /* libpq's reason may quote part of the string: keep it out of logs */
        log_error("invalid postgres conninfo", LF_URL("db", conninfo));
        PQfreemem(err);
        return BC_ECONFIG;
    }
    const char *host = NULL, *hostaddr = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!strcmp(o->keyword, "host"))
            host = o->val;
        else if (!strcmp(o->keyword, "hostaddr"))
            hostaddr = o->val;
    }
    int named = 0;
    if (host && !(hostaddr && *hostaddr)) {
        for (const char *h = host; !named;) {
            size_t len = strcspn(h, ",");
            named = !is_address(h, len);
            if (!h[len])
                break;
            h += len + 1;
        }
    }
    if (named)
        log_warn("postgres host is a name: each connect resolves it with a blocking lookup on the "
                 "event loop; configure an IP address or hostaddr",
                 LF_URL("db", conninfo));
    PQconninfoFree(opts);
    return 0;
}

/* ---- public API ------------------------------------------------------ */

int store_new(uv_loop_t *loop, const struct store_opts *o, store_state_cb *cb, void *arg,
              struct store **out)
{
    if (!loop || !o || !o->conninfo || !out)
        return -EINVAL;
    int rc = conninfo_check(o->conninfo);
    if (rc < 0)
        return rc;
    struct store *s = mem_calloc(1, sizeof(*s));
    s->loop = loop;
    s->connect_timeout_ms =
        o->connect_timeout_ms > 0 ? o->connect_timeout_ms : STORE_CONNECT_TIMEOUT_MS;
    s->query_timeout_ms = o->query_timeout_ms > 0 ? o->query_timeout_ms : STORE_QUERY_TIMEOUT_MS;
    s->migrate_timeout_ms =
        o->migrate_timeout_ms > 0 ? o->migrate_timeout_ms : STORE_MIGRATE_TIMEOUT_MS;
    s->max_queue = o->max_queue ? o->max_queue : STORE_MAX_QUEUE;
    s->state_cb = cb;
    s->state_arg = arg;
    rc = build_setup_sql(s);
    if (rc < 0) {
        mem_free(s);
        return rc;
    }
    s->conninfo = mem_strdup(o->conninfo);
    s->poll_fd = -1;
    s->backoff_ms = STORE_BACKOFF_MIN_MS;
    s->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)s) | 1;
    uv_timer_init(loop, &s->conn_timer);
    uv_timer_init(loop, &s->query_timer);
    s->conn_timer.data = s;
    s->query_timer.data = s;
    s->handles = 2;
    *out = s;
    conn_start(s); /* calls nothing back: no query is queued and we were not up */
    return 0;
}

int store_query(struct store *s, const char *sql, int nparams, const char *const *params,
                store_result_cb *cb, void *arg)
{
    if (!s || !sql || nparams < 0 || nparams > STORE_MAX_PARAMS || (nparams > 0 && !params))
        return -EINVAL;
    if (s->state == ST_CLOSED)
        return BC_ESHUTDOWN;
    if (!s->up)
        return -ENOTCONN;
    if (s->qlen >= s->max_queue)
        return -ENOBUFS;
    struct store_q *q = q_new(sql, nparams, params);
    if (!q)
        return -EINVAL;
    q->cb = cb;
    q->arg = arg;
    q->timeout_ms = s->query_timeout_ms;
    q_push(s, q);
    /* Send from the loop, not from here: a failing send must not call
     * back before the caller has even seen our return value. */
    if (!s->inflight && !uv_is_active((uv_handle_t *)&s->query_timer))
        uv_timer_start(&s->query_timer, on_kick, 0, 0);
    return 0;
}

int store_up(const struct store *s)
{
    return s && s->up;
}

int store_schema_version(const struct store *s)
{
    return s ? s->schema_version : 0;
}

int store_schema_latest(void)
{
    return store__migrations[store__nmigrations - 1].version;
}

const char *store_errstr(const struct store *s)
{
    return s ? s->errstr : "";
}

void store_close(struct store *s, void (*done)(void *arg), void *arg)
{
    if (!s || s->state == ST_CLOSED)
        return;
    struct store_q *inflight = s->inflight, *queued = s->qhead;
    s->inflight = NULL;
    s->qhead = s->qtail = NULL;
    s->qlen = 0;
    if (s->up || s->conn)
        log_info("postgres store closing", LF_URL("db", s->conninfo));
    conn_drop(s);
    s->state = ST_CLOSED;
    s->done = done;
    s->done_arg = arg;
    uv_close((uv_handle_t *)&s->conn_timer, on_timer_closed);
    uv_close((uv_handle_t *)&s->query_timer, on_timer_closed);
    q_fail_list(s, inflight, BC_ESHUTDOWN);
    q_fail_list(s, queued, BC_ESHUTDOWN);
}
