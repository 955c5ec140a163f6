/* hcl: an HTTP(S) client that lives on the process's libuv loop.
 *
 * It is one libcurl multi handle driven the way curl's docs/examples/multi-uv.c
 * drives it: curl tells us which sockets to watch (a uv_poll_t each) and when
 * to wake it (one uv_timer_t), and we hand every event back with
 * curl_multi_socket_action. Nothing blocks the loop. (Host names are resolved
 * by libcurl's own resolver thread; IP literals need no resolving.)
 *
 * What it promises:
 *  - Each request that hcl_request accepts completes exactly once through its
 *    done callback: with the response, an error, -ECANCELED (hcl_cancel) or
 *    BC_ESHUTDOWN (hcl_close). The callback never runs from inside
 *    hcl_request, hcl_cancel or hcl_close.
 *  - HTTP statuses are not errors: a 404 or 503 is err 0 with status set.
 *  - Errors: -ETIMEDOUT (timeout_ms or connect_timeout_ms passed),
 *    -ECONNREFUSED (or another -errno from connect), -EHOSTUNREACH (name
 *    resolution failed), BC_ETOOBIG (body over max_response, or headers over
 *    HCL_MAX_HEADERS / HCL_MAX_HEADER_BYTES), -ECANCELED, BC_ESHUTDOWN, and
 *    BC_EHTTP for anything else (TLS, protocol, ...) with curl's message in
 *    errstr. errstr only ever holds curl's error buffer or a fixed text, never
 *    request headers (they carry API keys).
 *  - Only http and https are spoken; redirects are not followed.
 *  - Every buffer filled from the network is capped.
 *
 * All functions must be called on the loop thread.
 */
#ifndef BC_HCL_H
#define BC_HCL_H

#include <stddef.h>
#include <uv.h>

struct hcl;
struct hcl_xfer;

#define HCL_DEFAULT_TIMEOUT_MS 30000L
#define HCL_DEFAULT_CONNECT_TIMEOUT_MS 5000L
#define HCL_DEFAULT_MAX_RESPONSE (8u * 1024 * 1024)
#define HCL_MAX_HEADERS 128             /* response headers kept */
#define HCL_MAX_HEADER_BYTES (64 * 1024) /* bytes of response headers kept */

/* Connection limits. A streamed answer holds its connection for as long as
 * it runs, so the limits are sized for thousands of streams at once; HTTP/2
 * servers take many streams on one connection (multiplexing is on). */
#define HCL_DEFAULT_MAX_HOST_CONNECTIONS 16384L
#define HCL_DEFAULT_MAX_TOTAL_CONNECTIONS 16384L
#define HCL_MAX_CONCURRENT_STREAMS 256L /* HTTP/2 streams we open on one connection */

struct hcl_opts {
    const char *user_agent;     /* copied; NULL = "botcore/<version>" */
    long max_host_connections;  /* 0 = HCL_DEFAULT_MAX_HOST_CONNECTIONS; more requests wait in a queue */
    long max_total_connections; /* 0 = HCL_DEFAULT_MAX_TOTAL_CONNECTIONS */
};

struct hcl_header {
    const char *name, *value;
};

/* One part of a multipart/form-data body (RFC 7578), sent by libcurl's
 * mime API, which picks the boundary and writes every part header. A part's
 * content is either in memory (data, len: copied by hcl_request) or a file
 * (path: read as the request is sent, in the upload buffer's chunks, so a
 * file of any size costs no memory; it must stay in place until the
 * callback ran, and is read again by a new request). */
struct hcl_part {
    const char *name;         /* required; copied */
    const char *filename;     /* NULL: none; copied */
    const char *content_type; /* NULL: none (curl adds application/octet-stream for a file) */
    const void *data;         /* in memory, or NULL with path */
    size_t len;
    const char *path;         /* a file, or NULL */
};

/* on_data's answer: take this chunk later (see on_data). */
#define HCL_PAUSE 0x1000

