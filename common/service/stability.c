/* stability: see stability.h.
 *
 * The request is a multipart/form-data body (RFC 7578) sent through hcl's
 * form parts, that is libcurl's mime API, as drest sends Discord's: one
 * part per field, the image as a file part; curl picks the boundary and
 * writes the part headers. The answer is one buffered hcl transfer,
 * decided once in on_xfer_done. */
#include "service/stability.h"

#include <errno.h>
#include <json.h>
#include <math.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "base/err.h"
#include "io/hcl.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/secret.h"
#include "base/utf8.h"

#define MAX_URL 2048
#define DEFAULT_TIMEOUT_MS 120000L
#define BOUNDARY_RANDOM 16 /* bytes, sent as hex */
#define BOUNDARY_TRIES 16
#define MAX_TYPE 127       /* bytes of an image content type */
#define MAX_SHORT 64       /* bytes kept of finish-reason, seed, content type */

struct st_call {
    st_cb *cb;
    void *arg;
    struct secret key;
    char endpoint[8];
};

/* ---- the form ------------------------------------------------------------- */

/* The form's parts besides the image, in the order they are sent. */
struct form_fields {
    const char *name[8], *value[8];
    size_t n;
    char strength[32];
};

static void add_field(struct form_fields *f, const char *name, const char *value)
{
    if (value) {
        f->name[f->n] = name;
        f->value[f->n++] = value;
    }
}

static void collect_fields(const struct st_req *rq, struct form_fields *f)
{
    int sd3 = !strcmp(rq->endpoint, "sd3");
    memset(f, 0, sizeof *f);
    add_field(f, "prompt", rq->prompt);
    add_field(f, "negative_prompt", rq->negative_prompt);
    if (!rq->image)
        add_field(f, "aspect_ratio", rq->aspect_ratio);
    add_field(f, "output_format", rq->output_format ? rq->output_format : "png");
    if (sd3 && rq->image)
        add_field(f, "mode", "image-to-image");
    if (sd3)
        add_field(f, "model", rq->model);
    if (rq->image) {
        snprintf(f->strength, sizeof f->strength, "%g", rq->strength);
        add_field(f, "strength", f->strength);
    }
}

