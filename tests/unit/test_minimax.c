/* test_minimax: the MiniMax client (minimax) and the shared provider
 * vocabulary (prov) against a fake MiniMax (ut_fakehttp.h: our httpd on
 * 127.0.0.1, port 0). The fake serves every MiniMax route with one canned
 * answer and records the last request. A case makes its calls one after the
 * other, turning the loop until each callback ran (ut_loop.h fails a case
 * that waits too long), then closes client and server and lets the loop
 * finish, so the sanitizers see any leak. */
#include <errno.h>
#include <json.h>
#include <sodium.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "base/err.h"
#include "io/httpd.h"
#include "service/keypool.h"
#include "base/log.h"
#include "base/mem.h"
#include "service/minimax.h"
#include "service/prov.h"
#include "base/secret.h"
#include "base/utf8.h"
#include "ut.h"
#include "ut_fakehttp.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_sys.h"

#define WAIT_MS 10000
#define KEY "eyJhbGciOiJSUzI1NiJ9.mmTESTsecretKEY.0123456789abcdef"

/* A copy of everything a callback got. */
struct got {
    int status, code;
    long http, retry;
    char msg[PROV_MAX_MESSAGE];
    size_t nurls, nimages;
    char urls[MM_IMAGE_MAX][256];
    unsigned char *img[MM_IMAGE_MAX];
    size_t imglen[MM_IMAGE_MAX];
    int sc, fc;
    char task_id[128], state[32], file_id[128], dl_url[256], filename[64];
    int width, height;
    long long bytes;
};

struct fx {
    struct utfake f; /* the fake MiniMax: every route answers f.cn */
    char query[256]; /* task_id or file_id of the last request */
    int calls;
    struct got g;
};

/* ---- the fake --------------------------------------------------------------- */

static void h_any(struct httpd_req *r, void *arg)
{
    struct fx *fx = arg;
    const char *q = httpd_req_query(r, "task_id");
    if (!q)
        q = httpd_req_query(r, "file_id");
    snprintf(fx->query, sizeof fx->query, "%s", q ? q : "");
    utfake_answer(&fx->f, r, &fx->f.cn);
}

static void fx_init(struct fx *fx)
{
    memset(fx, 0, sizeof *fx);
    utfake_init(&fx->f, "test_minimax", "application/json");
    utfake_route(&fx->f, "POST", "/v1/image_generation", h_any, fx);
    utfake_route(&fx->f, "POST", "/v1/video_generation", h_any, fx);
    utfake_route(&fx->f, "GET", "/v1/query/video_generation", h_any, fx);
    utfake_route(&fx->f, "GET", "/v1/files/retrieve", h_any, fx);
}

static void got_clear(struct got *g)
{
    for (size_t i = 0; i < MM_IMAGE_MAX; i++)
        mem_free(g->img[i]);
    memset(g, 0, sizeof *g);
}

/* Close everything, let the loop finish, check nothing is left. */
static void fx_end(struct fx *fx)
{
    utfake_end(&fx->f);
    utfake_free(&fx->f);
    got_clear(&fx->g);
}

static const char *base_url(const struct fx *fx)
{
    return utfake_url(&fx->f, "/");
}

static void cpy(char *dst, size_t n, const char *s)
{
    UT_ASSERT(s); /* strings are never NULL */
    snprintf(dst, n, "%s", s);
}

static void on_mm(const struct mm_result *r, void *arg)
{
    struct fx *fx = arg;
    fx->calls++;
    struct got *g = &fx->g;
    got_clear(g);
    g->status = r->status;
    g->code = r->code;
    g->http = r->http_status;
    g->retry = r->retry_after_ms;
    cpy(g->msg, sizeof g->msg, r->message);
    UT_ASSERT(r->nurls <= MM_IMAGE_MAX && r->nimages <= MM_IMAGE_MAX);
    UT_ASSERT((r->urls != NULL) == (r->nurls > 0));
    UT_ASSERT((r->images != NULL) == (r->nimages > 0));
    g->nurls = r->nurls;
    for (size_t i = 0; i < r->nurls; i++)
        cpy(g->urls[i], sizeof g->urls[i], r->urls[i]);
    g->nimages = r->nimages;
    for (size_t i = 0; i < r->nimages; i++) {
        g->img[i] = mem_alloc(r->images[i].len);
        memcpy(g->img[i], r->images[i].data, r->images[i].len);
        g->imglen[i] = r->images[i].len;
    }
    g->sc = r->success_count;
    g->fc = r->failed_count;
    cpy(g->task_id, sizeof g->task_id, r->task_id);
    cpy(g->state, sizeof g->state, r->state);
    cpy(g->file_id, sizeof g->file_id, r->file_id);
    cpy(g->dl_url, sizeof g->dl_url, r->download_url);
    cpy(g->filename, sizeof g->filename, r->filename);
    g->width = r->width;
    g->height = r->height;
    g->bytes = r->bytes;
}

/* Turn the loop until the callback ran n times in all. */
static void wait_calls(struct fx *fx, int n)
{
    UTLOOP_WAIT_FOR(&fx->f.ul, fx->calls >= n, WAIT_MS);
    UT_EQ_INT(fx->calls, n);
}

/* ---- starting calls ------------------------------------------------------------ */

enum op { IMAGE, IMAGE_B64, SUBMIT, QUERY, RETRIEVE };

