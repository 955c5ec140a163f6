/* test_reply: a streamed answer delivered into Discord (reply), against a
 * fake Discord REST.
 *
 * The fake is our httpd on 127.0.0.1 (ut_fakehttp.h) with the routes reply
 * uses: the interaction's @original and its webhook (follow-ups), a
 * channel's messages (create, edit) and its typing indicator. It records
 * each request with the loop time it arrived at. A real drest talks to it
 * through a real hcl, so the requests are the ones Discord would get. The
 * text grows on a timer, as the model's deltas would make it grow. */
#include <json.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "discord/drest.h"
#include "base/err.h"
#include "io/hcl.h"
#include "io/httpd.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/utf8.h"
#include "discord/reply.h"
#include "base/secret.h"
#include "parse/split.h"
#include "ut.h"
#include "ut_fakehttp.h"
#include "ut_loop.h"

#define GUARD_MS 30000
#define APP "100000000000000001"
#define ITOKEN "aW50ZXJhY3Rpb246dGVzdA"
#define CH "500000000000000001"
#define USERMSG "700000000000000001"
#define POSTED "900000000000000001"
#define MAX_HITS 64

struct hit {
    char method[8], path[160];
    uint64_t at;
    char *body; /* mem_ allocated, NUL-terminated */
    size_t len;
};

static struct {
    struct utfake f;
    struct drest *d;
    struct secret token;
    struct hit hits[MAX_HITS];
    int nhits;
    /* the reply under test */
    struct reply *r;
    struct buf text;
    uv_timer_t feed;
    int feed_on, feed_left, done_calls, status, code, closed, no_rest;
    const char *chunk;
    uint64_t started;
    uint64_t sends[MAX_HITS]; /* loop times reply asked for the REST client: its sends */
    int nsends;
} F;

/* ---- the fake Discord ------------------------------------------------------------ */

static void on_discord(struct httpd_req *q, void *arg)
{
    (void)arg;
    UT_ASSERT(F.nhits < MAX_HITS);
    struct hit *h = &F.hits[F.nhits++];
    snprintf(h->method, sizeof h->method, "%s", httpd_req_method(q));
    snprintf(h->path, sizeof h->path, "%s", httpd_req_path(q));
    h->at = uv_now(&F.f.loop);
    size_t n;
    const char *b = httpd_req_body(q, &n);
    h->body = mem_alloc(n + 1);
    memcpy(h->body, b, n + 1);
    h->len = n;
    if (strstr(h->path, "/typing")) {
        httpd_respond(q, 204, "application/json", "", 0);
        return;
    }
    static const char msg[] = "{\"id\":\"" POSTED "\",\"channel_id\":\"" CH "\",\"content\":\"\"}";
    httpd_respond(q, 200, "application/json", msg, strlen(msg));
}

static size_t fx_max_queue; /* drest's; 0: its default */

/* A request that holds a place in drest's queue until released. */
static struct {
    struct httpd_req *held;
    int answered;
    uv_timer_t release;
} occ;

static void on_occupant_arrived(struct httpd_req *q, void *arg)
{
    (void)arg;
    occ.held = q;
}

static void on_occupant_done(const struct drest_resp *r, void *arg)
{
    (void)r;
    (void)arg;
    occ.answered = 1;
}

static void on_release(uv_timer_t *t)
{
    if (occ.held)
        httpd_respond(occ.held, 200, "application/json", "{}", 2);
    occ.held = NULL;
    uv_close((uv_handle_t *)t, NULL);
}

/* Fill drest's one-request queue for release_ms: every send of the reply
 * meanwhile is refused with -ENOBUFS. */
static void occupy_queue(int release_ms)
{
    memset(&occ, 0, sizeof occ);
    utfake_route(&F.f, "GET", "/api/v10/users/@me", on_occupant_arrived, NULL);
    struct drest_req rq = {.method = "GET", .path = "/users/@me", .bot_auth = 1};
    UT_EQ_INT(drest_request(F.d, &rq, on_occupant_done, NULL), 0);
    UTLOOP_WAIT_FOR(&F.f.ul, occ.held != NULL, 5000);
    UT_EQ_INT(uv_timer_init(&F.f.loop, &occ.release), 0);
    uv_timer_start(&occ.release, on_release, (uint64_t)release_ms, 0);
}

