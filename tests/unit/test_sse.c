/* test_sse: the event-stream parser fed in every possible way. */
#include <string.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/mem.h"
#include "parse/sse.h"
#include "ut.h"

/* Collects events as "<data>|" so that a whole stream compares as a string. */
struct col {
    struct buf out;
    int events;
    int stop_at; /* return 1 from this event (1-based); 0 = never */
};

static int on_event(const char *data, size_t len, void *arg)
{
    struct col *c = arg;
    UT_EQ_INT(strlen(data), len); /* NUL-terminated at len */
    UT_EQ_INT(buf_append(&c->out, data, len), 0);
    UT_EQ_INT(buf_puts(&c->out, "|"), 0);
    c->events++;
    return c->stop_at && c->events == c->stop_at;
}

static void col_init(struct col *c)
{
    memset(c, 0, sizeof *c);
    buf_init(&c->out, 1 << 20);
}

/* Feed s in the given pieces (cuts are offsets, ascending) and return events. */
static char *run_cuts(const char *s, const size_t *cuts, size_t ncuts, size_t max_line,
                      size_t max_event, int *rc_out)
{
    struct col c;
    col_init(&c);
    struct sse p;
    sse_init(&p, max_line, max_event, on_event, &c);
    size_t len = strlen(s), at = 0;
    int rc = 0;
    for (size_t k = 0; k <= ncuts && !rc; k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        rc = sse_feed(&p, s + at, end - at);
        at = end;
    }
    sse_free(&p);
    if (rc_out)
        *rc_out = rc;
    return buf_detach(&c.out) ?: mem_strdup("");
}

static char *run(const char *s)
{
    return run_cuts(s, NULL, 0, 0, 0, NULL);
}

static const char KOREAN[] =
    ": keep-alive comment\n"
    "data: {\"c\":\"안녕하세요\"}\n\n"
    "event: message\r\n"
    "data: 반갑습니다,\r\n"
    "data: 세계!\r\n\r\n"
    "id: 7\r"
    "data: 한국어 🇰🇷\r\r"
    "data: [DONE]\n\n";
static const char KOREAN_EVENTS[] =
    "{\"c\":\"안녕하세요\"}|반갑습니다,\n세계!|한국어 🇰🇷|[DONE]|";

static void test_whole_stream(void)
{
    char *got = run(KOREAN);
    UT_EQ_STR(got, KOREAN_EVENTS);
    mem_free(got);
}

/* Every single split point, and every pair of split points. */
static void test_every_split_point(void)
{
    size_t len = strlen(KOREAN);
    for (size_t a = 0; a <= len; a++) {
        for (size_t b = a; b <= len; b++) {
            size_t cuts[2] = {a, b};
            char *got = run_cuts(KOREAN, cuts, 2, 0, 0, NULL);
            if (strcmp(got, KOREAN_EVENTS))
                UT_FAIL("cuts %zu,%zu: got \"%s\"", a, b, got);
            mem_free(got);
        }
    }
}

static void test_byte_by_byte(void)
{
    size_t len = strlen(KOREAN);
    size_t *cuts = mem_calloc(len, sizeof *cuts);
    for (size_t i = 0; i < len; i++)
        cuts[i] = i;
    char *got = run_cuts(KOREAN, cuts, len, 0, 0, NULL);
    UT_EQ_STR(got, KOREAN_EVENTS);
    mem_free(got);
    mem_free(cuts);
}

/* A CRLF split between its \r and \n is one line end, not two (which would
 * end the event early and split it in two). */
static void test_crlf_split(void)
{
    const char *s = "data: a\r\ndata: b\r\n\r\n";
    size_t cuts[] = {8}; /* after "data: a\r" */
    char *got = run_cuts(s, cuts, 1, 0, 0, NULL);
    UT_EQ_STR(got, "a\nb|");
    mem_free(got);
    size_t cuts2[] = {18}; /* inside the final blank CRLF */
    got = run_cuts(s, cuts2, 1, 0, 0, NULL);
    UT_EQ_STR(got, "a\nb|");
    mem_free(got);
}