static void start(struct fx *fx, enum op op, long timeout_ms)
{
    int before = fx->calls, rc;
    switch (op) {
    case IMAGE:
    case IMAGE_B64:
        rc = mm_image(fx->f.c,
                      &(struct mm_image_req){.base_url = base_url(fx), .api_key = KEY,
                                             .prompt = "고양이 a cat", .n = 1,
                                             .base64 = op == IMAGE_B64, .timeout_ms = timeout_ms},
                      on_mm, fx);
        break;
    case SUBMIT:
        rc = mm_video_submit(fx->f.c,
                             &(struct mm_video_req){.base_url = base_url(fx), .api_key = KEY,
                                                    .model = "MiniMax-Hailuo-02", .prompt = "waves",
                                                    .timeout_ms = timeout_ms},
                             on_mm, fx);
        break;
    case QUERY:
        rc = mm_video_query(fx->f.c, base_url(fx), KEY, "task-1", timeout_ms, on_mm, fx);
        break;
    default:
        rc = mm_file_retrieve(fx->f.c, base_url(fx), KEY, "file-1", timeout_ms, on_mm, fx);
        break;
    }
    UT_EQ_INT(rc, 0);
    UT_EQ_INT(fx->calls, before); /* never synchronously */
}

/* One call of op answered with cn; the result is left in fx->g. */
static void one(struct fx *fx, enum op op, struct utfake_canned cn)
{
    fx->f.cn = cn;
    start(fx, op, 0);
    wait_calls(fx, fx->calls + 1);
}

static struct json_object *jget(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(o, k, &v))
        UT_FAIL("no field %s", k);
    return v;
}

static int jhas(struct json_object *o, const char *k)
{
    return json_object_object_get_ex(o, k, NULL);
}

#define OK_RESP "\"base_resp\":{\"status_code\":0,\"status_msg\":\"success\"}"

/* ---- images ---------------------------------------------------------------------- */

static void test_image_urls(void)
{
    struct fx fx;
    fx_init(&fx);
    fx.f.cn.body =
        "{\"id\":\"03ff3cd0\",\"data\":{\"image_urls\":[\"https://cdn.example/a.png?sig=1&x=2\","
        "\"HTTP://cdn.example/b.jpeg\"]},\"metadata\":{\"failed_count\":\"0\","
        "\"success_count\":\"2\"}," OK_RESP "}";
    const char *prompt = "한국어 프롬프트 \"quoted\" \\ /";
    UT_EQ_INT(mm_image(fx.f.c,
                       &(struct mm_image_req){.base_url = base_url(&fx), .api_key = KEY,
                                              .prompt = prompt, .aspect_ratio = "16:9", .n = 2},
                       on_mm, &fx),
              0);
    wait_calls(&fx, 1);
    UT_EQ_STR(fx.f.method, "POST");
    UT_EQ_STR(fx.f.path, "/v1/image_generation"); /* the base's trailing '/' is handled */
    UT_EQ_STR(fx.f.auth, "Bearer " KEY);
    struct json_object *o = json_tokener_parse(fx.f.body);
    UT_ASSERT(o);
    UT_EQ_STR(json_object_get_string(jget(o, "model")), "image-01");
    UT_EQ_STR(json_object_get_string(jget(o, "prompt")), prompt);
    UT_EQ_STR(json_object_get_string(jget(o, "aspect_ratio")), "16:9");
    UT_EQ_INT(json_object_get_int(jget(o, "n")), 2);
    UT_EQ_STR(json_object_get_string(jget(o, "response_format")), "url");
    json_object_put(o);
    UT_EQ_INT(fx.g.status, PROV_OK);
    UT_EQ_INT(fx.g.code, 0);
    UT_EQ_INT(fx.g.http, 200);
    UT_EQ_INT(fx.g.retry, -1);
    UT_EQ_STR(fx.g.msg, "");
    UT_EQ_INT(fx.g.nurls, 2);
    UT_EQ_STR(fx.g.urls[0], "https://cdn.example/a.png?sig=1&x=2");
    UT_EQ_STR(fx.g.urls[1], "HTTP://cdn.example/b.jpeg");
    UT_EQ_INT(fx.g.nimages, 0);
    UT_EQ_INT(fx.g.sc, 2);
    UT_EQ_INT(fx.g.fc, 0);
    UT_EQ_STR(fx.g.task_id, "");
    UT_EQ_STR(fx.g.state, "");
    fx_end(&fx);
}

static void test_image_defaults_sent(void)
{
    struct fx fx;
    fx_init(&fx);
    fx.f.cn.body = "{\"data\":{\"image_urls\":[\"https://x.example/1\"]}," OK_RESP "}";
    start(&fx, IMAGE_B64, 0);
    wait_calls(&fx, 1);
    struct json_object *o = json_tokener_parse(fx.f.body);
    UT_EQ_STR(json_object_get_string(jget(o, "aspect_ratio")), "1:1");
    UT_EQ_INT(json_object_get_int(jget(o, "n")), 1);
    UT_EQ_STR(json_object_get_string(jget(o, "response_format")), "base64");
    json_object_put(o);
    UT_EQ_INT(fx.g.status, PROV_OK);
    UT_EQ_INT(fx.g.sc, 0); /* no metadata */
    fx_end(&fx);
}

static char *b64(const unsigned char *bin, size_t len, int variant)
{
    size_t n = sodium_base64_encoded_len(len, variant);
    char *s = mem_alloc(n);
    sodium_bin2base64(s, n, bin, len, variant);
    return s;
}

