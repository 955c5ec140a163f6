/* split: cut a long answer into Discord messages.
 *
 * A Discord message holds at most 2000 characters (code points); the caller
 * also gives a byte cap, and neither is ever exceeded by a part as rendered,
 * added fence lines included. A cut prefers, in this order, a paragraph
 * break (blank line), a line break, a sentence end (". ", "? ", "! ", "。",
 * "？", "！"; Korean "다. " is a ". "), a space, and only then any code point
 * boundary; it never falls inside a well-formed UTF-8 sequence, and a
 * preferred break is only taken from the second half of the room, so parts
 * do not get tiny. Code points are counted as utf8_count counts them
 * (base/utf8.h): an ill-formed byte is one of its own.
 * A ``` code fence is never left open across messages: when a cut falls
 * inside a fenced block the part ends with a closing ``` line and the next
 * part starts by reopening the fence with the same language tag. A fence
 * left open at the end of the input is closed too. Fences are recognised by
 * lines whose first non-blank characters are ```; a line that opens and
 * closes a fence on its own (```x```) toggles nothing.
 *
 * Joining the input slices of the parts (split_part.src_off/src_len) gives
 * back the input exactly; the added fence text is split_part.head bytes at
 * the start and split_part.tail bytes at the end of each part.
 *
 * Not done: grapheme clusters other than a ZWJ/variation selector/combining
 * mark next to the cut may be split; a part may consist of whitespace only
 * when the input has a run of blank lines longer than a message. */
#ifndef BC_SPLIT_H
#define BC_SPLIT_H

#include <stddef.h>

#include "base/buf.h"

#define SPLIT_DISCORD_MAX 2000 /* code points per message */
#define SPLIT_LANG_MAX 32      /* a longer language tag is cut (ASCII only) */
#define SPLIT_MIN 64           /* smallest accepted limit, in code points and bytes */

/* Whether text starts inside a fenced block, and with which language tag. */
struct split_state {
    int in_fence;
    char lang[SPLIT_LANG_MAX];
};

struct split_cut {
    size_t len;             /* bytes of the text that belong to this part (> 0 unless text is empty) */
    int complete;           /* the whole text fits: nothing is left for a next part */
    struct split_state end; /* fence state after those bytes; the next part starts with it */
};

/* How much of text (which starts in fence state *start, NULL = outside any
 * fence) goes into one message of at most max_cp code points and max_bytes
 * bytes as rendered by split_render. Pure and synchronous.
 *
 * Streaming: keep the byte offset where the message being edited starts and
 * the state it starts in; on each update call split_next on the text from
 * that offset. While cut.complete, the whole text goes into the current
 * message. Otherwise finish the current message with the first cut.len
 * bytes, and start the next one at offset + cut.len in state cut.end.
 * Returns 0, or -EINVAL when a limit is below SPLIT_MIN. */
int split_next(const char *text, size_t len, size_t max_cp, size_t max_bytes, const struct split_state *start,
               struct split_cut *cut);

/* Append the message for a cut to out: the reopened fence when *start is
 * in a fence, text[0..cut->len), and a closing ``` when cut->end is in a
 * fence. Returns 0 or BC_ETOOBIG (out's cap). */
int split_render(const char *text, const struct split_state *start, const struct split_cut *cut, struct buf *out);

struct split_part {
    char *text;     /* the message, NUL-terminated; freed by split_free */
    size_t len;     /* bytes */
    size_t src_off; /* the slice of the input it carries */
    size_t src_len;
    size_t head;    /* bytes of added fence text before the slice */
    size_t tail;    /* bytes of added fence text after it */
};

/* Split all of text. On success *parts (free with split_free) holds *n
 * parts; empty text gives zero parts. Returns 0 or -EINVAL (limits). */
int split_all(const char *text, size_t len, size_t max_cp, size_t max_bytes, struct split_part **parts,
              size_t *n);
void split_free(struct split_part *parts, size_t n);

#endif
