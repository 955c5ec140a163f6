/* utf8: see utf8.h. */
#include "base/utf8.h"

size_t utf8_decode(const char *s, size_t len, uint32_t *cp)
{
    const unsigned char *p = (const unsigned char *)s;
    if (len == 0)
        return 0;
    unsigned c = p[0], lo = 0x80, hi = 0xBF; /* the range of the second byte */
    size_t n;
    uint32_t v;
    if (c < 0x80) {
        n = 1;
        v = c;
    } else if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        v = c & 0x0F;
        lo = c == 0xE0 ? 0xA0 : lo; /* E0 80..9F would be overlong */
        hi = c == 0xED ? 0x9F : hi; /* ED A0..BF would be a surrogate */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        v = c & 0x07;
        lo = c == 0xF0 ? 0x90 : lo; /* F0 80..8F would be overlong */
        hi = c == 0xF4 ? 0x8F : hi; /* F4 90.. would be above U+10FFFF */
    } else {
        return 0; /* a continuation byte, C0/C1 (always overlong), F5..FF */
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++, lo = 0x80, hi = 0xBF) {
        if (p[i] < lo || p[i] > hi)
            return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (cp)
        *cp = v;
    return n;
}

size_t utf8_step(const char *s, size_t len)
{
    size_t n = utf8_decode(s, len, NULL);
    return n ? n : 1;
}

size_t utf8_count(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i += utf8_step(s + i, len - i))
        n++;
    return n;
}

size_t utf8_valid_len(const char *s, size_t len)
{
    size_t i = 0, n;
    while (i < len && (n = utf8_decode(s + i, len - i, NULL)) > 0)
        i += n;
    return i;
}

int utf8_valid(const char *s, size_t len)
{
    return utf8_valid_len(s, len) == len;
}

/* A lead byte is never a continuation byte, so at most one well-formed
 * sequence can end at (or straddle) a given offset: trying each start in
 * the three bytes before it finds that one, without a table of byte kinds. */
size_t utf8_prev(const char *s, size_t end)
{
    for (size_t k = 2; k <= 4 && k <= end; k++)
        if (utf8_decode(s + end - k, k, NULL) == k)
            return end - k;
    return end - 1;
}

size_t utf8_trunc(const char *s, size_t len, size_t max)
{
    if (max >= len)
        return len;
    for (size_t k = 1; k <= 3 && k <= max; k++)
        if (utf8_decode(s + max - k, len - (max - k), NULL) > k)
            return max - k;
    return max;
}