static void test_image_base64_decoded(void)
{
    /* Binary images with NUL, CR LF and "--" in them; the second is sent
     * without padding, the third as a data: URL. */
    static const unsigned char png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR--\r\n--\xff\x00\x7f";
    unsigned char big[3001];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 7 + 3);
    char *a = b64(png, sizeof png - 1, sodium_base64_VARIANT_ORIGINAL);
    char *b = b64(big, sizeof big, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    char *c = b64((const unsigned char *)"GIF89a", 6, sodium_base64_VARIANT_ORIGINAL);
    struct buf body;
    buf_init(&body, 1 << 20);
    buf_printf(&body,
               "{\"data\":{\"image_base64\":[\"%s\",\"%s\",\"data:image/gif;base64,%s\"]},"
               "\"metadata\":{\"success_count\":3,\"failed_count\":1}," OK_RESP "}",
               a, b, c);
    struct fx fx;
    fx_init(&fx);
    one(&fx, IMAGE_B64, (struct utfake_canned){.body = buf_str(&body)});
    UT_EQ_INT(fx.g.status, PROV_OK);
    UT_EQ_INT(fx.g.nimages, 3);
    UT_EQ_INT(fx.g.nurls, 0);
    UT_EQ_INT(fx.g.imglen[0], sizeof png - 1);
    UT_ASSERT(!memcmp(fx.g.img[0], png, sizeof png - 1));
    UT_EQ_INT(fx.g.imglen[1], sizeof big);
    UT_ASSERT(!memcmp(fx.g.img[1], big, sizeof big));
    UT_EQ_INT(fx.g.imglen[2], 6);
    UT_ASSERT(!memcmp(fx.g.img[2], "GIF89a", 6));
    UT_EQ_INT(fx.g.sc, 3);
    UT_EQ_INT(fx.g.fc, 1);
    fx_end(&fx);
    buf_free(&body);
    mem_free(a);
    mem_free(b);
    mem_free(c);
}

/* Nine images of 600 KiB each: a base64 answer of about 7 MiB is fine. */
static void test_image_base64_nine_large(void)
{
    size_t n = 600 * 1024;
    unsigned char *img = mem_alloc(n);
    for (size_t i = 0; i < n; i++)
        img[i] = (unsigned char)(i ^ (i >> 8));
    char *s = b64(img, n, sodium_base64_VARIANT_ORIGINAL);
    struct buf body;
    buf_init(&body, 16u << 20);
    buf_puts(&body, "{\"data\":{\"image_base64\":[");
    for (int i = 0; i < 10; i++) /* one more than MM_IMAGE_MAX: ignored */
        buf_printf(&body, "%s\"%s\"", i ? "," : "", s);
    buf_puts(&body, "]}," OK_RESP "}");
    struct fx fx;
    fx_init(&fx);
    one(&fx, IMAGE_B64, (struct utfake_canned){.body = buf_str(&body)});
    UT_EQ_INT(fx.g.status, PROV_OK);
    UT_EQ_INT(fx.g.nimages, MM_IMAGE_MAX);
    for (size_t i = 0; i < MM_IMAGE_MAX; i++)
        UT_ASSERT(fx.g.imglen[i] == n && !memcmp(fx.g.img[i], img, n));
    fx_end(&fx);
    buf_free(&body);
    mem_free(s);
    mem_free(img);
}

static void test_image_invalid_urls_dropped(void)
{
    struct fx fx;
    fx_init(&fx);
    one(&fx, IMAGE,
        (struct utfake_canned){
            .body = "{\"data\":{\"image_urls\":[\"ftp://x.example/a.png\",\"javascript:alert(1)\","
                    "\"https://ok.example/c.png\",\"https:///nohost\",\"http://spa ce/x\","
                    "\"http://tab\\t.example/\",42,null,\"//cdn.example/rel.png\"]}," OK_RESP "}"});
    UT_EQ_INT(fx.g.status, PROV_OK);
    UT_EQ_INT(fx.g.nurls, 1);
    UT_EQ_STR(fx.g.urls[0], "https://ok.example/c.png");
    /* Nothing valid at all: the answer is unusable. */
    one(&fx, IMAGE,
        (struct utfake_canned){
            .body = "{\"data\":{\"image_urls\":[\"file:///etc/passwd\"]},"
                    "\"metadata\":{\"success_count\":\"1\",\"failed_count\":\"0\"}," OK_RESP "}"});
    UT_EQ_INT(fx.g.status, PROV_PROTOCOL);
    UT_EQ_INT(fx.g.nurls, 0);
    UT_ASSERT(fx.g.msg[0]);
    fx_end(&fx);
}

static void test_image_unreadable_answers(void)
{
    static const char *const bodies[] = {
        "{\"data\":{\"image_base64\":[\"%%%not base64%%%\"]}," OK_RESP "}",
        "{\"data\":{\"image_base64\":[\"\"]}," OK_RESP "}",
        "{\"data\":{}," OK_RESP "}",
        "{\"data\":null," OK_RESP "}",
        "{" OK_RESP "}",
        "not json at all",
        "[1,2,3]",
        "{\"data\":{\"image_urls\":[\"https://x.example/a\"]}," OK_RESP "} trailing",
        "",
    };
    struct fx fx;
    fx_init(&fx);
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        one(&fx, IMAGE_B64, (struct utfake_canned){.body = bodies[i]});
        if (fx.g.status != PROV_PROTOCOL)
            UT_FAIL("body %zu: status %s, want protocol", i, prov_status_name(fx.g.status));
        UT_EQ_INT(fx.g.http, 200);
        UT_EQ_INT(fx.g.nimages + fx.g.nurls, 0);
        UT_ASSERT(fx.g.msg[0]);
    }
    fx_end(&fx);
}

