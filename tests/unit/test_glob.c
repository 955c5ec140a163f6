#include "base/glob.h"
#include "ut.h"

static void test_korean_patterns(void)
{
    UT_ASSERT(glob_match("채팅방-*", "채팅방-1"));
    UT_ASSERT(glob_match("채팅방-*", "채팅방-"));
    UT_ASSERT(glob_match("채팅방-*", "채팅방-자유"));
    UT_ASSERT(!glob_match("채팅방-*", "채팅-1"));
    UT_ASSERT(!glob_match("채팅방-*", "일반"));
    UT_ASSERT(glob_match("채팅방-?", "채팅방-가"));
    UT_ASSERT(glob_match("채팅방-?", "채팅방-1"));
    UT_ASSERT(!glob_match("채팅방-?", "채팅방-가나"));
    UT_ASSERT(glob_match("*지원", "ai-지원"));
    UT_ASSERT(glob_match("ai-지원", "AI-지원"));
}

static void test_stars_and_backtracking(void)
{
    UT_ASSERT(glob_match("*", ""));
    UT_ASSERT(glob_match("*", "anything"));
    UT_ASSERT(glob_match("a*b*c", "a-x-b-y-c"));
    UT_ASSERT(!glob_match("a*b*c", "a-x-b-y-d"));
    UT_ASSERT(glob_match("**x", "yyx"));
    UT_ASSERT(!glob_match("", "x"));
    UT_ASSERT(glob_match("이미지*-*", "이미지생성-고양이"));
}

static void test_lists(void)
{
    UT_ASSERT(glob_list_match("채팅방-*,ai-지원", "ai-지원"));
    UT_ASSERT(glob_list_match(" 이미지생성-* , 갤러리 ", "갤러리"));
    UT_ASSERT(!glob_list_match("이미지생성-*,갤러리", "갤러리2"));
    UT_ASSERT(!glob_list_match("", "x"));
    UT_ASSERT(!glob_list_match(",,", "x"));
}

static void test_malformed_utf8_does_not_hang(void)
{
    UT_ASSERT(glob_match("??", "\xE0\x80")); /* each ill-formed byte is a character */
    UT_ASSERT(!glob_match("?", "\xE0\x80"));
    UT_ASSERT(glob_match("???", "\xED\xA0\x80")); /* a surrogate is three */
    UT_ASSERT(glob_match("a??b", "a\xEA\xB0" "b")); /* 가 cut short: two characters */
    UT_ASSERT(!glob_match("a?b", "a\xEA\xB0" "b"));
    UT_ASSERT(!glob_match("a?", "a\xEA\xB0"));
    UT_ASSERT(glob_match("?\xEA\xB0", "x\xEA\xB0"));
    UT_ASSERT(glob_match("*", "\xff\xfe\xE0"));
    UT_ASSERT(glob_match("?\xff", "a\xff"));
}

static const struct ut_case cases[] = {
    UT_CASE(test_korean_patterns),
    UT_CASE(test_stars_and_backtracking),
    UT_CASE(test_lists),
    UT_CASE(test_malformed_utf8_does_not_hang),
    {0},
};
UT_MAIN(cases)
