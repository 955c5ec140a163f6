/* test_llm: the chat-completions client (llm) against a fake provider
 * (ut_fakehttp.h: our httpd on 127.0.0.1, port 0). The fake answers canned
 * statuses, headers and whole SSE bodies; TCP still delivers them in pieces,
 * and the parser's own split tests live in test_sse. Each case makes one
 * call and shuts everything down from its callback; a guard timer fails a
 * hung case. */
#include <errno.h>
#include <fcntl.h>
#include <json.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "base/err.h"
#include "io/httpd.h"
#include "service/llm.h"
#include "base/log.h"
#include "base/mem.h"
#include "ut.h"
#include "ut_fakehttp.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_sys.h"

#define GUARD_MS 15000
#define KEY "sk-test-Zq9SECRETkey0123456789"

struct fx {
    struct utfake f; /* the fake provider; routes answer chat and mod */
    uv_timer_t later;
    struct utfake_canned chat, mod;
    /* chat outcome */
    struct buf text;
    int deltas, done_calls, cancel_on_delta;
    struct llm_call *call;
    struct llm_result res;
    char finish[32], code[LLM_MAX_FIELD], type[LLM_MAX_FIELD], msg[LLM_MAX_FIELD];
    /* moderation outcome */
    int mod_calls, mod_status, mod_flagged;
    char cats[256];
};

/* Close client, server and timer, once; safe from a callback. */
static void fx_shutdown(struct fx *fx)
{
    if (!fx->f.shut)
        uv_close((uv_handle_t *)&fx->later, NULL);
    utfake_shutdown(&fx->f);
}

/* Every answer carries a request id, as the real provider's do. */
static void answer(struct fx *fx, struct httpd_req *r, struct utfake_canned cn)
{
    cn.hname2 = "x-request-id";
    cn.hval2 = "req_123";
    utfake_answer(&fx->f, r, &cn);
}

static void h_chat(struct httpd_req *r, void *arg)
{
    struct fx *fx = arg;
    answer(fx, r, fx->chat);
}

static void h_mod(struct httpd_req *r, void *arg)
{
    struct fx *fx = arg;
    answer(fx, r, fx->mod);
}

static void fx_init(struct fx *fx)
{
    memset(fx, 0, sizeof *fx);
    utfake_init(&fx->f, "test_llm", "text/event-stream");
    utfake_route(&fx->f, "POST", "/v1/chat/completions", h_chat, fx);
    utfake_route(&fx->f, "POST", "/v1/moderations", h_mod, fx);
    UT_EQ_INT(uv_timer_init(&fx->f.loop, &fx->later), 0);
    buf_init(&fx->text, 1 << 22);
}

/* Turn the loop until the case has shut everything down and the loop is
 * done (a case that hangs fails after GUARD_MS). */
static void fx_run(struct fx *fx)
{
    UTLOOP_WAIT_FOR(&fx->f.ul, fx->f.shut, GUARD_MS);
    utfake_end(&fx->f);
}

static void fx_free(struct fx *fx)
{
    buf_free(&fx->text);
    utfake_free(&fx->f);
}

static const char *base_url(const struct fx *fx)
{
    return utfake_url(&fx->f, "/v1/");
}

/* ---- chat ------------------------------------------------------------------ */

static void on_delta(const char *text, size_t len, void *arg)
{
    struct fx *fx = arg;
    UT_EQ_INT(fx->done_calls, 0);
    UT_EQ_INT(buf_append(&fx->text, text, len), 0);
    fx->deltas++;
    if (fx->cancel_on_delta && fx->deltas == fx->cancel_on_delta) {
        llm_cancel(fx->call);
        llm_cancel(fx->call); /* harmless twice */
    }
}

static void on_done(const struct llm_result *r, void *arg)
{
    struct fx *fx = arg;
    fx->done_calls++;
    UT_EQ_INT(fx->done_calls, 1);
    fx->res = *r;
    snprintf(fx->finish, sizeof fx->finish, "%s", r->finish_reason);
    snprintf(fx->code, sizeof fx->code, "%s", r->error_code);
    snprintf(fx->type, sizeof fx->type, "%s", r->error_type);
    snprintf(fx->msg, sizeof fx->msg, "%s", r->error_message);
    fx->res.finish_reason = fx->res.error_code = fx->res.error_type = NULL;
    fx->res.error_message = fx->res.request_id = NULL;
    fx_shutdown(fx);
}

static const struct llm_message MSGS[] = {
    {"system", "You are terse."},
    {"user", "안녕? \"hi\" \\ /"},
};