/* A URL-mode answer over MM_MAX_RESPONSE is not read into memory. */
static void test_answer_over_cap(void)
{
    struct buf body;
    buf_init(&body, 4u << 20);
    buf_puts(&body, "{\"pad\":\"");
    while (body.len < MM_MAX_RESPONSE + 100)
        buf_puts(&body, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    buf_puts(&body, "\"," OK_RESP "}");
    struct fx fx;
    fx_init(&fx);
    one(&fx, IMAGE, (struct utfake_canned){.body = buf_str(&body)});
    UT_EQ_INT(fx.g.status, PROV_PROTOCOL);
    fx_end(&fx);
    buf_free(&body);
}

/* ---- classification ----------------------------------------------------------- */

static const struct {
    int code, status;
} CODES[] = {
    {1000, PROV_SERVER},      {1001, PROV_SERVER},      {1002, PROV_RATE},
    {1004, PROV_AUTH},        {1008, PROV_QUOTA},       {1013, PROV_SERVER},
    {1024, PROV_SERVER},      {1026, PROV_REFUSED},     {1027, PROV_FILTERED},
    {1033, PROV_SERVER},      {1039, PROV_BAD_REQUEST}, {1041, PROV_RATE},
    {2013, PROV_BAD_REQUEST}, {2045, PROV_RATE},        {2049, PROV_AUTH},
    {1234, PROV_SERVER},      {-1, PROV_SERVER},
};

static void test_base_resp_codes(void)
{
    static const enum op ops[] = {IMAGE, IMAGE_B64, SUBMIT, QUERY, RETRIEVE};
    struct fx fx;
    fx_init(&fx);
    char body[256];
    for (size_t i = 0; i < sizeof CODES / sizeof CODES[0]; i++) {
        /* Every op reads base_resp, even next to a payload that looks fine. */
        enum op op = ops[i % 5];
        snprintf(body, sizeof body,
                 "{\"task_id\":\"t\",\"status\":\"Success\",\"file_id\":\"f\",\"data\":{\"image_urls\":"
                 "[\"https://x.example/a\"]},\"base_resp\":{\"status_code\":%d,\"status_msg\":"
                 "\"msg %d 한글\"}}",
                 CODES[i].code, CODES[i].code);
        one(&fx, op, (struct utfake_canned){.body = body});
        if (fx.g.status != CODES[i].status)
            UT_FAIL("code %d (op %d): %s, want %s", CODES[i].code, (int)op,
                    prov_status_name(fx.g.status), prov_status_name(CODES[i].status));
        UT_EQ_INT(fx.g.code, CODES[i].code);
        UT_EQ_INT(fx.g.http, 200);
        char want[64];
        snprintf(want, sizeof want, "msg %d 한글", CODES[i].code);
        UT_EQ_STR(fx.g.msg, want);
        UT_EQ_INT(fx.g.nurls, 0);
        UT_EQ_STR(fx.g.task_id, "");
        UT_EQ_STR(fx.g.state, "");
        UT_EQ_INT(fx.g.retry, -1);
    }
    /* A code sent as a string counts the same. */
    one(&fx, IMAGE,
        (struct utfake_canned){
            .body = "{\"base_resp\":{\"status_code\":\"1008\",\"status_msg\":\"x\"}}"});
    UT_EQ_INT(fx.g.status, PROV_QUOTA);
    /* A rate limit reported in base_resp takes a Retry-After header along. */
    one(&fx, SUBMIT,
        (struct utfake_canned){
            .body = "{\"base_resp\":{\"status_code\":1002,\"status_msg\":\"rate limit\"}}",
            .hname = "Retry-After",
            .hval = "3"});
    UT_EQ_INT(fx.g.status, PROV_RATE);
    UT_EQ_INT(fx.g.retry, 3000);
    fx_end(&fx);
}

static void test_http_errors(void)
{
    static const struct utfake_err T[] = {
        {401, "{\"base_resp\":{\"status_code\":1004,\"status_msg\":\"login fail\"}}", NULL, NULL,
         PROV_AUTH, -1, "login fail"},
        {429, "", "Retry-After", "7", PROV_RATE, 7000, "HTTP 429"},
        {429, "{}", "Retry-After", "1.5", PROV_RATE, 1500, "HTTP 429"},
        {429, "", "Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT", PROV_RATE, -1, "HTTP 429"},
        {429, "", NULL, NULL, PROV_RATE, -1, "HTTP 429"},
        {500, "<html>oops</html>", NULL, NULL, PROV_SERVER, -1, "HTTP 500"},
        {503, "{\"base_resp\":{\"status_code\":1033,\"status_msg\":\"system error\"}}", "Retry-After",
         "5", PROV_SERVER, -1, "system error"},
        {400, "{}", NULL, NULL, PROV_BAD_REQUEST, -1, "HTTP 400"},
        {404, "not found", NULL, NULL, PROV_BAD_REQUEST, -1, "HTTP 404"},
        {413, "", NULL, NULL, PROV_BAD_REQUEST, -1, "HTTP 413"},
        {302, "", "Location", "https://elsewhere.example/", PROV_PROTOCOL, -1, "HTTP 302"},
    };
    struct fx fx;
    fx_init(&fx);
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        one(&fx, i % 2 ? QUERY : IMAGE, utfake_err_answer(&T[i], NULL));
        utfake_expect_err(&T[i], prov_status_name, fx.g.status, fx.g.http, fx.g.retry, fx.g.msg);
    }
    fx_end(&fx);
}

static void test_timeout(void)
{
    struct fx fx;
    fx_init(&fx);
    fx.f.cn.hold = 1;
    start(&fx, SUBMIT, 300);
    wait_calls(&fx, 1);
    UT_EQ_INT(fx.g.status, PROV_TIMEOUT);
    UT_EQ_INT(prov_keypool_outcome(fx.g.status), KEYPOOL_TIMEOUT);
    UT_ASSERT(fx.g.msg[0]);
    fx_end(&fx);
}

