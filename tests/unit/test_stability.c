/* test_stability: the Stability AI client (stability) against a fake
 * Stability (ut_fakehttp.h: our httpd on 127.0.0.1, port 0). The fake
 * records the whole request (headers and the raw multipart body) and answers
 * a canned response. The form is checked twice: parsed back part by part
 * (boundary, each field, the binary image with CR LF and "--" in it), and
 * rebuilt from the parts and compared byte for byte. Calls run one after the
 * other, each waited for with ut_loop.h; at the end client and server are
 * closed and the loop finishes, so the sanitizers see any leak. */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "base/err.h"
#include "service/keypool.h"
#include "base/log.h"
#include "base/mem.h"
#include "service/prov.h"
#include "service/stability.h"
#include "ut.h"
#include "ut_fakehttp.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_sys.h"

#define WAIT_MS 10000
#define KEY "sk-STtestSECRETkey-0123456789abcdef"

/* An image with everything a naive multipart writer gets wrong. */
static const unsigned char IMG[] = "\x89PNG\r\n\x1a\n\0\r\n--\r\n\r\n--boundary\r\n"
                                   "Content-Disposition: x\r\n\0\xff--";
#define IMG_LEN (sizeof IMG - 1)

struct got {
    int status;
    long http, retry;
    char msg[PROV_MAX_MESSAGE], finish[64], seed[64], ctype[64];
    unsigned char *image;
    size_t image_len;
};

struct fx {
    struct utfake f; /* the fake Stability; it records the whole request */
    int calls;
    struct got g;
};

static void fx_init(struct fx *fx)
{
    memset(fx, 0, sizeof *fx);
    utfake_init(&fx->f, "test_stability", "image/png");
    static const char *const eps[] = {"core", "ultra", "sd3"};
    for (int i = 0; i < 3; i++) {
        char p[64];
        snprintf(p, sizeof p, "/v2beta/stable-image/generate/%s", eps[i]);
        utfake_route(&fx->f, "POST", p, NULL, NULL);
    }
}

static void fx_end(struct fx *fx)
{
    utfake_end(&fx->f);
    utfake_free(&fx->f);
    mem_free(fx->g.image);
}

static const char *base_url(const struct fx *fx)
{
    return utfake_url(&fx->f, "");
}

static void on_st(const struct st_result *r, void *arg)
{
    struct fx *fx = arg;
    fx->calls++;
    struct got *g = &fx->g;
    mem_free(g->image);
    memset(g, 0, sizeof *g);
    UT_ASSERT(r->message && r->finish_reason && r->seed && r->content_type);
    g->status = r->status;
    g->http = r->http_status;
    g->retry = r->retry_after_ms;
    snprintf(g->msg, sizeof g->msg, "%s", r->message);
    snprintf(g->finish, sizeof g->finish, "%s", r->finish_reason);
    snprintf(g->seed, sizeof g->seed, "%s", r->seed);
    snprintf(g->ctype, sizeof g->ctype, "%s", r->content_type);
    UT_ASSERT((r->image != NULL) == (r->image_len > 0));
    if (r->image) {
        g->image = mem_alloc(r->image_len);
        memcpy(g->image, r->image, r->image_len);
        g->image_len = r->image_len;
    }
}

static void run_one(struct fx *fx, const struct st_req *rq, struct utfake_canned cn)
{
    int before = fx->calls;
    fx->f.cn = cn;
    UT_EQ_INT(st_generate(fx->f.c, rq, on_st, fx), 0);
    UT_EQ_INT(fx->calls, before); /* never synchronously */
    UTLOOP_WAIT_FOR(&fx->f.ul, fx->calls > before, WAIT_MS);
    UT_EQ_INT(fx->calls, before + 1);
}

static const struct utfake_canned PNG_OK = {.ctype = "image/png", .body = IMG, .len = IMG_LEN,
                                            .hname = "finish-reason", .hval = "SUCCESS",
                                            .hname2 = "seed", .hval2 = "3141592653"};

/* ---- parsing the form back ------------------------------------------------------- */

struct part {
    char name[64], filename[64], ctype[64];
    const unsigned char *data;
    size_t len;
};

