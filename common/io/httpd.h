/* httpd: a small HTTP/1.1 server that lives on the process's libuv loop.
 *
 * It is libmicrohttpd in "external event loop" mode: MHD never starts a
 * thread; its epoll fd is watched by a uv_poll_t and its timeouts by a
 * uv_timer_t, so handlers run on the loop thread like everything else. The
 * listening socket is created here (not by MHD) so that bind errors come back
 * as precise -errno values.
 *
 * What it promises:
 *  - Routing is by exact path (query string ignored) and method. An unknown
 *    path gets 404 {"error":"not found"}; a known path with another method
 *    gets 405 with an Allow header. HEAD is served by the GET route.
 *  - The whole request body is collected before the handler runs, into a
 *    buffer capped at max_body. A larger body gets 413 and the handler is
 *    never called: rejected from Content-Length before anything is read when
 *    the header is present, otherwise as soon as the stream passes the cap.
 *  - Malformed requests are answered (or dropped) by MHD; they never reach a
 *    handler and never crash the process.
 *  - Every response carries Content-Type and "Cache-Control: no-store".
 *  - A handler may answer inside its call or later from any loop callback;
 *    a later answer goes out on the next loop iteration.
 *
 * Lifetime of a request (struct httpd_req): it is created by the server and
 * handed to the handler, which owns the duty to call httpd_respond() on it
 * exactly once. httpd_respond() ends the handler's use of it: the pointer is
 * invalid once httpd_respond() returns. This holds even after httpd_close():
 * unanswered requests are then answered 503 on the wire, but the req stays
 * valid (as an empty shell) until its handler calls httpd_respond(), whose
 * answer is then discarded. A handler that never answers leaks its req and,
 * while the server runs, leaves its client waiting forever (a suspended
 * connection does not time out).
 *
 * Nothing here blocks. All functions must be called on the loop thread.
 */
#ifndef BC_HTTPD_H
#define BC_HTTPD_H

#include <stddef.h>
#include <uv.h>

struct httpd;
struct httpd_req;

#define HTTPD_DEFAULT_MAX_BODY (1024 * 1024)
#define HTTPD_DEFAULT_CONN_LIMIT 1024
#define HTTPD_DEFAULT_IDLE_TIMEOUT_S 30
/* Caps on what one response may carry besides its body. */
#define HTTPD_MAX_RESP_HEADER_BYTES (16 * 1024)

struct httpd_opts {
    const char *bind;        /* IPv4 or IPv6 literal; NULL = "127.0.0.1" */
    int port;                /* 0..65535; 0 = let the kernel pick (see httpd_port) */
    size_t max_body;         /* 0 = HTTPD_DEFAULT_MAX_BODY */
    unsigned conn_limit;     /* 0 = HTTPD_DEFAULT_CONN_LIMIT */
    unsigned idle_timeout_s; /* per-connection inactivity; 0 = default */
};

/* A route handler. Runs on the loop thread with req borrowed until the
 * handler calls httpd_respond() (now or later). */
typedef void httpd_handler(struct httpd_req *req, void *arg);

/* Start listening on o->bind:o->port and serve on loop.
 * Returns 0 and sets *out, or:
 *   -EINVAL       bind is not an IP literal, port out of range, or NULL args
 *   -EADDRINUSE, -EADDRNOTAVAIL, -EACCES, ...  from socket/bind/listen
 *   BC_EHTTP      MHD refused to start (detail is logged; no handle exists)
 * The server is freed only by httpd_close(). */
int httpd_start(uv_loop_t *loop, const struct httpd_opts *o, struct httpd **out);

/* The port actually bound (useful after port 0). */
int httpd_port(const struct httpd *h);

/* Register fn for method + path (exact match, e.g. "/v1/chat"). Strings are
 * copied. Returns 0, -EINVAL (bad arguments, path not starting with '/'),
 * -EEXIST (same method and path registered twice) or BC_ESHUTDOWN. */
int httpd_route(struct httpd *h, const char *method, const char *path, httpd_handler *fn,
                void *arg);

/* Request accessors. Strings are borrowed from req and stay valid until
 * httpd_respond(). Method and path are always available; headers and query
 * arguments only while the connection is alive (after httpd_close() they
 * return NULL). The path is percent-decoded, without the query string. */
const char *httpd_req_method(const struct httpd_req *r);
const char *httpd_req_path(const struct httpd_req *r);
/* Header value by name, case-insensitive; NULL when absent. */
const char *httpd_req_header(const struct httpd_req *r, const char *name);
/* Decoded query-string argument; NULL when absent, "" when given without '='. */
const char *httpd_req_query(const struct httpd_req *r, const char *name);
/* The complete body (NUL-terminated for convenience, NUL not counted); never
 * NULL: "" with *len 0 when there was none. len may be NULL. */
const char *httpd_req_body(const struct httpd_req *r, size_t *len);

/* Add a response header (copied) to the answer this request will get. Names
 * or values containing CR or LF, and headers beyond
 * HTTPD_MAX_RESP_HEADER_BYTES in total, are dropped with a warning. Must be
 * called before httpd_respond(). */
void httpd_req_add_header(struct httpd_req *r, const char *name, const char *value);

/* Answer the request: status (200..599; anything else becomes 500),
 * content_type (NULL = "application/json"), and body, which is copied (body
 * may be NULL when len is 0). Call exactly once per request, inside the
 * handler or later from any callback on the loop thread (the connection was
 * suspended and is resumed; the answer is sent on the next loop iteration).
 * After it returns, r is invalid. Never calls back synchronously. */
void httpd_respond(struct httpd_req *r, int status, const char *content_type, const void *body,
                   size_t len);

/* Stop the server: stop accepting, answer every unanswered request 503 (and
 * every request that arrives meanwhile on an open connection), wait briefly
 * for those answers to be written (at most a couple of seconds), then close
 * all connections and uv handles, free h, and call done(arg) from the loop
 * (never from inside httpd_close). done may be NULL. Safe to call from inside
 * a handler. Call once; h is invalid after this call returns (except that
 * reqs still held by handlers must still be given to httpd_respond). */
void httpd_close(struct httpd *h, void (*done)(void *arg), void *arg);

#endif