static void test_network_error(void)
{
    struct fx fx;
    fx_init(&fx);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", utsys_free_port());
    UT_EQ_INT(mm_video_query(fx.f.c, url, KEY, "t", 0, on_mm, &fx), 0);
    wait_calls(&fx, 1);
    UT_EQ_INT(fx.g.status, PROV_NETWORK);
    UT_EQ_INT(fx.g.http, 0);
    UT_EQ_INT(prov_keypool_outcome(fx.g.status), KEYPOOL_SERVER_ERROR);
    fx_end(&fx);
}

static void test_shutdown_is_cancelled(void)
{
    struct fx fx;
    fx_init(&fx);
    fx.f.cn.hold = 1;
    start(&fx, IMAGE, 0);
    UTLOOP_WAIT_FOR(&fx.f.ul, fx.f.held != NULL, WAIT_MS);
    utfake_shutdown(&fx.f);
    UT_EQ_INT(fx.calls, 0);
    wait_calls(&fx, 1);
    UT_EQ_INT(fx.g.status, PROV_CANCELLED);
    UT_EQ_INT(prov_keypool_outcome(fx.g.status), KEYPOOL_OK);
    fx_end(&fx);
    UT_EQ_INT(fx.calls, 1);
}

/* ---- argument checks ------------------------------------------------------------ */

static char *repeat(const char *unit, size_t n)
{
    size_t u = strlen(unit);
    char *s = mem_alloc(u * n + 1);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * u, unit, u);
    s[u * n] = '\0';
    return s;
}

static void test_prompt_limits_and_args(void)
{
    struct fx fx;
    fx_init(&fx);
    fx.f.cn.body =
        "{\"task_id\":\"t1\",\"data\":{\"image_urls\":[\"https://x.example/a\"]}," OK_RESP "}";
    char *p1500 = repeat("가", MM_IMAGE_PROMPT_MAX), *p1501 = repeat("가", MM_IMAGE_PROMPT_MAX + 1);
    char *e1500 = repeat("🌏", MM_IMAGE_PROMPT_MAX);
    char *p2000 = repeat("é", MM_VIDEO_PROMPT_MAX), *p2001 = repeat("a", MM_VIDEO_PROMPT_MAX + 1);
    struct mm_image_req ir = {.base_url = base_url(&fx), .api_key = KEY, .prompt = p1501, .n = 1};
    UT_EQ_INT(mm_image(fx.f.c, &ir, on_mm, &fx), -EINVAL);
    ir.prompt = p1500; /* 4500 bytes, 1500 characters */
    UT_EQ_INT(mm_image(fx.f.c, &ir, on_mm, &fx), 0);
    wait_calls(&fx, 1);
    UT_EQ_INT(fx.g.status, PROV_OK);
    ir.prompt = e1500; /* 6000 bytes */
    UT_EQ_INT(mm_image(fx.f.c, &ir, on_mm, &fx), 0);
    wait_calls(&fx, 2);
    ir.n = 0;
    UT_EQ_INT(mm_image(fx.f.c, &ir, on_mm, &fx), -EINVAL);
    ir.n = MM_IMAGE_MAX + 1;
    UT_EQ_INT(mm_image(fx.f.c, &ir, on_mm, &fx), -EINVAL);
    ir.n = 1;
    ir.api_key = "";
    UT_EQ_INT(mm_image(fx.f.c, &ir, on_mm, &fx), -EINVAL);
    ir.api_key = KEY;
    ir.prompt = "";
    UT_EQ_INT(mm_image(fx.f.c, &ir, on_mm, &fx), -EINVAL);
    ir.prompt = "x";
    UT_EQ_INT(mm_image(fx.f.c, &ir, NULL, &fx), -EINVAL);
    ir.base_url = NULL;
    UT_EQ_INT(mm_image(fx.f.c, &ir, on_mm, &fx), -EINVAL);

    struct mm_video_req vr = {.base_url = base_url(&fx), .api_key = KEY, .model = "T2V-01",
                              .prompt = p2001};
    UT_EQ_INT(mm_video_submit(fx.f.c, &vr, on_mm, &fx), -EINVAL);
    vr.prompt = p2000;
    UT_EQ_INT(mm_video_submit(fx.f.c, &vr, on_mm, &fx), 0);
    wait_calls(&fx, 3);
    UT_EQ_STR(fx.g.task_id, "t1");
    vr.model = NULL;
    UT_EQ_INT(mm_video_submit(fx.f.c, &vr, on_mm, &fx), -EINVAL);
    UT_EQ_INT(mm_video_query(fx.f.c, base_url(&fx), KEY, "", 0, on_mm, &fx), -EINVAL);
    UT_EQ_INT(mm_video_query(fx.f.c, base_url(&fx), NULL, "t", 0, on_mm, &fx), -EINVAL);
    UT_EQ_INT(mm_file_retrieve(fx.f.c, base_url(&fx), KEY, NULL, 0, on_mm, &fx), -EINVAL);
    UT_EQ_INT(fx.f.nreq, 3); /* nothing refused was sent */
    utloop_run_for(&fx.f.ul, 50);
    UT_EQ_INT(fx.calls, 3); /* and nothing refused called back */
    fx_end(&fx);
    mem_free(p1500);
    mem_free(p1501);
    mem_free(e1500);
    mem_free(p2000);
    mem_free(p2001);
}

/* ---- video ------------------------------------------------------------------- */

