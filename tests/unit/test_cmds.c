#include <json.h>
#include <regex.h>

#include "base/utf8.h"
#include "discord/cmds.h"
#include "ut.h"

static const struct cmd_def *find(const char *name)
{
    return cmds_find(name, NULL);
}

static void test_table_lookup(void)
{
    int en = -1;
    UT_ASSERT(cmds_find("채팅", &en)->role == ROLE_CHAT && en == 0);
    UT_ASSERT(cmds_find("chat", &en) == find("채팅") && en == 1); /* a twin: one row */
    UT_EQ_STR(find("chat")->key, "chat");
    UT_ASSERT(find("img")->role == ROLE_IMAGE);
    UT_ASSERT(find("비디오")->role == ROLE_VIDEO);
    UT_ASSERT(cmds_find("ping", &en) == find("핑") && en == 0); /* a localization: one command */
    UT_ASSERT(find("상태")->admin && find("인스턴스")->admin && !find("핑")->admin);
    UT_ASSERT(find("nope") == NULL);
    UT_EQ_STR(cmds_option_name(find("chat"), 0, "question"), "질문");
    UT_EQ_STR(cmds_option_name(find("chat"), 1, "question"), "question");
    UT_EQ_STR(cmds_option_name(find("img"), 1, "strength"), "강도"); /* no English name: the one name */
    UT_ASSERT(cmds_option_name(find("img"), 0, "count") == NULL);
    UT_ASSERT(cmds_option_name(NULL, 0, "count") == NULL);
}

/* The tables the roles declare hold together: keys, (role, id) pairs and
 * registered names are unique, options' keys unique within a command. */
static void test_tables_are_consistent(void)
{
    const struct cmd_def *seen[64];
    size_t n = 0;
    for (size_t t = 0; ut_roles[t]; t++)
        for (size_t i = 0; i < ut_roles[t]->commands->n; i++) {
            const struct cmd_def *d = &ut_roles[t]->commands->defs[i];
            UT_ASSERT(d->role == ut_roles[t]->id); /* a role's rows are its own commands */
            UT_ASSERT(d->key && d->name && d->desc_en && d->desc_ko && d->available);
            UT_ASSERT(!d->twin || d->name_en);
            UT_ASSERT(find(d->name) == d && (!d->name_en || find(d->name_en) == d));
            for (size_t k = 0; k < n; k++) {
                UT_ASSERT(strcmp(seen[k]->key, d->key) != 0);
                UT_ASSERT(seen[k]->role != d->role || seen[k]->id != d->id);
                UT_ASSERT(strcmp(seen[k]->name, d->name) != 0);
            }
            for (const struct cmd_option *a = d->options; a && a->key; a++)
                for (const struct cmd_option *b = a + 1; b->key; b++)
                    UT_ASSERT(strcmp(a->key, b->key) != 0 && strcmp(a->name, b->name) != 0);
            UT_ASSERT(n < sizeof(seen) / sizeof(seen[0]));
            seen[n++] = d;
        }
    UT_EQ_INT(n, 10);
    UT_EQ_INT(cmds_count(), 14); /* four twins */
}

/* Discord's limits: names 1-32 chars (code points), descriptions 1-100,
 * admin commands hidden with "0". */
static size_t cps(const char *s)
{
    return utf8_count(s, strlen(s));
}

static void test_json_respects_discord_limits(void)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    cmds_json(&b);
    struct json_object *arr = json_tokener_parse(buf_str(&b)), *v;
    UT_ASSERT(arr && json_object_is_type(arr, json_type_array));
    UT_EQ_INT(json_object_array_length(arr), cmds_count());
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        struct json_object *c = json_object_array_get_idx(arr, i);
        json_object_object_get_ex(c, "name", &v);
        const char *name = json_object_get_string(v);
        UT_ASSERT(cps(name) >= 1 && cps(name) <= 32);
        json_object_object_get_ex(c, "description", &v);
        UT_ASSERT(cps(json_object_get_string(v)) >= 1 && cps(json_object_get_string(v)) <= 100);
        if (find(name)->admin) {
            UT_ASSERT(json_object_object_get_ex(c, "default_member_permissions", &v));
            UT_EQ_STR(json_object_get_string(v), "0");
        }
    }
    UT_CONTAINS(buf_str(&b), "\"name\":\"채팅\"");
    UT_CONTAINS(buf_str(&b), "\"description_localizations\":{\"ko\":\"AI와 대화합니다\"}");
    json_object_put(arr);
    buf_free(&b);
}

