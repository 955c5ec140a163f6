/* llm: see llm.h.
 *
 * A call is one hcl transfer in streaming mode. The body is sorted on its
 * first non-blank byte: '{' or '[' means a plain JSON document (an error body,
 * or a server that ignored "stream"), kept in a capped buffer and read at
 * the end; anything else is an event stream and goes through the SSE parser
 * chunk by chunk. The outcome is decided once, in on_xfer_done, from (in
 * order) cancellation, what the stream said, the transport error, the HTTP
 * status and the body. */
#include "service/llm.h"

#include <errno.h>
#include <json.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/jget.h"
#include "base/jtext.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/secret.h"
#include "parse/sse.h"

#define MAX_URL 2048
#define MAX_CATEGORIES 2048
#define MODERATION_TIMEOUT_MS 30000L
#define MAX_RETRY_MS (24L * 3600 * 1000)
#define LLM_RECV_BUFFER 4096 /* per streamed answer: SSE events are a few hundred bytes */

enum body_mode { MODE_UNKNOWN = 0, MODE_SSE, MODE_JSON };

/* The provider's error fields (redacted), shared by chat and moderation; the
 * message may also hold a transport or protocol description. */
struct errinfo {
    char code[LLM_MAX_FIELD], type[LLM_MAX_FIELD], message[LLM_MAX_FIELD];
};

struct llm_call {
    struct hcl_xfer *x;     /* NULL once the transfer's callback started */
    llm_delta_cb *on_delta;
    llm_done_cb *on_done;
    void *arg;
    struct secret key;      /* copy kept only to redact echoes of it */
    struct sse sse;
    struct json_tokener *tok;
    enum body_mode mode;
    struct buf plain;       /* MODE_JSON body */
    int plain_toobig;
    int cancelled;          /* llm_cancel */
    int proto;              /* we aborted: the stream was malformed */
    int stream_error;       /* an {"error":...} event arrived */
    int got_done, got_chunk;
    /* hang detection: one timer, first for the first token, then for
     * silence between chunks (see llm_request.first_token_ms) */
    uv_timer_t stall_timer;
    int timer_on;
    long first_ms, idle_ms;
    int stalled;            /* enum llm_stall: the timer fired and stopped it */
    size_t text_len;
    char finish[32];
    struct llm_usage usage;
    struct errinfo ei;
};

struct llm_mod {
    llm_moderation_cb *cb;
    void *arg;
    struct secret key;
};

const char *llm_status_name(int status)
{
    static const char *const names[] = {"ok",      "auth",     "quota",       "rate",
                                        "server",  "timeout",  "network",     "bad_request",
                                        "protocol", "cancelled"};
    if (status < 0 || (size_t)status >= sizeof names / sizeof names[0])
        return "unknown";
    return names[status];
}

/* ---- durations ---------------------------------------------------------- */

/* Parse "<number><unit>..." into microseconds. A bare number (no unit, the
 * only component) counts in bare_us units. Returns -1 when malformed. */
static double parse_dur_us(const char *s, double bare_us)
{
    double total = 0;
    int parts = 0;
    while (*s == ' ')
        s++;
    while (*s && *s != ' ') {
        if (*s < '0' || *s > '9')
            return -1;
        double v = 0, scale = 1;
        while (*s >= '0' && *s <= '9')
            v = v * 10 + (*s++ - '0');
        if (*s == '.') {
            s++;
            if (*s < '0' || *s > '9')
                return -1;
            while (*s >= '0' && *s <= '9')
                v += (*s++ - '0') * (scale /= 10);
        }
        double unit;
        if (!strncmp(s, "ms", 2))
            unit = 1e3, s += 2;
        else if (!strncmp(s, "us", 2))
            unit = 1, s += 2;
        else if (!strncmp(s, "\xc2\xb5s", 3))
            unit = 1, s += 3;
        else if (!strncmp(s, "ns", 2))
            unit = 1e-3, s += 2;
        else if (*s == 'h')
            unit = 3600e6, s++;
        else if (*s == 'm')
            unit = 60e6, s++;
        else if (*s == 's')
            unit = 1e6, s++;
        else if ((*s == '\0' || *s == ' ') && parts == 0)
            unit = bare_us;
        else
            return -1;
        total += v * unit;
        parts++;
        if (total > MAX_RETRY_MS * 1e3)
            total = MAX_RETRY_MS * 1e3;
    }
    while (*s == ' ')
        s++;
    return (*s || !parts) ? -1 : total;
}