static void test_comments_and_unknown_fields(void)
{
    char *got = run(":comment\n: another\nfoo: bar\ndatax: no\nretry: 10\nid\n\n"
                    "data:x\n:mid-event comment\nunknown\ndata:y\n\n");
    /* The first block has no data field: nothing is dispatched for it. */
    UT_EQ_STR(got, "x\ny|");
    mem_free(got);
}

static void test_field_value_spacing(void)
{
    /* Only one leading space is removed; a field with no colon has "" value. */
    char *got = run("data:  two\n\ndata\n\ndata:nospace\n\n");
    UT_EQ_STR(got, " two||nospace|");
    mem_free(got);
}

static void test_empty_data(void)
{
    char *got = run("data:\n\ndata: \n\ndata:\ndata:\n\n");
    UT_EQ_STR(got, "||\n|");
    mem_free(got);
}

static void test_done_marker(void)
{
    char *got = run("data: {\"a\":1}\n\ndata: [DONE]\n\n");
    UT_EQ_STR(got, "{\"a\":1}|[DONE]|");
    mem_free(got);
}

static void test_partial_event_not_dispatched(void)
{
    char *got = run("data: whole\n\ndata: cut short\n");
    UT_EQ_STR(got, "whole|");
    mem_free(got);
}

static void test_oversize_line(void)
{
    int rc;
    char *got = run_cuts("data: ok\n\ndata: 0123456789abcdef\n\n", NULL, 0, 16, 1024, &rc);
    UT_EQ_INT(rc, BC_ETOOBIG);
    UT_EQ_STR(got, "ok|");
    mem_free(got);
    /* A line may be exactly max_line long. */
    got = run_cuts("data: 0123456789\n\n", NULL, 0, 16, 1024, &rc);
    UT_EQ_INT(rc, 0);
    UT_EQ_STR(got, "0123456789|");
    mem_free(got);
    /* The cap holds when the long line arrives in small pieces. */
    size_t cuts[] = {3, 9, 14, 20};
    got = run_cuts("data: 0123456789abcdef\n\n", cuts, 4, 16, 1024, &rc);
    UT_EQ_INT(rc, BC_ETOOBIG);
    UT_EQ_STR(got, "");
    mem_free(got);
}

static void test_oversize_event_is_sticky(void)
{
    struct col c;
    col_init(&c);
    struct sse p;
    sse_init(&p, 64, 10, on_event, &c);
    UT_EQ_INT(sse_feed(&p, "data: 12345\ndata: 6789\n", 23), 0); /* 10 bytes */
    UT_EQ_INT(sse_feed(&p, "data: x\n", 8), BC_ETOOBIG);
    UT_EQ_INT(sse_feed(&p, "\n", 1), BC_ETOOBIG);
    UT_EQ_INT(c.events, 0);
    sse_reset(&p);
    UT_EQ_INT(sse_feed(&p, "data: again\n\n", 13), 0);
    UT_EQ_STR(buf_str(&c.out), "again|");
    sse_free(&p);
    buf_free(&c.out);
}

static void test_callback_stops_feed(void)
{
    struct col c;
    col_init(&c);
    c.stop_at = 1;
    struct sse p;
    sse_init(&p, 0, 0, on_event, &c);
    UT_EQ_INT(sse_feed(&p, "data: a\n\ndata: b\n\n", 18), 1);
    UT_EQ_STR(buf_str(&c.out), "a|");
    sse_free(&p);
    buf_free(&c.out);
}

static const struct ut_case cases[] = {
    UT_CASE(test_whole_stream),
    UT_CASE(test_every_split_point),
    UT_CASE(test_byte_by_byte),
    UT_CASE(test_crlf_split),
    UT_CASE(test_comments_and_unknown_fields),
    UT_CASE(test_field_value_spacing),
    UT_CASE(test_empty_data),
    UT_CASE(test_done_marker),
    UT_CASE(test_partial_event_not_dispatched),
    UT_CASE(test_oversize_line),
    UT_CASE(test_oversize_event_is_sticky),
    UT_CASE(test_callback_stops_feed),
    {0},
};

UT_MAIN(cases)
