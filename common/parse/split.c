/* split: see split.h. */
#include "parse/split.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "base/err.h"
#include "base/mem.h"
#include "base/utf8.h"

/* A code point that must stay with the one before it. */
static int joins_previous(uint32_t cp)
{
    return cp == 0x200D || (cp >= 0xFE00 && cp <= 0xFE0F) || (cp >= 0x300 && cp <= 0x36F) ||
           (cp >= 0x1F3FB && cp <= 0x1F3FF) || (cp >= 0xE0020 && cp <= 0xE007F);
}

/* The code point at p; U+FFFD, which joins nothing, for an ill-formed byte. */
static uint32_t cp_at(const char *t, size_t len, size_t p)
{
    uint32_t cp = 0xFFFD;
    utf8_decode(t + p, len - p, &cp);
    return cp;
}

/* The fence marker of the line [ls, le), if it is one: offset of the ``` or
 * SIZE_MAX. */
static size_t fence_marker(const char *t, size_t ls, size_t le)
{
    size_t j = ls;
    while (j < le && (t[j] == ' ' || t[j] == '\t'))
        j++;
    if (le - j >= 3 && !memcmp(t + j, "```", 3))
        return j;
    return SIZE_MAX;
}

static void take_lang(struct split_state *st, const char *t, size_t j, size_t le)
{
    size_t k = 0;
    while (j < le && (t[j] == ' ' || t[j] == '\t'))
        j++;
    for (; j < le && k + 1 < sizeof(st->lang); j++) {
        char c = t[j];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
              c == '#' || c == '.' || c == '_' || c == '-'))
            break;
        st->lang[k++] = c;
    }
    st->lang[k] = '\0';
}

/* Apply the fence lines of t[0..len) to st; open_start and open_end get the
 * extent of the last line that opened a fence (SIZE_MAX when none did). */
static void fence_walk(const char *t, size_t len, struct split_state *st, size_t *open_start, size_t *open_end)
{
    *open_start = *open_end = SIZE_MAX;
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(t + i, '\n', len - i);
        size_t le = nl ? (size_t)(nl - t) + 1 : len;
        size_t j = fence_marker(t, i, le);
        if (j != SIZE_MAX) {
            if (st->in_fence) {
                st->in_fence = 0;
                st->lang[0] = '\0';
            } else if (!memmem(t + j + 3, le - j - 3, "```", 3)) {
                st->in_fence = 1;
                take_lang(st, t, j + 3, le);
                *open_start = i;
                *open_end = le;
            }
        }
        i = le;
    }
}

static size_t head_len(const struct split_state *st)
{
    return st->in_fence ? 4 + strlen(st->lang) : 0; /* "```" lang "\n", ASCII */
}

static size_t tail_len(const char *t, size_t len, const struct split_state *end)
{
    if (!end->in_fence)
        return 0;
    return len > 0 && t[len - 1] == '\n' ? 3 : 4;
}

enum brk { B_NONE, B_SPACE, B_SENTENCE, B_LINE, B_PARA };

/* The kind of break just before p (p >= 1). */
static enum brk break_before(const char *t, size_t p)
{
    char c = t[p - 1];
    if (c == '\n')
        return p >= 2 && t[p - 2] == '\n' ? B_PARA : B_LINE;
    if (c == ' ' || c == '\t') {
        if (p >= 2 && (t[p - 2] == '.' || t[p - 2] == '?' || t[p - 2] == '!'))
            return B_SENTENCE;
        return B_SPACE;
    }
    if (p >= 3 && (!memcmp(t + p - 3, "\xE3\x80\x82", 3) || !memcmp(t + p - 3, "\xEF\xBC\x81", 3) ||
                   !memcmp(t + p - 3, "\xEF\xBC\x9F", 3)))
        return B_SENTENCE;
    return B_NONE;
}

/* The best cut in (0, hard]: the highest break of the best kind found in
 * the second half, else a code point boundary that splits no cluster. */
static size_t best_cut(const char *t, size_t len, size_t hard)
{
    size_t best[B_PARA + 1] = {0};
    for (size_t p = hard; p > hard / 2; p--) {
        enum brk b = break_before(t, p);
        if (b != B_NONE && !best[b])
            best[b] = p;
        if (best[B_PARA])
            break;
    }
    for (int b = B_PARA; b > B_NONE; b--)
        if (best[b])
            return best[b];
    size_t p = hard;
    for (int i = 0; i < 16 && p > 0 && p < len; i++) {
        size_t q = utf8_prev(t, p);
        if (!joins_previous(cp_at(t, len, p)) && cp_at(t, len, q) != 0x200D)
            break;
        p = q;
    }
    return p > 0 ? p : hard;
}

/* Keep fence lines whole and avoid ending a part right after an opening
 * fence line (an empty block). Returns the adjusted cut; *end gets the
 * fence state there. */
