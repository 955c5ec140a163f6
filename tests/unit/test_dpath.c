/* Unit tests for dpath: the Discord REST paths, built in one place. */
#include <errno.h>
#include <string.h>

#include "base/err.h"
#include "discord/dpath.h"
#include "ut.h"

#define CH "1200000000000000001"
#define MSG "1200000000000000002"
#define APP "1200000000000000003"
#define GUILD "1200000000000000004"
#define TOK "aW50ZXJhY3Rpb246_Ab-9.x~"

/* The paths are the ones Discord documents, byte for byte. */
static void test_every_endpoint_writes_its_path(void)
{
    char p[DPATH_MAX];
    UT_EQ_INT(dpath_channel_messages(p, sizeof p, CH), 0);
    UT_EQ_STR(p, "/channels/" CH "/messages");
    UT_EQ_INT(dpath_channel_message(p, sizeof p, CH, MSG), 0);
    UT_EQ_STR(p, "/channels/" CH "/messages/" MSG);
    UT_EQ_INT(dpath_channel_typing(p, sizeof p, CH), 0);
    UT_EQ_STR(p, "/channels/" CH "/typing");
    UT_EQ_INT(dpath_webhook(p, sizeof p, APP, TOK), 0);
    UT_EQ_STR(p, "/webhooks/" APP "/" TOK);
    UT_EQ_INT(dpath_webhook_original(p, sizeof p, APP, TOK), 0);
    UT_EQ_STR(p, "/webhooks/" APP "/" TOK "/messages/@original");
    UT_EQ_INT(dpath_interaction_callback(p, sizeof p, MSG, TOK), 0);
    UT_EQ_STR(p, "/interactions/" MSG "/" TOK "/callback");
    UT_EQ_INT(dpath_app_commands(p, sizeof p, APP), 0);
    UT_EQ_STR(p, "/applications/" APP "/commands");
    UT_EQ_INT(dpath_guild_commands(p, sizeof p, APP, GUILD), 0);
    UT_EQ_STR(p, "/applications/" APP "/guilds/" GUILD "/commands");
    UT_EQ_INT(dpath_me(p, sizeof p), 0);
    UT_EQ_STR(p, "/users/@me");
}

/* An id from a job payload cannot reach another endpoint or route. */
static void test_bad_ids_and_tokens_are_refused_with_an_empty_path(void)
{
    static const char *const bad_ids[] = {NULL, "", "abc", "../users/@me", "1/2", "1?x=1", "-1", " 1",
                                          "123456789012345678901" /* 21 digits */};
    static const char *const bad_toks[] = {NULL, "", ".", "..", "a/b", "a?b", "a#b", "a%2e", "a b", "a\n"};
    char p[DPATH_MAX];
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        strcpy(p, "x");
        UT_EQ_INT(dpath_channel_messages(p, sizeof p, bad_ids[i]), -EINVAL);
        UT_EQ_STR(p, "");
        UT_EQ_INT(dpath_channel_message(p, sizeof p, CH, bad_ids[i]), -EINVAL);
        UT_EQ_INT(dpath_webhook_original(p, sizeof p, bad_ids[i], TOK), -EINVAL);
        UT_EQ_INT(dpath_guild_commands(p, sizeof p, APP, bad_ids[i]), -EINVAL);
        UT_EQ_STR(p, "");
    }
    for (size_t i = 0; i < sizeof bad_toks / sizeof bad_toks[0]; i++) {
        strcpy(p, "x");
        UT_EQ_INT(dpath_interaction_callback(p, sizeof p, MSG, bad_toks[i]), -EINVAL);
        UT_EQ_STR(p, "");
        UT_EQ_INT(dpath_webhook(p, sizeof p, APP, bad_toks[i]), -EINVAL);
    }
    UT_EQ_INT(dpath_channel_messages(NULL, 64, CH), -EINVAL);
    UT_EQ_INT(dpath_channel_messages(p, 4, "x"), -EINVAL); /* a bad id wins over a short buffer */
    UT_EQ_INT(dpath_is_snowflake("12345678901234567890", 20), 1);
    UT_EQ_INT(dpath_is_snowflake("1234x", 4), 1); /* only the first n bytes count */
    UT_EQ_INT(dpath_is_snowflake("", 0), 0);
}

/* A short buffer gets "" and BC_ETOOBIG, never a truncated path; one byte
 * more than the path is enough, and DPATH_MAX holds the longest token. */
static void test_short_buffer_is_refused_and_DPATH_MAX_is_enough(void)
{
    static const char want[] = "/channels/" CH "/messages";
    char p[DPATH_MAX];
    strcpy(p, "x");
    UT_EQ_INT(dpath_channel_messages(p, sizeof want - 1, CH), BC_ETOOBIG);
    UT_EQ_STR(p, "");
    UT_EQ_INT(dpath_channel_messages(p, 0, CH), BC_ETOOBIG);
    UT_EQ_INT(dpath_me(p, 3), BC_ETOOBIG);
    UT_EQ_INT(dpath_channel_messages(p, sizeof want, CH), 0);
    UT_EQ_STR(p, want);
    char tok[DPATH_TOKEN_MAX + 2];
    memset(tok, 'a', DPATH_TOKEN_MAX);
    tok[DPATH_TOKEN_MAX] = '\0';
    UT_EQ_INT(dpath_webhook_original(p, sizeof p, "12345678901234567890", tok), 0);
    UT_EQ_INT(dpath_interaction_callback(p, sizeof p, "12345678901234567890", tok), 0);
    UT_EQ_INT(strlen(p), strlen("/interactions/12345678901234567890/") + DPATH_TOKEN_MAX + strlen("/callback"));
    tok[DPATH_TOKEN_MAX] = 'a';
    tok[DPATH_TOKEN_MAX + 1] = '\0';
    UT_EQ_INT(dpath_webhook_original(p, sizeof p, APP, tok), -EINVAL);
}

static const struct ut_case cases[] = {
    UT_CASE(test_every_endpoint_writes_its_path),
    UT_CASE(test_bad_ids_and_tokens_are_refused_with_an_empty_path),
    UT_CASE(test_short_buffer_is_refused_and_DPATH_MAX_is_enough),
    {0},
};
UT_MAIN(cases)