static void test_video_submit(void)
{
    struct fx fx;
    fx_init(&fx);
    fx.f.cn.body = "{\"task_id\":\"106916112212032\"," OK_RESP "}";
    struct mm_video_req vr = {.base_url = base_url(&fx), .api_key = KEY, .model = "MiniMax-Hailuo-02",
                              .prompt = "파도가 치는 해변", .duration = 6, .resolution = "768P",
                              .first_frame_image = "https://img.example/first.png"};
    UT_EQ_INT(mm_video_submit(fx.f.c, &vr, on_mm, &fx), 0);
    wait_calls(&fx, 1);
    UT_EQ_STR(fx.f.method, "POST");
    UT_EQ_STR(fx.f.path, "/v1/video_generation");
    UT_EQ_STR(fx.f.auth, "Bearer " KEY);
    struct json_object *o = json_tokener_parse(fx.f.body);
    UT_ASSERT(o);
    UT_EQ_STR(json_object_get_string(jget(o, "model")), "MiniMax-Hailuo-02");
    UT_EQ_STR(json_object_get_string(jget(o, "prompt")), "파도가 치는 해변");
    UT_EQ_INT(json_object_get_int(jget(o, "duration")), 6);
    UT_EQ_STR(json_object_get_string(jget(o, "resolution")), "768P");
    UT_EQ_STR(json_object_get_string(jget(o, "first_frame_image")), "https://img.example/first.png");
    json_object_put(o);
    UT_EQ_INT(fx.g.status, PROV_OK);
    UT_EQ_STR(fx.g.task_id, "106916112212032");

    /* Optional fields are left out; a numeric task id is taken as text. */
    vr.duration = 0;
    vr.resolution = NULL;
    vr.first_frame_image = NULL;
    fx.f.cn.body = "{\"task_id\":106916112212033," OK_RESP "}";
    UT_EQ_INT(mm_video_submit(fx.f.c, &vr, on_mm, &fx), 0);
    wait_calls(&fx, 2);
    o = json_tokener_parse(fx.f.body);
    UT_ASSERT(!jhas(o, "duration") && !jhas(o, "resolution") && !jhas(o, "first_frame_image"));
    json_object_put(o);
    UT_EQ_STR(fx.g.task_id, "106916112212033");

    /* No task id (missing, empty, wrong type) although base_resp says 0. */
    static const char *const bad[] = {"{" OK_RESP "}", "{\"task_id\":\"\"," OK_RESP "}",
                                      "{\"task_id\":{\"a\":1}," OK_RESP "}"};
    for (size_t i = 0; i < 3; i++) {
        one(&fx, SUBMIT, (struct utfake_canned){.body = bad[i]});
        UT_EQ_INT(fx.g.status, PROV_PROTOCOL);
        UT_EQ_STR(fx.g.task_id, "");
    }
    fx_end(&fx);
}

static void test_video_query(void)
{
    struct fx fx;
    fx_init(&fx);
    /* The task id goes out percent-encoded and arrives intact. */
    fx.f.cn.body =
        "{\"task_id\":\"t/1 2&x=é\",\"status\":\"Processing\",\"file_id\":\"\"," OK_RESP "}";
    UT_EQ_INT(mm_video_query(fx.f.c, base_url(&fx), KEY, "t/1 2&x=é", 0, on_mm, &fx), 0);
    wait_calls(&fx, 1);
    UT_EQ_STR(fx.f.method, "GET");
    UT_EQ_STR(fx.f.path, "/v1/query/video_generation");
    UT_EQ_STR(fx.query, "t/1 2&x=é");
    UT_EQ_STR(fx.f.auth, "Bearer " KEY);
    UT_EQ_INT(fx.g.status, PROV_OK);
    UT_EQ_STR(fx.g.state, "Processing");
    UT_EQ_STR(fx.g.file_id, "");
    UT_EQ_INT(fx.g.width, 0);

    static const struct {
        const char *body;
        int status;
        const char *state, *file_id;
        int w, h;
    } T[] = {
        {"{\"status\":\"Queueing\"," OK_RESP "}", PROV_OK, "Queueing", "", 0, 0},
        {"{\"status\":\"Preparing\"," OK_RESP "}", PROV_OK, "Preparing", "", 0, 0},
        {"{\"task_id\":\"t\",\"status\":\"Success\",\"file_id\":\"205258526306433\","
         "\"video_width\":1366,\"video_height\":768," OK_RESP "}",
         PROV_OK, "Success", "205258526306433", 1366, 768},
        {"{\"status\":\"Success\",\"file_id\":205258526306434," OK_RESP "}", PROV_OK, "Success",
         "205258526306434", 0, 0},
        {"{\"status\":\"Fail\",\"file_id\":\"\"," OK_RESP "}", PROV_OK, "Fail", "", 0, 0},
        {"{\"status\":\"Success\"," OK_RESP "}", PROV_PROTOCOL, "Success", "", 0, 0},
        {"{\"status\":\"Success\",\"file_id\":\"\"," OK_RESP "}", PROV_PROTOCOL, "Success", "", 0, 0},
        {"{\"task_id\":\"t\"," OK_RESP "}", PROV_PROTOCOL, "", "", 0, 0},
        {"{\"status\":null," OK_RESP "}", PROV_PROTOCOL, "", "", 0, 0},
        {"{\"status\":\"Fail\",\"base_resp\":{\"status_code\":1026,\"status_msg\":\"sensitive\"}}",
         PROV_REFUSED, "", "", 0, 0},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        one(&fx, QUERY, (struct utfake_canned){.body = T[i].body});
        if (fx.g.status != T[i].status)
            UT_FAIL("answer %zu: %s, want %s", i, prov_status_name(fx.g.status),
                    prov_status_name(T[i].status));
        UT_EQ_STR(fx.query, "task-1");
        UT_EQ_STR(fx.g.state, T[i].state);
        UT_EQ_STR(fx.g.file_id, T[i].file_id);
        UT_EQ_INT(fx.g.width, T[i].w);
        UT_EQ_INT(fx.g.height, T[i].h);
    }
    fx_end(&fx);
}

