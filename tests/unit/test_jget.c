#include <stdint.h>
#include <string.h>

#include <json.h>

#include "base/jget.h"
#include "ut.h"

/* One member of every kind, as Discord, a provider or our own ingress could
 * send it; each test reads them all with one getter. */
static const char DOC[] = "{\"s\":\"text\",\"empty\":\"\",\"i\":42,\"neg\":-7,\"big\":18446744073709551615,"
                          "\"d\":2.9,\"nd\":-2.9,\"huge\":1e300,\"t\":true,\"f\":false,\"nul\":null,"
                          "\"o\":{\"id\":\"123\"},\"a\":[1,2],\"snum\":\"77\",\"spre\":\"12ab\","
                          "\"sword\":\"abc\",\"sover\":\"99999999999999999999\"}";

static struct json_object *doc(void)
{
    struct json_object *o = json_tokener_parse(DOC);
    UT_ASSERT(o && json_object_is_type(o, json_type_object));
    return o;
}

static void test_member_of_any_type(void)
{
    struct json_object *o = doc();
    UT_ASSERT(jget_member(o, "s") && json_object_is_type(jget_member(o, "s"), json_type_string));
    UT_ASSERT(jget_member(o, "a") && json_object_is_type(jget_member(o, "a"), json_type_array));
    UT_ASSERT(jget_member(o, "f") != NULL); /* false is there */
    UT_ASSERT(jget_member(o, "nul") == NULL);
    UT_ASSERT(jget_member(o, "missing") == NULL);
    /* Not an object, or none: every member is missing, so lookups chain. */
    UT_ASSERT(jget_member(NULL, "s") == NULL);
    UT_ASSERT(jget_member(jget_member(o, "a"), "s") == NULL);
    UT_ASSERT(jget_member(jget_member(o, "s"), "s") == NULL);
    UT_EQ_STR(jget_str(jget_member(o, "o"), "id"), "123");
    UT_ASSERT(jget_str(jget_member(o, "missing"), "id") == NULL);
    json_object_put(o);
}

static void test_typed(void)
{
    struct json_object *o = doc();
    UT_ASSERT(jget_typed(o, "o", json_type_object) == jget_member(o, "o"));
    UT_ASSERT(jget_typed(o, "a", json_type_array) == jget_member(o, "a"));
    UT_ASSERT(jget_typed(o, "i", json_type_int) != NULL);
    UT_ASSERT(jget_typed(o, "i", json_type_double) == NULL); /* no widening */
    UT_ASSERT(jget_typed(o, "d", json_type_int) == NULL);
    UT_ASSERT(jget_typed(o, "o", json_type_array) == NULL);
    UT_ASSERT(jget_typed(o, "t", json_type_boolean) != NULL);
    UT_ASSERT(jget_typed(o, "nul", json_type_null) == NULL);
    UT_ASSERT(jget_typed(o, "missing", json_type_object) == NULL);
    UT_ASSERT(jget_typed(NULL, "o", json_type_object) == NULL);
    json_object_put(o);
}

static void test_str_only_for_strings(void)
{
    struct json_object *o = doc();
    UT_EQ_STR(jget_str(o, "s"), "text");
    UT_EQ_STR(jget_str(o, "empty"), "");
    UT_EQ_STR(jget_str(o, "snum"), "77");
    /* A number, a boolean, an object: not a string, even though json-c
     * would happily print each of them. */
    UT_ASSERT(jget_str(o, "i") == NULL);
    UT_ASSERT(jget_str(o, "t") == NULL);
    UT_ASSERT(jget_str(o, "o") == NULL);
    UT_ASSERT(jget_str(o, "a") == NULL);
    UT_ASSERT(jget_str(o, "nul") == NULL);
    UT_ASSERT(jget_str(o, "missing") == NULL);
    UT_ASSERT(jget_str(NULL, "s") == NULL);
    json_object_put(o);
}

static void test_int_only_for_integers(void)
{
    struct json_object *o = doc();
    UT_EQ_INT(jget_int(o, "i"), 42);
    UT_EQ_INT(jget_int(o, "neg"), -7);
    UT_ASSERT(jget_int(o, "big") == INT64_MAX);
    UT_EQ_INT(jget_int(o, "d"), 0);
    UT_EQ_INT(jget_int(o, "snum"), 0);
    UT_EQ_INT(jget_int(o, "t"), 0);
    UT_EQ_INT(jget_int(o, "o"), 0);
    UT_EQ_INT(jget_int(o, "nul"), 0);
    UT_EQ_INT(jget_int(o, "missing"), 0);
    UT_EQ_INT(jget_int(NULL, "i"), 0);
    json_object_put(o);
}

static void test_num_reads_numbers_and_numeric_strings(void)
{
    struct json_object *o = doc();
    UT_EQ_INT(jget_num(o, "i"), 42);
    UT_ASSERT(jget_num(o, "big") == INT64_MAX);
    UT_EQ_INT(jget_num(o, "d"), 2);   /* truncated toward zero */
    UT_EQ_INT(jget_num(o, "nd"), -2);
    UT_ASSERT(jget_num(o, "huge") == INT64_MAX);
    UT_EQ_INT(jget_num(o, "snum"), 77);
    UT_EQ_INT(jget_num(o, "spre"), 12); /* strtoll's reading of the start */
    UT_EQ_INT(jget_num(o, "sword"), 0);
    UT_EQ_INT(jget_num(o, "empty"), 0);
    UT_ASSERT(jget_num(o, "sover") == INT64_MAX);
    UT_EQ_INT(jget_num(o, "t"), 0); /* a boolean is not a number */
    UT_EQ_INT(jget_num(o, "o"), 0);
    UT_EQ_INT(jget_num(o, "a"), 0);
    UT_EQ_INT(jget_num(o, "nul"), 0);
    UT_EQ_INT(jget_num(o, "missing"), 0);
    UT_EQ_INT(jget_num(NULL, "i"), 0);
    json_object_put(o);
}

static void test_int_any_is_num_plus_booleans(void)
{
    struct json_object *o = doc();
    static const char *const same[] = {"i", "neg", "big", "d", "nd", "huge", "snum", "spre", "sword", "sover",
                                       "o", "a", "nul", "missing"};
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
        if (jget_int_any(o, same[i]) != jget_num(o, same[i]))
            UT_FAIL("jget_int_any and jget_num differ on %s", same[i]);
    UT_EQ_INT(jget_int_any(o, "t"), 1);
    UT_EQ_INT(jget_int_any(o, "f"), 0);
    UT_EQ_INT(jget_int_any(NULL, "i"), 0);
    json_object_put(o);
}

static void test_pointers_are_borrowed(void)
{
    /* The text lives in o: the same pointer each time, no copy to free. */
    struct json_object *o = doc();
    const char *a = jget_str(o, "s"), *b = jget_str(o, "s");
    UT_ASSERT(a == b);
    UT_ASSERT(a == json_object_get_string(jget_member(o, "s")));
    json_object_put(o);
}

static const struct ut_case cases[] = {
    UT_CASE(test_member_of_any_type),
    UT_CASE(test_typed),
    UT_CASE(test_str_only_for_strings),
    UT_CASE(test_int_only_for_integers),
    UT_CASE(test_num_reads_numbers_and_numeric_strings),
    UT_CASE(test_int_any_is_num_plus_booleans),
    UT_CASE(test_pointers_are_borrowed),
    {0},
};
UT_MAIN(cases)
