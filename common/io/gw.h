/* gw: one Discord gateway connection (one shard) on the process's libuv loop.
 *
 * The client speaks gateway v10 with encoding=json, optionally with
 * compress=zlib-stream, over libwebsockets running on OUR loop (see
 * docs/gateway.md for how lws is tied in and torn down). It keeps the
 * connection alive and the session going by itself:
 *  - Hello -> heartbeats (first after interval * random(0..1), then every
 *    interval; an answer at once to a server op 1). No ACK between two of
 *    our beats is a zombie: close with 4000, reconnect, resume.
 *  - Identify (only after the owner's gate says so) or Resume; READY gives
 *    the session, RESUMED confirms a resume; op 7 -> reconnect and resume;
 *    op 9 -> resume (d=true) or, after 1-5 s, a new session (d=false).
 *  - Close codes: 4000-4003, 4005, 4008 and unknown ones resume; 4007,
 *    4009, 1000 and 1001 start a new session; 4004 and 4010-4014 stop for
 *    good with one error log naming the code and what to fix, and the fatal
 *    callback. Network errors reconnect with backoff (1 s doubling to 60 s,
 *    with jitter) and resume when a session is known.
 *  - At most 120 sends per connection per 60 s (a sliding window of 61 s to
 *    leave room for network jitter); a few are always kept for heartbeats,
 *    Identify and Resume.
 *  - Anything the server sends is untrusted: messages are capped
 *    (max_message), malformed JSON and unknown opcodes are logged
 *    (rate-limited) and skipped; broken compression or an oversized message
 *    resets the connection (then resumes).
 *
 * What it does NOT do (the owner's job): decide whether it may identify
 * (the identify_gate callback asks; the cluster-wide budget and
 * max_concurrency live in Redis), persist the session for another process,
 * know what events mean, shard routing, GET /gateway/bot.
 *
 * The token is a struct secret: it is only ever written into Identify and
 * Resume payloads, never logged (the URL is logged; it carries no token).
 *
 * Callback contract: callbacks run on the loop thread and never from inside
 * a gw_* function. Data handed to a callback (json objects, strings, the
 * gw_resume) is borrowed for the duration of the call: take a reference
 * (json_object_get) or a copy to keep it. A callback may call any gw_*
 * function on its gw, including gw_close; after gw_close or gw_stop no
 * callback of that gw runs any more (except gw_close's done).
 *
 * All functions must be called on the loop thread. */
#ifndef BC_GW_H
#define BC_GW_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/secret.h"

struct gw;
struct json_object;

#define GW_DEFAULT_MAX_MESSAGE (8u * 1024 * 1024)
#define GW_MAX_SEND 4096       /* Discord closes with 4002 on bigger payloads */
#define GW_SEND_QUEUE_MAX 256  /* owner payloads waiting; more is -ENOBUFS */
#define GW_SEND_LIMIT 120      /* sends per window per connection */
#define GW_SEND_WINDOW_MS 61000
#define GW_SEND_RESERVE 6      /* of the 120, kept for heartbeats/identify/resume */

/* What the owner persists to resume after a crash (another process may
 * resume the session with it). session_id is "" when there is none. */
struct gw_resume {
    char session_id[80];
    char resume_url[512];
    int64_t seq;
};

struct gw_opts {
    const struct secret *token; /* borrowed: must outlive the gw; must be set */
    const char *url;            /* ws:// or wss:// from GET /gateway/bot, without query; copied */
    int intents;
    int shard_id, shard_count;  /* shard_count 0 = 1 */
    int compress;               /* nonzero: compress=zlib-stream */
    size_t max_message;         /* cap on one inflated message; 0 = GW_DEFAULT_MAX_MESSAGE */
    const char *ca_file;        /* PEM bundle for wss://; NULL = the system store; copied */
    int hello_timeout_ms;       /* no Hello this long after connecting -> reconnect; 0 = 20000 */
};

/* One dispatch. Dispatches are scanned, not parsed (see jscan.h): the
 * payload d comes as the bytes Discord sent, and only READY and RESUMED
 * come parsed as well. */
struct gw_event {
    int64_t seq;
    const char *type;        /* NUL-terminated */
    const char *d;           /* the JSON of "d" ("null" when absent); not NUL-terminated */
    size_t d_len;
    const char *raw;         /* the whole message as received (inflated), for forwarding */
    size_t raw_len;          /* without re-serialising; not NUL-terminated */
    struct json_object *dobj; /* d parsed: READY and RESUMED only, else NULL */
};

