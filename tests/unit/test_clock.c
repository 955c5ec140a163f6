#include <stdint.h>
#include <sys/time.h>
#include <time.h>

#include "base/clock.h"
#include "ut.h"

/* What every copy this module replaced computed. */
static int64_t gettimeofday_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void test_agrees_with_gettimeofday(void)
{
    /* Bracket it: the two clocks are the same clock, so it lies between. */
    int64_t before = gettimeofday_ms(), now = clock_wall_ms(), after = gettimeofday_ms();
    UT_ASSERT(before <= now && now <= after);
    UT_ASSERT(after - before < 1000);
}

static void test_is_milliseconds_since_the_epoch(void)
{
    int64_t now = clock_wall_ms();
    time_t secs = time(NULL);
    UT_ASSERT(now / 1000 >= (int64_t)secs - 1 && now / 1000 <= (int64_t)secs + 1);
    UT_ASSERT(now > INT64_C(1700000000000)); /* after November 2023: not seconds, not microseconds */
    UT_ASSERT(now < INT64_C(32503680000000)); /* before the year 3000 */
}

static void test_moves_forward(void)
{
    int64_t t0 = clock_wall_ms();
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
    int64_t t1 = clock_wall_ms();
    UT_ASSERT(t1 - t0 >= 19 && t1 - t0 < 5000);
}

static const struct ut_case cases[] = {
    UT_CASE(test_agrees_with_gettimeofday),
    UT_CASE(test_is_milliseconds_since_the_epoch),
    UT_CASE(test_moves_forward),
    {0},
};
UT_MAIN(cases)