static const char *boundary_of(const char *ctype)
{
    static const char pre[] = "multipart/form-data; boundary=";
    if (strncmp(ctype, pre, sizeof pre - 1))
        UT_FAIL("content type %s", ctype);
    return ctype + sizeof pre - 1;
}

static void header_param(const char *line, size_t len, const char *param, char *out, size_t outlen)
{
    char key[32];
    snprintf(key, sizeof key, "; %s=\"", param);
    const char *p = memmem(line, len, key, strlen(key));
    out[0] = '\0';
    if (!p)
        return;
    p += strlen(key);
    const char *q = memchr(p, '"', (size_t)(line + len - p));
    UT_ASSERT(q);
    snprintf(out, outlen, "%.*s", (int)(q - p), p);
}

/* One part's header block [h, end): Content-Disposition and Content-Type. */
static void parse_part_headers(const char *h, const char *end, struct part *pt)
{
    while (h < end) {
        const char *eol = memmem(h, (size_t)(end - h), "\r\n", 2);
        size_t n = eol ? (size_t)(eol - h) : (size_t)(end - h);
        static const char cd[] = "Content-Disposition: form-data", ct[] = "Content-Type: ";
        if (n >= sizeof cd - 1 && !memcmp(h, cd, sizeof cd - 1)) {
            header_param(h, n, "name", pt->name, sizeof pt->name);
            header_param(h, n, "filename", pt->filename, sizeof pt->filename);
        } else if (n >= sizeof ct - 1 && !memcmp(h, ct, sizeof ct - 1)) {
            snprintf(pt->ctype, sizeof pt->ctype, "%.*s", (int)(n - (sizeof ct - 1)), h + sizeof ct - 1);
        } else {
            UT_FAIL("unexpected part header %.*s", (int)n, h);
        }
        h += n + 2;
    }
}

static size_t parse_form(const unsigned char *body, size_t len, const char *bd, struct part *parts,
                         size_t max)
{
    char open[128], delim[130];
    snprintf(open, sizeof open, "--%s\r\n", bd);
    snprintf(delim, sizeof delim, "\r\n--%s", bd);
    size_t dl = strlen(delim), n = 0;
    UT_ASSERT(len > strlen(open) && !memcmp(body, open, strlen(open)));
    const unsigned char *p = body + strlen(open), *end = body + len;
    for (;;) {
        UT_ASSERT(n < max);
        struct part *pt = &parts[n++];
        memset(pt, 0, sizeof *pt);
        const unsigned char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        UT_ASSERT(hend);
        parse_part_headers((const char *)p, (const char *)hend + 2, pt);
        pt->data = hend + 4;
        const unsigned char *next = memmem(pt->data, (size_t)(end - pt->data), delim, dl);
        UT_ASSERT(next);
        pt->len = (size_t)(next - pt->data);
        p = next + dl;
        UT_ASSERT(end - p >= 2);
        if (!memcmp(p, "--", 2)) {
            UT_ASSERT(end - p == 4 && !memcmp(p + 2, "\r\n", 2)); /* the close ends the body */
            return n;
        }
        UT_ASSERT(!memcmp(p, "\r\n", 2));
        p += 2;
    }
}

/* The exact bytes a form of these parts must have. */
static void rebuild_form(struct buf *b, const char *bd, const struct part *parts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        buf_printf(b, "--%s\r\nContent-Disposition: form-data; name=\"%s\"", bd, parts[i].name);
        if (parts[i].filename[0])
            buf_printf(b, "; filename=\"%s\"\r\nContent-Type: %s", parts[i].filename, parts[i].ctype);
        buf_puts(b, "\r\n\r\n");
        buf_append(b, parts[i].data, parts[i].len);
        buf_puts(b, "\r\n");
    }
    buf_printf(b, "--%s--\r\n", bd);
}

struct want {
    const char *name, *value; /* value NULL: the image */
};

/* Parse fx's recorded body, compare with the wanted parts in order, and
 * check the body is exactly what they make. */
