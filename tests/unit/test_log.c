#include <json.h>
#include <stdio.h>
#include <unistd.h>

#include "base/err.h"
#include "base/log.h"
#include "base/secret.h"
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
    UT_EQ_STR(get(o, "conninfo"), "host=db password=*** user=bot");
    UT_EQ_STR(get(o, "query"), "postgresql://bot@db/x?sslmode=disable&password=***");
    UT_EQ_STR(get(o, "both"), "postgresql://bot:***@db/x?password=***");
    json_object_put(o);
    secret_clear(&s);
    UT_ASSERT(s.value == NULL);
    UT_EQ_STR(s.fp, "unset");
}

/* One URL or conninfo, its secret and what log_redact_url must make of it. */
struct redact_case {
    const char *in, *secret, *want;
};

/* Passwords as people write them: libpq's URI userinfo runs to an '@'
 * before the first '/', so '?', '#' and '@' may be in it; a '/' in it
 * makes libpq misread the URI, but the line that says so must not show it
 * either; percent-encoded forms; query parameters; keyword/value
 * conninfo with quotes, escapes and blanks around '='. Where the text is
 * ambiguous, more is hidden, never less. */
static void test_redact_tricky_passwords(void)
{
    static const struct redact_case cases[] = {
        {"postgresql://bot:Pg?Secret#55@db:5432/x", "Secret", "postgresql://bot:***@db:5432/x"},
        {"postgresql://bot:Pg#Secret?55@db/x?sslmode=require", "Secret", "postgresql://bot:***@db/x?sslmode=require"},
        {"postgresql://bot:p@ssw0rd@db/x", "ssw0rd", "postgresql://bot:***@db/x"},
        {"postgresql://bot:pa/ssw0rd@db/x", "ssw0rd", "postgresql://bot:***@db/x"},
        {"postgresql://bot:a/b?cSECRET@db/x", "SECRET", "postgresql://bot:***@db/x"},
        {"postgresql://bot:p@ss/wSECRET@db/x", "SECRET", "postgresql://bot:***@db/x"},
        {"postgresql://bot:p%40ss%2FSECRET@db/x", "SECRET", "postgresql://bot:***@db/x"},
        {"postgresql://bot:pw0SECRET@db/x?application_name=a@b", "SECRET",
         "postgresql://bot:***@db/x?application_name=a@b"},
        {"postgres://u:s3cr3tSECRET@h1:5432,h2:5433/db?target_session_attrs=any", "SECRET",
         "postgres://u:***@h1:5432,h2:5433/db?target_session_attrs=any"},
        {"postgresql://[::1]:5432/db?password=qqSECRET&sslpassword=zzSECRET&user=u", "SECRET",
         "postgresql://[::1]:5432/db?password=***&sslpassword=***&user=u"},
        {"postgresql://u:onlySECRET", "SECRET", "postgresql://u:***"},
        {"postgresql://u:only#SECRET/db", "SECRET", "postgresql://u:***/db"},
        {"redis://:r?3#dSECRET@127.0.0.1:6379/0", "SECRET", "redis://:***@127.0.0.1:6379/0"},
        {"redis://user:pwSECRET@[::1]:6379", "SECRET", "redis://user:***@[::1]:6379"},
        {"host=db password='a b\\'cSECRET' user=bot", "SECRET", "host=db password=*** user=bot"},
        {"host=db password = spa\\ cedSECRET user=bot", "SECRET", "host=db password = *** user=bot"},
        {"host=db password='unterminatedSECRET user=bot", "SECRET", "host=db password=***"},
        {"dbname=x sslpassword=kkSECRET", "SECRET", "dbname=x sslpassword=***"},
        {"host=db PASSWORD=upSECRET", "SECRET", "host=db PASSWORD=***"},
        {"dbname=postgresql://u:inSECRET@h/db user=bot", "SECRET", "dbname=*** user=bot"},
        {"dbname='host=h password=inSECRET' user=bot", "SECRET", "dbname=*** user=bot"},
        {"host=db password=", "\x01", "host=db password=***"},
        {"postgresql://bot@db/x", "\x01", "postgresql://bot@db/x"},
        {"redis://127.0.0.1:6379", "\x01", "redis://127.0.0.1:6379"},
        {"unix:///run/redis.sock?db=2", "\x01", "unix:///run/redis.sock?db=2"},
        {"http://127.0.0.1:8080/v1", "\x01", "http://127.0.0.1:8080/v1"},
        {"postgresql:///db?host=%2Fvar%2Frun", "\x01", "postgresql:///db?host=%2Fvar%2Frun"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[512];
        log_redact_url(cases[i].in, out, sizeof(out));
        if (strstr(out, cases[i].secret) || strcmp(out, cases[i].want))
            UT_FAIL("log_redact_url(%s) = %s, want %s", cases[i].in, out, cases[i].want);
    }
    /* and through a log line, the way "starting" and "postgres connected" log it */
    capture();
    log_info("postgres connected", LF_URL("url", "postgresql://bot:Pg?Secret#55@127.0.0.1:5432/bot"));
    UT_NOT_CONTAINS(utlog_text(), "Secret");
    UT_NOT_CONTAINS(utlog_text(), "#55");
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

/* Regression (fuzz_config): a value that is all scheme letters ("hlue")
 * made the scheme scanner read past its end: strchr("+-.", '\0') finds
 * the terminator. The value sits in an exact-size heap copy so ASan sees
 * any read past it. */
static void test_redact_plain_word_reads_no_further(void)
{
    static const char *const words[] = {"hlue", "a", "h+", "x.y-z", ""};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t n = strlen(words[i]) + 1;
        char *copy = malloc(n), out[64];
        memcpy(copy, words[i], n);
        log_redact_url(copy, out, sizeof(out));
        UT_EQ_STR(out, words[i]);
        free(copy);
    }
}

/* An LF_EXT value over LOG_EXT_MAX is cut before a character, never
 * inside one; stray continuation bytes hold nothing together, so a run of
 * them is cut at the limit (it used to be cut back to nothing). */
static void test_ext_cut_keeps_characters_whole(void)
{
    char ko[200 * 3 + 1] = "", junk[300];
    for (int i = 0; i < 200; i++)
        strcat(ko, "가");
    memset(junk, 0x80, sizeof(junk) - 1);
    junk[sizeof(junk) - 1] = '\0';
    capture();
    log_info("ext", LF_EXT("ko", ko), LF_EXT("junk", junk), LF_STR("sur", "a\xED\xA0\x80"));
    struct json_object *o = parse_line(utlog_text());
    char want[LOG_EXT_MAX * 3 + 8] = "";
    for (int i = 0; i < LOG_EXT_MAX / 3; i++)
        strcat(want, "가");
    strcat(want, "...");
    UT_EQ_STR(get(o, "ko"), want);
    UT_EQ_INT(strlen(get(o, "junk")), LOG_EXT_MAX * 3 + 3); /* each byte a U+FFFD, then "..." */
    UT_EQ_STR(get(o, "sur"), "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"); /* a surrogate is no character */
    json_object_put(o);
}

static const struct ut_case cases[] = {
    UT_CASE(test_ext_cut_keeps_characters_whole),
    UT_CASE(test_redact_plain_word_reads_no_further),
    UT_CASE(test_line_shape),
    UT_CASE(test_escaping_and_korean),
    UT_CASE(test_secrets_redacted_by_type),
    UT_CASE(test_redact_tricky_passwords),
    UT_CASE(test_level_filter),
    UT_CASE(test_huge_field_truncated_but_valid),
    {0},
};
UT_MAIN(cases)
