/* drest: the Discord REST client, with Discord's rate limits built in.
 *
 * Every REST call the bot makes goes through here. It runs on the process's
 * libuv loop on top of hcl and never blocks. What it promises:
 *
 *  - Per-route limits are learned from the X-RateLimit-* headers, never
 *    hard-coded. Requests wait in a FIFO lane per (bucket, major parameter)
 *    and a lane sends one request at a time, so a lane never sends while its
 *    bucket is known to be exhausted, and messages into one channel reach
 *    Discord in the order they were requested. Interaction and webhook-token
 *    routes get a lane per token and never wait behind another lane.
 *  - The global limit (50/s per bot) is shared by every process of the
 *    cluster through Redis (a sliding one-second log, see
 *    docs/rate-limits.md); interaction and webhook-token routes are exempt.
 *    Without Redis, a local limiter takes global_limit / cluster_size.
 *  - 429 is honoured by scope and retried; network errors and 502/503/504
 *    are retried with backoff only for idempotent methods (GET, PUT, PATCH,
 *    DELETE) or requests marked retry_safe (a refused connection, which
 *    never reached Discord, for any method); 401 and 403 are never retried.
 *  - Tokens (bot and webhook/interaction) never reach a log line: paths are
 *    logged with the token segment replaced by "***".
 *  - Memory is bounded: requests held at once, per lane, and their body
 *    bytes are capped (-ENOBUFS beyond), responses by max_response.
 *
 * Callback contract: if drest_request returns an error, the callback never
 * runs; otherwise it runs exactly once, never from inside drest_request or
 * drest_close: with the answer, an error, or BC_ESHUTDOWN when drest_close
 * comes first. All functions must be called on the loop thread. */
#ifndef BC_DREST_H
#define BC_DREST_H

#include <stddef.h>
#include <uv.h>

#include "base/secret.h"

struct drest;
struct hcl;
struct rds;

#define DREST_DEFAULT_API_BASE "https://discord.com/api/v10"
#define DREST_UA_URL "https://github.com/discord-ai-bot-cluster"
#define DREST_MAX_FILES 10 /* attachments per message, as Discord allows */

struct drest_opts {
    const char *api_base;       /* copied; NULL or "" = DREST_DEFAULT_API_BASE */
    const struct secret *token; /* copied; may be unset, then bot_auth requests fail */
    const char *version;        /* copied, for the User-Agent; NULL = BC_VERSION */
    struct hcl *http;           /* borrowed, required: must outlive d */
    struct rds *redis;          /* borrowed, may be NULL: must outlive d */
    const char *redis_prefix;   /* copied; NULL = "discordbot" */
    int cluster_size;           /* processes sharing the bot token; 0 = 4 */
    int max_attempts;           /* HTTP attempts for retryable failures; 0 = 3, 1 = no retry */
    int retry_base_ms;          /* first backoff step; 0 = 500 (doubles, capped at 10 s) */
    int global_limit;           /* requests per second per bot; 0 = 50 */
    size_t max_queue;           /* requests held at once (queued + in flight); 0 = 1024 */
    size_t max_lane_queue;      /* of which in one lane; 0 = 256 */
    size_t max_queue_bytes;     /* request bodies held in memory at once; 0 = 256 MiB */
    size_t max_body;            /* one request's bytes in memory (JSON, in-memory files);
                                 * files given by path are streamed and not counted; 0 = 26 MiB */
    size_t max_response;        /* one response body; 0 = 4 MiB */
};

/* One uploaded file, in memory (data, len) or on disk (path). Everything is
 * copied by drest_request except the file's bytes on disk: a path file is
 * streamed from disk while the request is sent (and sent again on a retry),
 * so it costs no memory whatever its size, and must stay in place until the
 * callback ran. */
struct drest_file {
    const char *name;         /* filename; no '"', '\\' or control characters */
    const char *content_type; /* NULL = "application/octet-stream" */
    const void *data;         /* in memory; NULL with path */
    size_t len;
    const char *path;         /* a regular file to stream, or NULL */
};

