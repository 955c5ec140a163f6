/* Unit tests for ixjob: parsing an interaction job, and editing its
 * deferred response through the real drest client against a fake Discord
 * (ut_fakehttp.h: a real HTTP server on 127.0.0.1).
 *
 * The callback contract is the point of several cases: an edit's callback
 * never runs from inside ixjob_edit_original/ixjob_edit_files (also when
 * the request cannot even be queued), runs exactly once, and never after
 * ixjob_edit_cancel. Every case ends with every handle released. */
#include <errno.h>
#include <string.h>

#include <uv.h>

#include "discord/drest.h"
#include "base/err.h"
#include "io/hcl.h"
#include "io/httpd.h"
#include "discord/ixjob.h"
#include "base/log.h"
#include "base/mem.h"
#include "ut.h"
#include "ut_fakehttp.h"
#include "ut_log.h"
#include "ut_loop.h"

#define EDIT_PATH "/api/webhooks/777/tok-abc/messages/@original"

static const char job_json[] =
    "{\"id\":\"900\",\"token\":\"tok-abc\",\"application_id\":\"777\",\"command\":\"img\","
    "\"locale\":\"ko\",\"channel_id\":\"55\",\"guild_id\":\"66\",\"user\":{\"id\":\"42\"},"
    "\"received_ms\":1700000000000,\"token_expires_ms\":1700000900000,"
    "\"options\":[{\"name\":\"설명\",\"type\":3,\"value\":\"고양이\"},{\"name\":\"강도\",\"type\":10,\"value\":2},"
    "{\"name\":\"이미지\",\"type\":11,\"value\":\"att1\"}],"
    "\"resolved\":{\"attachments\":{\"att1\":{\"url\":\"https://cdn.example/a.png\",\"filename\":\"a.png\","
    "\"content_type\":\"image/png\",\"size\":1234}}}}";

static struct utfake F;
static struct drest *rest;
static int rest_closed;
static int answers_404; /* the fake answers 404 this many times first (-1: always) */

struct done {
    int calls, status, code;
};

static void on_done(int status, int code, void *arg)
{
    struct done *d = arg;
    d->calls++;
    d->status = status;
    d->code = code;
}

static void serve_edit(struct httpd_req *r, void *arg)
{
    (void)arg;
    if (answers_404 != 0) {
        if (answers_404 > 0)
            answers_404--;
        struct utfake_canned nf = {404, "application/json", "{\"message\":\"Unknown Message\",\"code\":10008}"};
        utfake_answer(&F, r, &nf);
        return;
    }
    utfake_answer(&F, r, &F.cn);
}

static void on_flag(void *arg)
{
    (*(int *)arg)++;
}

static void setup(void)
{
    utlog_setup("test", "ixjob", LOG_WARN);
    utfake_init(&F, "ut-ixjob", "application/json");
    F.cn = (struct utfake_canned){200, "application/json", "{\"id\":\"1\"}"};
    answers_404 = 0;
    rest_closed = 0;
    utfake_route(&F, "PATCH", EDIT_PATH, serve_edit, NULL);
    struct drest_opts o = {.api_base = utfake_url(&F, "/api"), .http = F.c, .max_attempts = 1};
    UT_EQ_INT(drest_new(&F.loop, &o, &rest), 0);
}

static void teardown(void)
{
    drest_close(rest, on_flag, &rest_closed);
    UTLOOP_WAIT_FOR(&F.ul, rest_closed == 1, 5000);
    utfake_end(&F);
    utfake_free(&F);
    utlog_stop(LOG_WARN);
}

static void parse(struct ixjob *j)
{
    UT_EQ_INT(ixjob_parse(j, job_json), 0);
}

/* ---- parsing --------------------------------------------------------------------- */

