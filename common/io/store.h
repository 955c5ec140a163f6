/* store: PostgreSQL on the process's libuv loop.
 *
 * A store owns one PostgreSQL connection driven entirely by libpq's
 * non-blocking API from the libuv loop it was created on; no call in this
 * module waits on the network. What it promises:
 *
 *  - It connects (with a connect timeout), applies the schema migrations that
 *    are embedded in the binary (store_schema.c) under an advisory lock, and
 *    only then reports itself up. Several instances may start at once.
 *  - Queries run one at a time, in the order they were submitted, each with a
 *    server-side statement_timeout and a local hard timeout behind it.
 *  - When the connection is lost it fails what was queued or in flight with
 *    -ENOTCONN, reports down, and reconnects by itself with a jittered
 *    exponential backoff (200 ms doubling to 10 s). An outage is logged once
 *    when it starts and once when it ends.
 *  - While down, store_query refuses at once with -ENOTCONN so callers can run
 *    in a degraded mode instead of piling work up.
 *
 * One limitation: if the conninfo names a host by NAME (not an IP address,
 * not a socket directory, and without hostaddr=), libpq resolves it inside
 * PQconnectStart with a blocking getaddrinfo, on the loop. store_new logs a
 * warning when it sees such a conninfo; deployments should give an address.
 *
 * Threading: a store belongs to its loop's thread; nothing here is
 * thread-safe. Design note: docs/store.md. */
#ifndef BC_STORE_H
#define BC_STORE_H

#include <stddef.h>

#include <libpq-fe.h>
#include <uv.h>

struct store;

struct store_opts {
    const char *conninfo;   /* URI (postgresql://...) or key=value; copied */
    int connect_timeout_ms; /* <= 0: 5000. Covers TCP, TLS and authentication */
    int query_timeout_ms;   /* <= 0: 10000. Sent as the session's statement_timeout;
                               the local hard timeout is this + 2 s */
    int migrate_timeout_ms; /* <= 0: 60000. statement_timeout while migrating
                               (a migration may wait for another instance's) */
    size_t max_queue;       /* 0: 1024. Queries waiting behind the one in flight */
};

/* Called on every change of the up state: up=1 once connected AND migrated,
 * up=0 when an up store loses its connection. Never called from store_new or
 * store_close, and never twice in a row with the same value. */
typedef void store_state_cb(struct store *s, int up, void *arg);

/* The outcome of one store_query. status is
 *   0             res is PGRES_TUPLES_OK or PGRES_COMMAND_OK;
 *   BC_EPG        the server rejected the query (syntax, constraint,
 *                 statement_timeout...): res holds the error
 *                 (PQresultErrorField works), store_errstr has a summary;
 *   -ENOTCONN     the connection was lost while the query was queued or in
 *                 flight (res NULL); it may or may not have been executed;
 *   -ETIMEDOUT    the local hard timeout fired (res NULL); the connection was
 *                 dropped and is being re-established;
 *   -ENOTSUP      the statement started a COPY, which store does not speak
 *                 (res NULL); the connection is re-established;
 *   BC_ESHUTDOWN  store_close was called (res NULL).
 * res is borrowed: it is freed when the callback returns. The callback may
 * call store_query and store_close. */
typedef void store_result_cb(struct store *s, int status, const PGresult *res, void *arg);

/* Create a store on loop and start connecting. Nothing is called back before
 * store_new returns. On success *out owns the store (release it with
 * store_close). Errors: -EINVAL (missing argument), BC_ECONFIG (conninfo
 * does not parse; the reason is logged with the password redacted). cb may be
 * NULL; cb and arg are kept for the store's lifetime. */
int store_new(uv_loop_t *loop, const struct store_opts *o, store_state_cb *cb, void *arg,
              struct store **out);

/* Queue sql with nparams text parameters ($1..$n; a NULL entry is SQL NULL).
 * sql and params are copied before returning, so they may be temporaries.
 * Only one statement is allowed (extended protocol). Results come back in
 * text format. All callers share one connection, so a transaction must not
 * span several calls (BEGIN ... COMMIT would take in other callers' queries):
 * make an atomic change a single statement (CTE, ON CONFLICT, a function).
 * The query is never sent before store_query returns, so cb is never called
 * synchronously from here.
 * Returns 0 and cb (if not NULL) will run exactly once; or, without ever
 * calling cb: -EINVAL (bad argument), -ENOTCONN (not up: the caller decides
 * what degraded mode means), -ENOBUFS (max_queue queries already waiting),
 * BC_ESHUTDOWN (store_close was called). */
int store_query(struct store *s, const char *sql, int nparams, const char *const *params,
                store_result_cb *cb, void *arg);

/* 1 when connected and migrated (store_query would accept), else 0. */
int store_up(const struct store *s);

/* Highest migration version in the database as of the last successful
 * connect; 0 before the first one. */
int store_schema_version(const struct store *s);

/* Highest migration version this binary carries. */
int store_schema_latest(void);

/* Description of the last error (connection or query) on one line, owned by
 * the store; copy it before returning to the loop or calling into the store
 * again. "" when none. Never holds a password. */
const char *store_errstr(const struct store *s);

/* Release the store. Every query still queued or in flight has its callback
 * run with BC_ESHUTDOWN before store_close returns; the connection is closed,
 * and once libuv has released the handles the memory is freed and done(arg)
 * is called from the loop (done may be NULL). The state callback is not
 * called. s must not be used after store_close; calling store_close from a
 * store callback is allowed; a second call before done runs is ignored. */
void store_close(struct store *s, void (*done)(void *arg), void *arg);

#endif