static size_t fence_adjust(const char *t, size_t len, size_t p, const struct split_state *st,
                           struct split_state *end)
{
    size_t ls = p;
    while (ls > 0 && t[ls - 1] != '\n')
        ls--;
    if (ls < p && ls > 0) {
        const char *nl = memchr(t + ls, '\n', len - ls);
        size_t le = nl ? (size_t)(nl - t) + 1 : len;
        if (fence_marker(t, ls, le) != SIZE_MAX)
            p = ls;
    }
    size_t os, oe;
    *end = *st;
    fence_walk(t, p, end, &os, &oe);
    if (end->in_fence && oe == p && os > 0) {
        p = os;
        *end = *st;
        fence_walk(t, p, end, &os, &oe);
    }
    return p;
}

int split_next(const char *text, size_t len, size_t max_cp, size_t max_bytes, const struct split_state *start,
               struct split_cut *cut)
{
    if (max_cp < SPLIT_MIN || max_bytes < SPLIT_MIN)
        return -EINVAL;
    struct split_state st = {0};
    if (start && start->in_fence) {
        st.in_fence = 1;
        memcpy(st.lang, start->lang, sizeof(st.lang));
        st.lang[sizeof(st.lang) - 1] = '\0';
    }
    size_t head = head_len(&st);
    size_t bcp = max_cp - head, bb = max_bytes - head; /* room for the text and a closing fence */
    size_t i = 0, n = 0, hard = 0;
    while (i < len) {
        size_t l = utf8_step(text + i, len - i);
        if (n + 1 > bcp || i + l > bb)
            break;
        i += l;
        n++;
        if (n + 4 <= bcp && i + 4 <= bb)
            hard = i;
    }
    memset(cut, 0, sizeof(*cut));
    if (i == len) {
        size_t os, oe;
        cut->end = st;
        fence_walk(text, len, &cut->end, &os, &oe);
        size_t tail = tail_len(text, len, &cut->end);
        if (n + tail <= bcp && len + tail <= bb) {
            cut->len = len;
            cut->complete = 1;
            return 0;
        }
    }
    size_t p = best_cut(text, len, hard);
    cut->len = fence_adjust(text, len, p, &st, &cut->end);
    if (cut->len == 0) { /* a fence line longer than a message: cut it anyway */
        cut->len = hard;
        cut->end = st;
        size_t os, oe;
        fence_walk(text, hard, &cut->end, &os, &oe);
    }
    return 0;
}

int split_render(const char *text, const struct split_state *start, const struct split_cut *cut, struct buf *out)
{
    int rc = 0;
    if (start && start->in_fence) {
        size_t l = strnlen(start->lang, SPLIT_LANG_MAX - 1);
        rc = buf_puts(out, "```");
        if (!rc)
            rc = buf_append(out, start->lang, l);
        if (!rc)
            rc = buf_puts(out, "\n");
    }
    if (!rc)
        rc = buf_append(out, text, cut->len);
    if (!rc && cut->end.in_fence)
        rc = buf_puts(out, cut->len > 0 && text[cut->len - 1] == '\n' ? "```" : "\n```");
    return rc;
}

int split_all(const char *text, size_t len, size_t max_cp, size_t max_bytes, struct split_part **parts,
              size_t *n)
{
    *parts = NULL;
    *n = 0;
    if (max_cp < SPLIT_MIN || max_bytes < SPLIT_MIN)
        return -EINVAL;
    struct split_part *v = NULL;
    size_t count = 0, cap = 0, off = 0;
    struct split_state st = {0};
    while (off < len) {
        struct split_cut cut;
        int rc = split_next(text + off, len - off, max_cp, max_bytes, &st, &cut);
        if (rc < 0 || cut.len == 0) { /* cannot happen with valid limits; never loop */
            split_free(v, count);
            return rc < 0 ? rc : BC_EPROTO;
        }
        if (count == cap) {
            cap = cap ? cap * 2 : 4;
            v = mem_realloc(v, cap * sizeof(*v));
        }
        struct buf b;
        buf_init(&b, max_bytes);
        rc = split_render(text + off, &st, &cut, &b);
        if (rc < 0) {
            buf_free(&b);
            split_free(v, count);
            return rc;
        }
        struct split_part *pt = &v[count++];
        pt->len = b.len;
        pt->head = head_len(&st);
        pt->tail = b.len - pt->head - cut.len;
        pt->text = buf_detach(&b);
        pt->src_off = off;
        pt->src_len = cut.len;
        off += cut.len;
        st = cut.end;
        if (cut.complete)
            break;
    }
    *parts = v;
    *n = count;
    return 0;
}

void split_free(struct split_part *parts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mem_free(parts[i].text);
    mem_free(parts);
}