static long us_to_ms(double us)
{
    if (us < 0)
        return -1;
    long ms = (long)(us / 1000);
    if ((double)ms * 1000 < us)
        ms++;
    return ms;
}

long llm_parse_duration_ms(const char *s)
{
    return s ? us_to_ms(parse_dur_us(s, 1e6)) : -1;
}

static long retry_after_ms(const struct hcl_response *r)
{
    const char *v;
    long ms;
    if ((v = hcl_response_header(r, "retry-after-ms")) && (ms = us_to_ms(parse_dur_us(v, 1e3))) >= 0)
        return ms;
    static const char *const secs[] = {"retry-after", "x-ratelimit-reset-requests",
                                       "x-ratelimit-reset-tokens"};
    for (size_t i = 0; i < sizeof secs / sizeof secs[0]; i++)
        if ((v = hcl_response_header(r, secs[i])) && (ms = llm_parse_duration_ms(v)) >= 0)
            return ms;
    return -1;
}

/* ---- errors ------------------------------------------------------------- */

static int streq(const char *a, const char *b)
{
    return a && !strcmp(a, b);
}

static int classify(long status, const struct errinfo *e)
{
    if (status == 401 || streq(e->code, "invalid_api_key"))
        return LLM_ERR_AUTH;
    if (streq(e->code, "insufficient_quota") || streq(e->type, "insufficient_quota"))
        return LLM_ERR_QUOTA;
    if (status == 429 || streq(e->code, "rate_limit_exceeded"))
        return LLM_ERR_RATE;
    if (status >= 500 || (status >= 200 && status < 300))
        return LLM_ERR_SERVER; /* 2xx: an error event inside the stream */
    if (status >= 400)
        return LLM_ERR_BAD_REQUEST;
    return LLM_ERR_PROTOCOL;
}

static int classify_transport(int err)
{
    switch (err) {
    case -ETIMEDOUT:
        return LLM_ERR_TIMEOUT;
    case -ECANCELED:
    case BC_ESHUTDOWN:
        return LLM_ERR_CANCELLED;
    case BC_ETOOBIG:
        return LLM_ERR_PROTOCOL;
    default:
        return LLM_ERR_NETWORK;
    }
}

/* Copy src into dst (LLM_MAX_FIELD), replacing the key itself and any
 * "sk-..." token (OpenAI echoes a masked key in its 401 message). */
static void redact_into(char *dst, const char *src, const struct secret *key)
{
    size_t klen = key->value ? strlen(key->value) : 0;
    size_t o = 0;
    while (*src && o + 1 < LLM_MAX_FIELD) {
        const char *rep = NULL;
        size_t skip = 0;
        if (klen >= 8 && !strncmp(src, key->value, klen)) {
            rep = "[redacted]", skip = klen;
        } else if (!strncmp(src, "sk-", 3)) {
            rep = "sk-[redacted]", skip = 3;
            while (src[skip] && (src[skip] == '-' || src[skip] == '_' || src[skip] == '*' ||
                                 (src[skip] >= '0' && src[skip] <= '9') ||
                                 ((src[skip] | 32) >= 'a' && (src[skip] | 32) <= 'z')))
                skip++;
        }
        if (rep) {
            size_t n = strlen(rep);
            if (o + n + 1 > LLM_MAX_FIELD)
                break;
            memcpy(dst + o, rep, n);
            o += n;
            src += skip;
        } else {
            dst[o++] = *src++;
        }
    }
    dst[o] = '\0';
}

static void field_copy(char *dst, struct json_object *o, const char *name, const struct secret *key)
{
    struct json_object *v;
    dst[0] = '\0';
    if (json_object_object_get_ex(o, name, &v) && v && !json_object_is_type(v, json_type_null))
        redact_into(dst, json_object_get_string(v), key);
}

/* Fill e from {"error":{...}} (or the rarer {"error":"text"}). Returns 1 when
 * root carries an error. */