static void check_form(struct fx *fx, const struct want *w, size_t nw, const char *img_name,
                       const char *img_type)
{
    const char *bd = boundary_of(fx->f.ctype);
    UT_ASSERT(strlen(bd) >= 16 && strlen(bd) <= 70);
    struct part parts[16];
    size_t n = parse_form((const unsigned char *)fx->f.body, fx->f.body_len, bd, parts, 16);
    UT_EQ_INT(n, nw);
    for (size_t i = 0; i < n; i++) {
        UT_EQ_STR(parts[i].name, w[i].name);
        if (w[i].value) {
            UT_EQ_STR(parts[i].filename, "");
            UT_EQ_STR(parts[i].ctype, "");
            if (parts[i].len != strlen(w[i].value) || memcmp(parts[i].data, w[i].value, parts[i].len))
                UT_FAIL("field %s: \"%.*s\" != \"%s\"", w[i].name, (int)parts[i].len,
                        (const char *)parts[i].data, w[i].value);
        } else {
            UT_EQ_STR(parts[i].filename, img_name);
            UT_EQ_STR(parts[i].ctype, img_type);
            UT_EQ_INT(parts[i].len, IMG_LEN);
            UT_ASSERT(!memcmp(parts[i].data, IMG, IMG_LEN));
        }
    }
    struct buf b;
    buf_init(&b, 1 << 20);
    rebuild_form(&b, bd, parts, n);
    UT_EQ_INT(b.len, fx->f.body_len);
    UT_ASSERT(!memcmp(b.p, fx->f.body, b.len));
    buf_free(&b);
}

/* ---- forms ---------------------------------------------------------------------- */

/* A prompt that contains what delimits parts. */
#define TRICKY_PROMPT "바다 위의 고래\r\n--\r\n\r\nContent-Type: text/plain \"q\""

static void test_sd3_image_to_image_form(void)
{
    struct fx fx;
    fx_init(&fx);
    struct st_req rq = {.base_url = base_url(&fx), .api_key = KEY, .endpoint = "sd3",
                        .model = "sd3.5-large", .prompt = TRICKY_PROMPT,
                        .negative_prompt = "blurry, 흐림", .aspect_ratio = "16:9",
                        .output_format = "webp", .image = IMG, .image_len = IMG_LEN,
                        .image_type = "image/png", .strength = 0.35};
    run_one(&fx, &rq,
            (struct utfake_canned){.ctype = "image/webp", .body = "RIFF\0\0\0\0WEBPVP8 ", .len = 16,
                                   .hname = "finish-reason", .hval = "SUCCESS", .hname2 = "seed",
                                   .hval2 = "12345"});
    UT_EQ_STR(fx.f.path, "/v2beta/stable-image/generate/sd3");
    UT_EQ_STR(fx.f.auth, "Bearer " KEY);
    UT_EQ_STR(fx.f.accept, "image/*");
    static const struct want w[] = {
        {"prompt", TRICKY_PROMPT},   {"negative_prompt", "blurry, 흐림"}, {"output_format", "webp"},
        {"mode", "image-to-image"}, {"model", "sd3.5-large"},            {"strength", "0.35"},
        {"image", NULL},
    }; /* no aspect_ratio with an image */
    check_form(&fx, w, sizeof w / sizeof w[0], "image.png", "image/png");
    UT_EQ_INT(fx.g.status, PROV_OK);
    UT_EQ_INT(fx.g.http, 200);
    UT_EQ_INT(fx.g.retry, -1);
    UT_EQ_STR(fx.g.msg, "");
    UT_EQ_STR(fx.g.finish, "SUCCESS");
    UT_EQ_STR(fx.g.seed, "12345");
    UT_EQ_STR(fx.g.ctype, "image/webp");
    UT_EQ_INT(fx.g.image_len, 16);
    UT_ASSERT(!memcmp(fx.g.image, "RIFF\0\0\0\0WEBPVP8 ", 16));
    fx_end(&fx);
}

static void test_core_text_form(void)
{
    struct fx fx;
    fx_init(&fx);
    struct st_req rq = {.base_url = base_url(&fx), .api_key = KEY, .endpoint = "core",
                        .model = "ignored-for-core", .prompt = "a lighthouse", .aspect_ratio = "21:9"};
    run_one(&fx, &rq, PNG_OK);
    UT_EQ_STR(fx.f.path, "/v2beta/stable-image/generate/core");
    static const struct want w[] = {
        {"prompt", "a lighthouse"}, {"aspect_ratio", "21:9"}, {"output_format", "png"}};
    check_form(&fx, w, 3, NULL, NULL);
    UT_EQ_INT(fx.g.status, PROV_OK);
    UT_EQ_INT(fx.g.image_len, IMG_LEN);
    UT_ASSERT(!memcmp(fx.g.image, IMG, IMG_LEN)); /* binary answer intact */
    UT_EQ_STR(fx.g.seed, "3141592653");
    fx_end(&fx);
}

