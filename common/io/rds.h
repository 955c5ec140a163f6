/* rds: one Redis/Valkey connection on the event loop that heals itself.
 *
 * Wraps a hiredis async context attached to the process's libuv loop (by a
 * small adapter of our own: hiredis 0.14's ignores poll errors). The
 * URL (redis://[user:pass@]host:port/db or unix:///path?db=N) is parsed once;
 * host names are resolved with uv_getaddrinfo so the loop never waits on DNS.
 * After connecting, AUTH and SELECT run before the connection counts as up.
 * When the connection drops, or stalls (a command outstanding longer than
 * stall_timeout_ms without any reply), every outstanding command completes
 * with -ENOTCONN, the state callback says down, and the connection is retried
 * with exponential backoff and jitter until rds_close.
 *
 * Callback contract: if rds_cmd returns an error (e.g. -ENOTCONN while down)
 * its callback never runs; otherwise it runs exactly once: with status 0 and
 * the reply (which may be an error reply: see rds_reply_error), -ENOTCONN when
 * the connection was lost first, or BC_ESHUTDOWN from rds_close. Replies are
 * borrowed for the duration of the callback. */
#ifndef BC_RDS_H
#define BC_RDS_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <uv.h>

struct rds;

struct rds_opts {
    const char *url;          /* copied */
    const char *name;         /* for logs: "cmd", "jobs" ... */
    int connect_timeout_ms;   /* connect plus AUTH/SELECT; default 3000 */
    int stall_timeout_ms;     /* default 5000; raise it for blocking reads */
};

typedef void rds_state_cb(struct rds *r, int up, void *arg);
typedef void rds_reply_cb(struct rds *r, int status, const redisReply *reply, void *arg);

/* Validate the URL and start connecting. Returns 0 and *out, or BC_ECONFIG
 * (bad URL; detail in errstr, which never contains the password). */
int rds_new(uv_loop_t *loop, const struct rds_opts *o, rds_state_cb *cb, void *arg, struct rds **out,
            char *errstr, size_t errlen);
int rds_cmd(struct rds *r, rds_reply_cb *cb, void *arg, int argc, const char **argv, const size_t *lens);
int rds_up(const struct rds *r);
/* Last connection problem, for /health and logs (no secrets). */
const char *rds_errstr(const struct rds *r);
/* Error reply text, or NULL when reply is not an error reply. */
const char *rds_reply_error(const redisReply *reply);
/* Drop the connection now (outstanding commands get -ENOTCONN) and
 * reconnect; used when a peer must be assumed gone. */
void rds_reset(struct rds *r);
/* Complete outstanding commands with BC_ESHUTDOWN, close, free, then
 * done(arg) from the loop. Safe inside a reply or state callback. */
void rds_close(struct rds *r, void (*done)(void *arg), void *arg);

#endif