static int read_error(struct json_object *root, struct errinfo *e, const struct secret *key)
{
    struct json_object *err;
    if (!json_object_object_get_ex(root, "error", &err) || !err ||
        json_object_is_type(err, json_type_null))
        return 0;
    if (json_object_is_type(err, json_type_object)) {
        field_copy(e->code, err, "code", key);
        field_copy(e->type, err, "type", key);
        field_copy(e->message, err, "message", key);
    } else {
        redact_into(e->message, json_object_get_string(err), key);
    }
    return 1;
}

/* Parse exactly len bytes as one JSON object; NULL when it is not one. */
static struct json_object *parse_object(struct json_tokener *tok, const char *s, size_t len)
{
    if (len > (size_t)INT32_MAX)
        return NULL;
    json_tokener_reset(tok);
    struct json_object *o = json_tokener_parse_ex(tok, s, (int)len);
    if (json_tokener_get_error(tok) != json_tokener_success || !o ||
        json_tokener_get_parse_end(tok) != len || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* ---- chunks -------------------------------------------------------------- */

static void read_usage(struct llm_call *k, struct json_object *root)
{
    struct json_object *u;
    if (!json_object_object_get_ex(root, "usage", &u) || !json_object_is_type(u, json_type_object))
        return;
    k->usage.prompt = jget_int(u, "prompt_tokens");
    k->usage.completion = jget_int(u, "completion_tokens");
    k->usage.total = jget_int(u, "total_tokens");
    k->usage.has_usage = 1;
}

static void deliver(struct llm_call *k, struct json_object *s)
{
    if (!s || !json_object_is_type(s, json_type_string))
        return;
    size_t n = (size_t)json_object_get_string_len(s);
    if (n == 0 || k->cancelled || k->stalled)
        return;
    k->text_len += n;
    if (k->on_delta)
        k->on_delta(json_object_get_string(s), n, k->arg);
}

/* choices[0]: the text is in .delta.content (stream) or .message.content
 * (plain answer); finish_reason in both. */
static void read_choice(struct llm_call *k, struct json_object *root, const char *holder)
{
    struct json_object *ch, *c0, *d, *v;
    if (!json_object_object_get_ex(root, "choices", &ch) || !json_object_is_type(ch, json_type_array) ||
        json_object_array_length(ch) == 0)
        return;
    c0 = json_object_array_get_idx(ch, 0);
    if (!json_object_is_type(c0, json_type_object))
        return;
    if (json_object_object_get_ex(c0, "finish_reason", &v) && json_object_is_type(v, json_type_string))
        snprintf(k->finish, sizeof k->finish, "%s", json_object_get_string(v));
    if (json_object_object_get_ex(c0, holder, &d) && json_object_is_type(d, json_type_object) &&
        json_object_object_get_ex(d, "content", &v))
        deliver(k, v);
}

/* One SSE event. Returning nonzero stops the stream (and the transfer). */
static int on_event(const char *data, size_t len, void *arg)
{
    struct llm_call *k = arg;
    if (k->cancelled)
        return 1;
    if (k->got_done)
        return 0; /* nothing is expected after [DONE]; ignore it */
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        k->got_done = 1;
        return 0;
    }
    struct json_object *o = parse_object(k->tok, data, len);
    if (!o) {
        k->proto = 1;
        snprintf(k->ei.message, sizeof k->ei.message, "malformed chunk in stream");
        return 1;
    }
    if (read_error(o, &k->ei, &k->key)) {
        k->stream_error = 1;
        json_object_put(o);
        return 1;
    }
    k->got_chunk = 1;
    /* The callback may cancel; the object stays ours until put. */
    read_choice(k, o, "delta");
    read_usage(k, o);
    json_object_put(o);
    return k->cancelled;
}

/* ---- hang detection ---------------------------------------------------------- */

static void on_stall(uv_timer_t *t)
{
    struct llm_call *k = t->data;
    if (!k->x || k->cancelled || k->stalled)
        return;
    if (k->text_len || k->mode == MODE_JSON) {
        k->stalled = LLM_STALL_IDLE;
        snprintf(k->ei.message, sizeof k->ei.message, "the stream was silent for %ld ms", k->idle_ms);
    } else {
        k->stalled = LLM_STALL_FIRST_TOKEN;
        snprintf(k->ei.message, sizeof k->ei.message, "no first token within %ld ms", k->first_ms);
    }
    hcl_cancel(k->x); /* completes through on_xfer_done, on a later iteration */
}

/* Bytes arrived: once the answer is under way (text, or a plain JSON body
 * coming in), silence is measured from the latest of them. */
static void stall_activity(struct llm_call *k)
{
    if (!k->timer_on || k->stalled || !(k->text_len || k->mode == MODE_JSON))
        return;
    if (k->idle_ms > 0)
        uv_timer_start(&k->stall_timer, on_stall, (uint64_t)k->idle_ms, 0);
    else
        uv_timer_stop(&k->stall_timer);
}

static int on_data(const char *data, size_t len, void *arg)
{
    struct llm_call *k = arg;
    if (k->cancelled || k->stalled)
        return 1;
    if (k->mode == MODE_UNKNOWN) {
        size_t i = 0;
        while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
            i++;
        if (i == len)
            return 0; /* blank so far: meaningless in either mode */
        k->mode = (data[i] == '{' || data[i] == '[') ? MODE_JSON : MODE_SSE;
    }
    if (k->mode == MODE_JSON) {
        if (!k->plain_toobig && buf_append(&k->plain, data, len) < 0)
            k->plain_toobig = 1;
        stall_activity(k);
        return 0;
    }
    int rc = sse_feed(&k->sse, data, len);
    stall_activity(k);
    if (rc && !k->cancelled && !k->stream_error && !k->proto) {
        k->proto = 1;
        snprintf(k->ei.message, sizeof k->ei.message, "event stream over its size cap");
    }
    return rc != 0;
}

/* ---- completion ------------------------------------------------------------ */

/* A 2xx plain JSON body: an answer from a server that ignored "stream", or
 * an error. Sets r->status. */
static void finish_plain(struct llm_call *k, long http, struct llm_result *r)
{
    struct json_object *o = k->plain_toobig ? NULL : parse_object(k->tok, k->plain.p ? k->plain.p : "", k->plain.len);
    if (!o) {
        r->status = LLM_ERR_PROTOCOL;
        snprintf(k->ei.message, sizeof k->ei.message, "malformed JSON answer");
        return;
    }
    if (read_error(o, &k->ei, &k->key)) {
        r->status = classify(http, &k->ei);
    } else {
        read_choice(k, o, "message");
        read_usage(k, o);
        r->status = k->cancelled ? LLM_ERR_CANCELLED : LLM_OK;
    }
    json_object_put(o);
}

static void finish_stream(struct llm_call *k, struct llm_result *r)
{
    r->status = LLM_OK;
    if (k->got_done)
        return;
    if (k->text_len > 0 || k->finish[0]) {
        if (!k->finish[0])
            snprintf(k->finish, sizeof k->finish, "incomplete");
        return;
    }
    r->status = LLM_ERR_PROTOCOL;
    snprintf(k->ei.message, sizeof k->ei.message, "stream ended without content");
}

static void decide(struct llm_call *k, const struct hcl_response *h, struct llm_result *r)
{
    if (k->cancelled) {
        r->status = LLM_ERR_CANCELLED;
    } else if (k->stalled) {
        r->status = LLM_ERR_TIMEOUT;
        r->err = -ETIMEDOUT;
        r->stalled = k->stalled;
    } else if (k->stream_error) {
        r->status = classify(h->status ? h->status : 200, &k->ei);
    } else if (k->proto && h->status >= 200 && h->status < 300) {
        r->status = LLM_ERR_PROTOCOL;
    } else if (h->err && !k->proto) {
        r->status = classify_transport(h->err);
        snprintf(k->ei.message, sizeof k->ei.message, "%s", h->errstr);
    } else if (h->status < 200 || h->status >= 300) {
        struct json_object *o = k->mode == MODE_JSON && !k->plain_toobig
                                    ? parse_object(k->tok, buf_str(&k->plain), k->plain.len)
                                    : NULL;
        if (o)
            read_error(o, &k->ei, &k->key);
        json_object_put(o);
        r->status = classify(h->status, &k->ei);
    } else if (k->mode == MODE_JSON) {
        finish_plain(k, h->status, r);
    } else {
        finish_stream(k, r);
    }
}

static void call_release(struct llm_call *k)
{
    sse_free(&k->sse);
    buf_free(&k->plain);
    json_tokener_free(k->tok);
    secret_clear(&k->key);
    mem_free(k);
}

static void on_stall_closed(uv_handle_t *h)
{
    call_release(h->data);
}

static void call_free(struct llm_call *k)
{
    if (!k->timer_on) {
        call_release(k);
        return;
    }
    k->timer_on = 0;
    uv_close((uv_handle_t *)&k->stall_timer, on_stall_closed);
}

static void log_result(const struct llm_call *k, const struct llm_result *r, double ms)
{
    /* Everything the provider wrote goes out only through LF_EXT, and the
     * request id first loses any echo of this call's key. */
    char rid[LLM_MAX_FIELD];
    redact_into(rid, r->request_id, &k->key);
    if (r->status == LLM_OK) {
        log_debug("llm done", LF_EXT("finish", r->finish_reason), LF_INT("http", r->http_status),
                  LF_INT("prompt_tokens", r->usage.prompt),
                  LF_INT("completion_tokens", r->usage.completion), LF_INT("bytes", r->text_len),
                  LF_DBL("ms", ms), LF_SECRET("key", &k->key));
        return;
    }
    /* The provider's message is left out: it may quote user content. */
    log_warn("llm failed", LF_STR("kind", llm_status_name(r->status)), LF_INT("http", r->http_status),
             LF_EXT("code", r->error_code), LF_EXT("type", r->error_type), LF_INT("stalled", r->stalled),
             LF_INT("retry_after_ms", r->retry_after_ms), LF_EXT("request_id", rid),
             LF_INT("bytes", r->text_len), LF_DBL("ms", ms), LF_SECRET("key", &k->key));
}

static void on_xfer_done(const struct hcl_response *h, void *arg)
{
    struct llm_call *k = arg;
    k->x = NULL; /* from here llm_cancel only sets the flag */
    if (k->timer_on)
        uv_timer_stop(&k->stall_timer);
    struct llm_result r = {0};
    r.err = h->err;
    r.http_status = h->status;
    decide(k, h, &r);
    const char *rid = hcl_response_header(h, "x-request-id");
    r.request_id = rid ? rid : "";
    r.finish_reason = k->finish;
    r.usage = k->usage;
    r.text_len = k->text_len;
    r.error_code = k->ei.code;
    r.error_type = k->ei.type;
    r.error_message = k->ei.message;
    r.retry_after_ms = r.status == LLM_OK || r.status == LLM_ERR_CANCELLED ? -1 : retry_after_ms(h);
    log_result(k, &r, h->total_ms);
    k->on_done(&r, k->arg);
    call_free(k);
}

/* ---- requests -------------------------------------------------------------- */

static int make_url(char *out, const char *base, const char *path)
{
    if (!base)
        base = LLM_DEFAULT_BASE_URL;
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    int w = snprintf(out, MAX_URL, "%.*s%s", (int)n, base, path);
    return w < 0 || w >= MAX_URL ? -EINVAL : 0;
}

static char *chat_body(const struct llm_request *rq)
{
    struct json_object *o = json_object_new_object(), *msgs = json_object_new_array();
    json_object_object_add(o, "model", json_object_new_string(rq->model));
    for (size_t i = 0; i < rq->nmessages; i++) {
        struct json_object *m = json_object_new_object();
        json_object_object_add(m, "role", json_object_new_string(rq->messages[i].role));
        json_object_object_add(m, "content", json_object_new_string(rq->messages[i].content));
        json_object_array_add(msgs, m);
    }
    json_object_object_add(o, "messages", msgs);
    json_object_object_add(o, "stream", json_object_new_boolean(1));
    struct json_object *so = json_object_new_object();
    json_object_object_add(so, "include_usage", json_object_new_boolean(1));
    json_object_object_add(o, "stream_options", so);
    if (rq->has_temperature) {
        char t[32];
        snprintf(t, sizeof t, "%.3g", rq->temperature);
        json_object_object_add(o, "temperature", json_object_new_double_s(rq->temperature, t));
    }
    if (rq->max_tokens > 0)
        json_object_object_add(o, "max_tokens", json_object_new_int64(rq->max_tokens));
    if (rq->user)
        json_object_object_add(o, "user", json_object_new_string(rq->user));
    return jtext_take(o);
}

/* POST body as JSON to url with the key; the Authorization header is wiped
 * as soon as hcl has copied it. */
static int post_json(struct hcl *c, const char *url, const char *key, const char *body,
                     long timeout_ms, int stream, hcl_done_cb *cb, void *arg,
                     struct hcl_xfer **out)
{
    char *auth = NULL;
    size_t auth_len = 0;
    const char *headers[4] = {"Content-Type: application/json", NULL, NULL, NULL};
    size_t nh = 1;
    if (stream)
        headers[nh++] = "Accept: text/event-stream";
    if (key && *key) {
        auth_len = strlen(key) + 32;
        auth = mem_alloc(auth_len);
        snprintf(auth, auth_len, "Authorization: Bearer %s", key);
        headers[nh++] = auth;
    }
    struct hcl_request rq = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = timeout_ms,
        .on_data = stream ? on_data : NULL,
        .recv_buffer = stream ? LLM_RECV_BUFFER : 0,
    };
    int rc = hcl_request(c, &rq, cb, arg, out);
    if (auth) {
        sodium_memzero(auth, auth_len);
        mem_free(auth);
    }
    return rc;
}

