#include <json.h>
#include <stdio.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "secret.h"
#include "ut.h"
#include "ut_log.h"

/* Each case logs into a file of ut_log's and reads back what was written. */
static void capture(void)
{
    utlog_start("chat-1", "chat", NULL);
}

static struct json_object *parse_line(const char *line)
{
    struct json_object *o = json_tokener_parse(line);
    if (!o)
        UT_FAIL("not JSON: %s", line);
    return o;
}

static const char *get(struct json_object *o, const char *k)
{
    struct json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

static void test_line_shape(void)
{
    capture();
    log_info("redis connected", LF_STR("conn", "cmd"), LF_INT("n", 42), LF_BOOL("ok", 1), LF_DBL("ms", 1.5));
    const char *out = utlog_text();
    UT_ASSERT(out[strlen(out) - 1] == '\n');
    struct json_object *o = parse_line(out);
    UT_EQ_STR(get(o, "level"), "info");
    UT_EQ_STR(get(o, "instance"), "chat-1");
    UT_EQ_STR(get(o, "role"), "chat");
    UT_EQ_STR(get(o, "msg"), "redis connected");
    UT_EQ_STR(get(o, "conn"), "cmd");
    UT_EQ_STR(get(o, "n"), "42");
    UT_EQ_STR(get(o, "ok"), "true");
    UT_ASSERT(get(o, "ts") && strlen(get(o, "ts")) == 24);
    json_object_put(o);
}

static void test_escaping_and_korean(void)
{
    capture();
    log_warn("quote \" backslash \\ newline \n tab \t", LF_STR("text", "안녕하세요 채팅방-1"),
             LF_STR("bad", "ok\xff\xfe-end"), LF_STR("ctl", "a\x01z"));
    const char *out = utlog_text();
    UT_ASSERT(strchr(out, '\n') == out + strlen(out) - 1); /* exactly one line */
    struct json_object *o = parse_line(out);
    UT_EQ_STR(get(o, "msg"), "quote \" backslash \\ newline \n tab \t");
    UT_EQ_STR(get(o, "text"), "안녕하세요 채팅방-1");
    UT_EQ_STR(get(o, "bad"), "ok\xEF\xBF\xBD\xEF\xBF\xBD-end");
    UT_EQ_STR(get(o, "ctl"), "a\x01z");
    json_object_put(o);
}

static void test_secrets_redacted_by_type(void)
{
    struct secret s = {0};
    secret_set(&s, "sk-very-secret-value");
    capture();
    log_info("keys", LF_SECRET("key", &s), LF_URL("db", "postgresql://bot:pa55word@db:5432/x"),
             LF_URL("redis", "redis://:r3dispw@127.0.0.1:6379/0"), LF_URL("plain", "redis://127.0.0.1:6379"),
             LF_URL("conninfo", "host=db password=zzsecret user=bot"),
             LF_URL("query", "postgresql://bot@db/x?sslmode=disable&password=qqsecret"),
             LF_URL("both", "postgresql://bot:pa55word@db/x?password=qqsecret"));
    const char *out = utlog_text();
    UT_NOT_CONTAINS(out, "sk-very-secret-value");
    UT_NOT_CONTAINS(out, "pa55word");
    UT_NOT_CONTAINS(out, "r3dispw");
    UT_NOT_CONTAINS(out, "zzsecret");
    UT_NOT_CONTAINS(out, "qqsecret");
    struct json_object *o = parse_line(out);
    UT_EQ_STR(get(o, "key"), s.fp);
    UT_ASSERT(!strncmp(s.fp, "sha256:", 7) && strlen(s.fp) == 15);
    UT_EQ_STR(get(o, "db"), "postgresql://bot:***@db:5432/x");
    UT_EQ_STR(get(o, "redis"), "redis://:***@127.0.0.1:6379/0");
    UT_EQ_STR(get(o, "plain"), "redis://127.0.0.1:6379");
    UT_EQ_STR(get(o, "conninfo"), "host=db password=*** (rest hidden)");
    UT_EQ_STR(get(o, "query"), "postgresql://bot@db/x?sslmode=disable&password=*** (rest hidden)");
    UT_EQ_STR(get(o, "both"), "postgresql://bot:***@db/x?password=*** (rest hidden)");
    json_object_put(o);
    secret_clear(&s);
    UT_ASSERT(s.value == NULL);
    UT_EQ_STR(s.fp, "unset");
}

static void test_level_filter(void)
{
    capture();
    log_set_level(LOG_WARN);
    log_debug("hidden");
    log_info("hidden too");
    log_error("shown", LF_ERR(BC_ETOOBIG));
    const char *out = utlog_text();
    UT_NOT_CONTAINS(out, "hidden");
    struct json_object *o = parse_line(out);
    UT_EQ_STR(get(o, "err"), "input too large");
    json_object_put(o);
    UT_EQ_INT(log_level_parse("WARNING"), LOG_WARN);
    UT_EQ_INT(log_level_parse("nope"), -1);
}

static void test_huge_field_truncated_but_valid(void)
{
    static char big[20000];
    memset(big, 'x', sizeof(big) - 1);
    memcpy(big + 100, "\"\\\n", 3);
    capture();
    log_info("big", LF_STR("a", big), LF_STR("b", "after"));
    const char *out = utlog_text();
    UT_ASSERT(strlen(out) <= LOG_LINE_MAX + 1);
    struct json_object *o = parse_line(out);
    UT_EQ_STR(get(o, "truncated"), "true");
    json_object_put(o);
}

static const struct ut_case cases[] = {
    UT_CASE(test_line_shape),
    UT_CASE(test_escaping_and_korean),
    UT_CASE(test_secrets_redacted_by_type),
    UT_CASE(test_level_filter),
    UT_CASE(test_huge_field_truncated_but_valid),
    {0},
};
UT_MAIN(cases)
