/* Unit tests for role: the rows the roles give, as ut.h puts them in use
 * (what every binary's main.c hands to core_main). */
#include <string.h>

#include "base/config.h"
#include "base/role.h"
#include "ut.h"

static void test_rows_by_id(void)
{
    for (int r = ROLE_FIRST; r <= ROLE_LAST; r++) {
        const struct role_def *d = role_def((enum role)r);
        UT_ASSERT(d != NULL);
        UT_EQ_INT((int)d->id, r);
        UT_ASSERT(d->name && d->name[0]);
        UT_EQ_STR(role_name((enum role)r), d->name);
        UT_ASSERT(d->max_inflight > 0);
        UT_ASSERT(d->commands != NULL);
        for (int o = ROLE_FIRST; o < r; o++)
            UT_ASSERT(strcmp(role_name((enum role)o), d->name) != 0);
    }
    UT_ASSERT(role_def(0) == NULL);
    UT_ASSERT(role_def(ROLE_LAST + 1) == NULL);
    UT_EQ_STR(role_name(0), "unknown");
}

static void test_one_taker_one_for_messages(void)
{
    int takers = 0, messages = 0;
    for (int r = ROLE_FIRST; r <= ROLE_LAST; r++) {
        takers += role_def((enum role)r)->takes_over;
        messages += role_def((enum role)r)->gets_messages;
    }
    UT_EQ_INT(takers, 1);
    UT_EQ_INT(messages, 1);
    UT_ASSERT(role_def(role_taker())->takes_over);
    UT_ASSERT(role_def(role_for_messages())->gets_messages);
    /* the taker serves every role: it has no channels of its own */
    UT_ASSERT(role_def(role_taker())->channels == NULL);
}

static void test_channels_read_the_setting(void)
{
    struct config c;
    memset(&c, 0, sizeof(c));
    c.chat_channels = (char *)"채팅방-*";
    c.image_channels = (char *)"이미지생성-*";
    c.video_channels = (char *)"비디오생성-*";
    int with = 0;
    for (int r = ROLE_FIRST; r <= ROLE_LAST; r++) {
        const struct role_def *d = role_def((enum role)r);
        if (!d->channels)
            continue;
        with++;
        UT_ASSERT(d->channels(&c) != NULL);
    }
    UT_EQ_INT(with, ROLE_COUNT - 1);
    UT_EQ_STR(role_def(role_for_messages())->channels(&c), "채팅방-*");
}

static void test_rows_can_be_replaced(void)
{
    /* a later roles_use replaces the rows (not merged) */
    static const struct role_def only = {.id = ROLE_IMAGE, .name = "img", .max_inflight = 1};
    static const struct role_def *const one[] = {&only, NULL};
    roles_use(one);
    UT_EQ_STR(role_name(ROLE_IMAGE), "img");
    UT_ASSERT(role_def(ROLE_CHAT) == NULL);
    UT_EQ_INT((int)role_taker(), 0);
    UT_EQ_INT((int)role_for_messages(), 0);
    core_use_roles(ut_roles);
    UT_EQ_STR(role_name(ROLE_IMAGE), "image");
}

static const struct ut_case cases[] = {
    UT_CASE(test_rows_by_id),
    UT_CASE(test_one_taker_one_for_messages),
    UT_CASE(test_channels_read_the_setting),
    UT_CASE(test_rows_can_be_replaced),
    {NULL, NULL},
};

UT_MAIN(cases)