static void start_chat(struct fx *fx, const char *base, long timeout_ms)
{
    struct llm_request rq = {
        .base_url = base ? base : base_url(fx),
        .api_key = KEY,
        .model = "gpt-4o-mini",
        .messages = MSGS,
        .nmessages = 2,
        .temperature = 0.7,
        .has_temperature = 1,
        .max_tokens = 64,
        .user = "u-42",
        .timeout_ms = timeout_ms,
    };
    UT_EQ_INT(llm_chat(fx->f.c, &rq, on_delta, on_done, fx, &fx->call), 0);
    UT_EQ_INT(fx->done_calls, 0); /* never synchronously */
}

/* One call with the chat route answering cn; results are left in fx. */
static void chat_case(struct fx *fx, struct utfake_canned cn)
{
    fx_init(fx);
    fx->chat = cn;
    start_chat(fx, NULL, 0);
    fx_run(fx);
    UT_EQ_INT(fx->done_calls, 1);
}

#define CHUNK(json) "data: " json "\n\n"

static const char KOREAN_STREAM[] =
    ": OPENROUTER PROCESSING\n\n"
    CHUNK("{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
          "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}")
    CHUNK("{\"id\":\"c1\",\"obfuscation\":\"x1y2\",\"choices\":[{\"index\":0,\"delta\":"
          "{\"content\":\"안녕하세요\"},\"logprobs\":null,\"finish_reason\":null}],"
          "\"unknown\":{\"nested\":[1,{\"a\":null}]}}")
    "data: {\"choices\":[{\"delta\":{\"content\":\", 세계 🌏\\n\\\"따옴표\\\"\"}}]}\r\n\r\n"
    CHUNK("{\"choices\":[{\"delta\":{\"content\":null,\"refusal\":null}}]}")
    CHUNK("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\" 끝\"},\"finish_reason\":null}]}")
    CHUNK("{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}")
    CHUNK("{\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7,"
          "\"total_tokens\":19,\"prompt_tokens_details\":{\"cached_tokens\":0}}}")
    CHUNK("[DONE]");

static void test_stream_korean_usage_unknown_fields(void)
{
    struct fx fx;
    chat_case(&fx, (struct utfake_canned){.body = KOREAN_STREAM});
    UT_EQ_INT(fx.res.status, LLM_OK);
    UT_EQ_INT(fx.res.http_status, 200);
    UT_EQ_STR(buf_str(&fx.text), "안녕하세요, 세계 🌏\n\"따옴표\" 끝");
    UT_EQ_INT(fx.res.text_len, fx.text.len);
    UT_EQ_INT(fx.deltas, 3);
    UT_EQ_STR(fx.finish, "stop");
    UT_ASSERT(fx.res.usage.has_usage);
    UT_EQ_INT(fx.res.usage.prompt, 12);
    UT_EQ_INT(fx.res.usage.completion, 7);
    UT_EQ_INT(fx.res.usage.total, 19);
    UT_EQ_INT(fx.res.retry_after_ms, -1);
    fx_free(&fx);
}

/* A long stream arrives in many TCP pieces; the text must come out exact. */
static void test_long_stream_reassembled(void)
{
    static const char *const words[] = {"가", "나다", "라마바", "🌏", "é", " "};
    struct buf body, want;
    buf_init(&body, 1 << 22);
    buf_init(&want, 1 << 22);
    for (int i = 0; i < 4000; i++) {
        const char *w = words[i % 6];
        buf_printf(&body, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s%d\"}}]}\n\n", w, i);
        buf_printf(&want, "%s%d", w, i);
    }
    buf_puts(&body, CHUNK("{\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}") CHUNK("[DONE]"));
    struct fx fx;
    chat_case(&fx, (struct utfake_canned){.body = buf_str(&body)});
    UT_EQ_INT(fx.res.status, LLM_OK);
    UT_EQ_INT(fx.deltas, 4000);
    UT_ASSERT(fx.text.len == want.len && !memcmp(fx.text.p, want.p, want.len));
    UT_EQ_STR(fx.finish, "length");
    UT_ASSERT(!fx.res.usage.has_usage);
    buf_free(&body);
    buf_free(&want);
    fx_free(&fx);
}

static struct json_object *jget(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    if (!json_object_object_get_ex(o, k, &v))
        UT_FAIL("no field %s", k);
    return v;
}