static void test_parse_fields_and_options(void)
{
    struct ixjob j;
    parse(&j);
    UT_EQ_STR(j.id, "900");
    UT_EQ_STR(j.token, "tok-abc");
    UT_EQ_STR(j.app_id, "777");
    UT_EQ_STR(j.command, "img");
    UT_ASSERT(j.cmd && !strcmp(j.cmd->key, "img") && j.cmd->role == ROLE_IMAGE && !j.en);
    UT_EQ_STR(j.user_id, "42");
    UT_EQ_STR(j.channel_id, "55");
    UT_EQ_STR(j.guild_id, "66");
    UT_EQ_INT(j.ko, 1);
    UT_EQ_INT(j.received_ms, 1700000000000LL);
    UT_EQ_INT(j.token_expires_ms, 1700000900000LL);
    /* options go by their key in the command's row, not by their name */
    UT_EQ_STR(ixjob_option(&j, "prompt"), "고양이");
    UT_ASSERT(ixjob_option(&j, "설명") == NULL);
    UT_ASSERT(ixjob_option(&j, "nope") == NULL);
    UT_ASSERT(ixjob_option(&j, "strength") == NULL); /* not a string */
    double n = 0;
    UT_EQ_INT(ixjob_option_num(&j, "strength", &n), 1);
    UT_ASSERT(n == 2.0);
    UT_EQ_INT(ixjob_option_num(&j, "prompt", &n), 0);
    struct ixjob_attachment a;
    UT_EQ_INT(ixjob_attachment(&j, "image", &a), 1);
    UT_EQ_STR(a.url, "https://cdn.example/a.png");
    UT_EQ_STR(a.filename, "a.png");
    UT_EQ_STR(a.content_type, "image/png");
    UT_EQ_INT(a.size, 1234);
    UT_EQ_INT(ixjob_attachment(&j, "prompt", &a), 0); /* no such attachment */
    ixjob_free(&j);
}

/* 채팅 and its English twin chat: one row, one key per option, whichever
 * language's command (and option names) the user typed. */
static void test_twin_options_go_by_key(void)
{
    static const char *const jobs[][2] = {
        {"{\"id\":\"1\",\"token\":\"t\",\"application_id\":\"a\",\"command\":\"채팅\","
         "\"options\":[{\"name\":\"질문\",\"type\":3,\"value\":\"안녕\"}]}", "안녕"},
        {"{\"id\":\"1\",\"token\":\"t\",\"application_id\":\"a\",\"command\":\"chat\","
         "\"options\":[{\"name\":\"question\",\"type\":3,\"value\":\"hi\"}]}", "hi"},
        /* a Korean option name under the English command is not its option */
        {"{\"id\":\"1\",\"token\":\"t\",\"application_id\":\"a\",\"command\":\"chat\","
         "\"options\":[{\"name\":\"질문\",\"type\":3,\"value\":\"hi\"}]}", NULL},
    };
    for (size_t i = 0; i < sizeof(jobs) / sizeof(jobs[0]); i++) {
        struct ixjob j;
        UT_EQ_INT(ixjob_parse(&j, jobs[i][0]), 0);
        UT_ASSERT(j.cmd && !strcmp(j.cmd->key, "chat"));
        UT_EQ_INT(j.en, i > 0);
        const char *q = ixjob_option(&j, "question");
        UT_ASSERT(jobs[i][1] ? q && !strcmp(q, jobs[i][1]) : !q);
        ixjob_free(&j);
    }
}

static void test_parse_rejects_bad_payloads(void)
{
    static const char *bad[] = {
        "", "not json", "[]", "{}", "{\"id\":\"1\",\"token\":\"t\",\"application_id\":\"a\"}", /* no command */
        "{\"id\":1,\"token\":\"t\",\"application_id\":\"a\",\"command\":\"c\"}",              /* id not a string */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ixjob j;
        UT_EQ_INT(ixjob_parse(&j, bad[i]), BC_EPROTO);
        UT_ASSERT(j.root == NULL && j.id == NULL);
        ixjob_free(&j); /* safe on an empty job */
    }
    struct ixjob j;
    UT_EQ_INT(ixjob_parse(&j, "{\"id\":\"1\",\"token\":\"t\",\"application_id\":\"a\",\"command\":\"c\"}"), 0);
    UT_EQ_INT(j.ko, 0);
    UT_ASSERT(j.user_id == NULL);
    UT_ASSERT(ixjob_option(&j, "x") == NULL);
    ixjob_free(&j);
}