static struct json_object *command_named(struct json_object *arr, const char *name)
{
    struct json_object *v;
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        struct json_object *c = json_object_array_get_idx(arr, i);
        if (json_object_object_get_ex(c, "name", &v) && !strcmp(json_object_get_string(v), name))
            return c;
    }
    return NULL;
}

static const char *path_str(struct json_object *o, const char *a, const char *b)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, a, &v))
        return NULL;
    if (b && !json_object_object_get_ex(v, b, &v))
        return NULL;
    return json_object_get_string(v);
}

static void test_chat_commands_and_twins(void)
{
    const char *twins[][2] = {{"초기화", "reset"}, {"채팅모드", "chatmode"}, {"사용량", "usage"}};
    for (int i = 0; i < 3; i++) {
        const struct cmd_def *k = find(twins[i][0]);
        UT_ASSERT(k && k == find(twins[i][1]) && k->twin);
        UT_EQ_STR(k->key, twins[i][1]);
        UT_ASSERT(k->role == ROLE_CHAT && k->available && !k->admin);
    }
    UT_ASSERT(find("reset")->ephemeral && !find("reset")->open_everywhere);
    UT_ASSERT(!find("chatmode")->ephemeral && !find("chatmode")->open_everywhere);
    UT_ASSERT(find("usage")->ephemeral && find("usage")->open_everywhere);
    UT_EQ_STR(find("채팅모드")->permissions, "16");
    UT_ASSERT(find("reset")->permissions == NULL && find("chat")->permissions == NULL);
}

/* 채팅모드/chatmode: one required string option with fixed choices, shown in
 * Korean to Korean clients, and only for members with Manage Channels. */
static void test_choices_and_permissions_json(void)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    cmds_json(&b);
    struct json_object *arr = json_tokener_parse(buf_str(&b)), *v;
    UT_ASSERT(arr);
    const char *modes[][2] = {{"채팅모드", "모드"}, {"chatmode", "mode"}};
    for (int i = 0; i < 2; i++) {
        struct json_object *c = command_named(arr, modes[i][0]);
        UT_ASSERT(c);
        UT_EQ_STR(path_str(c, "default_member_permissions", NULL), "16");
        UT_ASSERT(json_object_object_get_ex(c, "options", &v) && json_object_array_length(v) == 1);
        struct json_object *op = json_object_array_get_idx(v, 0);
        UT_EQ_STR(path_str(op, "name", NULL), modes[i][1]);
        UT_ASSERT(json_object_object_get_ex(op, "type", &v) && json_object_get_int(v) == CMD_OPT_STRING);
        UT_ASSERT(json_object_object_get_ex(op, "required", &v) && json_object_get_boolean(v));
        UT_ASSERT(json_object_object_get_ex(op, "choices", &v) && json_object_array_length(v) == 2);
        struct json_object *on = json_object_array_get_idx(v, 0), *off = json_object_array_get_idx(v, 1);
        UT_EQ_STR(path_str(on, "name", NULL), "on");
        UT_EQ_STR(path_str(on, "name_localizations", "ko"), "켜기");
        UT_EQ_STR(path_str(on, "value", NULL), "on");
        UT_EQ_STR(path_str(off, "name", NULL), "off");
        UT_EQ_STR(path_str(off, "name_localizations", "ko"), "끄기");
        UT_EQ_STR(path_str(off, "value", NULL), "off");
    }
    /* no choices key where there are none; no permissions on the rest */
    struct json_object *chat = command_named(arr, "chat");
    UT_ASSERT(json_object_object_get_ex(chat, "options", &v));
    UT_ASSERT(!json_object_object_get_ex(json_object_array_get_idx(v, 0), "choices", NULL));
    UT_ASSERT(!json_object_object_get_ex(chat, "default_member_permissions", NULL));
    UT_ASSERT(!json_object_object_get_ex(command_named(arr, "usage"), "default_member_permissions", NULL));
    UT_EQ_STR(path_str(command_named(arr, "상태"), "default_member_permissions", NULL), "0");
    /* English twins carry no localized name that would clash with them */
    UT_ASSERT(!json_object_object_get_ex(command_named(arr, "초기화"), "name_localizations", NULL));
    UT_EQ_STR(path_str(command_named(arr, "사용량"), "description_localizations", "ko"), "오늘의 사용량");
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
    UT_CASE(test_tables_are_consistent),
    UT_CASE(test_json_respects_discord_limits),
    UT_CASE(test_hash_is_stable),
    UT_CASE(test_chat_commands_and_twins),
    UT_CASE(test_choices_and_permissions_json),
    {0},
};
UT_MAIN(cases)
