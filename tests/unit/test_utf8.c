#include "base/utf8.h"
#include "ut.h"

/* utf8_decode on a string literal, without its NUL. */
#define DEC(lit, cp) utf8_decode(lit, sizeof(lit) - 1, cp)

static void test_valid_sequences_of_each_length(void)
{
    static const struct {
        const char *s;
        size_t len;
        uint32_t cp;
    } ok[] = {
        {"A", 1, 'A'},
        {"\0", 1, 0}, /* NUL is U+0000 */
        {"\x7F", 1, 0x7F},
        {"\xC2\x80", 2, 0x80}, /* the first two-byte code point */
        {"é", 2, 0xE9},
        {"\xDF\xBF", 2, 0x7FF},
        {"\xE0\xA0\x80", 3, 0x800},
        {"가", 3, 0xAC00},
        {"\xED\x9F\xBF", 3, 0xD7FF}, /* just below the surrogates */
        {"\xEE\x80\x80", 3, 0xE000}, /* just above them */
        {"\xEF\xBF\xBD", 3, 0xFFFD},
        {"\xF0\x90\x80\x80", 4, 0x10000},
        {"🌏", 4, 0x1F30F},
        {"\xF4\x8F\xBF\xBF", 4, 0x10FFFF},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint32_t cp = 0xFFFFFFFF;
        UT_EQ_INT(utf8_decode(ok[i].s, ok[i].len, &cp), ok[i].len);
        UT_EQ_INT(cp, ok[i].cp);
    }
    UT_EQ_INT(utf8_decode("가나", 6, NULL), 3); /* one sequence, not the string; cp may be NULL */
}

static void test_overlongs_are_ill_formed(void)
{
    uint32_t cp = 42;
    UT_EQ_INT(DEC("\xC0\x80", &cp), 0); /* U+0000 in two bytes */
    UT_EQ_INT(DEC("\xC1\xBF", &cp), 0);
    UT_EQ_INT(DEC("\xE0\x80\x80", &cp), 0);
    UT_EQ_INT(DEC("\xE0\x9F\xBF", &cp), 0); /* U+07FF in three bytes */
    UT_EQ_INT(DEC("\xF0\x80\x80\x80", &cp), 0);
    UT_EQ_INT(DEC("\xF0\x8F\xBF\xBF", &cp), 0); /* U+FFFF in four bytes */
    UT_EQ_INT(DEC("\xC0\xAF", &cp), 0);         /* the classic overlong '/' */
    UT_EQ_INT(cp, 42);                          /* untouched on failure */
}

static void test_surrogates_are_ill_formed(void)
{
    UT_EQ_INT(DEC("\xED\xA0\x80", NULL), 0); /* U+D800 */
    UT_EQ_INT(DEC("\xED\xAF\xBF", NULL), 0);
    UT_EQ_INT(DEC("\xED\xB0\x80", NULL), 0);
    UT_EQ_INT(DEC("\xED\xBF\xBF", NULL), 0); /* U+DFFF */
    UT_EQ_INT(DEC("\xED\xA0\xBD\xED\xB8\x80", NULL), 0); /* CESU-8 pair */
}

static void test_above_u10ffff_is_ill_formed(void)
{
    UT_EQ_INT(DEC("\xF4\x90\x80\x80", NULL), 0); /* U+110000 */
    UT_EQ_INT(DEC("\xF5\x80\x80\x80", NULL), 0);
    UT_EQ_INT(DEC("\xF7\xBF\xBF\xBF", NULL), 0);
    UT_EQ_INT(DEC("\xF8\x88\x80\x80\x80", NULL), 0); /* old five-byte form */
    UT_EQ_INT(DEC("\xFC\x84\x80\x80\x80\x80", NULL), 0);
    UT_EQ_INT(DEC("\xFE", NULL), 0);
    UT_EQ_INT(DEC("\xFF", NULL), 0);
}

