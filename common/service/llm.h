/* llm: a streaming client for OpenAI-compatible chat completions, on hcl.
 *
 * One call is one POST {base}/chat/completions with "stream": true. The
 * Server-Sent-Events body is parsed as it arrives (sse.h); each content delta
 * is handed to on_delta as raw UTF-8 (a delta is a whole JSON string, so it
 * never ends inside a UTF-8 sequence), and the call ends with exactly one
 * on_done carrying the outcome: finish reason, token usage, HTTP status, the
 * provider's error fields and a classification (enum llm_status) that tells
 * the key pool what to do next. The same code talks to OpenAI, Groq, Ollama,
 * vLLM and llama.cpp's server: only base_url (and the key) change.
 *
 * What it promises:
 *  - llm_chat / llm_moderate either return an error (the callback never runs)
 *    or run their done callback exactly once, later, from the loop: never
 *    from inside llm_chat, llm_moderate or llm_cancel. Cancel (llm_cancel)
 *    and shutdown (hcl_close) also end in the callback, with
 *    LLM_ERR_CANCELLED.
 *  - The API key is borrowed only for the duration of the call that takes
 *    it. It is never logged (only its fingerprint, secret_fingerprint) and
 *    never appears in a result: a provider message that echoes it (or any
 *    "sk-..." token) is redacted before it is handed over.
 *  - Everything read from the network is capped: SSE lines and events (sse.h
 *    defaults), plain JSON bodies (LLM_MAX_PLAIN_BODY), the stored provider error
 *    fields (LLM_MAX_FIELD).
 *  - Unknown fields in chunks are ignored. A stream that ends cleanly without
 *    "data: [DONE]" after some text completes as LLM_OK with finish_reason
 *    "incomplete"; a transfer that fails is an error even after text.
 *  - A provider that hangs is given up early when the request asks for it:
 *    no content within first_token_ms, or silence for idle_ms once content
 *    flows, ends the call as LLM_ERR_TIMEOUT with result.stalled set.
 *  - What the provider sends back is logged only through LF_EXT (capped,
 *    escaped, masked when it holds a key).
 *  - Error bodies are understood whether streamed or plain JSON; a 200
 *    answer in plain JSON (a server that ignored "stream") is delivered as
 *    one delta.
 *
 * All functions must be called on the loop thread of the hcl client.
 */
#ifndef BC_LLM_H
#define BC_LLM_H

#include <stddef.h>

#include "io/hcl.h"

#define LLM_DEFAULT_BASE_URL "https://api.openai.com/v1"
#define LLM_DEFAULT_TIMEOUT_MS 120000L
#define LLM_DEFAULT_MODERATION_MODEL "omni-moderation-latest"
#define LLM_MAX_PLAIN_BODY (256u * 1024) /* cap on a non-SSE (plain JSON) body */
#define LLM_MAX_FIELD 512               /* bytes kept of error code/type/message */

/* Outcome of a call. The key pool acts on the kind (see docs/llm.md). */
enum llm_status {
    LLM_OK = 0,
    LLM_ERR_AUTH,        /* 401 or invalid_api_key: the key is bad */
    LLM_ERR_QUOTA,       /* insufficient_quota: the key is out of money */
    LLM_ERR_RATE,        /* other 429 (rate_limit_exceeded): wait retry_after_ms */
    LLM_ERR_SERVER,      /* 5xx, or an error event inside a 200 stream */
    LLM_ERR_TIMEOUT,     /* timeout_ms (or the connect timeout) passed */
    LLM_ERR_NETWORK,     /* connect, DNS, TLS, reset ... */
    LLM_ERR_BAD_REQUEST, /* other 4xx: context_length_exceeded, model_not_found ... */
    LLM_ERR_PROTOCOL,    /* malformed stream or answer */
    LLM_ERR_CANCELLED,   /* llm_cancel or hcl_close */
};

/* Static name of a status ("ok", "auth", "quota", ...); never NULL. */
const char *llm_status_name(int status);

struct llm_message {
    const char *role;    /* "system", "user", "assistant" */
    const char *content; /* UTF-8 */
};

struct llm_request {
    const char *base_url; /* NULL = LLM_DEFAULT_BASE_URL; no trailing "/" needed */
    const char *api_key;  /* borrowed for the call; NULL or "" sends no Authorization */
    const char *model;    /* required */
    const struct llm_message *messages; /* required, nmessages >= 1 */
    size_t nmessages;
    double temperature;   /* sent only when has_temperature is set, so that */
    int has_temperature;  /* a zeroed request leaves it to the server */
    long max_tokens;      /* sent as "max_tokens"; 0 = leave to the server */
    const char *user;     /* opaque end-user id; NULL = not sent */
    long timeout_ms;      /* whole call; 0 = LLM_DEFAULT_TIMEOUT_MS */
    /* A provider that hangs is given up long before timeout_ms: no content
     * (and no answer at all) within first_token_ms of the start, or, once
     * something arrived, no byte for idle_ms, ends the call with
     * LLM_ERR_TIMEOUT and result.stalled set. 0 = no such limit. */
    long first_token_ms;
    long idle_ms;
};

