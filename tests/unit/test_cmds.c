#include <json.h>
#include <regex.h>

#include "cmds.h"
#include "ut.h"

static void test_table_lookup(void)
{
    UT_ASSERT(cmds_find("채팅")->role == ROLE_CHAT);
    UT_ASSERT(cmds_find("chat")->role == ROLE_CHAT);
    UT_ASSERT(cmds_find("img")->role == ROLE_IMAGE);
    UT_ASSERT(cmds_find("비디오")->role == ROLE_VIDEO);
    UT_ASSERT(cmds_find("ping") == cmds_find("핑"));
    UT_ASSERT(cmds_find("상태")->admin && cmds_find("인스턴스")->admin && !cmds_find("핑")->admin);
    UT_ASSERT(cmds_find("nope") == NULL);
}

/* Discord's limits: names 1-32 chars (code points), descriptions 1-100,
 * admin commands hidden with "0". */
static size_t cps(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static void test_json_respects_discord_limits(void)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    cmds_json(&b);
    struct json_object *arr = json_tokener_parse(buf_str(&b)), *v;
    UT_ASSERT(arr && json_object_is_type(arr, json_type_array));
    int n;
    cmds_all(&n);
    UT_EQ_INT(json_object_array_length(arr), n);
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        struct json_object *c = json_object_array_get_idx(arr, i);
        json_object_object_get_ex(c, "name", &v);
        const char *name = json_object_get_string(v);
        UT_ASSERT(cps(name) >= 1 && cps(name) <= 32);
        json_object_object_get_ex(c, "description", &v);
        UT_ASSERT(cps(json_object_get_string(v)) >= 1 && cps(json_object_get_string(v)) <= 100);
        if (cmds_find(name)->admin) {
            UT_ASSERT(json_object_object_get_ex(c, "default_member_permissions", &v));
            UT_EQ_STR(json_object_get_string(v), "0");
        }
    }
    UT_CONTAINS(buf_str(&b), "\"name\":\"채팅\"");
    UT_CONTAINS(buf_str(&b), "\"description_localizations\":{\"ko\":\"AI와 대화합니다\"}");
    json_object_put(arr);
    buf_free(&b);
}

static void test_hash_is_stable(void)
{
    char a[65], b[65];
    cmds_hash(a);
    cmds_hash(b);
    UT_EQ_STR(a, b);
    UT_EQ_INT(strlen(a), 64);
}

static const struct ut_case cases[] = {
    UT_CASE(test_table_lookup),
    UT_CASE(test_json_respects_discord_limits),
    UT_CASE(test_hash_is_stable),
    {0},
};
UT_MAIN(cases)