static int chat_valid(const struct llm_request *rq, llm_done_cb *on_done)
{
    if (!rq || !on_done || !rq->model || !*rq->model || !rq->messages || rq->nmessages == 0)
        return 0;
    for (size_t i = 0; i < rq->nmessages; i++)
        if (!rq->messages[i].role || !rq->messages[i].content)
            return 0;
    return 1;
}

static struct llm_call *call_new(const char *api_key, llm_delta_cb *on_delta, llm_done_cb *on_done, void *arg)
{
    struct llm_call *k = mem_calloc(1, sizeof *k);
    k->on_delta = on_delta;
    k->on_done = on_done;
    k->arg = arg;
    secret_set(&k->key, api_key);
    sse_init(&k->sse, 0, 0, on_event, k);
    buf_init(&k->plain, LLM_MAX_PLAIN_BODY);
    k->tok = json_tokener_new_ex(64);
    return k;
}

void llm__decode_chat(const struct hcl_response *h, const char *api_key, size_t chunk, llm_delta_cb *on_delta,
                      llm_done_cb *on_done, void *arg)
{
    struct llm_call *k = call_new(api_key, on_delta, on_done, arg);
    struct hcl_response r = *h;
    size_t off = 0, step = chunk ? chunk : h->body_len;
    while (off < h->body_len && !r.err) {
        size_t n = h->body_len - off < step ? h->body_len - off : step;
        if (on_data(h->body + off, n, k))
            r.err = -ECANCELED, r.errstr = "cancelled"; /* what hcl reports after an abort */
        off += n;
    }
    r.body = "";
    r.body_len = 0;
    on_xfer_done(&r, k);
}

