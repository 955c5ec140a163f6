/* minimax: see minimax.h.
 *
 * Each call is one buffered hcl transfer. The outcome is decided once, in
 * on_xfer_done, in this order: the transport error, the HTTP status, whether
 * the body is JSON at all, base_resp.status_code, and last what the call's
 * own payload holds (parse_image, parse_submit, parse_query,
 * parse_retrieve). Whatever the callback borrows (URL strings, ids) points
 * into the parsed JSON or into an mm_out on the stack of on_xfer_done, and
 * is released after the callback returns. */
#include "service/minimax.h"

#include <errno.h>
#include <json.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "io/hcl.h"
#include "base/jget.h"
#include "base/jtext.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/secret.h"
#include "base/utf8.h"

#define MAX_URL 2048
#define IMAGE_TIMEOUT_MS 120000L
#define SUBMIT_TIMEOUT_MS 60000L
#define POLL_TIMEOUT_MS 30000L
#define MAX_STATE 32    /* bytes kept of a task state */
#define MAX_ID 256      /* bytes kept of an id or a file name */

enum mm_op { OP_IMAGE, OP_SUBMIT, OP_QUERY, OP_RETRIEVE };

static const char *const op_names[] = {"image", "video_submit", "video_query", "file_retrieve"};

struct mm_call {
    enum mm_op op;
    mm_cb *cb;
    void *arg;
    struct secret key; /* kept to redact echoes of it and for its fingerprint */
};

/* What the callback borrows besides the JSON document. */
struct mm_out {
    struct mm_result r;
    char msg[PROV_MAX_MESSAGE];
    char state[MAX_STATE], task_id[MAX_ID], file_id[MAX_ID], filename[MAX_ID];
    const char *urls[MM_IMAGE_MAX];
    struct mm_blob images[MM_IMAGE_MAX];
    unsigned char *bufs[MM_IMAGE_MAX];
};

/* ---- JSON helpers --------------------------------------------------------- */

static int clamp_int(long long v)
{
    return v < 0 ? 0 : v > INT32_MAX ? INT32_MAX : (int)v;
}