/* ---- the callback contract ---------------------------------------------------------------- */

static void test_edit_without_rest_calls_back_later_once(void)
{
    setup();
    struct ixjob j;
    parse(&j);
    struct done d = {0};
    struct ixjob_edit *e = ixjob_edit_original(&F.loop, NULL, &j, "{\"content\":\"x\"}", on_done, &d);
    ixjob_free(&j);
    UT_EQ_INT(d.calls, 0); /* not from inside the call */
    UT_ASSERT(e != NULL);  /* the handle stays valid until the callback */
    UTLOOP_WAIT_FOR(&F.ul, d.calls == 1, 2000);
    UT_EQ_INT(d.status, -ENOTCONN);
    utloop_run_for(&F.ul, 100);
    UT_EQ_INT(d.calls, 1);
    UT_EQ_INT(F.nreq, 0);
    teardown();
}

static void test_edit_refused_by_drest_calls_back_later_once(void)
{
    setup();
    struct ixjob j;
    parse(&j);
    struct done d = {0};
    /* a file name drest refuses: drest_request fails at once */
    struct drest_file f = {.name = "bad\"name.png", .content_type = "image/png", .data = "x", .len = 1};
    struct ixjob_edit *e = ixjob_edit_files(&F.loop, rest, &j, "{\"attachments\":[{\"id\":0}]}", &f, 1, on_done, &d);
    ixjob_free(&j);
    UT_EQ_INT(d.calls, 0);
    UT_ASSERT(e != NULL);
    UTLOOP_WAIT_FOR(&F.ul, d.calls == 1, 2000);
    UT_ASSERT(d.status < 0);
    utloop_run_for(&F.ul, 100);
    UT_EQ_INT(d.calls, 1);
    UT_EQ_INT(F.nreq, 0);
    teardown();
}

static void test_cancel_before_a_deferred_failure(void)
{
    setup();
    struct ixjob j;
    parse(&j);
    struct done d = {0};
    struct ixjob_edit *e = ixjob_edit_original(&F.loop, NULL, &j, "{}", on_done, &d);
    ixjob_free(&j);
    UT_ASSERT(e != NULL);
    ixjob_edit_cancel(e); /* the caller goes away: the callback never runs */
    utloop_run_for(&F.ul, 100);
    UT_EQ_INT(d.calls, 0);
    teardown();
}

/* An application id that is not a snowflake ("1/../777" reaches another
 * webhook once the URL's dot segments are resolved) is refused through the
 * callback, and nothing reaches Discord. */
static void test_edit_with_a_bad_app_id_calls_back_with_einval(void)
{
    setup();
    struct ixjob j;
    parse(&j);
    static const char *const bad[] = {"1/../777", "", "abc"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct done d = {0};
        j.app_id = bad[i];
        struct ixjob_edit *e = ixjob_edit_original(&F.loop, rest, &j, "{\"content\":\"x\"}", on_done, &d);
        UT_ASSERT(e != NULL);
        UT_EQ_INT(d.calls, 0);
        UTLOOP_WAIT_FOR(&F.ul, d.calls == 1, 2000);
        UT_EQ_INT(d.status, -EINVAL);
    }
    j.app_id = NULL;
    ixjob_free(&j);
    utloop_run_for(&F.ul, 100);
    UT_EQ_INT(F.nreq, 0);
    teardown();
}

/* ---- editing ---------------------------------------------------------------------------- */

static void test_edit_reaches_discord_once(void)
{
    setup();
    struct ixjob j;
    parse(&j);
    struct done d = {0};
    struct ixjob_edit *e = ixjob_edit_original(&F.loop, rest, &j, "{\"content\":\"안녕\"}", on_done, &d);
    ixjob_free(&j); /* what the edit needs was copied */
    UT_ASSERT(e != NULL);
    UT_EQ_INT(d.calls, 0);
    UTLOOP_WAIT_FOR(&F.ul, d.calls == 1, 5000);
    UT_EQ_INT(d.status, 0);
    UT_EQ_INT(F.nreq, 1);
    UT_EQ_STR(F.method, "PATCH");
    UT_EQ_STR(F.path, EDIT_PATH);
    UT_EQ_STR(F.body, "{\"content\":\"안녕\"}");
    UT_EQ_STR(F.auth, ""); /* the interaction token is the credential, not the bot's */
    utloop_run_for(&F.ul, 100);
    UT_EQ_INT(d.calls, 1);
    teardown();
}