static void test_request_shape(void)
{
    struct fx fx;
    chat_case(&fx, (struct utfake_canned){.body = KOREAN_STREAM});
    UT_EQ_STR(fx.f.path, "/v1/chat/completions"); /* trailing '/' of base handled */
    UT_EQ_STR(fx.f.auth, "Bearer " KEY);
    struct json_object *o = json_tokener_parse(fx.f.body);
    UT_ASSERT(o);
    UT_EQ_STR(json_object_get_string(jget(o, "model")), "gpt-4o-mini");
    UT_ASSERT(json_object_get_boolean(jget(o, "stream")));
    UT_ASSERT(json_object_get_boolean(jget(jget(o, "stream_options"), "include_usage")));
    UT_EQ_INT(json_object_get_int(jget(o, "max_tokens")), 64);
    UT_EQ_STR(json_object_get_string(jget(o, "user")), "u-42");
    UT_ASSERT(json_object_get_double(jget(o, "temperature")) == 0.7);
    struct json_object *m = jget(o, "messages");
    UT_EQ_INT(json_object_array_length(m), 2);
    UT_EQ_STR(json_object_get_string(jget(json_object_array_get_idx(m, 0), "role")), "system");
    UT_EQ_STR(json_object_get_string(jget(json_object_array_get_idx(m, 1), "content")),
              "안녕? \"hi\" \\ /");
    json_object_put(o);
    fx_free(&fx);
}

static void check_err(struct utfake_canned cn, int kind, const char *code, long retry_ms)
{
    struct fx fx;
    chat_case(&fx, cn);
    if (fx.res.status != kind)
        UT_FAIL("status %s, want %s (http %ld, msg %s)", llm_status_name(fx.res.status),
                llm_status_name(kind), fx.res.http_status, fx.msg);
    UT_EQ_INT(fx.res.http_status, cn.status);
    UT_EQ_STR(fx.code, code);
    UT_EQ_INT(fx.res.retry_after_ms, retry_ms);
    UT_EQ_INT(fx.deltas, 0);
    fx_free(&fx);
}

#define EJSON "application/json"
#define ERRBODY(msg, type, code)                                                                   \
    "{\"error\":{\"message\":\"" msg "\",\"type\":\"" type "\",\"param\":null,\"code\":" code "}}"

static void test_err_auth(void)
{
    check_err((struct utfake_canned){401, EJSON, ERRBODY("Incorrect API key provided: sk-test-Zq9S***6789.",
                                                  "invalid_request_error", "\"invalid_api_key\"")},
              LLM_ERR_AUTH, "invalid_api_key", -1);
}

static void test_err_quota(void)
{
    check_err((struct utfake_canned){429, EJSON, ERRBODY("You exceeded your current quota.",
                                                  "insufficient_quota", "\"insufficient_quota\"")},
              LLM_ERR_QUOTA, "insufficient_quota", -1);
}

static void test_err_rate_retry_after_ms(void)
{
    check_err((struct utfake_canned){429, EJSON,
                              ERRBODY("Rate limit reached", "requests", "\"rate_limit_exceeded\""),
                              "retry-after-ms", "1500"},
              LLM_ERR_RATE, "rate_limit_exceeded", 1500);
}

static void test_err_rate_retry_after_seconds(void)
{
    check_err((struct utfake_canned){429, EJSON, ERRBODY("Rate limit reached", "tokens", "null"),
                              "retry-after", "2"},
              LLM_ERR_RATE, "", 2000);
}

static void test_err_rate_reset_requests(void)
{
    check_err((struct utfake_canned){429, EJSON,
                              ERRBODY("Rate limit reached", "requests", "\"rate_limit_exceeded\""),
                              "x-ratelimit-reset-requests", "1m30s"},
              LLM_ERR_RATE, "rate_limit_exceeded", 90000);
}

static void test_err_rate_plain_text(void)
{
    /* A proxy's 429 with no JSON at all is still a rate limit. */
    check_err((struct utfake_canned){429, "text/plain", "Too Many Requests"}, LLM_ERR_RATE, "", -1);
}

static void test_err_server(void)
{
    check_err((struct utfake_canned){503, EJSON, ERRBODY("The engine is overloaded", "server_error", "null"),
                              "retry-after", "1"},
              LLM_ERR_SERVER, "", 1000);
    check_err((struct utfake_canned){502, "text/html", "<html>Bad gateway</html>"}, LLM_ERR_SERVER, "", -1);
}

static void test_err_bad_request(void)
{
    check_err((struct utfake_canned){400, EJSON,
                              ERRBODY("This model's maximum context length is 128000 tokens.",
                                      "invalid_request_error", "\"context_length_exceeded\"")},
              LLM_ERR_BAD_REQUEST, "context_length_exceeded", -1);
    check_err((struct utfake_canned){404, EJSON, ERRBODY("The model does not exist", "invalid_request_error",
                                                  "\"model_not_found\"")},
              LLM_ERR_BAD_REQUEST, "model_not_found", -1);
}