/* Parse exactly len bytes as one JSON object; NULL when it is not one. */
static struct json_object *parse_object(const char *s, size_t len)
{
    if (len == 0 || len > (size_t)INT32_MAX)
        return NULL;
    struct json_tokener *tok = json_tokener_new_ex(64);
    struct json_object *o = json_tokener_parse_ex(tok, s, (int)len);
    if (json_tokener_get_error(tok) != json_tokener_success || !o ||
        json_tokener_get_parse_end(tok) != len || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

/* ---- classification ------------------------------------------------------- */

static int code_status(int code)
{
    switch (code) {
    case 0:
        return PROV_OK;
    case 1002:
    case 1041:
    case 2045:
        return PROV_RATE;
    case 1004:
    case 2049:
        return PROV_AUTH;
    case 1008:
        return PROV_QUOTA;
    case 1026:
        return PROV_REFUSED;
    case 1027:
        return PROV_FILTERED;
    case 2013:
    case 1039:
        return PROV_BAD_REQUEST;
    default: /* 1000, 1001, 1013, 1024, 1033 and codes we do not know */
        return PROV_SERVER;
    }
}

static int http_status_class(long status)
{
    if (status == 401)
        return PROV_AUTH;
    if (status == 429)
        return PROV_RATE;
    if (status >= 500 && status <= 599)
        return PROV_SERVER;
    if (status >= 400 && status <= 499)
        return PROV_BAD_REQUEST;
    return PROV_PROTOCOL; /* 1xx, 3xx (redirects are not followed), nonsense */
}

static void set_msg(struct mm_out *o, const char *text)
{
    snprintf(o->msg, sizeof o->msg, "%s", text);
}

/* ---- payloads ------------------------------------------------------------ */

/* Decode one base64 image (padded or not; a "data:...;base64," prefix is
 * skipped). Returns 0 and sets *out and *outlen, or -1. */
static int decode_b64(const char *s, size_t len, unsigned char **out, size_t *outlen)
{
    if (len > 5 && !strncmp(s, "data:", 5)) {
        const char *comma = memchr(s, ',', len);
        if (!comma)
            return -1;
        len -= (size_t)(comma + 1 - s);
        s = comma + 1;
    }
    if (len == 0)
        return -1;
    size_t max = len / 4 * 3 + 3;
    unsigned char *bin = mem_alloc(max);
    static const int variants[] = {sodium_base64_VARIANT_ORIGINAL,
                                   sodium_base64_VARIANT_ORIGINAL_NO_PADDING};
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        const char *end = NULL;
        size_t n = 0;
        if (!sodium_base642bin(bin, max, s, len, " \r\n", &n, &end, variants[i]) && end == s + len &&
            n > 0) {
            *out = bin;
            *outlen = n;
            return 0;
        }
    }
    mem_free(bin);
    return -1;
}

static void parse_urls(struct json_object *arr, struct mm_out *o)
{
    size_t n = json_object_array_length(arr);
    for (size_t i = 0; i < n && o->r.nurls < MM_IMAGE_MAX; i++) {
        struct json_object *v = json_object_array_get_idx(arr, i);
        const char *u = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
        if (!prov__http_url(u, MM_MAX_URL)) {
            log_warn("minimax: dropped an invalid image URL", LF_INT("index", i));
            continue;
        }
        o->urls[o->r.nurls++] = u;
    }
}

static void parse_b64(struct json_object *arr, struct mm_out *o)
{
    size_t n = json_object_array_length(arr);
    for (size_t i = 0; i < n && o->r.nimages < MM_IMAGE_MAX; i++) {
        struct json_object *v = json_object_array_get_idx(arr, i);
        size_t k = o->r.nimages, len = 0;
        if (!json_object_is_type(v, json_type_string) ||
            decode_b64(json_object_get_string(v), (size_t)json_object_get_string_len(v),
                       &o->bufs[k], &len) < 0) {
            log_warn("minimax: dropped an undecodable base64 image", LF_INT("index", i));
            continue;
        }
        o->images[k] = (struct mm_blob){o->bufs[k], len};
        o->r.nimages++;
    }
}

static int parse_image(struct json_object *root, struct mm_out *o)
{
    struct json_object *data = jget_typed(root, "data", json_type_object), *arr;
    struct json_object *meta = jget_typed(root, "metadata", json_type_object);
    o->r.success_count = clamp_int(jget_num(meta, "success_count"));
    o->r.failed_count = clamp_int(jget_num(meta, "failed_count"));
    if ((arr = jget_typed(data, "image_urls", json_type_array)))
        parse_urls(arr, o);
    if ((arr = jget_typed(data, "image_base64", json_type_array)))
        parse_b64(arr, o);
    o->r.urls = o->r.nurls ? o->urls : NULL;
    o->r.images = o->r.nimages ? o->images : NULL;
    if (o->r.nurls || o->r.nimages)
        return PROV_OK;
    snprintf(o->msg, sizeof o->msg, "no usable image in the answer (%d failed)", o->r.failed_count);
    return PROV_PROTOCOL;
}

/* An id MiniMax may send as a string or a number. */
static int get_id(struct json_object *obj, const char *name, char *dst, size_t dstlen)
{
    struct json_object *v;
    dst[0] = '\0';
    if (!obj || !json_object_object_get_ex(obj, name, &v) || !v)
        return -1;
    if (!json_object_is_type(v, json_type_string) && !json_object_is_type(v, json_type_int))
        return -1;
    const char *s = json_object_get_string(v);
    size_t n = strlen(s);
    if (n == 0 || n >= dstlen)
        return -1;
    memcpy(dst, s, n + 1);
    return 0;
}

static int parse_submit(struct json_object *root, struct mm_out *o)
{
    if (get_id(root, "task_id", o->task_id, sizeof o->task_id) < 0) {
        set_msg(o, "no task_id in the answer");
        return PROV_PROTOCOL;
    }
    return PROV_OK;
}

static int parse_query(struct json_object *root, struct mm_out *o)
{
    const char *st = jget_str(root, "status");
    if (!st || !*st || strlen(st) >= sizeof o->state) {
        set_msg(o, "no task status in the answer");
        return PROV_PROTOCOL;
    }
    snprintf(o->state, sizeof o->state, "%s", st);
    get_id(root, "file_id", o->file_id, sizeof o->file_id);
    o->r.width = clamp_int(jget_num(root, "video_width"));
    o->r.height = clamp_int(jget_num(root, "video_height"));
    if (!strcmp(st, "Success") && !o->file_id[0]) {
        set_msg(o, "task succeeded without a file_id");
        return PROV_PROTOCOL;
    }
    return PROV_OK;
}

static int parse_retrieve(struct json_object *root, struct mm_out *o)
{
    struct json_object *f = jget_typed(root, "file", json_type_object);
    const char *url = jget_str(f, "download_url");
    if (!f || !prov__http_url(url, MM_MAX_URL)) {
        set_msg(o, f ? "no valid download_url in the answer" : "no file in the answer");
        return PROV_PROTOCOL;
    }
    o->r.download_url = url;
    get_id(f, "file_id", o->file_id, sizeof o->file_id);
    const char *fn = jget_str(f, "filename");
    prov__message(o->filename, sizeof o->filename, fn ? fn : "", fn ? strlen(fn) : 0, NULL);
    long long b = jget_num(f, "bytes");
    o->r.bytes = b < 0 ? 0 : b;
    return PROV_OK;
}

/* ---- completion ------------------------------------------------------------- */

/* base_resp: its code into r.code and its text into msg. */
static void read_base_resp(struct mm_call *k, struct json_object *root, struct mm_out *o)
{
    struct json_object *br = jget_typed(root, "base_resp", json_type_object);
    if (!br)
        return;
    o->r.code = (int)jget_num(br, "status_code");
    const char *m = jget_str(br, "status_msg");
    if (m)
        prov__message(o->msg, sizeof o->msg, m, strlen(m), &k->key);
}

static int parse_payload(struct mm_call *k, struct json_object *root, struct mm_out *o)
{
    switch (k->op) {
    case OP_IMAGE:
        return parse_image(root, o);
    case OP_SUBMIT:
        return parse_submit(root, o);
    case OP_QUERY:
        return parse_query(root, o);
    default:
        return parse_retrieve(root, o);
    }
}

static int decide(struct mm_call *k, const struct hcl_response *h, struct json_object *root,
                  struct mm_out *o)
{
    if (h->err) {
        prov__message(o->msg, sizeof o->msg, h->errstr, strlen(h->errstr), &k->key);
        return prov__transport_status(h->err);
    }
    read_base_resp(k, root, o);
    if (h->status < 200 || h->status > 299) {
        if (!o->msg[0])
            snprintf(o->msg, sizeof o->msg, "HTTP %ld", h->status);
        return http_status_class(h->status);
    }
    if (!root) {
        set_msg(o, "the answer is not a JSON object");
        return PROV_PROTOCOL;
    }
    if (o->r.code != 0)
        return code_status(o->r.code);
    o->msg[0] = '\0'; /* "success" is no message */
    return parse_payload(k, root, o);
}

static void log_result(const struct mm_call *k, const struct mm_result *r, double ms)
{
    if (r->status == PROV_OK) {
        log_debug("minimax done", LF_STR("op", op_names[k->op]), LF_INT("http", r->http_status),
                  LF_STR("state", r->state), LF_INT("images", r->nurls + r->nimages),
                  LF_DBL("ms", ms), LF_SECRET("key", &k->key));
        return;
    }
    /* The message is left out: MiniMax may quote the prompt in it. */
    log_warn("minimax failed", LF_STR("op", op_names[k->op]),
             LF_STR("kind", prov_status_name(r->status)), LF_INT("http", r->http_status),
             LF_INT("code", r->code), LF_INT("retry_after_ms", r->retry_after_ms), LF_DBL("ms", ms),
             LF_SECRET("key", &k->key));
}

static void on_xfer_done(const struct hcl_response *h, void *arg)
{
    struct mm_call *k = arg;
    struct mm_out o;
    memset(&o, 0, sizeof o);
    o.r.http_status = h->status;
    o.r.retry_after_ms = -1;
    struct json_object *root = h->err ? NULL : parse_object(h->body, h->body_len);
    o.r.status = decide(k, h, root, &o);
    if (o.r.status == PROV_RATE)
        o.r.retry_after_ms = prov__retry_after_ms(hcl_response_header(h, "retry-after"));
    o.r.message = o.msg;
    o.r.task_id = o.task_id;
    o.r.state = o.state;
    o.r.file_id = o.file_id;
    o.r.filename = o.filename;
    if (!o.r.download_url)
        o.r.download_url = "";
    log_result(k, &o.r, h->total_ms);
    k->cb(&o.r, k->arg);
    for (size_t i = 0; i < MM_IMAGE_MAX; i++)
        mem_free(o.bufs[i]);
    json_object_put(root);
    secret_clear(&k->key);
    mem_free(k);
}

void mm__decode(int op, const struct hcl_response *h, const char *api_key, mm_cb *cb, void *arg)
{
    struct mm_call *k = mem_calloc(1, sizeof *k);
    k->op = op >= OP_IMAGE && op <= OP_RETRIEVE ? (enum mm_op)op : OP_IMAGE;
    k->cb = cb;
    k->arg = arg;
    secret_set(&k->key, api_key);
    on_xfer_done(h, k);
}

/* ---- requests -------------------------------------------------------------- */

static int make_url(char *out, const char *base, const char *path, const char *arg_name,
                    const char *arg)
{
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    struct buf b;
    buf_init(&b, MAX_URL - 1);
    int rc = buf_printf(&b, "%.*s%s", (int)n, base, path);
    if (!rc && arg) {
        rc = buf_printf(&b, "?%s=", arg_name);
        for (const unsigned char *p = (const unsigned char *)arg; !rc && *p; p++) {
            if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                *p == '-' || *p == '_' || *p == '.' || *p == '~')
                rc = buf_append(&b, p, 1);
            else
                rc = buf_printf(&b, "%%%02X", *p);
        }
    }
    if (!rc)
        memcpy(out, buf_str(&b), b.len + 1);
    buf_free(&b);
    return rc ? -EINVAL : 0;
}