static void test_early_404_is_retried(void)
{
    setup();
    answers_404 = 2; /* the deferral has not reached Discord yet */
    struct ixjob j;
    parse(&j);
    struct done d = {0};
    UT_ASSERT(ixjob_edit_original(&F.loop, rest, &j, "{}", on_done, &d) != NULL);
    ixjob_free(&j);
    UTLOOP_WAIT_FOR(&F.ul, d.calls == 1, 5000);
    UT_EQ_INT(d.status, 0);
    UT_EQ_INT(F.nreq, 3);
    utloop_run_for(&F.ul, 400);
    UT_EQ_INT(d.calls, 1);
    teardown();
}

static void test_404_past_the_retry_window_is_an_error(void)
{
    setup();
    answers_404 = -1;
    struct ixjob j;
    parse(&j);
    struct done d = {0};
    UT_ASSERT(ixjob_edit_original(&F.loop, rest, &j, "{}", on_done, &d) != NULL);
    ixjob_free(&j);
    UTLOOP_WAIT_FOR(&F.ul, d.calls == 1, 10000);
    UT_EQ_INT(d.status, BC_EHTTP);
    UT_EQ_INT(d.code, 10008);
    UT_ASSERT(F.nreq >= 2 && F.nreq <= 14); /* retried for ~3 s every 250 ms, then given up */
    utloop_run_for(&F.ul, 400);
    UT_EQ_INT(d.calls, 1);
    teardown();
}

static void test_cancel_while_on_the_wire(void)
{
    setup();
    F.cn.hold = 1;
    struct ixjob j;
    parse(&j);
    struct done d = {0};
    struct ixjob_edit *e = ixjob_edit_original(&F.loop, rest, &j, "{}", on_done, &d);
    ixjob_free(&j);
    UTLOOP_WAIT_FOR(&F.ul, F.held != NULL, 5000);
    ixjob_edit_cancel(e);
    utfake_release(&F); /* the answer comes after all */
    utloop_run_for(&F.ul, 300);
    UT_EQ_INT(d.calls, 0);
    teardown();
}

static void test_cancel_while_waiting_to_retry(void)
{
    setup();
    answers_404 = 1;
    struct ixjob j;
    parse(&j);
    struct done d = {0};
    struct ixjob_edit *e = ixjob_edit_original(&F.loop, rest, &j, "{}", on_done, &d);
    ixjob_free(&j);
    UTLOOP_WAIT_FOR(&F.ul, F.nreq == 1, 5000);
    utloop_run_for(&F.ul, 50); /* the 404 is in: the retry timer runs */
    ixjob_edit_cancel(e);
    utloop_run_for(&F.ul, 500);
    UT_EQ_INT(d.calls, 0);
    UT_EQ_INT(F.nreq, 1);
    teardown();
}

static const struct ut_case cases[] = {
    UT_CASE(test_parse_fields_and_options),
    UT_CASE(test_twin_options_go_by_key),
    UT_CASE(test_parse_rejects_bad_payloads),
    UT_CASE(test_edit_without_rest_calls_back_later_once),
    UT_CASE(test_edit_refused_by_drest_calls_back_later_once),
    UT_CASE(test_cancel_before_a_deferred_failure),
    UT_CASE(test_edit_with_a_bad_app_id_calls_back_with_einval),
    UT_CASE(test_edit_reaches_discord_once),
    UT_CASE(test_early_404_is_retried),
    UT_CASE(test_404_past_the_retry_window_is_an_error),
    UT_CASE(test_cancel_while_on_the_wire),
    UT_CASE(test_cancel_while_waiting_to_retry),
    {NULL, NULL},
};

UT_MAIN(cases)