static void test_file_retrieve(void)
{
    struct fx fx;
    fx_init(&fx);
    one(&fx, RETRIEVE,
        (struct utfake_canned){
            .body = "{\"file\":{\"file_id\":205258526306433,\"bytes\":5896337,"
                    "\"created_at\":1700469398,\"filename\":\"output.mp4\",\"purpose\":"
                    "\"video_generation\",\"download_url\":"
                    "\"https://public-cdn.example/v/output.mp4?Expires=1&Signature=abc\"}," OK_RESP
                    "}"});
    UT_EQ_STR(fx.f.method, "GET");
    UT_EQ_STR(fx.f.path, "/v1/files/retrieve");
    UT_EQ_STR(fx.query, "file-1");
    UT_EQ_INT(fx.g.status, PROV_OK);
    UT_EQ_STR(fx.g.file_id, "205258526306433");
    UT_EQ_INT(fx.g.bytes, 5896337);
    UT_EQ_STR(fx.g.filename, "output.mp4");
    UT_EQ_STR(fx.g.dl_url, "https://public-cdn.example/v/output.mp4?Expires=1&Signature=abc");

    /* Only the URL is required. */
    one(&fx, RETRIEVE,
        (struct utfake_canned){
            .body = "{\"file\":{\"download_url\":\"http://x.example/f\"}," OK_RESP "}"});
    UT_EQ_INT(fx.g.status, PROV_OK);
    UT_EQ_INT(fx.g.bytes, 0);
    UT_EQ_STR(fx.g.filename, "");
    UT_EQ_STR(fx.g.file_id, "");

    static const char *const bad[] = {
        "{" OK_RESP "}",
        "{\"file\":null," OK_RESP "}",
        "{\"file\":{\"file_id\":1,\"bytes\":10}," OK_RESP "}",
        "{\"file\":{\"download_url\":\"ftp://x.example/f\"}," OK_RESP "}",
        "{\"file\":{\"download_url\":\"\"}," OK_RESP "}",
        "{\"file\":{\"download_url\":7}," OK_RESP "}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        one(&fx, RETRIEVE, (struct utfake_canned){.body = bad[i]});
        if (fx.g.status != PROV_PROTOCOL)
            UT_FAIL("answer %zu: %s, want protocol", i, prov_status_name(fx.g.status));
        UT_EQ_STR(fx.g.dl_url, "");
    }
    fx_end(&fx);
}

/* ---- messages and keys ---------------------------------------------------------- */

static void test_message_cut_and_cleaned(void)
{
    char *long_ko = repeat("가", 600);
    struct buf body;
    buf_init(&body, 1 << 16);
    buf_printf(&body, "{\"base_resp\":{\"status_code\":2013,\"status_msg\":\"bad\\r\\nline %s\"}}", long_ko);
    struct fx fx;
    fx_init(&fx);
    one(&fx, IMAGE, (struct utfake_canned){.body = buf_str(&body)});
    UT_EQ_INT(fx.g.status, PROV_BAD_REQUEST);
    UT_ASSERT(strlen(fx.g.msg) < PROV_MAX_MESSAGE);
    UT_ASSERT(strlen(fx.g.msg) > PROV_MAX_MESSAGE - 8);
    UT_ASSERT(utf8_valid(fx.g.msg, strlen(fx.g.msg))); /* cut between characters */
    UT_ASSERT(!strncmp(fx.g.msg, "bad  line 가가", strlen("bad  line 가가")));
    fx_end(&fx);
    buf_free(&body);
    mem_free(long_ko);
}

static void test_key_never_logged(void)
{
    utlog_start("image-1", "image", NULL);
    struct fx fx;
    fx_init(&fx);
    /* The provider echoes the key back: it must come out nowhere. */
    one(&fx, IMAGE,
        (struct utfake_canned){
            .status = 401,
            .body = "{\"base_resp\":{\"status_code\":1004,\"status_msg\":\"invalid key " KEY
                    " (Bearer " KEY ")\"}}"});
    UT_EQ_INT(fx.g.status, PROV_AUTH);
    UT_EQ_INT(prov_keypool_outcome(fx.g.status), KEYPOOL_AUTH);
    UT_NOT_CONTAINS(fx.g.msg, "mmTESTsecretKEY");
    UT_EQ_STR(fx.g.msg, "invalid key [redacted] (Bearer [redacted])");
    one(&fx, IMAGE,
        (struct utfake_canned){.body = "{\"base_resp\":{\"status_code\":2049,\"status_msg\":\"" KEY
                                       "\"}}"});
    UT_EQ_INT(fx.g.status, PROV_AUTH);
    UT_EQ_STR(fx.g.msg, "[redacted]");
    one(&fx, QUERY, (struct utfake_canned){.body = "{\"status\":\"Processing\"," OK_RESP "}"});
    UT_EQ_INT(fx.g.status, PROV_OK);
    fx_end(&fx);
    utfake_expect_key_hidden(utlog_text(), KEY, "mmTESTsecretKEY", "minimax request");
    utlog_stop(LOG_INFO);
}

/* ---- prov -------------------------------------------------------------------------- */