struct drest_req {
    const char *method; /* GET POST PUT PATCH DELETE */
    /* "/channels/123/messages", relative to api_base, already percent-encoded
     * (emoji in reaction routes); a query string is allowed. Built by
     * dpath (discord/dpath.h), which checks the ids in it. */
    const char *path;
    const char *json;   /* body, or NULL; with files it becomes payload_json */
    size_t json_len;    /* 0 = strlen(json) */
    const struct drest_file *files;
    int nfiles;         /* 0..DREST_MAX_FILES: multipart/form-data when > 0 */
    int bot_auth;       /* send "Authorization: Bot <token>" */
    int retry_safe;     /* a POST the caller knows is safe to repeat */
    long timeout_ms;    /* per HTTP attempt; 0 = 15000, plus 1 ms per KiB of path files */
};

/* The outcome. Borrowed for the duration of the callback. */
struct drest_resp {
    /* 0: Discord answered 2xx. BC_EHTTP with status != 0: Discord answered
     * with an error status (code/message tell why). Any other negative
     * value, or BC_EHTTP with status 0: no usable answer (-ETIMEDOUT,
     * -ECONNREFUSED, BC_ETOOBIG for an oversized response, BC_ESHUTDOWN ...). */
    int err;
    const char *errstr;  /* never NULL; "" when err is 0; never holds a token */
    long status;         /* HTTP status of the last attempt; 0 if none arrived */
    int code;            /* Discord's JSON error code (50035, 10062 ...); 0 if none */
    const char *message; /* Discord's error message; never NULL, "" if none */
    const char *detail;  /* first nested form error, "content: Must be ... (CODE)"; "" if none */
    const char *body;    /* never NULL, NUL-terminated; the JSON on success */
    size_t body_len;
    int attempts;        /* HTTP attempts made (429 retries included) */
};

typedef void drest_cb(const struct drest_resp *r, void *arg);

/* Counters for /metrics. All are totals since drest_new except the gauges
 * invalid_10min, queued, in_flight and global_fallback. */
struct drest_stats {
    unsigned long long sent;       /* HTTP attempts started */
    unsigned long long status_2xx, status_3xx, status_4xx, status_5xx;
    unsigned long long transport_errors; /* attempts that got no HTTP status */
    unsigned long long rl429_global, rl429_user, rl429_shared;
    unsigned long long rl_waits;   /* times a request waited for a rate limit */
    unsigned long long rl_wait_ms; /* total time spent so */
    unsigned long long retries;    /* attempts repeated after 5xx/network errors */
    unsigned invalid_10min;        /* 401, 403 and non-shared 429 in the last 10 min */
    size_t queued;                 /* accepted and not yet completed */
    size_t in_flight;              /* of which on the wire */
    size_t lanes;                  /* lanes kept (queues and learned limits) */
    int global_fallback;           /* 1 while the local global limiter is used */
};

/* Create a client. Returns 0 and *out, or -EINVAL (no loop/http, a bad
 * api_base, a token or version with characters not allowed in a header,
 * a negative or absurd limit).
 * Freed only by drest_close. Never calls back. */
int drest_new(uv_loop_t *loop, const struct drest_opts *o, struct drest **out);

/* Queue one request; everything in rq (strings, body, files) is copied, so
 * rq may go away on return. Returns 0 and cb(arg) runs exactly once later,
 * or, with cb never run:
 *   -EINVAL       bad method/path, body on GET, files on GET/DELETE, too
 *                 many files, a bad file name or content type, a file with
 *                 both data and path or a path that is not a regular file,
 *                 bot_auth without a token
 *   -errno        stat(2) of a file's path failed (-ENOENT, -EACCES ...)
 *   BC_ETOOBIG    the bytes held in memory would exceed max_body
 *   -ENOBUFS      max_queue, max_lane_queue or max_queue_bytes reached (or
 *                 4096 distinct route templates, which means a bug)
 *   BC_ESHUTDOWN  drest_close was called
 * The callback may call drest_request and drest_close. */
int drest_request(struct drest *d, const struct drest_req *rq, drest_cb *cb, void *arg);

/* Snapshot of the counters. */
void drest_stats(const struct drest *d, struct drest_stats *out);

/* Shut down: every request not yet completed completes with BC_ESHUTDOWN
 * (queued ones on the next loop iteration, transfers on the wire are
 * cancelled), new requests are refused, then d is freed and done(arg) runs
 * from the loop. done may be NULL. Call once; safe from inside a callback.
 * Close d before closing the hcl and rds it uses (e.g. from done). */
void drest_close(struct drest *d, void (*done)(void *arg), void *arg);

#endif