static void test_ultra_image_and_sd3_text(void)
{
    struct fx fx;
    fx_init(&fx);
    struct st_req rq = {.base_url = base_url(&fx), .api_key = KEY, .endpoint = "ultra",
                        .model = "not-sent", .prompt = "p", .image = IMG, .image_len = IMG_LEN,
                        .strength = 1};
    run_one(&fx, &rq, PNG_OK);
    static const struct want w[] = {
        {"prompt", "p"}, {"output_format", "png"}, {"strength", "1"}, {"image", NULL}};
    check_form(&fx, w, 4, "image.bin", "application/octet-stream");
    UT_EQ_INT(fx.g.status, PROV_OK);

    /* sd3 without an image: text-to-image, model sent, no mode or strength. */
    struct st_req t = {.base_url = base_url(&fx), .api_key = KEY, .endpoint = "sd3",
                       .model = "sd3.5-medium", .prompt = "q", .output_format = "jpeg",
                       .strength = 0.5};
    run_one(&fx, &t, PNG_OK);
    static const struct want w2[] = {
        {"prompt", "q"}, {"output_format", "jpeg"}, {"model", "sd3.5-medium"}};
    check_form(&fx, w2, 3, NULL, NULL);
    fx_end(&fx);
}

static void test_boundary_is_random(void)
{
    struct fx fx;
    fx_init(&fx);
    struct st_req rq = {.base_url = base_url(&fx), .api_key = KEY, .endpoint = "core", .prompt = "x"};
    run_one(&fx, &rq, PNG_OK);
    char first[160];
    snprintf(first, sizeof first, "%s", fx.f.ctype);
    run_one(&fx, &rq, PNG_OK);
    UT_ASSERT(strcmp(first, fx.f.ctype) != 0);
    fx_end(&fx);
}

/* ---- answers ------------------------------------------------------------------------ */

static void test_content_filtered(void)
{
    struct fx fx;
    fx_init(&fx);
    struct st_req rq = {.base_url = base_url(&fx), .api_key = KEY, .endpoint = "ultra", .prompt = "x"};
    struct utfake_canned cn = PNG_OK;
    cn.hval = "CONTENT_FILTERED";
    run_one(&fx, &rq, cn);
    UT_EQ_INT(fx.g.status, PROV_FILTERED);
    UT_EQ_STR(fx.g.finish, "CONTENT_FILTERED");
    UT_EQ_INT(fx.g.image_len, IMG_LEN); /* the placeholder is handed over, marked */
    UT_EQ_INT(prov_keypool_outcome(fx.g.status), KEYPOOL_OK);
    fx_end(&fx);
}