static void test_prov_names_and_outcomes(void)
{
    static const struct {
        int status;
        const char *name;
        enum keypool_outcome out;
    } T[] = {
        {PROV_OK, "ok", KEYPOOL_OK},
        {PROV_AUTH, "auth", KEYPOOL_AUTH},
        {PROV_QUOTA, "quota", KEYPOOL_QUOTA},
        {PROV_RATE, "rate", KEYPOOL_RATE_LIMITED},
        {PROV_SERVER, "server", KEYPOOL_SERVER_ERROR},
        {PROV_TIMEOUT, "timeout", KEYPOOL_TIMEOUT},
        {PROV_NETWORK, "network", KEYPOOL_SERVER_ERROR},
        {PROV_BAD_REQUEST, "bad_request", KEYPOOL_OK},
        {PROV_REFUSED, "refused", KEYPOOL_OK},
        {PROV_FILTERED, "filtered", KEYPOOL_OK},
        {PROV_PROTOCOL, "protocol", KEYPOOL_OK},
        {PROV_CANCELLED, "cancelled", KEYPOOL_OK},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        UT_EQ_STR(prov_status_name(T[i].status), T[i].name);
        UT_EQ_INT(prov_keypool_outcome(T[i].status), T[i].out);
    }
    UT_EQ_STR(prov_status_name(-1), "unknown");
    UT_EQ_STR(prov_status_name(PROV_CANCELLED + 1), "unknown");
    UT_EQ_INT(prov_keypool_outcome(99), KEYPOOL_OK);
}

static void test_prov_helpers(void)
{
    UT_EQ_INT(prov__retry_after_ms("20"), 20000);
    UT_EQ_INT(prov__retry_after_ms(" 0.25 "), 250);
    UT_EQ_INT(prov__retry_after_ms("0"), 0);
    UT_EQ_INT(prov__retry_after_ms("1.0005"), 1001);
    UT_EQ_INT(prov__retry_after_ms("99999999999999999999"), 24L * 3600 * 1000);
    UT_EQ_INT(prov__retry_after_ms("Fri, 31 Dec 1999 23:59:59 GMT"), -1);
    UT_EQ_INT(prov__retry_after_ms("-1"), -1);
    UT_EQ_INT(prov__retry_after_ms("5s"), -1);
    UT_EQ_INT(prov__retry_after_ms("1."), -1);
    UT_EQ_INT(prov__retry_after_ms(""), -1);
    UT_EQ_INT(prov__retry_after_ms(NULL), -1);

    UT_ASSERT(prov__http_url("https://a.example/x?y=1", 100));
    UT_ASSERT(prov__http_url("HTTP://a", 100));
    UT_ASSERT(!prov__http_url("https://a.example/x", 10)); /* too long */
    UT_ASSERT(!prov__http_url("https://", 100));
    UT_ASSERT(!prov__http_url("http:///x", 100));
    UT_ASSERT(!prov__http_url("ftp://a", 100));
    UT_ASSERT(!prov__http_url("https://a/b c", 100));
    UT_ASSERT(!prov__http_url("https://a/\x7f", 100));
    UT_ASSERT(!prov__http_url("data:image/png;base64,AAAA", 100));
    UT_ASSERT(!prov__http_url(NULL, 100));

    UT_EQ_INT(prov__transport_status(-ETIMEDOUT), PROV_TIMEOUT);
    UT_EQ_INT(prov__transport_status(-ECONNREFUSED), PROV_NETWORK);
    UT_EQ_INT(prov__transport_status(-EHOSTUNREACH), PROV_NETWORK);
    UT_EQ_INT(prov__transport_status(BC_EHTTP), PROV_NETWORK);
    UT_EQ_INT(prov__transport_status(BC_ETOOBIG), PROV_PROTOCOL);
    UT_EQ_INT(prov__transport_status(-ECANCELED), PROV_CANCELLED);
    UT_EQ_INT(prov__transport_status(BC_ESHUTDOWN), PROV_CANCELLED);

    char out[16];
    struct secret k = {0};
    secret_set(&k, "abcdefgh12");
    const char src[] = "x abcdefgh12 \x01y";
    prov__message(out, sizeof out, src, sizeof src - 1, &k);
    UT_EQ_STR(out, "x [redacted]  y");
    prov__message(out, 8, "ab가나다", strlen("ab가나다"), NULL);
    UT_EQ_STR(out, "ab가"); /* "ab가나" would need 9 bytes */
    prov__message(out, sizeof out, "a\xff\xc3", 3, NULL);
    UT_EQ_STR(out, "a??");
    prov__message(out, sizeof out, "x\xED\xA0\x80\xC0\xAFy", 7, NULL);
    UT_EQ_STR(out, "x?????y"); /* a surrogate and an overlong '/' are not shown as text */
    secret_clear(&k);
}

static const struct ut_case cases[] = {
    UT_CASE(test_image_urls),
    UT_CASE(test_image_defaults_sent),
    UT_CASE(test_image_base64_decoded),
    UT_CASE(test_image_base64_nine_large),
    UT_CASE(test_image_invalid_urls_dropped),
    UT_CASE(test_image_unreadable_answers),
    UT_CASE(test_answer_over_cap),
    UT_CASE(test_base_resp_codes),
    UT_CASE(test_http_errors),
    UT_CASE(test_timeout),
    UT_CASE(test_network_error),
    UT_CASE(test_shutdown_is_cancelled),
    UT_CASE(test_prompt_limits_and_args),
    UT_CASE(test_video_submit),
    UT_CASE(test_video_query),
    UT_CASE(test_file_retrieve),
    UT_CASE(test_message_cut_and_cleaned),
    UT_CASE(test_key_never_logged),
    UT_CASE(test_prov_names_and_outcomes),
    UT_CASE(test_prov_helpers),
    {0},
};

UT_MAIN(cases)