static const char *file_ext(const char *type)
{
    static const char *const map[][2] = {
        {"image/png", "png"}, {"image/jpeg", "jpg"}, {"image/jpg", "jpg"},
        {"image/webp", "webp"}, {"image/gif", "gif"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcasecmp(type, map[i][0]))
            return map[i][1];
    return "bin";
}

/* Bytes a part costs besides its name and content: the delimiter (curl's
 * boundary is 40 characters), the part headers and the CR LF after it. */
#define PART_OVERHEAD 256

/* The form as hcl parts (borrowing rq's strings) into p, which holds 9;
 * BC_ETOOBIG when it would exceed ST_MAX_BODY. Returns the part count. */
static int build_form(struct hcl_part *p, const struct st_req *rq, const struct form_fields *f,
                      const char *type, char *img_name, size_t img_name_len)
{
    size_t total = PART_OVERHEAD;
    int n = 0;
    for (size_t i = 0; i < f->n; i++, n++) {
        p[n] = (struct hcl_part){.name = f->name[i], .data = f->value[i], .len = strlen(f->value[i])};
        total += PART_OVERHEAD + strlen(f->name[i]) + p[n].len;
    }
    if (rq->image) {
        snprintf(img_name, img_name_len, "image.%s", file_ext(type));
        p[n++] = (struct hcl_part){.name = "image", .filename = img_name, .content_type = type,
                                   .data = rq->image, .len = rq->image_len};
        total += PART_OVERHEAD + strlen(type) + rq->image_len;
    }
    return total > ST_MAX_BODY ? BC_ETOOBIG : n;
}

/* ---- validation ------------------------------------------------------------ */

/* "type/subtype" of RFC 6838 restricted-name characters. */
static int valid_type(const char *t)
{
    int slash = 0;
    size_t n = 0, part = 0;
    for (; t[n]; n++) {
        char ch = t[n];
        if (ch == '/') {
            if (slash++ || part == 0)
                return 0;
            part = 0;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                   strchr("!#$&^_.+-", ch)) {
            part++;
        } else {
            return 0;
        }
    }
    return slash == 1 && part > 0 && n <= MAX_TYPE;
}

static int valid_fields(const struct st_req *rq);

static int valid_req(struct hcl *c, const struct st_req *rq, st_cb *cb)
{
    return c && cb && valid_fields(rq);
}

static int valid_fields(const struct st_req *rq)
{
    if (!rq || !rq->api_key || !*rq->api_key || !rq->prompt || !*rq->prompt ||
        !rq->endpoint || utf8_count(rq->prompt, strlen(rq->prompt)) > ST_PROMPT_MAX)
        return 0;
    int core = !strcmp(rq->endpoint, "core");
    if (!core && strcmp(rq->endpoint, "ultra") && strcmp(rq->endpoint, "sd3"))
        return 0;
    if (!rq->image)
        return rq->image_len == 0;
    return !core && rq->image_len > 0 && isfinite(rq->strength) && rq->strength >= 0 &&
           rq->strength <= 1 && (!rq->image_type || valid_type(rq->image_type));
}

/* ---- the answer -------------------------------------------------------------- */

struct st_out {
    struct st_result r;
    char msg[PROV_MAX_MESSAGE];
    char finish[MAX_SHORT], seed[MAX_SHORT], ctype[MAX_SHORT];
};

static void header_copy(char *dst, size_t dstlen, const struct hcl_response *h, const char *name)
{
    const char *v = hcl_response_header(h, name);
    prov__message(dst, dstlen, v ? v : "", v ? strlen(v) : 0, NULL);
}

/* {id, name, errors[]} into msg as "name: errors[0]". */
static void read_error(struct st_call *k, const struct hcl_response *h, struct st_out *o)
{
    struct json_object *root = NULL, *v;
    if (h->body_len > 0 && h->body_len < INT32_MAX) {
        struct json_tokener *tok = json_tokener_new_ex(16);
        root = json_tokener_parse_ex(tok, h->body, (int)h->body_len);
        json_tokener_free(tok);
    }
    const char *name = NULL, *first = NULL;
    if (root && json_object_is_type(root, json_type_object)) {
        if (json_object_object_get_ex(root, "name", &v) && json_object_is_type(v, json_type_string))
            name = json_object_get_string(v);
        if (json_object_object_get_ex(root, "errors", &v) && json_object_is_type(v, json_type_array) &&
            json_object_array_length(v) > 0 &&
            json_object_is_type(json_object_array_get_idx(v, 0), json_type_string))
            first = json_object_get_string(json_object_array_get_idx(v, 0));
    }
    struct buf b;
    buf_init(&b, PROV_MAX_MESSAGE * 2);
    if (name && first)
        buf_printf(&b, "%s: %s", name, first);
    else if (name || first)
        buf_puts(&b, name ? name : first);
    else
        buf_printf(&b, "HTTP %ld", h->status);
    prov__message(o->msg, sizeof o->msg, buf_str(&b), b.len, &k->key);
    buf_free(&b);
    json_object_put(root);
}

static int http_error_class(long status)
{
    switch (status) {
    case 401:
        return PROV_AUTH;
    case 402:
        return PROV_QUOTA;
    case 403:
        return PROV_REFUSED;
    case 429:
        return PROV_RATE;
    default:
        if (status >= 500 && status <= 599)
            return PROV_SERVER;
        if (status >= 400 && status <= 499)
            return PROV_BAD_REQUEST; /* 400, 404, 413, 422 ... */
        return PROV_PROTOCOL;
    }
}

static int decide(struct st_call *k, const struct hcl_response *h, struct st_out *o)
{
    if (h->err) {
        prov__message(o->msg, sizeof o->msg, h->errstr, strlen(h->errstr), &k->key);
        return prov__transport_status(h->err);
    }
    if (h->status < 200 || h->status > 299) {
        read_error(k, h, o);
        int st = http_error_class(h->status);
        if (st == PROV_RATE) {
            long ms = prov__retry_after_ms(hcl_response_header(h, "retry-after"));
            o->r.retry_after_ms = ms >= 0 ? ms : ST_RATE_DEFAULT_MS;
        }
        return st;
    }
    if (!strncasecmp(o->ctype, "image/", 6) && h->body_len > 0) {
        o->r.image = (const unsigned char *)h->body;
        o->r.image_len = h->body_len;
    }
    if (!strcmp(o->finish, "CONTENT_FILTERED")) {
        snprintf(o->msg, sizeof o->msg, "the output was filtered");
        return PROV_FILTERED;
    }
    if (!o->r.image) {
        snprintf(o->msg, sizeof o->msg, "the answer carries no image");
        return PROV_PROTOCOL;
    }
    return PROV_OK;
}

static void on_xfer_done(const struct hcl_response *h, void *arg)
{
    struct st_call *k = arg;
    struct st_out o;
    memset(&o, 0, sizeof o);
    o.r.http_status = h->status;
    o.r.retry_after_ms = -1;
    header_copy(o.finish, sizeof o.finish, h, "finish-reason");
    header_copy(o.seed, sizeof o.seed, h, "seed");
    header_copy(o.ctype, sizeof o.ctype, h, "content-type");
    o.r.status = decide(k, h, &o);
    o.r.message = o.msg;
    o.r.finish_reason = o.finish;
    o.r.seed = o.seed;
    o.r.content_type = o.ctype;
    if (o.r.status == PROV_OK)
        log_debug("stability done", LF_STR("endpoint", k->endpoint), LF_INT("bytes", o.r.image_len),
                  LF_STR("seed", o.seed), LF_DBL("ms", h->total_ms), LF_SECRET("key", &k->key));
    else /* the message is left out: it may quote the prompt */
        log_warn("stability failed", LF_STR("endpoint", k->endpoint),
                 LF_STR("kind", prov_status_name(o.r.status)), LF_INT("http", h->status),
                 LF_STR("finish", o.finish), LF_INT("retry_after_ms", o.r.retry_after_ms),
                 LF_DBL("ms", h->total_ms), LF_SECRET("key", &k->key));
    k->cb(&o.r, k->arg);
    secret_clear(&k->key);
    mem_free(k);
}

/* ---- the request -------------------------------------------------------------- */

static int make_url(char *out, const char *base, const char *endpoint)
{
    if (!base || !*base)
        base = ST_DEFAULT_BASE_URL;
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    int w = snprintf(out, MAX_URL, "%.*s/v2beta/stable-image/generate/%s", (int)n, base, endpoint);
    return w < 0 || w >= MAX_URL ? -EINVAL : 0;
}

static int send_form(struct hcl *c, const char *url, const char *key, const struct hcl_part *parts,
                     int nparts, long timeout_ms, struct st_call *k)
{
    size_t alen = strlen(key) + 32;
    char *auth = mem_alloc(alen);
    snprintf(auth, alen, "Authorization: Bearer %s", key);
    const char *headers[] = {auth, "Accept: image/*", NULL};
    struct hcl_request rq = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .parts = parts,
        .nparts = nparts,
        .timeout_ms = timeout_ms,
        .max_response = ST_MAX_RESPONSE,
    };
    int rc = hcl_request(c, &rq, on_xfer_done, k, NULL);
    sodium_memzero(auth, alen);
    mem_free(auth);
    return rc;
}