/* Why a call that timed out did (llm_result.stalled). */
enum llm_stall { LLM_STALL_NONE = 0, LLM_STALL_FIRST_TOKEN, LLM_STALL_IDLE };

struct llm_usage {
    long prompt, completion, total;
    int has_usage; /* the usage chunk arrived */
};

/* Everything the call learned. All strings are borrowed for the duration of
 * on_done, never NULL ("" when absent). */
struct llm_result {
    int status;                /* enum llm_status */
    int err;                   /* the transport's negative code (hcl.h), or 0 */
    long http_status;          /* 0 when no response arrived */
    const char *finish_reason; /* stop, length, content_filter, tool_calls, incomplete, "" */
    struct llm_usage usage;
    size_t text_len;           /* bytes of content handed to on_delta */
    const char *error_code;    /* provider's error.code, e.g. "insufficient_quota" */
    const char *error_type;    /* provider's error.type */
    const char *error_message; /* provider's error.message (redacted), or transport text */
    long retry_after_ms;       /* from retry-after-ms / retry-after /
                                * x-ratelimit-reset-requests; -1 when none */
    const char *request_id;    /* x-request-id (outside text: log it with LF_EXT) */
    int stalled;               /* enum llm_stall: which limit ended a LLM_ERR_TIMEOUT */
};

/* One content delta: len bytes of UTF-8, borrowed for the duration of the
 * call (also NUL-terminated, but the text may itself contain "\u0000", so
 * use len). Not called again after llm_cancel. */
typedef void llm_delta_cb(const char *text, size_t len, void *arg);
typedef void llm_done_cb(const struct llm_result *r, void *arg);

struct llm_call;

/* Start a streamed chat completion on client c. Everything in rq is copied
 * or used before return. On success returns 0, sets *out (if out is not
 * NULL) to a handle valid until on_done starts, and on_done(arg) will run
 * exactly once. on_delta may be NULL. Errors (no callback runs): -EINVAL
 * (missing model, messages, a role or content, or on_done), and whatever
 * hcl_request returns (BC_ESHUTDOWN, BC_EHTTP, -EINVAL). */
int llm_chat(struct hcl *c, const struct llm_request *rq, llm_delta_cb *on_delta,
             llm_done_cb *on_done, void *arg, struct llm_call **out);

/* Stop a call whose on_done has not started: no more deltas are delivered,
 * and on_done runs later with LLM_ERR_CANCELLED. Repeating it before then is
 * harmless; calling it after on_done started is a use after free. May be
 * called from inside on_delta. */
void llm_cancel(struct llm_call *call);

struct llm_moderation_request {
    const char *base_url; /* NULL = LLM_DEFAULT_BASE_URL */
    const char *api_key;  /* borrowed for the call */
    const char *input;    /* required, UTF-8 */
    const char *model;    /* NULL = LLM_DEFAULT_MODERATION_MODEL */
    long timeout_ms;      /* 0 = 30 s */
};

/* status is enum llm_status (classified as for chat). flagged is 1 when any
 * result is flagged. categories is the comma-separated list of flagged
 * category names ("harassment,violence"), "" when none; borrowed for the
 * call. */
typedef void llm_moderation_cb(int status, int flagged, const char *categories, void *arg);

/* POST {base}/moderations. Same contract as llm_chat: 0 and exactly one
 * callback later, or an error and none. There is no cancel; hcl_close ends
 * it with LLM_ERR_CANCELLED. */
int llm_moderate(struct hcl *c, const struct llm_moderation_request *rq, llm_moderation_cb *cb,
                 void *arg);

/* Parse a provider duration into milliseconds: "12ms", "1.5s", "1m30s",
 * "2h", "250us", or a bare number of seconds ("20", "0.5" as in
 * retry-after). Returns -1 for anything else (HTTP dates included). Rounds
 * up to whole milliseconds. Exposed for tests. */
long llm_parse_duration_ms(const char *s);

/* ---- internal: shared with the tests and the fuzz target ---------------- */

struct hcl_response;

/* Decode a chat completion answer that did not come from the network, as
 * llm_chat decodes what arrives: h->body goes to the stream reader in
 * pieces of chunk bytes (0: one piece), then the call completes with h
 * (its body then empty, as for a streamed transfer; an abort by the reader
 * completes it with -ECANCELED as hcl would). on_delta and on_done run as
 * for llm_chat, but synchronously, before this returns. */
void llm__decode_chat(const struct hcl_response *h, const char *api_key, size_t chunk, llm_delta_cb *on_delta,
                      llm_done_cb *on_done, void *arg);

/* The same for a /moderations answer (buffered: h->body is the body). */
void llm__decode_moderation(const struct hcl_response *h, const char *api_key, llm_moderation_cb *cb, void *arg);

#endif