static void test_truncated_and_broken_sequences(void)
{
    UT_EQ_INT(DEC("\xC3", NULL), 0);
    UT_EQ_INT(DEC("\xEA\xB0", NULL), 0);
    UT_EQ_INT(DEC("\xF0\x9F\x8C", NULL), 0);
    UT_EQ_INT(utf8_decode("가", 2, NULL), 0); /* len cuts it short: nothing past len is read */
    UT_EQ_INT(utf8_decode("A", 0, NULL), 0);
    UT_EQ_INT(DEC("\xC3" "A", NULL), 0);      /* a continuation missing */
    UT_EQ_INT(DEC("\xEA\xB0" "A", NULL), 0);
    UT_EQ_INT(DEC("\xF0\x9F\x8C" "A", NULL), 0);
    UT_EQ_INT(utf8_decode("\xC3\0", 2, NULL), 0); /* NUL is no continuation */
}

static void test_lone_continuation_bytes(void)
{
    UT_EQ_INT(DEC("\x80", NULL), 0);
    UT_EQ_INT(DEC("\xBF", NULL), 0);
    UT_EQ_INT(DEC("\x80\x80", NULL), 0);
    UT_EQ_INT(utf8_step("\x80\x80", 2), 1);
    UT_EQ_INT(utf8_step("\xE0\x80\x80", 3), 1); /* an overlong steps a byte at a time */
    UT_EQ_INT(utf8_step("가", 3), 3);
}

static void test_count(void)
{
    UT_EQ_INT(utf8_count("", 0), 0);
    UT_EQ_INT(utf8_count("abc", 3), 3);
    UT_EQ_INT(utf8_count("가나다🌏é", strlen("가나다🌏é")), 5);
    UT_EQ_INT(utf8_count("a\0b", 3), 3);
    UT_EQ_INT(utf8_count("\x80\x80\x80", 3), 3);         /* each ill-formed byte is one */
    UT_EQ_INT(utf8_count("\xED\xA0\x80" "a", 4), 4);     /* a surrogate is three */
    UT_EQ_INT(utf8_count("\xC0\x80", 2), 2);             /* an overlong NUL is two */
    UT_EQ_INT(utf8_count("가\xEA\xB0", 5), 3);           /* cut at the end: two */
}

static void test_valid(void)
{
    UT_ASSERT(utf8_valid("", 0));
    UT_ASSERT(utf8_valid("hello, 세계 🌏", strlen("hello, 세계 🌏")));
    UT_ASSERT(utf8_valid("\xF4\x8F\xBF\xBF", 4));
    UT_ASSERT(!utf8_valid("\xF4\x90\x80\x80", 4));
    UT_ASSERT(!utf8_valid("ok\xED\xA0\x80", 5));
    UT_ASSERT(!utf8_valid("가", 2));
    UT_EQ_INT(utf8_valid_len("가나\xC0\x80다", 10), 6);
    UT_EQ_INT(utf8_valid_len("\x80", 1), 0);
    UT_EQ_INT(utf8_valid_len("abc", 3), 3);
}

static void test_prev(void)
{
    const char *s = "a가🌏é";
    UT_EQ_INT(utf8_prev(s, 1), 0);
    UT_EQ_INT(utf8_prev(s, 4), 1);
    UT_EQ_INT(utf8_prev(s, 8), 4);
    UT_EQ_INT(utf8_prev(s, 10), 8);
    UT_EQ_INT(utf8_prev(s, 3), 2); /* inside 가: the last byte alone */
    UT_EQ_INT(utf8_prev("\x80\x80\x80\x80\x80", 5), 4);
    UT_EQ_INT(utf8_prev("\xED\xA0\x80", 3), 2); /* a surrogate is three code points */
    UT_EQ_INT(utf8_prev("\xC3\xA9\xA9", 3), 2);  /* é then a stray continuation */
}

