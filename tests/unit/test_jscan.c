/* Unit tests for jscan: what it finds, and everything it must refuse. The
 * input of every case is copied into a buffer of exactly its length, so
 * ASan catches a read past the end. */
#include <stdlib.h>
#include <string.h>

#include <json.h>

#include "parse/jscan.h"
#include "ut.h"

static const char *const env_keys[] = {"op", "t", "s", "d"};

/* jscan_object on an exact-size copy of s. */
static int scan(const char *s, const char *const *keys, int n, struct jscan_val *out, char **copy)
{
    size_t len = strlen(s);
    *copy = malloc(len ? len : 1);
    memcpy(*copy, s, len);
    return jscan_object(*copy, len, keys, n, out);
}

static int ok(const char *s)
{
    struct jscan_val v[4];
    char *c;
    int rc = scan(s, env_keys, 4, v, &c);
    free(c);
    return rc == 0;
}

static void test_envelope_members_found_in_place(void)
{
    const char *s = " {\"t\":\"MESSAGE_CREATE\",\"s\":42,\"op\":0,\"d\":{\"id\":\"1\",\"x\":[1,{\"y\":\"}\"}]}} \n";
    struct jscan_val v[4];
    char *c;
    UT_EQ_INT(scan(s, env_keys, 4, v, &c), 0);
    int64_t n;
    UT_EQ_INT(jscan_int64(&v[0], &n), 0);
    UT_EQ_INT(n, 0);
    UT_ASSERT(jscan_eq(&v[1], "MESSAGE_CREATE"));
    UT_EQ_INT(jscan_int64(&v[2], &n), 0);
    UT_EQ_INT(n, 42);
    UT_EQ_INT(v[3].type, JSCAN_OBJECT);
    UT_EQ_INT(v[3].n, strlen("{\"id\":\"1\",\"x\":[1,{\"y\":\"}\"}]}"));
    UT_ASSERT(!memcmp(v[3].p, "{\"id\":\"1\",\"x\":[1,{\"y\":\"}\"}]}", v[3].n));
    free(c);
}

static void test_absent_null_and_last_duplicate(void)
{
    struct jscan_val v[4];
    char *c;
    UT_EQ_INT(scan("{\"op\":1,\"d\":null,\"op\":11}", env_keys, 4, v, &c), 0);
    int64_t n;
    UT_EQ_INT(jscan_int64(&v[0], &n), 0);
    UT_EQ_INT(n, 11);
    UT_EQ_INT(v[1].type, JSCAN_ABSENT);
    UT_EQ_INT(v[3].type, JSCAN_NULL);
    free(c);
    UT_EQ_INT(scan("{}", env_keys, 4, v, &c), 0);
    UT_EQ_INT(v[0].type, JSCAN_ABSENT);
    free(c);
}

static void test_values_of_every_kind(void)
{
    UT_ASSERT(ok("{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\",\"b\":-0.5e+10,\"c\":true,\"d\":false,"
                 "\"e\":null,\"f\":[],\"g\":{},\"h\":[[[]]],\"i\":0,\"j\":1E5,\"k\":\"한국어 🤖\"}"));
    UT_ASSERT(ok("{ \"op\" : 0 , \"d\" : [ 1 , 2 ] }"));
}

static void test_malformed_refused(void)
{
    static const char *const bad[] = {
        "", " ", "[]", "\"x\"", "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{,}", "{\"a\":1 \"b\":2}",
        "{\"a\":01}", "{\"a\":-}", "{\"a\":1.}", "{\"a\":1e}", "{\"a\":.5}", "{\"a\":+1}", "{\"a\":tru}",
        "{\"a\":nul}", "{\"a\":True}", "{\"a\":\"x}", "{\"a\":\"\\x\"}", "{\"a\":\"\\u12g4\"}",
        "{\"a\":\"\\u12\"}", "{\"a\":\"tab\there\"}", "{\"a\":[1,]}", "{\"a\":[1 2]}", "{\"a\":1}x",
        "{\"a\":1}{}", "{'a':1}", "{a:1}", "{\"a\":[}", "{\"a\":{]}", "{\"a\":\"\\",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (ok(bad[i]))
            UT_FAIL("accepted: %s", bad[i]);
    char nul[] = {'{', '"', 'a', '"', ':', '"', 0, '"', '}'};
    struct jscan_val v[4];
    UT_EQ_INT(jscan_object(nul, sizeof(nul), env_keys, 4, v), -1);
}

/* Every proper prefix of a valid document is refused, without reading
 * past its end (ASan watches the exact-size copies). */
static void test_every_truncation_refused(void)
{
    const char *s = "{\"t\":\"X\",\"s\":12,\"op\":0,\"d\":{\"a\":[true,false,null,-1.5e3,\"\\u00e9\\\"\"],\"b\":{}}}";
    UT_ASSERT(ok(s));
    for (size_t n = 0; n < strlen(s); n++) {
        char *c = malloc(n ? n : 1);
        memcpy(c, s, n);
        struct jscan_val v[4];
        if (jscan_object(c, n, env_keys, 4, v) == 0)
            UT_FAIL("prefix of %zu bytes accepted", n);
        free(c);
    }
}

static void test_depth_is_bounded(void)
{
    char buf[512];
    size_t n = 0;
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "{\"a\":");
    for (int i = 0; i < JSCAN_MAX_DEPTH + 5; i++)
        buf[n++] = '[';
    for (int i = 0; i < JSCAN_MAX_DEPTH + 5; i++)
        buf[n++] = ']';
    buf[n++] = '}';
    buf[n] = '\0';
    UT_ASSERT(!ok(buf));
    n = (size_t)snprintf(buf, sizeof(buf), "{\"a\":");
    for (int i = 0; i < JSCAN_MAX_DEPTH - 2; i++)
        buf[n++] = '[';
    for (int i = 0; i < JSCAN_MAX_DEPTH - 2; i++)
        buf[n++] = ']';
    buf[n++] = '}';
    buf[n] = '\0';
    UT_ASSERT(ok(buf));
}