int llm_chat(struct hcl *c, const struct llm_request *rq, llm_delta_cb *on_delta,
             llm_done_cb *on_done, void *arg, struct llm_call **out)
{
    char url[MAX_URL];
    if (!c || !chat_valid(rq, on_done) || make_url(url, rq->base_url, "/chat/completions") < 0)
        return -EINVAL;
    struct llm_call *k = call_new(rq->api_key, on_delta, on_done, arg);
    char *body = chat_body(rq);
    int rc = post_json(c, url, rq->api_key, body,
                       rq->timeout_ms > 0 ? rq->timeout_ms : LLM_DEFAULT_TIMEOUT_MS, 1,
                       on_xfer_done, k, &k->x);
    mem_free(body);
    if (rc < 0) {
        call_free(k);
        return rc;
    }
    k->first_ms = rq->first_token_ms > 0 ? rq->first_token_ms : 0;
    k->idle_ms = rq->idle_ms > 0 ? rq->idle_ms : 0;
    if (k->first_ms || k->idle_ms) {
        uv_timer_init(hcl_loop(c), &k->stall_timer);
        k->stall_timer.data = k;
        k->timer_on = 1;
        if (k->first_ms)
            uv_timer_start(&k->stall_timer, on_stall, (uint64_t)k->first_ms, 0);
    }
    log_debug("llm request", LF_URL("url", url), LF_STR("model", rq->model),
              LF_INT("messages", rq->nmessages), LF_SECRET("key", &k->key));
    if (out)
        *out = k;
    return 0;
}

