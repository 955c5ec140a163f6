#include <string.h>

#include <json.h>

#include "base/jtext.h"
#include "base/mem.h"
#include "ut.h"

static void test_compact_and_slashes_as_they_are(void)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "url", json_object_new_string("https://cdn.example/a/b.png"));
    json_object_object_add(o, "n", json_object_new_int(3));
    struct json_object *a = json_object_new_array();
    json_object_array_add(a, json_object_new_string("채팅"));
    json_object_array_add(a, NULL);
    json_object_object_add(o, "a", a);
    char *s = jtext_take(o);
    UT_EQ_STR(s, "{\"url\":\"https://cdn.example/a/b.png\",\"n\":3,\"a\":[\"채팅\",null]}");
    mem_free(s);
}

static void test_takes_the_callers_reference(void)
{
    struct json_object *o = json_object_new_string("x");
    json_object_get(o); /* a second holder: o must survive the take */
    char *s = jtext_take(o);
    UT_EQ_STR(s, "\"x\"");
    UT_EQ_STR(json_object_get_string(o), "x");
    UT_EQ_INT(json_object_put(o), 1); /* ours was the last reference left */
    mem_free(s);
}

static void test_null(void)
{
    char *s = jtext_take(NULL);
    UT_EQ_STR(s, "null");
    mem_free(s);
}

static const struct ut_case cases[] = {
    UT_CASE(test_compact_and_slashes_as_they_are),
    UT_CASE(test_takes_the_callers_reference),
    UT_CASE(test_null),
    {0},
};
UT_MAIN(cases)
