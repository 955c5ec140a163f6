/* Unit tests for split: answers cut into Discord messages that Discord
 * accepts (size), that render right (fences balanced in every message) and
 * that lose nothing (the slices join back into the answer). */
#include <errno.h>

#include "base/buf.h"
#include "base/mem.h"
#include "base/utf8.h"
#include "parse/split.h"
#include "ut.h"

/* Lines starting with ``` that do not also close on the same line. */
static int fence_lines(const char *t, size_t len)
{
    int n = 0;
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(t + i, '\n', len - i);
        size_t le = nl ? (size_t)(nl - t) + 1 : len;
        size_t j = i;
        while (j < le && (t[j] == ' ' || t[j] == '\t'))
            j++;
        if (le - j >= 3 && !memcmp(t + j, "```", 3)) {
            int self = 0;
            for (size_t k = j + 3; k + 3 <= le; k++)
                if (!memcmp(t + k, "```", 3))
                    self = 1;
            n += !self;
        }
        i = le;
    }
    return n;
}

/* Every property a user would notice; returns the number of parts. */
static size_t check_parts(const char *text, size_t len, size_t max_cp, size_t max_bytes)
{
    struct split_part *p;
    size_t n;
    UT_EQ_INT(split_all(text, len, max_cp, max_bytes, &p, &n), 0);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        UT_ASSERT(p[i].len > 0);
        UT_EQ_INT(strlen(p[i].text), p[i].len);
        UT_ASSERT(utf8_count(p[i].text, p[i].len) <= max_cp);
        UT_ASSERT(p[i].len <= max_bytes);
        UT_ASSERT(utf8_valid(p[i].text, p[i].len));
        if (fence_lines(p[i].text, p[i].len) % 2)
            UT_FAIL("part %zu has an open fence:\n%s", i, p[i].text);
        UT_EQ_INT(p[i].src_off, off);
        UT_EQ_INT(p[i].head + p[i].src_len + p[i].tail, p[i].len);
        UT_ASSERT(!memcmp(p[i].text + p[i].head, text + off, p[i].src_len));
        if (p[i].head)
            UT_ASSERT(!memcmp(p[i].text, "```", 3) && p[i].text[p[i].head - 1] == '\n');
        if (p[i].tail)
            UT_ASSERT(!memcmp(p[i].text + p[i].len - 3, "```", 3));
        off += p[i].src_len;
    }
    UT_EQ_INT(off, len);
    split_free(p, n);
    return n;
}

static void add(struct buf *b, const char *s)
{
    UT_EQ_INT(buf_puts(b, s), 0);
}

static void test_korean_answer_with_code(void)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    const char *sent = "이 문장은 메시지를 나누는 기능을 시험하기 위한 한국어 문장입니다. ";
    for (int sec = 0; sec < 6; sec++) {
        add(&b, "## 설명\n\n");
        for (int i = 0; i < 12; i++) /* a long paragraph, no line break */
            add(&b, sent);
        add(&b, "그래서 결과가 좋았다. 정말 좋았다!\n\n");
        add(&b, sec % 2 ? "```python\n" : "```c\n");
        int lines = sec == 3 ? 90 : 6; /* one block longer than a message */
        for (int i = 0; i < lines; i++)
            add(&b, "    x = compute(x, \"값\")  # 주석 comment\n");
        add(&b, "```\n\n");
    }
    size_t cps = utf8_count(b.p, b.len);
    UT_ASSERT(cps >= 7000);
    size_t n = check_parts(b.p, b.len, SPLIT_DISCORD_MAX, 8000);
    UT_ASSERT(n >= 4);
    /* a byte cap tighter than the code point limit (3 bytes per Hangul) */
    UT_ASSERT(check_parts(b.p, b.len, SPLIT_DISCORD_MAX, 2000) > n);

    /* the reopened fence carries the language of the long block */
    struct split_part *p;
    UT_EQ_INT(split_all(b.p, b.len, SPLIT_DISCORD_MAX, 8000, &p, &n), 0);
    int reopened = 0;
    for (size_t i = 0; i < n; i++)
        if (p[i].head) {
            UT_ASSERT(!strncmp(p[i].text, "```python\n", 10));
            reopened++;
        }
    UT_ASSERT(reopened >= 1);
    /* parts not inside a block end at a paragraph or line break */
    for (size_t i = 0; i + 1 < n; i++)
        if (!p[i].tail)
            UT_EQ_INT(p[i].text[p[i].len - 1], '\n');
    split_free(p, n);
    buf_free(&b);
}

static void test_prefers_paragraph_then_line_then_sentence(void)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    for (int i = 0; i < 60; i++)
        add(&b, "Words words words. ");
    add(&b, "\n\n");
    for (int i = 0; i < 60; i++)
        add(&b, "More text. ");
    struct split_part *p;
    size_t n;
    UT_EQ_INT(split_all(b.p, b.len, 1500, 6000, &p, &n), 0);
    UT_EQ_INT(n, 2);
    UT_EQ_INT(p[0].len, 60 * 19 + 2); /* at the blank line */
    split_free(p, n);
    buf_reset(&b);
    for (int i = 0; i < 200; i++)
        add(&b, i % 20 == 19 ? "Sentence ends here.\n" : "Sentence ends here. ");
    UT_EQ_INT(split_all(b.p, b.len, 1000, 6000, &p, &n), 0);
    UT_ASSERT(n >= 4);
    UT_EQ_INT(p[0].text[p[0].len - 1], '\n');
    split_free(p, n);
    buf_reset(&b);
    for (int i = 0; i < 300; i++)
        add(&b, "끝났다. 그리고 ");
    UT_EQ_INT(split_all(b.p, b.len, 500, 6000, &p, &n), 0);
    UT_ASSERT(n >= 2);
    UT_ASSERT(p[0].len >= 6 && !memcmp(p[0].text + p[0].len - 5, "다. ", 5));
    split_free(p, n);
    buf_free(&b);
}