static void test_err_streamed_error_body(void)
{
    /* An error body sent as SSE despite the status. */
    check_err((struct utfake_canned){500, NULL, CHUNK(ERRBODY("boom", "server_error", "\"internal\""))},
              LLM_ERR_SERVER, "internal", -1);
}

static void test_err_in_stream_after_text(void)
{
    struct fx fx;
    chat_case(&fx, (struct utfake_canned){.body = CHUNK("{\"choices\":[{\"delta\":{\"content\":\"반\"}}]}")
                                       CHUNK(ERRBODY("overloaded mid-stream", "server_error", "null"))
                                           CHUNK("[DONE]")});
    UT_EQ_INT(fx.res.status, LLM_ERR_SERVER);
    UT_EQ_STR(buf_str(&fx.text), "반");
    UT_EQ_STR(fx.msg, "overloaded mid-stream");
    fx_free(&fx);
}

static void test_err_protocol(void)
{
    check_err((struct utfake_canned){200, NULL, CHUNK("{\"choices\":[{\"delta\":") CHUNK("[DONE]")},
              LLM_ERR_PROTOCOL, "", -1);
    check_err((struct utfake_canned){200, NULL, ""}, LLM_ERR_PROTOCOL, "", -1);
    check_err((struct utfake_canned){200, NULL, CHUNK("[1,2]")}, LLM_ERR_PROTOCOL, "", -1);
}

static void test_incomplete_stream_is_done(void)
{
    struct fx fx;
    chat_case(&fx, (struct utfake_canned){.body = CHUNK("{\"choices\":[{\"delta\":{\"content\":\"잘린 \"}}]}")
                                       CHUNK("{\"choices\":[{\"delta\":{\"content\":\"답\"}}]}")});
    UT_EQ_INT(fx.res.status, LLM_OK);
    UT_EQ_STR(fx.finish, "incomplete");
    UT_EQ_STR(buf_str(&fx.text), "잘린 답");
    fx_free(&fx);
}

static void test_plain_json_answer(void)
{
    struct fx fx;
    chat_case(&fx, (struct utfake_canned){200, EJSON,
                                   "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                                   "\"content\":\"통째로\"},\"finish_reason\":\"stop\"}],"
                                   "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,"
                                   "\"total_tokens\":5}}"});
    UT_EQ_INT(fx.res.status, LLM_OK);
    UT_EQ_STR(buf_str(&fx.text), "통째로");
    UT_EQ_STR(fx.finish, "stop");
    UT_EQ_INT(fx.res.usage.total, 5);
    fx_free(&fx);
}

static void test_timeout(void)
{
    struct fx fx;
    fx_init(&fx);
    fx.chat.hold = 1;
    start_chat(&fx, NULL, 300);
    fx_run(&fx);
    UT_EQ_INT(fx.res.status, LLM_ERR_TIMEOUT);
    UT_EQ_INT(fx.res.err, -ETIMEDOUT);
    fx_free(&fx);
}

static void on_later_cancel(uv_timer_t *t)
{
    struct fx *fx = t->data;
    llm_cancel(fx->call);
}

static void test_cancel_while_waiting(void)
{
    struct fx fx;
    fx_init(&fx);
    fx.chat.hold = 1;
    start_chat(&fx, NULL, 0);
    fx.later.data = &fx;
    uv_timer_start(&fx.later, on_later_cancel, 50, 0);
    fx_run(&fx);
    UT_EQ_INT(fx.done_calls, 1);
    UT_EQ_INT(fx.res.status, LLM_ERR_CANCELLED);
    fx_free(&fx);
}

static void test_cancel_from_delta(void)
{
    struct fx fx;
    fx_init(&fx);
    fx.chat.body = KOREAN_STREAM;
    fx.cancel_on_delta = 1;
    start_chat(&fx, NULL, 0);
    fx_run(&fx);
    UT_EQ_INT(fx.done_calls, 1);
    UT_EQ_INT(fx.deltas, 1); /* nothing after the cancel */
    UT_EQ_INT(fx.res.status, LLM_ERR_CANCELLED);
    fx_free(&fx);
}

static void test_shutdown_is_cancel(void)
{
    struct fx fx;
    fx_init(&fx);
    fx.chat.hold = 1;
    start_chat(&fx, NULL, 0);
    fx_shutdown(&fx); /* hcl_close with the call in flight */
    fx_run(&fx);
    UT_EQ_INT(fx.done_calls, 1);
    UT_EQ_INT(fx.res.status, LLM_ERR_CANCELLED);
    UT_EQ_INT(fx.res.err, BC_ESHUTDOWN);
    fx_free(&fx);
}