static int valid_common(struct hcl *c, const char *base, const char *key, mm_cb *cb)
{
    return c && base && *base && key && *key && cb;
}

/* Send one request; the Authorization header is wiped once hcl copied it. */
static int send_call(struct hcl *c, enum mm_op op, const char *url, const char *key,
                     const char *body, long timeout_ms, size_t max_response, mm_cb *cb, void *arg)
{
    size_t alen = strlen(key) + 32;
    char *auth = mem_alloc(alen);
    snprintf(auth, alen, "Authorization: Bearer %s", key);
    const char *headers[] = {auth, "Accept: application/json",
                             body ? "Content-Type: application/json" : NULL, NULL};
    struct mm_call *k = mem_calloc(1, sizeof *k);
    k->op = op;
    k->cb = cb;
    k->arg = arg;
    secret_set(&k->key, key);
    struct hcl_request rq = {
        .method = body ? "POST" : "GET",
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .timeout_ms = timeout_ms,
        .max_response = max_response,
    };
    int rc = hcl_request(c, &rq, on_xfer_done, k, NULL);
    sodium_memzero(auth, alen);
    mem_free(auth);
    if (rc < 0) {
        secret_clear(&k->key);
        mem_free(k);
        return rc;
    }
    log_debug("minimax request", LF_STR("op", op_names[op]), LF_URL("url", url),
              LF_SECRET("key", &k->key));
    return 0;
}

