#include "base/buf.h"
#include "base/err.h"
#include "base/mem.h"
#include "ut.h"

static void test_append_within_cap(void)
{
    struct buf b;
    buf_init(&b, 16);
    UT_EQ_INT(buf_puts(&b, "hello "), 0);
    UT_EQ_INT(buf_printf(&b, "%d-%s", 42, "x"), 0);
    UT_EQ_STR(buf_str(&b), "hello 42-x");
    UT_EQ_INT(b.len, 10);
    buf_free(&b);
}

static void test_cap_is_hard(void)
{
    struct buf b;
    buf_init(&b, 8);
    UT_EQ_INT(buf_puts(&b, "12345678"), 0);
    UT_EQ_INT(buf_puts(&b, "9"), BC_ETOOBIG);
    UT_EQ_INT(buf_printf(&b, "%s", "x"), BC_ETOOBIG);
    UT_EQ_STR(buf_str(&b), "12345678"); /* unchanged on failure */
    buf_free(&b);
}

/* After one failed append every later one fails too, even one that would
 * fit: a producer that appends many times and checks once at the end can
 * never ship text with a hole in the middle. */
static void test_failure_is_sticky(void)
{
    struct buf b;
    buf_init(&b, 8);
    UT_EQ_INT(buf_puts(&b, "1234"), 0);
    UT_EQ_INT(buf_puts(&b, "56789"), BC_ETOOBIG); /* would make 9 */
    UT_EQ_INT(buf_puts(&b, "5"), BC_ETOOBIG);     /* fits, but the text already has a hole */
    UT_EQ_INT(buf_append(&b, "", 0), BC_ETOOBIG);
    UT_EQ_INT(buf_printf(&b, "%d", 5), BC_ETOOBIG);
    UT_EQ_STR(buf_str(&b), "1234");
    UT_EQ_INT(buf_error(&b), BC_ETOOBIG);
    buf_reset(&b); /* a reset buffer is usable again */
    UT_EQ_INT(buf_error(&b), 0);
    UT_EQ_INT(buf_puts(&b, "12345678"), 0);
    UT_EQ_STR(buf_str(&b), "12345678");
    UT_EQ_INT(buf_error(&b), 0);
    buf_free(&b);
    UT_EQ_INT(buf_error(&b), 0);
}

static void test_consume_and_detach(void)
{
    struct buf b;
    buf_init(&b, 64);
    UT_EQ_STR(buf_str(&b), "");
    UT_EQ_INT(buf_puts(&b, "line1\nline2"), 0);
    buf_consume(&b, 6);
    UT_EQ_STR(buf_str(&b), "line2");
    char *s = buf_detach(&b);
    UT_EQ_STR(s, "line2");
    UT_EQ_INT(b.len, 0);
    mem_free(s);
    buf_free(&b);
}

static const struct ut_case cases[] = {
    UT_CASE(test_append_within_cap),
    UT_CASE(test_cap_is_hard),
    UT_CASE(test_failure_is_sticky),
    UT_CASE(test_consume_and_detach),
    {0},
};
UT_MAIN(cases)