static void test_network_error(void)
{
    struct fx fx;
    fx_init(&fx);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", utsys_free_port());
    start_chat(&fx, url, 0);
    fx_run(&fx);
    UT_EQ_INT(fx.res.status, LLM_ERR_NETWORK);
    UT_ASSERT(fx.res.err < 0);
    fx_free(&fx);
}

static void test_invalid_args_no_callback(void)
{
    struct fx fx;
    fx_init(&fx);
    struct llm_request rq = {.base_url = base_url(&fx), .model = "m", .messages = MSGS, .nmessages = 0};
    UT_EQ_INT(llm_chat(fx.f.c, &rq, on_delta, on_done, &fx, NULL), -EINVAL);
    rq.nmessages = 2;
    rq.model = NULL;
    UT_EQ_INT(llm_chat(fx.f.c, &rq, on_delta, on_done, &fx, NULL), -EINVAL);
    rq.model = "m";
    UT_EQ_INT(llm_chat(fx.f.c, &rq, on_delta, NULL, &fx, NULL), -EINVAL);
    fx_shutdown(&fx);
    fx_run(&fx);
    UT_EQ_INT(fx.done_calls, 0);
    fx_free(&fx);
}

/* ---- retry-after parsing ---------------------------------------------------- */

static void test_parse_duration(void)
{
    UT_EQ_INT(llm_parse_duration_ms("12ms"), 12);
    UT_EQ_INT(llm_parse_duration_ms("1.5s"), 1500);
    UT_EQ_INT(llm_parse_duration_ms("51.2s"), 51200);
    UT_EQ_INT(llm_parse_duration_ms("1m30s"), 90000);
    UT_EQ_INT(llm_parse_duration_ms("6m0s"), 360000);
    UT_EQ_INT(llm_parse_duration_ms("1h2m3s"), 3723000);
    UT_EQ_INT(llm_parse_duration_ms("20"), 20000);
    UT_EQ_INT(llm_parse_duration_ms(" 0.25 "), 250);
    UT_EQ_INT(llm_parse_duration_ms("1500us"), 2); /* rounded up */
    UT_EQ_INT(llm_parse_duration_ms("0s"), 0);
    UT_EQ_INT(llm_parse_duration_ms("Wed, 21 Oct 2015 07:28:00 GMT"), -1);
    UT_EQ_INT(llm_parse_duration_ms(""), -1);
    UT_EQ_INT(llm_parse_duration_ms("-1s"), -1);
    UT_EQ_INT(llm_parse_duration_ms("1.s"), -1);
    UT_EQ_INT(llm_parse_duration_ms("5x"), -1);
    UT_EQ_INT(llm_parse_duration_ms("1m30"), -1);
    UT_EQ_INT(llm_parse_duration_ms(NULL), -1);
    UT_EQ_INT(llm_parse_duration_ms("99999999999999h"), 24L * 3600 * 1000); /* capped */
}

/* ---- moderation --------------------------------------------------------------- */

static void on_mod(int status, int flagged, const char *cats, void *arg)
{
    struct fx *fx = arg;
    fx->mod_calls++;
    fx->mod_status = status;
    fx->mod_flagged = flagged;
    snprintf(fx->cats, sizeof fx->cats, "%s", cats);
    fx_shutdown(fx);
}

static void mod_case(struct fx *fx, struct utfake_canned cn)
{
    fx_init(fx);
    fx->mod = cn;
    struct llm_moderation_request rq = {.base_url = base_url(fx), .api_key = KEY, .input = "너 정말"};
    UT_EQ_INT(llm_moderate(fx->f.c, &rq, on_mod, fx), 0);
    UT_EQ_INT(fx->mod_calls, 0);
    fx_run(fx);
    UT_EQ_INT(fx->mod_calls, 1);
}

static void test_moderation_flagged(void)
{
    struct fx fx;
    mod_case(&fx, (struct utfake_canned){200, EJSON,
                                  "{\"id\":\"modr-1\",\"model\":\"omni-moderation-latest\",\"results\":"
                                  "[{\"flagged\":true,\"categories\":{\"harassment\":true,\"hate\":false,"
                                  "\"violence\":true,\"sexual/minors\":false},\"category_scores\":"
                                  "{\"harassment\":0.9,\"violence\":0.8}}]}"});
    UT_EQ_INT(fx.mod_status, LLM_OK);
    UT_EQ_INT(fx.mod_flagged, 1);
    UT_EQ_STR(fx.cats, "harassment,violence");
    UT_EQ_STR(fx.f.path, "/v1/moderations");
    UT_EQ_STR(fx.f.auth, "Bearer " KEY);
    struct json_object *o = json_tokener_parse(fx.f.body);
    UT_EQ_STR(json_object_get_string(jget(o, "model")), "omni-moderation-latest");
    UT_EQ_STR(json_object_get_string(jget(o, "input")), "너 정말");
    json_object_put(o);
    fx_free(&fx);
}

