/* Unit tests for ping's answer text (admin-instance/ping.c). */
#include <string.h>

#include "admin-instance/ping.h"
#include "base/config.h"
#include "ut.h"

static struct config cfg_named(const char *name)
{
    struct config c;
    memset(&c, 0, sizeof(c));
    snprintf(c.name, sizeof(c.name), "%s", name);
    return c;
}

static void test_heartbeat_not_yet_acknowledged(void)
{
    /* right after start the holder publishes -1: no heartbeat answered
     * yet, which is not a failed measurement */
    struct config c = cfg_named("admin-4");
    char t[700];
    ping__text(t, sizeof(t), &c, 1, "chat-1", -1, 12.5, 0.4);
    UT_CONTAINS(t, "게이트웨이 하트비트: 아직 측정 전 (chat-1)");
    UT_NOT_CONTAINS(t, "하트비트: 측정 실패");
    ping__text(t, sizeof(t), &c, 0, "chat-1", -1, 12.5, 0.4);
    UT_CONTAINS(t, "Gateway heartbeat: not measured yet (chat-1)");
}

static void test_figures_and_unknowns(void)
{
    struct config c = cfg_named("admin-4");
    char t[700];
    ping__text(t, sizeof(t), &c, 0, "admin-4", 41.25, -1, 0.31);
    UT_CONTAINS(t, "Pong! Answered by: admin-4");
    UT_CONTAINS(t, "Gateway heartbeat: 41.2 ms (admin-4)");
    UT_CONTAINS(t, "REST round trip: unavailable");
    UT_CONTAINS(t, "Redis round trip: 0.3 ms");
    ping__text(t, sizeof(t), &c, 1, "", -1, 3, -1);
    UT_CONTAINS(t, "게이트웨이 하트비트: 정보 없음"); /* nobody holds the session */
    UT_CONTAINS(t, "Redis 왕복: 측정 실패");
}

static const struct ut_case cases[] = {
    UT_CASE(test_heartbeat_not_yet_acknowledged),
    UT_CASE(test_figures_and_unknowns),
    {NULL, NULL},
};

UT_MAIN(cases)