void llm_cancel(struct llm_call *k)
{
    if (!k || k->cancelled)
        return;
    k->cancelled = 1;
    if (k->x)
        hcl_cancel(k->x);
}

/* ---- moderation -------------------------------------------------------------- */

static void mod_categories(struct json_object *root, int *flagged, struct buf *cats)
{
    struct json_object *res, *v, *cat;
    if (!json_object_object_get_ex(root, "results", &res) || !json_object_is_type(res, json_type_array))
        return;
    for (size_t i = 0; i < json_object_array_length(res); i++) {
        struct json_object *one = json_object_array_get_idx(res, i);
        if (json_object_object_get_ex(one, "flagged", &v) && json_object_get_boolean(v))
            *flagged = 1;
        if (!json_object_object_get_ex(one, "categories", &cat) ||
            !json_object_is_type(cat, json_type_object))
            continue;
        json_object_object_foreach(cat, name, val)
        {
            if (!json_object_is_type(val, json_type_boolean) || !json_object_get_boolean(val))
                continue;
            if (cats->len)
                buf_puts(cats, ",");
            buf_puts(cats, name); /* over the cap: the list is cut, never overrun */
        }
    }
}

static void on_mod_done(const struct hcl_response *h, void *arg)
{
    struct llm_mod *m = arg;
    struct errinfo ei = {0};
    struct buf cats;
    buf_init(&cats, MAX_CATEGORIES);
    int flagged = 0, status;
    struct json_tokener *tok = json_tokener_new_ex(64);
    struct json_object *o = h->err ? NULL : parse_object(tok, h->body, h->body_len);
    int is_err = o && read_error(o, &ei, &m->key);
    if (h->err) {
        status = classify_transport(h->err);
    } else if (h->status < 200 || h->status >= 300 || is_err) {
        status = classify(h->status, &ei);
    } else if (!o) {
        status = LLM_ERR_PROTOCOL;
    } else {
        status = LLM_OK;
        mod_categories(o, &flagged, &cats);
    }
    json_object_put(o);
    json_tokener_free(tok);
    if (status != LLM_OK)
        log_warn("moderation failed", LF_STR("kind", llm_status_name(status)),
                 LF_INT("http", h->status), LF_EXT("code", ei.code), LF_SECRET("key", &m->key));
    m->cb(status, flagged, buf_str(&cats), m->arg);
    buf_free(&cats);
    secret_clear(&m->key);
    mem_free(m);
}