static void test_moderation_not_flagged(void)
{
    struct fx fx;
    mod_case(&fx, (struct utfake_canned){200, EJSON,
                                  "{\"results\":[{\"flagged\":false,\"categories\":"
                                  "{\"harassment\":false,\"violence\":false}}]}"});
    UT_EQ_INT(fx.mod_status, LLM_OK);
    UT_EQ_INT(fx.mod_flagged, 0);
    UT_EQ_STR(fx.cats, "");
    fx_free(&fx);
}

static void test_moderation_error(void)
{
    struct fx fx;
    mod_case(&fx, (struct utfake_canned){401, EJSON, ERRBODY("bad key", "invalid_request_error",
                                                      "\"invalid_api_key\"")});
    UT_EQ_INT(fx.mod_status, LLM_ERR_AUTH);
    UT_EQ_INT(fx.mod_flagged, 0);
    fx_free(&fx);
}


/* ---- a provider that hangs ------------------------------------------------------ */

/* A raw provider on the loop for what httpd cannot do: answer the headers
 * and part of a stream, then go silent with the connection open. */
struct rawsrv {
    uv_tcp_t srv, conn;
    int port, accepted, open;
    const char *send; /* written once the request arrives */
    uv_write_t w;
    int wrote;
    char rd[4096];
};

static void raw_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    (void)sz;
    struct rawsrv *rs = h->data;
    *b = uv_buf_init(rs->rd, sizeof rs->rd);
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    struct rawsrv *rs = s->data;
    if (n <= 0 || rs->wrote)
        return; /* the client left, or the answer is out: stay silent */
    rs->wrote = 1;
    uv_buf_t out = uv_buf_init((char *)rs->send, (unsigned)strlen(rs->send));
    UT_EQ_INT(uv_write(&rs->w, s, &out, 1, NULL), 0);
}

static void raw_conn(uv_stream_t *srv, int status)
{
    struct rawsrv *rs = srv->data;
    UT_EQ_INT(status, 0);
    UT_ASSERT(!rs->accepted);
    rs->accepted = 1;
    UT_EQ_INT(uv_tcp_init(srv->loop, &rs->conn), 0);
    rs->conn.data = rs;
    UT_EQ_INT(uv_accept(srv, (uv_stream_t *)&rs->conn), 0);
    UT_EQ_INT(uv_read_start((uv_stream_t *)&rs->conn, raw_alloc, raw_read), 0);
}

static void raw_start(struct rawsrv *rs, uv_loop_t *loop, const char *send)
{
    memset(rs, 0, sizeof *rs);
    rs->send = send;
    UT_EQ_INT(uv_tcp_init(loop, &rs->srv), 0);
    rs->srv.data = rs;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    UT_EQ_INT(uv_tcp_bind(&rs->srv, (const struct sockaddr *)&a, 0), 0);
    UT_EQ_INT(uv_listen((uv_stream_t *)&rs->srv, 8, raw_conn), 0);
    struct sockaddr_in got;
    int len = sizeof got;
    UT_EQ_INT(uv_tcp_getsockname(&rs->srv, (struct sockaddr *)&got, &len), 0);
    rs->port = ntohs(got.sin_port);
    rs->open = 1;
}

static void raw_stop(struct rawsrv *rs)
{
    if (!rs->open)
        return;
    rs->open = 0;
    uv_close((uv_handle_t *)&rs->srv, NULL);
    if (rs->accepted)
        uv_close((uv_handle_t *)&rs->conn, NULL);
}

struct stallfx {
    struct fx fx;
    struct rawsrv rs;
    uint64_t started, took;
};

static void on_stall_done(const struct llm_result *r, void *arg)
{
    struct stallfx *s = arg;
    s->took = uv_now(&s->fx.f.loop) - s->started;
    raw_stop(&s->rs);
    on_done(r, &s->fx);
}

static void on_stall_delta(const char *text, size_t len, void *arg)
{
    struct stallfx *s = arg;
    on_delta(text, len, &s->fx);
}

/* One call with a 10 s overall limit and the given stall limits; raw, when
 * set, is what the raw provider sends (else the httpd fake holds the
 * request unanswered). */