static void test_errors(void)
{
    static const struct utfake_err T[] = {
        {400, "{\"id\":\"e1\",\"name\":\"bad_request\",\"errors\":[\"prompt: cannot be empty\",\"two\"]}",
         NULL, NULL, PROV_BAD_REQUEST, -1, "bad_request: prompt: cannot be empty"},
        {401, "{\"id\":\"e2\",\"name\":\"unauthorized\",\"errors\":[\"missing authorization header\"]}",
         NULL, NULL, PROV_AUTH, -1, "unauthorized: missing authorization header"},
        {402, "{\"name\":\"payment_required\",\"errors\":[\"lack sufficient credits\"]}", NULL, NULL,
         PROV_QUOTA, -1, "payment_required: lack sufficient credits"},
        {403, "{\"id\":\"e3\",\"name\":\"content_moderation\",\"errors\":[\"Your request was flagged\"]}",
         NULL, NULL, PROV_REFUSED, -1, "content_moderation: Your request was flagged"},
        {404, "{\"name\":\"not_found\",\"errors\":[]}", NULL, NULL, PROV_BAD_REQUEST, -1, "not_found"},
        {413, "{\"name\":\"payload_too_large\",\"errors\":[\"body over 10MiB\"]}", NULL, NULL,
         PROV_BAD_REQUEST, -1, "payload_too_large: body over 10MiB"},
        {422, "{\"errors\":[\"image dimensions too small\"]}", NULL, NULL, PROV_BAD_REQUEST, -1,
         "image dimensions too small"},
        {429, "{\"name\":\"rate_limit_exceeded\",\"errors\":[\"slow down\"]}", NULL, NULL, PROV_RATE,
         60000, "rate_limit_exceeded: slow down"},
        {429, "", "Retry-After", "5", PROV_RATE, 5000, "HTTP 429"},
        {429, "", "Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT", PROV_RATE, 60000, "HTTP 429"},
        {500, "{\"id\":\"e4\",\"name\":\"internal_error\",\"errors\":[\"oops\"]}", NULL, NULL,
         PROV_SERVER, -1, "internal_error: oops"},
        {503, "<html>unavailable</html>", NULL, NULL, PROV_SERVER, -1, "HTTP 503"},
        {301, "", "Location", "https://x.example/", PROV_PROTOCOL, -1, "HTTP 301"},
    };
    struct fx fx;
    fx_init(&fx);
    struct st_req rq = {.base_url = base_url(&fx), .api_key = KEY, .endpoint = "core", .prompt = "x"};
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        run_one(&fx, &rq, utfake_err_answer(&T[i], "application/json"));
        utfake_expect_err(&T[i], prov_status_name, fx.g.status, fx.g.http, fx.g.retry, fx.g.msg);
        UT_EQ_INT(fx.g.image_len, 0);
    }
    fx_end(&fx);
}

static void test_unreadable_success(void)
{
    struct fx fx;
    fx_init(&fx);
    struct st_req rq = {.base_url = base_url(&fx), .api_key = KEY, .endpoint = "core", .prompt = "x"};
    /* A JSON answer although we asked for an image. */
    run_one(&fx, &rq,
            (struct utfake_canned){.ctype = "application/json",
                                   .body = "{\"image\":\"iVBORw0KGgo=\",\"finish_reason\":\"SUCCESS\",\"seed\":1}"});
    UT_EQ_INT(fx.g.status, PROV_PROTOCOL);
    UT_EQ_INT(fx.g.image_len, 0);
    /* An image type with nothing in it. */
    run_one(&fx, &rq, (struct utfake_canned){.ctype = "image/png", .body = ""});
    UT_EQ_INT(fx.g.status, PROV_PROTOCOL);
    fx_end(&fx);
}

static void test_timeout_and_shutdown(void)
{
    struct fx fx;
    fx_init(&fx);
    struct st_req rq = {.base_url = base_url(&fx), .api_key = KEY, .endpoint = "core", .prompt = "x",
                        .timeout_ms = 300};
    run_one(&fx, &rq, (struct utfake_canned){.hold = 1});
    UT_EQ_INT(fx.g.status, PROV_TIMEOUT);
    UT_EQ_INT(fx.g.http, 0);
    UT_ASSERT(fx.g.msg[0]);
    utfake_release(&fx.f);
    rq.timeout_ms = 0;
    fx.f.cn.hold = 1;
    UT_EQ_INT(st_generate(fx.f.c, &rq, on_st, &fx), 0);
    UTLOOP_WAIT_FOR(&fx.f.ul, fx.f.held != NULL, WAIT_MS);
    utfake_shutdown(&fx.f);
    UTLOOP_WAIT_FOR(&fx.f.ul, fx.calls == 2, WAIT_MS);
    UT_EQ_INT(fx.g.status, PROV_CANCELLED);
    fx_end(&fx);
    UT_EQ_INT(fx.calls, 2);
}