static struct drest *get_rest(void *arg)
{
    (void)arg;
    uint64_t now = uv_now(&F.f.loop);
    if ((!F.nsends || F.sends[F.nsends - 1] != now) && F.nsends < MAX_HITS)
        F.sends[F.nsends++] = now;
    return F.closed || F.no_rest ? NULL : F.d;
}

static void fx_init(void)
{
    memset(&F, 0, sizeof F);
    utfake_init(&F.f, "test_reply", "application/json");
    static const char *const routes[][2] = {
        {"PATCH", "/api/v10/webhooks/" APP "/" ITOKEN "/messages/@original"},
        {"POST", "/api/v10/webhooks/" APP "/" ITOKEN},
        {"POST", "/api/v10/channels/" CH "/messages"},
        {"PATCH", "/api/v10/channels/" CH "/messages/" POSTED},
        {"POST", "/api/v10/channels/" CH "/typing"},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        utfake_route(&F.f, routes[i][0], routes[i][1], on_discord, NULL);
    secret_set(&F.token, "MTIz.bot-token-for-tests");
    struct drest_opts o = {.api_base = utfake_url(&F.f, "/api/v10"), .token = &F.token, .http = F.f.c,
                           .max_queue = fx_max_queue};
    UT_EQ_INT(drest_new(&F.f.loop, &o, &F.d), 0);
    buf_init(&F.text, 1 << 20);
    UT_EQ_INT(uv_timer_init(&F.f.loop, &F.feed), 0);
    F.feed.data = &F;
    F.feed_on = 1;
}

static void on_drest_closed(void *arg)
{
    (void)arg;
    utfake_shutdown(&F.f);
}

/* Close the REST client, then client and server; safe from a callback. */
static void fx_shutdown(void)
{
    if (F.closed)
        return;
    F.closed = 1;
    if (F.feed_on) {
        F.feed_on = 0;
        uv_close((uv_handle_t *)&F.feed, NULL);
    }
    drest_close(F.d, on_drest_closed, NULL);
}

/* Wait for the case to shut everything down; the loop must close cleanly.
 * What arrived stays readable until fx_free. */
static void fx_end(void)
{
    UTLOOP_WAIT_FOR(&F.f.ul, F.f.shut, GUARD_MS);
    utfake_end(&F.f);
}

static void fx_free(void)
{
    for (int i = 0; i < F.nhits; i++)
        mem_free(F.hits[i].body);
    utfake_free(&F.f);
    buf_free(&F.text);
    secret_clear(&F.token);
}

static struct reply *start_reply(int interaction, int interval_ms)
{
    struct reply_env env = {.loop = &F.f.loop, .rest = get_rest, .edit_interval_ms = interval_ms};
    struct reply_target t = {0};
    if (interaction) {
        t.app_id = APP;
        t.token = ITOKEN;
    } else {
        t.channel_id = CH;
        t.message_id = USERMSG;
    }
    F.started = uv_now(&F.f.loop);
    return F.r = reply_new(&env, &t, &F.text);
}

static void on_done(int status, int code, void *arg)
{
    (void)arg;
    F.done_calls++;
    UT_EQ_INT(F.done_calls, 1);
    F.status = status;
    F.code = code;
    fx_shutdown();
}

/* The text grows by chunk every 20 ms, feed_left times, then is finished. */
static void on_feed(uv_timer_t *t)
{
    (void)t;
    if (F.feed_left-- > 0) {
        buf_puts(&F.text, F.chunk);
        reply_changed(F.r);
        return;
    }
    uv_timer_stop(&F.feed);
    reply_finish(F.r, "", on_done, NULL);
    UT_EQ_INT(F.done_calls, 0); /* never from inside reply_finish */
}

static void stream(const char *chunk, int times)
{
    F.chunk = chunk;
    F.feed_left = times;
    uv_timer_start(&F.feed, on_feed, 20, 20);
}

/* ---- reading what arrived --------------------------------------------------------- */

/* The "content" of a hit's JSON body (owned by the caller), or NULL. */
static char *content_of(const struct hit *h)
{
    struct json_object *o = json_tokener_parse(h->body), *c;
    char *s = NULL;
    if (o && json_object_object_get_ex(o, "content", &c) && json_object_is_type(c, json_type_string))
        s = mem_strdup(json_object_get_string(c));
    json_object_put(o);
    return s;
}

static size_t code_points(const char *s)
{
    return utf8_count(s, strlen(s));
}

static int is(const struct hit *h, const char *method, const char *path_end)
{
    size_t pl = strlen(h->path), el = strlen(path_end);
    return !strcmp(h->method, method) && pl >= el && !strcmp(h->path + pl - el, path_end);
}

/* Text without any whitespace, to compare parts with the whole. */
static void squeeze(struct buf *out, const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\n' && *s != '\t')
            buf_append(out, s, 1);
}

/* ---- cases ------------------------------------------------------------------------- */

static void test_progress_edits_keep_the_interval(void)
{
    /* An answer streaming for about 1.5 s with EDIT_INTERVAL_MS 300: edits
     * of @original at most one per 300 ms, the final one included, and the
     * last one holds the whole answer. */
    fx_init();
    start_reply(1, 300);
    stream("스트리밍 ", 75);
    fx_end();
    UT_EQ_INT(F.done_calls, 1);
    UT_EQ_INT(F.status, 0);
    /* Sent at least 300 ms apart, exactly (the loop's clock) ... */
    UT_EQ_INT(F.nsends, F.nhits);
    for (int i = 1; i < F.nsends; i++)
        if (F.sends[i] - F.sends[i - 1] < 300)
            UT_FAIL("edit %d sent %llu ms after the one before (interval 300)", i,
                    (unsigned long long)(F.sends[i] - F.sends[i - 1]));
    /* ... and so they arrive (less what the network adds: the first one
     * also opened the connection). */
    const char *sc = getenv("BOT_TIMEOUT_SCALE");
    uint64_t slack = (uint64_t)(100 * (sc && atof(sc) > 1 ? atof(sc) : 1.0));
    int edits = 0;
    uint64_t prev = 0;
    const struct hit *last = NULL;
    for (int i = 0; i < F.nhits; i++) {
        const struct hit *h = &F.hits[i];
        UT_ASSERT(is(h, "PATCH", "/messages/@original"));
        if (edits && h->at - prev + slack < 300)
            UT_FAIL("edit %d came %llu ms after the one before (interval 300)", edits,
                    (unsigned long long)(h->at - prev));
        prev = h->at;
        last = h;
        edits++;
        UT_CONTAINS(h->body, "\"allowed_mentions\":{\"parse\":[]");
    }
    UT_ASSERT(edits >= 4);        /* it was shown as it grew ... */
    UT_ASSERT(edits <= 1500 / 300 + 2); /* ... and not more often than allowed */
    char *c = content_of(last);
    struct buf want, got;
    buf_init(&want, 1 << 20);
    buf_init(&got, 1 << 20);
    squeeze(&want, buf_str(&F.text));
    squeeze(&got, c);
    UT_EQ_STR(buf_str(&got), buf_str(&want));
    buf_free(&want);
    buf_free(&got);
    mem_free(c);
    fx_free();
}

static void test_long_answer_split_into_followups(void)
{
    /* 40 paragraphs of 150 Hangul syllables (3 bytes each): about 6,000 code
     * points, so four messages of at most 2000 code points each, the first
     * in @original, the others as follow-ups of the interaction. */
    fx_init();
    start_reply(1, 200);
    struct buf para;
    buf_init(&para, 4096);
    for (int i = 0; i < 150; i++)
        buf_puts(&para, i % 10 == 9 ? "다 " : "가");
    buf_puts(&para, "\n\n");
    stream(buf_str(&para), 40);
    fx_end();
    UT_EQ_INT(F.status, 0);
    int finals = 0, followups = 0;
    struct buf whole, want;
    buf_init(&whole, 1 << 20);
    buf_init(&want, 1 << 20);
    int last_original = -1;
    for (int i = 0; i < F.nhits; i++)
        if (is(&F.hits[i], "PATCH", "/messages/@original"))
            last_original = i;
    UT_ASSERT(last_original >= 0);
    for (int i = last_original; i < F.nhits; i++) {
        const struct hit *h = &F.hits[i];
        char *c = content_of(h);
        UT_ASSERT(c != NULL);
        if (code_points(c) > SPLIT_DISCORD_MAX)
            UT_FAIL("part %d has %zu code points", finals, code_points(c));
        UT_ASSERT(code_points(c) > 1000); /* split where needed, not into crumbs */
        if (i > last_original) {
            UT_ASSERT(is(h, "POST", "/webhooks/" APP "/" ITOKEN));
            followups++;
        }
        squeeze(&whole, c);
        mem_free(c);
        finals++;
    }
    UT_EQ_INT(followups, 3);
    squeeze(&want, buf_str(&F.text));
    UT_EQ_STR(buf_str(&whole), buf_str(&want)); /* every character, in order */
    buf_free(&para);
    buf_free(&whole);
    buf_free(&want);
    fx_free();
}

static void test_very_long_answer_attached_as_file(void)
{
    /* More than REPLY_MAX_PARTS messages' worth: the first part in
     * @original, then one follow-up with the whole text as answer.txt. */
    fx_init();
    start_reply(1, 200);
    stream("한국어 문장입니다. 0123456789 abcdefghij. 한국어 문장입니다. 0123456789 abcdefghij. "
           "한국어 문장입니다. 0123456789 abcdefghij. 한국어 문장입니다. 0123456789 abcdefghij. ",
           100); /* about 16,000 code points */
    fx_end();
    UT_EQ_INT(F.status, 0);
    int last_original = -1;
    for (int i = 0; i < F.nhits; i++)
        if (is(&F.hits[i], "PATCH", "/messages/@original"))
            last_original = i;
    UT_ASSERT(last_original >= 0);
    char *first = content_of(&F.hits[last_original]);
    UT_ASSERT(first && code_points(first) <= SPLIT_DISCORD_MAX && code_points(first) > 1000);
    mem_free(first);
    UT_EQ_INT(F.nhits - last_original - 1, 1); /* one follow-up, not a flood */
    const struct hit *f = &F.hits[F.nhits - 1];
    UT_ASSERT(is(f, "POST", "/webhooks/" APP "/" ITOKEN));
    UT_CONTAINS(f->body, "filename=\"answer.txt\"");
    UT_CONTAINS(f->body, "answer.txt");
    UT_ASSERT(memmem(f->body, f->len, F.text.p, F.text.len) != NULL); /* the whole text, as is */
    fx_free();
}

static void test_channel_reply_created_then_edited(void)
{
    /* A channel message: typing until the first text, then our reply is
     * created (referencing the message, pinging nobody) and edited after. */
    fx_init();
    start_reply(0, 250);
    stream("답변 ", 40);
    fx_end();
    UT_EQ_INT(F.status, 0);
    UT_ASSERT(F.nhits >= 3);
    UT_ASSERT(is(&F.hits[0], "POST", "/channels/" CH "/typing"));
    int created = -1;
    for (int i = 0; i < F.nhits; i++) {
        if (is(&F.hits[i], "POST", "/channels/" CH "/messages")) {
            UT_EQ_INT(created, -1); /* created once */
            created = i;
            UT_CONTAINS(F.hits[i].body, "\"message_reference\":{\"message_id\":\"" USERMSG "\"");
            UT_CONTAINS(F.hits[i].body, "\"replied_user\":false");
        } else if (created >= 0) {
            UT_ASSERT(is(&F.hits[i], "PATCH", "/channels/" CH "/messages/" POSTED));
        }
    }
    UT_ASSERT(created >= 0 && created < F.nhits - 1);
    fx_free();
}

/* Thousands of answers at once can fill the REST client's queue: a part it
 * refuses (-ENOBUFS, nothing sent) is sent again once there is room, not
 * lost. Here the queue holds one request and another holds it for 600 ms
 * while the answer finishes: an interaction's @original (ixjob waits), then
 * a channel reply (reply waits). */
static void test_full_rest_queue_waits_for_room(void)
{
    for (int interaction = 1; interaction >= 0; interaction--) {
        fx_max_queue = 1;
        fx_init();
        occupy_queue(600);
        start_reply(interaction, 100);
        stream("words ", 3);
        fx_end();
        UT_EQ_INT(F.status, 0);
        UT_EQ_INT(occ.answered, 1);
        UT_ASSERT(F.nhits >= 1);
        const struct hit *last = &F.hits[F.nhits - 1];
        UT_ASSERT(interaction ? is(last, "PATCH", "/messages/@original")
                              : is(last, "POST", "/channels/" CH "/messages"));
        char *c = content_of(last);
        UT_EQ_STR(c, "words words words ");
        UT_ASSERT(last->at - F.started >= 500); /* it waited for the room */
        mem_free(c);
        fx_free();
        fx_max_queue = 0;
    }
}

static void on_cancel_later(uv_timer_t *t)
{
    (void)t;
    buf_puts(&F.text, ", and more words that are never shown");
    reply_changed(F.r);
    reply_cancel(F.r);
    F.r = NULL;
    fx_shutdown();
}

static void test_cancel_sends_nothing_more(void)
{
    fx_init();
    start_reply(1, 300);
    buf_puts(&F.text, "first words");
    reply_changed(F.r);
    /* cancelled while the text keeps changing: nothing else goes out, done
     * never runs, and everything is released (the sanitizers check). */
    uv_timer_t later;
    UT_EQ_INT(uv_timer_init(&F.f.loop, &later), 0);
    uv_timer_start(&later, on_cancel_later, 100, 0);
    UTLOOP_WAIT_FOR(&F.f.ul, F.closed, GUARD_MS);
    uv_close((uv_handle_t *)&later, NULL);
    fx_end();
    UT_EQ_INT(F.done_calls, 0);
    UT_ASSERT(F.nhits <= 1); /* the first progress edit at most */
    for (int i = 0; i < F.nhits; i++)
        UT_NOT_CONTAINS(F.hits[i].body, "never shown");
    fx_free();
}

static void test_note_alone_when_no_text(void)
{
    fx_init();
    start_reply(1, 200);
    reply_finish(F.r, "No AI key is usable right now.", on_done, NULL);
    UT_EQ_INT(F.done_calls, 0);
    fx_end();
    UT_EQ_INT(F.done_calls, 1);
    UT_EQ_INT(F.status, 0);
    UT_EQ_INT(F.nhits, 1);
    char *c = content_of(&F.hits[0]);
    UT_EQ_STR(c, "No AI key is usable right now.");
    mem_free(c);
    fx_free();
}

static void test_rest_gone_fails_cleanly(void)
{
    /* Discord went away (shutdown): the delivery ends with -ENOTCONN. */
    fx_init();
    start_reply(0, 200);
    F.no_rest = 1; /* get_rest answers NULL from now on */
    buf_puts(&F.text, "text");
    reply_finish(F.r, "", on_done, NULL);
    UTLOOP_WAIT_FOR(&F.f.ul, F.done_calls == 1, GUARD_MS);
    UT_EQ_INT(F.status, -ENOTCONN);
    fx_end();
    fx_free();
}

static const struct ut_case cases[] = {
    UT_CASE(test_progress_edits_keep_the_interval),
    UT_CASE(test_long_answer_split_into_followups),
    UT_CASE(test_very_long_answer_attached_as_file),
    UT_CASE(test_channel_reply_created_then_edited),
    UT_CASE(test_full_rest_queue_waits_for_room),
    UT_CASE(test_cancel_sends_nothing_more),
    UT_CASE(test_note_alone_when_no_text),
    UT_CASE(test_rest_gone_fails_cleanly),
    {0},
};

UT_MAIN(cases)