static void add_str(struct json_object *o, const char *name, const char *v)
{
    json_object_object_add(o, name, json_object_new_string(v));
}

int mm_image(struct hcl *c, const struct mm_image_req *rq, mm_cb *cb, void *arg)
{
    char url[MAX_URL];
    if (!rq || !valid_common(c, rq->base_url, rq->api_key, cb) || !rq->prompt || !*rq->prompt ||
        utf8_count(rq->prompt, strlen(rq->prompt)) > MM_IMAGE_PROMPT_MAX || rq->n < 1 || rq->n > MM_IMAGE_MAX ||
        (rq->model && !*rq->model) || (rq->aspect_ratio && !*rq->aspect_ratio) ||
        make_url(url, rq->base_url, "/v1/image_generation", NULL, NULL) < 0)
        return -EINVAL;
    struct json_object *o = json_object_new_object();
    add_str(o, "model", rq->model ? rq->model : "image-01");
    add_str(o, "prompt", rq->prompt);
    add_str(o, "aspect_ratio", rq->aspect_ratio ? rq->aspect_ratio : "1:1");
    json_object_object_add(o, "n", json_object_new_int(rq->n));
    add_str(o, "response_format", rq->base64 ? "base64" : "url");
    char *body = jtext_take(o);
    int rc = send_call(c, OP_IMAGE, url, rq->api_key, body,
                       rq->timeout_ms > 0 ? rq->timeout_ms : IMAGE_TIMEOUT_MS,
                       rq->base64 ? MM_MAX_BASE64_RESPONSE : MM_MAX_RESPONSE, cb, arg);
    mem_free(body);
    return rc;
}