static void test_trunc_never_cuts_a_sequence(void)
{
    const char *s = "a가🌏é"; /* 1 + 3 + 4 + 2 bytes */
    UT_EQ_INT(utf8_trunc(s, 10, 10), 10);
    UT_EQ_INT(utf8_trunc(s, 10, 99), 10);
    UT_EQ_INT(utf8_trunc(s, 10, 0), 0);
    UT_EQ_INT(utf8_trunc(s, 10, 1), 1);
    UT_EQ_INT(utf8_trunc(s, 10, 2), 1);
    UT_EQ_INT(utf8_trunc(s, 10, 3), 1);
    UT_EQ_INT(utf8_trunc(s, 10, 4), 4);
    UT_EQ_INT(utf8_trunc(s, 10, 5), 4);
    UT_EQ_INT(utf8_trunc(s, 10, 7), 4);
    UT_EQ_INT(utf8_trunc(s, 10, 8), 8);
    UT_EQ_INT(utf8_trunc(s, 10, 9), 8);
    /* Ill-formed bytes hold nothing together: a long run of continuation
     * bytes is cut where the limit falls, not emptied. */
    UT_EQ_INT(utf8_trunc("\x80\x80\x80\x80\x80\x80", 6, 4), 4);
    UT_EQ_INT(utf8_trunc("a\xED\xA0\x80", 4, 2), 2);
}

/* An encoder written from RFC 3629's table, independent of the decoder. */
static size_t encode(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Every scalar value decodes from its encoding, and no cut-short encoding
 * decodes; then, counting the byte strings of each length the decoder
 * accepts shows it accepts those encodings and nothing else. */
static void test_agrees_with_an_encoder(void)
{
    char b[4];
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF)
            continue;
        size_t n = encode(cp, b);
        uint32_t got = 0xFFFFFFFF;
        if (utf8_decode(b, n, &got) != n || got != cp)
            UT_FAIL("U+%04X does not decode", (unsigned)cp);
        if (n > 1 && utf8_decode(b, n - 1, NULL) != 0)
            UT_FAIL("U+%04X cut short decodes", (unsigned)cp);
    }
    size_t two = 0, three = 0, four = 0;
    for (unsigned i = 0; i < 0x10000; i++) {
        b[0] = (char)(i >> 8), b[1] = (char)i;
        two += utf8_decode(b, 2, NULL) == 2;
    }
    for (unsigned i = 0; i < 0x1000000; i++) {
        b[0] = (char)(i >> 16), b[1] = (char)(i >> 8), b[2] = (char)i;
        three += utf8_decode(b, 3, NULL) == 3;
    }
    /* Four bytes: every lead from F0 up, the others around 80..BF. */
    for (unsigned l = 0xF0; l <= 0xFF; l++)
        for (unsigned x = 0x70; x < 0xD0; x++)
            for (unsigned y = 0x70; y < 0xD0; y++)
                for (unsigned z = 0x70; z < 0xD0; z++) {
                    b[0] = (char)l, b[1] = (char)x, b[2] = (char)y, b[3] = (char)z;
                    four += utf8_decode(b, 4, NULL) == 4;
                }
    UT_EQ_INT(two, 0x800 - 0x80);
    UT_EQ_INT(three, 0x10000 - 0x800 - 0x800); /* less the surrogates */
    UT_EQ_INT(four, 0x110000 - 0x10000);
}

static const struct ut_case cases[] = {
    UT_CASE(test_valid_sequences_of_each_length),
    UT_CASE(test_overlongs_are_ill_formed),
    UT_CASE(test_surrogates_are_ill_formed),
    UT_CASE(test_above_u10ffff_is_ill_formed),
    UT_CASE(test_truncated_and_broken_sequences),
    UT_CASE(test_lone_continuation_bytes),
    UT_CASE(test_count),
    UT_CASE(test_valid),
    UT_CASE(test_prev),
    UT_CASE(test_trunc_never_cuts_a_sequence),
    UT_CASE(test_agrees_with_an_encoder),
    {0},
};
UT_MAIN(cases)
