/* fuzz_utf8: the UTF-8 decoder (common/base/utf8.c) that every text from
 * outside goes through: Discord messages and names, model output, provider
 * errors, log fields.
 *
 * Input: any bytes. Besides the sanitizers it checks utf8_decode at every
 * offset against a reference decoder written here the other way round
 * (decode by bit pattern, then reject what the shortest encoding of the
 * value, the surrogates and U+10FFFF rule out), and that the other
 * functions agree with a forward walk: utf8_count counts its steps,
 * utf8_valid_len stops at its first ill-formed byte, utf8_prev steps back
 * to the previous code point, utf8_trunc gives the last code point boundary
 * at or before the limit. */
#include <stdlib.h>
#include "fuzz.h"
#include "base/utf8.h"

static size_t ref_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t c = s[0];
    size_t len;
    uint32_t v;
    if (c < 0x80)
        len = 1, v = c;
    else if ((c & 0xE0) == 0xC0)
        len = 2, v = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
        len = 3, v = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
        len = 4, v = c & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3F);
    }
    size_t shortest = v < 0x80 ? 1 : v < 0x800 ? 2 : v < 0x10000 ? 3 : 4;
    if (shortest != len || (v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF)
        return 0;
    *cp = v;
    return len;
}

FUZZ_INIT_DEFAULT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    /* at[i]: 1 when a code point starts at i in a forward walk (and at size) */
    unsigned char *at = mem_alloc(size + 1);
    memset(at, 0, size + 1);
    size_t count = 0, first_bad = size;
    for (size_t i = 0; i < size; i++) {
        uint32_t want = 0, got = 0xFFFFFFFF;
        size_t n = ref_decode(data + i, size - i, &want);
        if (utf8_decode(s + i, size - i, &got) != n)
            abort(); /* accepts or rejects what the reference does not */
        if (n ? got != want : got != 0xFFFFFFFF)
            abort(); /* wrong code point, or *cp touched on failure */
        if (utf8_step(s + i, size - i) != (n ? n : 1))
            abort();
    }
    for (size_t i = 0; i < size; count++) {
        at[i] = 1;
        size_t n = utf8_decode(s + i, size - i, NULL);
        if (!n && first_bad == size)
            first_bad = i;
        i += n ? n : 1;
    }
    at[size] = 1;
    if (utf8_count(s, size) != count || utf8_valid_len(s, size) != first_bad ||
        utf8_valid(s, size) != (first_bad == size))
        abort();
    size_t last = 0; /* the boundary at or before i */
    for (size_t i = 0; i <= size; i++) {
        if (i > 0 && at[i] && utf8_prev(s, i) != last)
            abort(); /* stepping back disagrees with stepping forward */
        if (at[i])
            last = i;
        if (utf8_trunc(s, size, i) != last)
            abort(); /* a cut inside a well-formed sequence, or too early */
    }
    if (utf8_trunc(s, size, size + 1) != size)
        abort();
    mem_free(at);
    return 0;
}