struct gw_cbs {
    /* Every op 0 event, READY and RESUMED included (after ready/resumed),
     * replayed ones included, in order. Everything in ev is borrowed for the
     * call. May be NULL. */
    void (*dispatch)(struct gw *g, const struct gw_event *ev, void *arg);
    /* READY: a new session. r holds session_id, resume_url and READY's seq;
     * d is READY's payload. May be NULL. */
    void (*ready)(struct gw *g, const struct gw_resume *r, struct json_object *d, void *arg);
    /* RESUMED: the session goes on; the replay has been dispatched. */
    void (*resumed)(struct gw *g, void *arg);
    /* The client wants to send Identify. Call gw_identify_go(g) when it is
     * allowed (later, or from inside this callback). Not asked again while
     * an answer is outstanding; an answer that comes when no connection is
     * waiting for it is ignored and the gate is asked again at the next
     * Hello. Must be set. */
    void (*identify_gate)(struct gw *g, void *arg);
    /* connected = 1 when a session is live (READY or RESUMED), 0 when that
     * connection is lost. Only transitions are reported. May be NULL. */
    void (*state)(struct gw *g, int connected, void *arg);
    /* Stopped for good (close code 4004, 4010-4014): no reconnect will be
     * tried. why says what to fix. Runs at most once. The owner still calls
     * gw_close to free g. May be NULL. */
    void (*fatal)(struct gw *g, int close_code, const char *why, void *arg);
};

/* Create a client on loop; nothing connects until gw_start. o and cbs are
 * copied (the token itself is borrowed). Each client owns one
 * libwebsockets context on loop; creating it sets SIGPIPE to ignored for
 * the process (libwebsockets does that). Returns 0 and sets *out, -EINVAL
 * (no token or one over 512 bytes, bad url, no identify_gate, shard outside
 * 0..count-1, max_message over 256 MiB) or BC_EPROTO (libwebsockets or zlib
 * could not be initialised). Free with gw_close. */
int gw_new(uv_loop_t *loop, const struct gw_opts *o, const struct gw_cbs *cbs, void *arg,
           struct gw **out);

/* Connect. With resume (session_id not empty), connect to its resume_url
 * (or the url when that is empty) and Resume from its seq; otherwise
 * Identify through the gate. resume is copied. Returns 0, -EALREADY if
 * started before, BC_ESHUTDOWN after gw_stop/gw_close or a fatal stop. */
int gw_start(struct gw *g, const struct gw_resume *resume);

/* The owner's answer to identify_gate: Identify now. */
void gw_identify_go(struct gw *g);

/* Queue an owner payload (a whole gateway message, e.g. op 3 presence or
 * op 8 request guild members); copied. Payloads go out in order while a
 * session is live (they wait through reconnects), within the send limit.
 * Returns 0, -EMSGSIZE (len > GW_MAX_SEND or 0), -ENOBUFS (GW_SEND_QUEUE_MAX
 * waiting), BC_ESHUTDOWN (stopped or closing). */
int gw_send(struct gw *g, const char *json, size_t len);

/* The current session (session_id "" when none); seq advances with every
 * dispatch. */
void gw_get_resume(const struct gw *g, struct gw_resume *out);

/* Round trip of the last acknowledged heartbeat in ms; -1 before the first. */
double gw_latency_ms(const struct gw *g);

/* 1 while a session is live (between READY/RESUMED and the connection's
 * end), else 0. */
int gw_connected(const struct gw *g);

/* End the session for good: close with 1000 (Discord forgets the session)
 * and never reconnect. No callback runs after this. Free with gw_close. */
void gw_stop(struct gw *g);

/* Close the connection WITHOUT ending the session (close code 4000), so
 * another process can resume it; then tear everything down (libwebsockets
 * included) and free g. done(arg) runs exactly once, from the loop, after
 * the last handle is closed; never from inside gw_close. done may be NULL.
 * The loop must keep running until then (lws closes its handles on it).
 * Call once; safe from inside any gw callback. g is invalid for the caller
 * after this returns. */
void gw_close(struct gw *g, void (*done)(void *arg), void *arg);

/* ---- internal: shared with the tests and the fuzz target ---------------- */

/* One gateway message's envelope, found by scanning (see jscan.h): nothing
 * is allocated, every pointer points into the message. */
struct gw__frame {
    int op;           /* "op" as an integer */
    char type[64];    /* op 0: "t"; "" otherwise */
    int has_seq;      /* op 0: "s" is a number (> 0) */
    int64_t seq;
    const char *d;    /* the JSON text of "d" ("null" when absent) */
    size_t d_len;
};

/* Decode the complete message msg/len (not necessarily NUL-terminated):
 * one JSON object (nothing but whitespace after it) with an integer "op";
 * for a dispatch (op 0) also a plain string "t" under 64 bytes and, when
 * present and not null, a positive integer "s". Returns 0 and fills f, or
 * -EINVAL with *why set to a static description. Pure: no I/O, no
 * logging, no allocation. */
int gw__decode(const char *msg, size_t len, struct gw__frame *f, const char **why);

#endif
