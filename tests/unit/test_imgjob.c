/* Unit tests for imgjob: how an image interaction's options are read
 * (imgjob__decode). Found by tests/fuzz/fuzz_job.c: job payloads are
 * parsed by json-c, which accepts NaN and Infinity, so a number option can
 * be one of those. */
#include <errno.h>
#include <math.h>

#include "image-instance/imgjob.h"
#include "discord/ixjob.h"
#include "ut.h"

#define IX(cmd, opts)                                                                               \
    "{\"id\":\"1\",\"token\":\"t\",\"application_id\":\"2\",\"command\":\"" cmd "\",\"user\":{\"id\":\"5\"}," \
    "\"options\":[" opts "]}"

static void test_reads_minimax_options(void)
{
    struct ixjob ix;
    struct imgjob__req rq;
    UT_EQ_INT(ixjob_parse(&ix, IX("이미지", "{\"name\":\"설명\",\"value\":\"a cat\"},{\"name\":\"비율\",\"value\":\"16:9\"},"
                                          "{\"name\":\"개수\",\"value\":3}")), 0);
    UT_EQ_INT(imgjob__decode(&ix, 0.35, &rq), 0);
    UT_EQ_INT(rq.stability, 0);
    UT_EQ_STR(rq.prompt, "a cat");
    UT_EQ_STR(rq.ratio, "16:9");
    UT_EQ_INT(rq.count, 3);
    ixjob_free(&ix);
    UT_EQ_INT(ixjob_parse(&ix, IX("chat", "")), 0);
    UT_EQ_INT(imgjob__decode(&ix, 0.35, &rq), -EINVAL);
    ixjob_free(&ix);
}

/* Regression (fuzz_job): "개수": NaN gave (int)NaN, undefined behaviour
 * (UBSan: "nan is outside the range of representable values of type
 * 'int'"; INT_MIN images on x86). A count that is not a finite number is
 * the default, 1. */
static void test_count_not_a_number(void)
{
    static const char *const vals[] = {"NaN", "Infinity", "-Infinity"};
    static const int want[] = {1, 4, 1};
    for (int i = 0; i < 3; i++) {
        char payload[256];
        snprintf(payload, sizeof(payload), IX("이미지", "{\"name\":\"개수\",\"value\":%s}"), vals[i]);
        struct ixjob ix;
        struct imgjob__req rq;
        UT_EQ_INT(ixjob_parse(&ix, payload), 0);
        UT_EQ_INT(imgjob__decode(&ix, 0.35, &rq), 0);
        UT_EQ_INT(rq.count, want[i]);
        ixjob_free(&ix);
    }
}

/* Regression (fuzz_job): "강도": NaN went through the clamp as NaN, and
 * st_generate then refused the request as invalid (-EINVAL) after the
 * user's quota was taken. A strength that is not a number is the default. */
static void test_strength_not_a_number(void)
{
    struct ixjob ix;
    struct imgjob__req rq;
    UT_EQ_INT(ixjob_parse(&ix, IX("img", "{\"name\":\"강도\",\"value\":NaN}")), 0);
    UT_EQ_INT(imgjob__decode(&ix, 0.35, &rq), 0);
    UT_ASSERT(rq.strength == 0.35);
    ixjob_free(&ix);
    UT_EQ_INT(ixjob_parse(&ix, IX("img", "{\"name\":\"강도\",\"value\":Infinity}")), 0);
    UT_EQ_INT(imgjob__decode(&ix, 0.35, &rq), 0);
    UT_ASSERT(rq.strength == 1);
    ixjob_free(&ix);
}

static const struct ut_case cases[] = {
    UT_CASE(test_reads_minimax_options),
    UT_CASE(test_count_not_a_number),
    UT_CASE(test_strength_not_a_number),
    {NULL, NULL},
};

UT_MAIN(cases)