void llm__decode_moderation(const struct hcl_response *h, const char *api_key, llm_moderation_cb *cb, void *arg)
{
    struct llm_mod *m = mem_calloc(1, sizeof *m);
    m->cb = cb;
    m->arg = arg;
    secret_set(&m->key, api_key);
    on_mod_done(h, m);
}

int llm_moderate(struct hcl *c, const struct llm_moderation_request *rq, llm_moderation_cb *cb,
                 void *arg)
{
    char url[MAX_URL];
    if (!c || !rq || !cb || !rq->input || make_url(url, rq->base_url, "/moderations") < 0)
        return -EINVAL;
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "input", json_object_new_string(rq->input));
    json_object_object_add(o, "model",
                           json_object_new_string(rq->model ? rq->model : LLM_DEFAULT_MODERATION_MODEL));
    char *body = jtext_take(o);
    struct llm_mod *m = mem_calloc(1, sizeof *m);
    m->cb = cb;
    m->arg = arg;
    secret_set(&m->key, rq->api_key);
    int rc = post_json(c, url, rq->api_key, body,
                       rq->timeout_ms > 0 ? rq->timeout_ms : MODERATION_TIMEOUT_MS, 0, on_mod_done,
                       m, NULL);
    mem_free(body);
    if (rc < 0) {
        secret_clear(&m->key);
        mem_free(m);
    }
    return rc;
}