struct hcl_request {
    const char *method;         /* "GET", "POST", "PATCH", "PUT", "DELETE"; NULL = GET */
    const char *url;            /* http:// or https:// */
    const char *const *headers; /* NULL-terminated "Name: value" list, copied */
    const void *body;           /* copied; sent with Content-Length */
    size_t body_len;
    long timeout_ms;         /* whole transfer; 0 = HCL_DEFAULT_TIMEOUT_MS */
    long connect_timeout_ms; /* 0 = HCL_DEFAULT_CONNECT_TIMEOUT_MS */
    size_t max_response;     /* cap on the buffered body; 0 = HCL_DEFAULT_MAX_RESPONSE */
    size_t recv_buffer;      /* bytes curl reads at a time, held for the whole transfer;
                                0 = curl's default (16 KiB). A long stream of small
                                events (SSE) needs little: thousands run at once. Below
                                1024 counts as 1024 */
    /* Optional streaming (e.g. SSE): called with each chunk of the body as it
     * arrives, on the loop thread; the body is then not buffered and
     * max_response does not apply. Return 0 when the chunk was taken,
     * HCL_PAUSE to pause the transfer without taking it (the same bytes
     * come again after hcl_resume; back-pressure), anything else to abort
     * the transfer: it then completes with -ECANCELED. It may call hcl_cancel (on any
     * transfer) and hcl_close, and nothing else of hcl. */
    int (*on_data)(const char *data, size_t len, void *arg);
    /* Optional form: with nparts > 0 the body is multipart/form-data built
     * from parts (body must then be NULL; Content-Type is set by hcl).
     * POST, PUT and PATCH only. */
    const struct hcl_part *parts;
    int nparts;
};

/* On error, status, body and headers hold whatever had arrived (often
 * nothing); only err and errstr are meaningful then. */
struct hcl_response {
    int err;            /* 0 or a negative code (see above) */
    const char *errstr; /* never NULL; "" when err is 0 */
    long status;        /* HTTP status; 0 when no response arrived */
    const char *body;   /* never NULL, NUL-terminated; "" when streamed/none */
    size_t body_len;
    const struct hcl_header *headers; /* of the final response, in order */
    size_t nheaders;
    double total_ms;
};

/* Completion callback. r and everything it points to are borrowed for the
 * duration of the call. The transfer handle is invalid once this starts. The
 * callback may start new requests, cancel others, or call hcl_close. */
typedef void hcl_done_cb(const struct hcl_response *r, void *arg);

/* Create a client on loop. Returns 0 and sets *out, or -EINVAL / BC_EHTTP
 * (libcurl failed to initialise). Freed only by hcl_close. */
int hcl_new(uv_loop_t *loop, const struct hcl_opts *o, struct hcl **out);

/* Start a request. Everything in rq is copied; rq may go away on return.
 * On success returns 0 and cb(arg) will run exactly once, later, from the
 * loop; on_data, if set, gets the same arg. *out (if out is not NULL) gets a
 * handle usable with hcl_cancel until cb starts. On failure cb never runs:
 *   -EINVAL       no url or cb, unknown method, a body on GET, body_len
 *                 without body, a header without ':' or containing CR/LF,
 *                 parts on GET/DELETE or with a body, a part without a
 *                 name or with both data and path
 *   -ENOENT       a part's file cannot be read
 *   BC_ESHUTDOWN  hcl_close was called
 *   BC_EHTTP      libcurl refused an option, or hcl_request was called
 *                 from inside on_data
 * A bad URL (other scheme, unparsable) is not caught here: the transfer
 * starts and completes with an error through cb. */
int hcl_request(struct hcl *c, const struct hcl_request *rq, hcl_done_cb *cb, void *arg,
                struct hcl_xfer **out);

/* The loop c runs on (for a caller's own timers). */
uv_loop_t *hcl_loop(const struct hcl *c);

/* Resume a transfer that on_data paused with HCL_PAUSE; harmless when it
 * is not paused. on_data may run from inside this call (with the chunk
 * that was refused), so it must not be called from on_data itself. */
void hcl_resume(struct hcl_xfer *x);

/* Value of the first response header called name (case-insensitive), or NULL. */
const char *hcl_response_header(const struct hcl_response *r, const char *name);

/* Abort a transfer whose callback has not started yet. Its callback runs with
 * -ECANCELED on a later loop iteration, never from inside hcl_cancel. Calling
 * it again before then is harmless; calling it after the callback started is
 * a use after free. */
void hcl_cancel(struct hcl_xfer *x);

/* Shut the client down: every outstanding transfer completes with
 * BC_ESHUTDOWN (on a later loop iteration), new requests are refused, then
 * the curl handles and uv handles are closed, c is freed and done(arg) runs
 * from the loop. done may be NULL. Call once; safe from inside a done
 * callback or on_data. c is invalid for the caller after this returns, except
 * that callbacks already due still run. */
void hcl_close(struct hcl *c, void (*done)(void *arg), void *arg);

#endif