static void stall_case(struct stallfx *s, const char *raw, long first_ms, long idle_ms)
{
    memset(s, 0, sizeof *s);
    fx_init(&s->fx);
    s->fx.chat.hold = 1;
    char url[64];
    if (raw) {
        raw_start(&s->rs, &s->fx.f.loop, raw);
        snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", s->rs.port);
    }
    struct llm_request rq = {.base_url = raw ? url : base_url(&s->fx), .api_key = KEY, .model = "m",
                             .messages = MSGS, .nmessages = 2, .timeout_ms = 10000,
                             .first_token_ms = first_ms, .idle_ms = idle_ms};
    s->started = uv_now(&s->fx.f.loop);
    UT_EQ_INT(llm_chat(s->fx.f.c, &rq, on_stall_delta, on_stall_done, s, &s->fx.call), 0);
    fx_run(&s->fx);
    UT_EQ_INT(s->fx.done_calls, 1);
}

static void test_no_first_token_gives_up_early(void)
{
    struct stallfx s;
    stall_case(&s, NULL, 300, 0); /* no answer at all, not even headers */
    UT_EQ_INT(s.fx.res.status, LLM_ERR_TIMEOUT);
    UT_EQ_INT(s.fx.res.stalled, LLM_STALL_FIRST_TOKEN);
    UT_ASSERT(s.took < 5000);
    UT_CONTAINS(s.fx.msg, "first token");
    fx_free(&s.fx);
}

#define SSE_HEAD "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"

static void test_headers_then_nothing_is_no_first_token(void)
{
    /* Headers and a role chunk, but no content: still no first token. */
    struct stallfx s;
    stall_case(&s, SSE_HEAD CHUNK("{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}"),
               400, 5000);
    UT_EQ_INT(s.fx.res.status, LLM_ERR_TIMEOUT);
    UT_EQ_INT(s.fx.res.stalled, LLM_STALL_FIRST_TOKEN);
    UT_EQ_INT(s.fx.res.http_status, 200);
    UT_ASSERT(s.took < 4000);
    fx_free(&s.fx);
}

static void test_silence_after_text_gives_up(void)
{
    struct stallfx s;
    stall_case(&s, SSE_HEAD CHUNK("{\"choices\":[{\"delta\":{\"content\":\"반쯤\"}}]}"), 5000, 300);
    UT_EQ_INT(s.fx.res.status, LLM_ERR_TIMEOUT);
    UT_EQ_INT(s.fx.res.stalled, LLM_STALL_IDLE);
    UT_EQ_STR(buf_str(&s.fx.text), "반쯤");
    UT_ASSERT(s.took < 4000);
    UT_CONTAINS(s.fx.msg, "silent");
    fx_free(&s.fx);
}

static void test_stall_limits_spare_a_steady_stream(void)
{
    struct fx fx;
    fx_init(&fx);
    fx.chat.body = KOREAN_STREAM;
    struct llm_request rq = {.base_url = base_url(&fx), .api_key = KEY, .model = "m", .messages = MSGS,
                             .nmessages = 2, .first_token_ms = 2000, .idle_ms = 2000};
    UT_EQ_INT(llm_chat(fx.f.c, &rq, on_delta, on_done, &fx, &fx.call), 0);
    fx_run(&fx);
    UT_EQ_INT(fx.res.status, LLM_OK);
    UT_EQ_INT(fx.res.stalled, LLM_STALL_NONE);
    fx_free(&fx);
}

/* ---- thousands of streams at once --------------------------------------------- */

#define MANY 300

struct manyfx {
    struct fx fx;
    struct httpd_req *held[MANY];
    int nheld, done, ok;
};

static void h_hold_many(struct httpd_req *r, void *arg)
{
    struct manyfx *m = arg;
    UT_ASSERT(m->nheld < MANY);
    m->held[m->nheld++] = r;
}

static void on_many_done(const struct llm_result *r, void *arg)
{
    struct manyfx *m = arg;
    m->done++;
    m->ok += r->status == LLM_OK;
}

static void test_many_streams_at_once(void)
{
    /* Every stream is held open by the provider at the same time: none may
     * wait in a client-side queue behind the others. */
    static struct manyfx m;
    memset(&m, 0, sizeof m);
    utfake_init(&m.fx.f, "test_llm", "text/event-stream");
    utfake_route(&m.fx.f, "POST", "/v1/chat/completions", h_hold_many, &m);
    struct llm_request rq = {.base_url = base_url(&m.fx), .model = "m", .messages = MSGS, .nmessages = 2};
    for (int i = 0; i < MANY; i++)
        UT_EQ_INT(llm_chat(m.fx.f.c, &rq, NULL, on_many_done, &m, NULL), 0);
    UTLOOP_WAIT_FOR(&m.fx.f.ul, m.nheld == MANY, GUARD_MS);
    for (int i = 0; i < MANY; i++)
        httpd_respond(m.held[i], 200, "text/event-stream", KOREAN_STREAM, strlen(KOREAN_STREAM));
    UTLOOP_WAIT_FOR(&m.fx.f.ul, m.done == MANY, GUARD_MS);
    UT_EQ_INT(m.ok, MANY);
    utfake_end(&m.fx.f);
    utfake_free(&m.fx.f);
}

