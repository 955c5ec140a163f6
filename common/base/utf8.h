/* utf8: the one UTF-8 decoder of the code base.
 *
 * Well-formed means RFC 3629 and Unicode's table 3-7: the shortest form
 * only (no overlongs such as C0 80 or E0 80 80), no surrogates
 * (U+D800..U+DFFF, ED A0 80..ED BF BF), nothing above U+10FFFF (F4 90 80 80
 * and up, F5..FF), every continuation byte where the lead byte promises one.
 * Anything else is ill-formed, and every function here treats each byte
 * that does not start a well-formed sequence as a code point of its own, so
 * a walk over hostile bytes always makes progress and never reads past len.
 * A NUL byte is U+0000 like any other. All functions are pure. */
#ifndef BC_UTF8_H
#define BC_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* U+FFFD, what an ill-formed byte becomes where text must be valid. */
#define UTF8_REPLACEMENT "\xEF\xBF\xBD"

/* Length (1-4) of the well-formed sequence at s (len bytes there), its
 * code point in *cp when cp is not NULL. 0 when the bytes at s do not start
 * one (an overlong, a surrogate, above U+10FFFF, a continuation or invalid
 * byte first, a sequence cut short by len) or len is 0; *cp is then left
 * as it was. */
size_t utf8_decode(const char *s, size_t len, uint32_t *cp);

/* Bytes to the next code point: utf8_decode's length, or 1 when the byte
 * at s does not start a well-formed sequence. len > 0. */
size_t utf8_step(const char *s, size_t len);

/* Code points in s[0..len), each ill-formed byte counting as one. */
size_t utf8_count(const char *s, size_t len);

/* Bytes of the longest well-formed prefix of s[0..len): len when all of it
 * is valid UTF-8. */
size_t utf8_valid_len(const char *s, size_t len);

/* 1 when s[0..len) is valid UTF-8 (the empty string is), else 0. */
int utf8_valid(const char *s, size_t len);

/* Where the last code point of s[0..end) starts: end - k when the k bytes
 * before end are one well-formed sequence, else end - 1 (an ill-formed
 * byte stands alone). end > 0. */
size_t utf8_prev(const char *s, size_t end);

/* Where to cut s[0..len) to keep at most max bytes without cutting a
 * well-formed sequence in two: len when all of it fits; else max, or the
 * start of the well-formed sequence that begins before max and ends after
 * it. Ill-formed bytes may be cut anywhere. */
size_t utf8_trunc(const char *s, size_t len, size_t max);

#endif