static void test_invalid_args(void)
{
    struct fx fx;
    fx_init(&fx);
    struct st_req ok = {.base_url = base_url(&fx), .api_key = KEY, .endpoint = "sd3", .prompt = "x",
                        .image = IMG, .image_len = IMG_LEN, .image_type = "image/png", .strength = 0.5};
    struct st_req rq = ok;
    rq.endpoint = "core"; /* core takes no image */
    UT_EQ_INT(st_generate(fx.f.c, &rq, on_st, &fx), -EINVAL);
    rq = ok;
    rq.endpoint = "turbo";
    UT_EQ_INT(st_generate(fx.f.c, &rq, on_st, &fx), -EINVAL);
    rq.endpoint = NULL;
    UT_EQ_INT(st_generate(fx.f.c, &rq, on_st, &fx), -EINVAL);
    static const double bad_strength[] = {1.01, -0.01, NAN, INFINITY};
    for (size_t i = 0; i < 4; i++) {
        rq = ok;
        rq.strength = bad_strength[i];
        UT_EQ_INT(st_generate(fx.f.c, &rq, on_st, &fx), -EINVAL);
    }
    static const char *const bad_types[] = {"image/png\r\nX-Evil: 1", "image/png\"", "png", "image/",
                                            "/png", "image/png/x", ""};
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        rq = ok;
        rq.image_type = bad_types[i];
        UT_EQ_INT(st_generate(fx.f.c, &rq, on_st, &fx), -EINVAL);
    }
    rq = ok;
    rq.image_len = 0;
    UT_EQ_INT(st_generate(fx.f.c, &rq, on_st, &fx), -EINVAL);
    rq = ok;
    rq.prompt = "";
    UT_EQ_INT(st_generate(fx.f.c, &rq, on_st, &fx), -EINVAL);
    rq = ok;
    rq.api_key = NULL;
    UT_EQ_INT(st_generate(fx.f.c, &rq, on_st, &fx), -EINVAL);
    UT_EQ_INT(st_generate(fx.f.c, &ok, NULL, &fx), -EINVAL);
    /* Prompt length counts characters: 10000 Korean ones are fine, 10001 are not. */
    size_t n = ST_PROMPT_MAX + 1;
    char *p = mem_alloc(3 * n + 1);
    for (size_t i = 0; i < n; i++)
        memcpy(p + 3 * i, "가", 3);
    p[3 * n] = '\0';
    rq = ok;
    rq.prompt = p;
    UT_EQ_INT(st_generate(fx.f.c, &rq, on_st, &fx), -EINVAL);
    /* An image that makes the form pass Stability's 10 MiB limit. */
    size_t big = ST_MAX_BODY;
    unsigned char *img = mem_calloc(1, big);
    rq = ok;
    rq.image = img;
    rq.image_len = big;
    UT_EQ_INT(st_generate(fx.f.c, &rq, on_st, &fx), BC_ETOOBIG);
    UT_EQ_INT(fx.f.nreq, 0);
    p[3 * (n - 1)] = '\0';
    rq = ok;
    rq.prompt = p;
    run_one(&fx, &rq, PNG_OK);
    UT_EQ_INT(fx.g.status, PROV_OK);
    UT_EQ_INT(fx.f.nreq, 1);
    UT_EQ_INT(fx.calls, 1);
    fx_end(&fx);
    mem_free(p);
    mem_free(img);
}

static void test_key_never_logged(void)
{
    utlog_start("image-1", "image", NULL);
    struct fx fx;
    fx_init(&fx);
    struct st_req rq = {.base_url = base_url(&fx), .api_key = KEY, .endpoint = "core", .prompt = "x"};
    run_one(&fx, &rq,
            (struct utfake_canned){.status = 401, .ctype = "application/json",
                                   .body = "{\"name\":\"unauthorized\",\"errors\":[\"bad key " KEY "\"]}"});
    UT_EQ_INT(fx.g.status, PROV_AUTH);
    UT_EQ_STR(fx.g.msg, "unauthorized: bad key [redacted]");
    run_one(&fx, &rq, PNG_OK);
    UT_EQ_INT(fx.g.status, PROV_OK);
    fx_end(&fx);
    utfake_expect_key_hidden(utlog_text(), KEY, "STtestSECRET", "stability request");
    utlog_stop(LOG_INFO);
}

static const struct ut_case cases[] = {
    UT_CASE(test_sd3_image_to_image_form),
    UT_CASE(test_core_text_form),
    UT_CASE(test_ultra_image_and_sd3_text),
    UT_CASE(test_boundary_is_random),
    UT_CASE(test_content_filtered),
    UT_CASE(test_errors),
    UT_CASE(test_unreadable_success),
    UT_CASE(test_timeout_and_shutdown),
    UT_CASE(test_invalid_args),
    UT_CASE(test_key_never_logged),
    {0},
};

UT_MAIN(cases)