int mm_video_submit(struct hcl *c, const struct mm_video_req *rq, mm_cb *cb, void *arg)
{
    char url[MAX_URL];
    if (!rq || !valid_common(c, rq->base_url, rq->api_key, cb) || !rq->model || !*rq->model ||
        !rq->prompt || !*rq->prompt || utf8_count(rq->prompt, strlen(rq->prompt)) > MM_VIDEO_PROMPT_MAX ||
        rq->duration < 0 || (rq->resolution && !*rq->resolution) ||
        (rq->first_frame_image && !*rq->first_frame_image) ||
        make_url(url, rq->base_url, "/v1/video_generation", NULL, NULL) < 0)
        return -EINVAL;
    struct json_object *o = json_object_new_object();
    add_str(o, "model", rq->model);
    add_str(o, "prompt", rq->prompt);
    if (rq->duration > 0)
        json_object_object_add(o, "duration", json_object_new_int(rq->duration));
    if (rq->resolution)
        add_str(o, "resolution", rq->resolution);
    if (rq->first_frame_image)
        add_str(o, "first_frame_image", rq->first_frame_image);
    char *body = jtext_take(o);
    int rc = send_call(c, OP_SUBMIT, url, rq->api_key, body,
                       rq->timeout_ms > 0 ? rq->timeout_ms : SUBMIT_TIMEOUT_MS, MM_MAX_RESPONSE, cb,
                       arg);
    mem_free(body);
    return rc;
}

static int get_call(struct hcl *c, enum mm_op op, const char *base_url, const char *api_key,
                    const char *path, const char *arg_name, const char *id, long timeout_ms,
                    mm_cb *cb, void *arg)
{
    char url[MAX_URL];
    if (!valid_common(c, base_url, api_key, cb) || !id || !*id ||
        make_url(url, base_url, path, arg_name, id) < 0)
        return -EINVAL;
    return send_call(c, op, url, api_key, NULL, timeout_ms > 0 ? timeout_ms : POLL_TIMEOUT_MS,
                     MM_MAX_RESPONSE, cb, arg);
}

int mm_video_query(struct hcl *c, const char *base_url, const char *api_key, const char *task_id,
                   long timeout_ms, mm_cb *cb, void *arg)
{
    return get_call(c, OP_QUERY, base_url, api_key, "/v1/query/video_generation", "task_id",
                    task_id, timeout_ms, cb, arg);
}

int mm_file_retrieve(struct hcl *c, const char *base_url, const char *api_key, const char *file_id,
                     long timeout_ms, mm_cb *cb, void *arg)
{
    return get_call(c, OP_RETRIEVE, base_url, api_key, "/v1/files/retrieve", "file_id", file_id,
                    timeout_ms, cb, arg);
}