static void test_one_long_word(void)
{
    char *w = mem_alloc(5001);
    memset(w, 'a', 5000);
    w[5000] = '\0';
    struct split_part *p;
    size_t n;
    UT_EQ_INT(split_all(w, 5000, SPLIT_DISCORD_MAX, 8000, &p, &n), 0);
    UT_EQ_INT(n, 3);
    UT_ASSERT(p[0].len >= 1990 && p[0].len <= 2000);
    split_free(p, n);
    check_parts(w, 5000, SPLIT_DISCORD_MAX, 8000);
    mem_free(w);
}

static void test_four_byte_sequences_at_the_boundary(void)
{
    /* every offset of the boundary against 4-byte emoji and a ZWJ family */
    for (int shift = 0; shift < 8; shift++) {
        struct buf b;
        buf_init(&b, 1 << 16);
        for (int i = 0; i < shift; i++)
            add(&b, "x");
        for (int i = 0; i < 900; i++)
            add(&b, i % 7 == 3 ? "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9" : "\xF0\x9F\x98\x80");
        check_parts(b.p, b.len, SPLIT_DISCORD_MAX, 8000);
        check_parts(b.p, b.len, SPLIT_DISCORD_MAX, 1001 + (size_t)shift); /* bytes bind */
        check_parts(b.p, b.len, 100, 8000);
        buf_free(&b);
    }
}

static void test_unterminated_fence(void)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    add(&b, "Here is the code:\n```rust\n");
    for (int i = 0; i < 150; i++)
        add(&b, "let v = vec![1, 2, 3];\n");
    size_t n = check_parts(b.p, b.len, SPLIT_DISCORD_MAX, 8000);
    UT_ASSERT(n >= 2);
    struct split_part *p;
    UT_EQ_INT(split_all(b.p, b.len, SPLIT_DISCORD_MAX, 8000, &p, &n), 0);
    UT_ASSERT(p[n - 1].tail > 0); /* closed although the input never closes it */
    UT_ASSERT(!strncmp(p[n - 1].text, "```rust\n", 8));
    split_free(p, n);
    /* short input: one message, closed */
    UT_EQ_INT(split_all("```sh\nls", 8, SPLIT_DISCORD_MAX, 8000, &p, &n), 0);
    UT_EQ_INT(n, 1);
    UT_EQ_STR(p[0].text, "```sh\nls\n```");
    split_free(p, n);
    buf_free(&b);
}

static void test_streaming_next(void)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    add(&b, "Intro.\n\n```js\n");
    for (int i = 0; i < 200; i++)
        add(&b, "console.log(1);\n");
    add(&b, "```\nDone.");
    /* grow the text a few bytes at a time, as a stream does, and render
     * the message being edited after every step */
    struct split_state st = {0};
    size_t msg_off = 0, msgs = 1;
    for (size_t have = 1; have <= b.len; have += 7) {
        if (have > b.len - 7)
            have = b.len;
        struct split_cut cut;
        UT_EQ_INT(split_next(b.p + msg_off, have - msg_off, SPLIT_DISCORD_MAX, 8000, &st, &cut), 0);
        struct buf m;
        buf_init(&m, 8000);
        UT_EQ_INT(split_render(b.p + msg_off, &st, &cut, &m), 0);
        UT_ASSERT(utf8_count(m.p, m.len) <= SPLIT_DISCORD_MAX);
        UT_EQ_INT(fence_lines(m.p, m.len) % 2, 0);
        buf_free(&m);
        if (!cut.complete) {
            UT_ASSERT(cut.len > 0);
            msg_off += cut.len;
            st = cut.end;
            msgs++;
            have = msg_off; /* re-check the rest before reading more */
        }
    }
    UT_EQ_INT(msgs, 2);
    UT_EQ_INT(split_next("x", 1, 10, 8000, NULL, &(struct split_cut){0}), -EINVAL);
    buf_free(&b);
}

/* Ill-formed bytes (a surrogate, stray continuation bytes, F5..FF) each
 * count as one code point and are cut between like any character, so
 * splitting always makes progress; the well-formed sequences among them
 * are still never cut. */
static void test_ill_formed_bytes(void)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    for (int i = 0; i < 400; i++)
        add(&b, i % 5 == 0 ? "\xED\xA0\x80" : i % 5 == 1 ? "가" : i % 5 == 2 ? "\x80\x80" : i % 5 == 3 ? "🌏" : "\xFF");
    struct split_part *p;
    size_t n, off = 0;
    UT_EQ_INT(split_all(b.p, b.len, 100, 8000, &p, &n), 0);
    UT_ASSERT(n >= 2);
    for (size_t i = 0; i < n; i++) {
        UT_EQ_INT(p[i].src_off, off);
        UT_ASSERT(p[i].src_len > 0);
        UT_ASSERT(utf8_count(p[i].text, p[i].len) <= 100);
        UT_EQ_INT(utf8_trunc(b.p, b.len, off), off); /* no well-formed sequence cut */
        off += p[i].src_len;
    }
    UT_EQ_INT(off, b.len);
    split_free(p, n);
    buf_free(&b);
}

static const struct ut_case cases[] = {
    UT_CASE(test_ill_formed_bytes),
    UT_CASE(test_korean_answer_with_code),
    UT_CASE(test_prefers_paragraph_then_line_then_sentence),
    UT_CASE(test_one_long_word),
    UT_CASE(test_four_byte_sequences_at_the_boundary),
    UT_CASE(test_unterminated_fence),
    UT_CASE(test_streaming_next),
    {NULL, NULL},
};

UT_MAIN(cases)
