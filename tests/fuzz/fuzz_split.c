/* fuzz_split: the message splitter (common/parse/split.c) that cuts model output
 * (and so anything a user can make the model say) into Discord messages.
 *
 * Input: [max_cp u16][max_bytes u16] then the text. Besides the sanitizers
 * it checks what split.h promises: with valid limits split_all succeeds;
 * the parts' slices joined give the input back; every part as rendered
 * holds at most max_cp code points and max_bytes bytes and is head + slice
 * + tail; no slice starts inside a well-formed UTF-8 sequence, whatever
 * ill-formed bytes are around it. */
#include <stdlib.h>
#include "fuzz.h"
#include "base/utf8.h"
#include "parse/split.h"

FUZZ_INIT_DEFAULT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    size_t max_cp = SPLIT_MIN + fz_u16(&f) % (SPLIT_DISCORD_MAX * 2);
    size_t max_bytes = SPLIT_MIN + fz_u16(&f) % 8192;
    const char *text = (const char *)f.p;
    size_t len = f.n;
    struct split_part *parts;
    size_t n;
    if (split_all(text, len, max_cp, max_bytes, &parts, &n))
        abort(); /* only bad limits may fail, and these are valid */
    if (len && !n)
        abort();
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const struct split_part *p = &parts[i];
        if (p->src_off != off || p->src_len == 0 || p->src_off + p->src_len > len)
            abort(); /* slices must tile the input */
        if (p->len > max_bytes || utf8_count(p->text, p->len) > max_cp)
            abort(); /* over a limit */
        if (p->head + p->src_len + p->tail != p->len || p->text[p->len] != '\0' ||
            memcmp(p->text + p->head, text + p->src_off, p->src_len))
            abort(); /* the part is not head + slice + tail */
        if (utf8_trunc(text, len, p->src_off) != p->src_off)
            abort(); /* cut inside a well-formed UTF-8 sequence */
        off += p->src_len;
    }
    if (off != len)
        abort(); /* text lost at the end */
    split_free(parts, n);
    return 0;
}