int st_generate(struct hcl *c, const struct st_req *rq, st_cb *cb, void *arg)
{
    char url[MAX_URL], img_name[16];
    struct form_fields f;
    struct hcl_part parts[9];
    if (!valid_req(c, rq, cb) || make_url(url, rq->base_url, rq->endpoint) < 0)
        return -EINVAL;
    const char *type = rq->image_type ? rq->image_type : "application/octet-stream";
    collect_fields(rq, &f);
    int n = build_form(parts, rq, &f, type, img_name, sizeof img_name);
    if (n < 0)
        return n;
    struct st_call *k = mem_calloc(1, sizeof *k);
    k->cb = cb;
    k->arg = arg;
    secret_set(&k->key, rq->api_key);
    snprintf(k->endpoint, sizeof k->endpoint, "%s", rq->endpoint);
    int rc = send_form(c, url, rq->api_key, parts, n, rq->timeout_ms > 0 ? rq->timeout_ms : DEFAULT_TIMEOUT_MS, k);
    if (!rc)
        log_debug("stability request", LF_STR("endpoint", rq->endpoint), LF_INT("parts", n),
                  LF_BOOL("image", rq->image != NULL), LF_SECRET("key", &k->key));
    if (rc) {
        secret_clear(&k->key);
        mem_free(k);
    }
    return rc;
}

/* ---- internal: shared with the tests and the fuzz target ---------------- */

void st__decode(const char *endpoint, const struct hcl_response *h, const char *api_key, st_cb *cb, void *arg)
{
    struct st_call *k = mem_calloc(1, sizeof *k);
    k->cb = cb;
    k->arg = arg;
    secret_set(&k->key, api_key);
    snprintf(k->endpoint, sizeof k->endpoint, "%s", endpoint);
    on_xfer_done(h, k);
}

int st__valid(const struct st_req *rq)
{
    return valid_fields(rq);
}