/* ---- what the provider sends back is logged only redacted ------------------------ */

static void test_request_id_logged_redacted(void)
{
    /* A proxy that echoes the key (or another configured secret) in its
     * request id, with a terminal escape and far too much text. */
    static const char *const ids[] = {
        "req-" KEY,
        "req-zz-OtherConfiguredSecret-77",
        "req-\x1b[31mred-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEND",
    };
    log_mask_add("zz-OtherConfiguredSecret-77");
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        utlog_start("chat-1", "chat", NULL);
        struct fx fx;
        fx_init(&fx); /* our x-request-id comes first, before the fake's own */
        fx.chat = (struct utfake_canned){503, EJSON, ERRBODY("overloaded", "server_error", "null"),
                                         "x-request-id", ids[i]};
        start_chat(&fx, NULL, 0);
        fx_run(&fx);
        UT_EQ_INT(fx.res.status, LLM_ERR_SERVER);
        const char *log = utlog_text();
        UT_CONTAINS(log, "\"request_id\":");
        UT_NOT_CONTAINS(log, "Zq9SECRET");
        UT_NOT_CONTAINS(log, "OtherConfiguredSecret");
        UT_NOT_CONTAINS(log, "\\u001b");
        UT_NOT_CONTAINS(log, "AEND");
        if (i == 2)
            UT_CONTAINS(log, "\"request_id\":\"req-\\\\x1b[31mred-AAAA");
        fx_free(&fx);
        utlog_stop(LOG_INFO);
    }
}

/* ---- the key never reaches a log line ----------------------------------------- */

static void test_key_never_logged(void)
{
    utlog_start("chat-1", "chat", NULL);
    struct fx fx;
    /* The provider echoes the whole key back: it must not come out anywhere. */
    chat_case(&fx, (struct utfake_canned){401, EJSON, ERRBODY("Incorrect API key provided: " KEY ".",
                                                       "invalid_request_error", "\"invalid_api_key\"")});
    UT_EQ_INT(fx.res.status, LLM_ERR_AUTH);
    UT_NOT_CONTAINS(fx.msg, "Zq9SECRET");
    UT_CONTAINS(fx.msg, "Incorrect API key provided");
    utfake_expect_key_hidden(utlog_text(), KEY, "Zq9SECRET", NULL);
    fx_free(&fx);
    utlog_stop(LOG_INFO); /* the default level */
}

static const struct ut_case cases[] = {
    UT_CASE(test_stream_korean_usage_unknown_fields),
    UT_CASE(test_long_stream_reassembled),
    UT_CASE(test_request_shape),
    UT_CASE(test_err_auth),
    UT_CASE(test_err_quota),
    UT_CASE(test_err_rate_retry_after_ms),
    UT_CASE(test_err_rate_retry_after_seconds),
    UT_CASE(test_err_rate_reset_requests),
    UT_CASE(test_err_rate_plain_text),
    UT_CASE(test_err_server),
    UT_CASE(test_err_bad_request),
    UT_CASE(test_err_streamed_error_body),
    UT_CASE(test_err_in_stream_after_text),
    UT_CASE(test_err_protocol),
    UT_CASE(test_incomplete_stream_is_done),
    UT_CASE(test_plain_json_answer),
    UT_CASE(test_timeout),
    UT_CASE(test_cancel_while_waiting),
    UT_CASE(test_cancel_from_delta),
    UT_CASE(test_shutdown_is_cancel),
    UT_CASE(test_network_error),
    UT_CASE(test_invalid_args_no_callback),
    UT_CASE(test_parse_duration),
    UT_CASE(test_moderation_flagged),
    UT_CASE(test_moderation_not_flagged),
    UT_CASE(test_moderation_error),
    UT_CASE(test_key_never_logged),
    UT_CASE(test_no_first_token_gives_up_early),
    UT_CASE(test_headers_then_nothing_is_no_first_token),
    UT_CASE(test_silence_after_text_gives_up),
    UT_CASE(test_stall_limits_spare_a_steady_stream),
    UT_CASE(test_many_streams_at_once),
    UT_CASE(test_request_id_logged_redacted),
    {0},
};

UT_MAIN(cases)