static void test_arrays_iterated(void)
{
    static const char *const k[] = {"mentions"};
    struct jscan_val v, el, id;
    char *c;
    UT_EQ_INT(scan("{\"mentions\":[ {\"id\":\"5\"} , {\"id\":\"7\",\"x\":[1]}, 3 ]}", k, 1, &v, &c), 0);
    size_t pos = 0;
    static const char *const idk[] = {"id"};
    int seen = 0;
    while (jscan_array_next(&v, &pos, &el) == 1) {
        seen++;
        if (el.type == JSCAN_OBJECT) {
            UT_EQ_INT(jscan_object(el.p, el.n, idk, 1, &id), 0);
            UT_ASSERT(jscan_eq(&id, seen == 1 ? "5" : "7"));
        } else {
            UT_EQ_INT(el.type, JSCAN_NUMBER);
        }
    }
    UT_EQ_INT(seen, 3);
    free(c);
    UT_EQ_INT(scan("{\"mentions\":[]}", k, 1, &v, &c), 0);
    pos = 0;
    UT_EQ_INT(jscan_array_next(&v, &pos, &el), 0);
    free(c);
}

static void test_int64_limits(void)
{
    struct jscan_val v = {JSCAN_NUMBER, "9223372036854775807", 19};
    int64_t n;
    UT_EQ_INT(jscan_int64(&v, &n), 0);
    UT_ASSERT(n == INT64_MAX);
    v.p = "9223372036854775808";
    UT_EQ_INT(jscan_int64(&v, &n), -1);
    v.p = "1.5";
    v.n = 3;
    UT_EQ_INT(jscan_int64(&v, &n), -1);
    v.type = JSCAN_STRING;
    v.p = "12";
    v.n = 2;
    UT_EQ_INT(jscan_int64(&v, &n), -1);
}

/* What jscan accepts, json-c (strict) parses as an object, on documents
 * shaped like the gateway's. */
static void test_agrees_with_json_c(void)
{
    static const char *const docs[] = {
        "{\"op\":0,\"s\":1,\"t\":\"A\",\"d\":{\"content\":\"\\ud83e\\udd16 hi\",\"n\":[1,2.5,-3e-2]}}",
        "{\"op\":11}", "{\"op\":10,\"d\":{\"heartbeat_interval\":41250}}", "{\"op\":9,\"d\":false}",
        "{\"a\":{\"b\":{\"c\":[{\"d\":null}]}}}",
    };
    struct json_tokener *tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        json_tokener_reset(tok);
        struct json_object *o = json_tokener_parse_ex(tok, docs[i], (int)strlen(docs[i]));
        UT_ASSERT(o && json_object_is_type(o, json_type_object));
        UT_ASSERT(ok(docs[i]));
        json_object_put(o);
    }
    json_tokener_free(tok);
}

static const struct ut_case cases[] = {
    UT_CASE(test_envelope_members_found_in_place),
    UT_CASE(test_absent_null_and_last_duplicate),
    UT_CASE(test_values_of_every_kind),
    UT_CASE(test_malformed_refused),
    UT_CASE(test_every_truncation_refused),
    UT_CASE(test_depth_is_bounded),
    UT_CASE(test_arrays_iterated),
    UT_CASE(test_int64_limits),
    UT_CASE(test_agrees_with_json_c),
    {NULL, NULL},
};

UT_MAIN(cases)
