#include "base/glob.h"

#include <ctype.h>
#include <string.h>

#include "base/utf8.h"

/* Bytes of the character at s (not at its NUL): a whole well-formed UTF-8
 * sequence, or one ill-formed byte, so malformed names still match byte by
 * byte instead of looping. */
static size_t advance(const char *s)
{
    return utf8_step(s, strnlen(s, 4));
}

int glob_match_n(const char *p, size_t n, const char *s)
{
    const char *pe = p + n;
    const char *star_p = NULL, *star_s = NULL;
    while (*s) {
        if (p < pe && *p == '*') {
            star_p = ++p;
            star_s = s;
            continue;
        }
        if (p < pe && *p == '?') {
            p++;
            s += advance(s);
            continue;
        }
        if (p < pe && tolower((unsigned char)*p) == tolower((unsigned char)*s)) {
            p++;
            s++;
            continue;
        }
        if (!star_p)
            return 0;
        /* backtrack: let the last '*' swallow one more character */
        star_s += advance(star_s);
        s = star_s;
        p = star_p;
    }
    while (p < pe && *p == '*')
        p++;
    return p == pe;
}

int glob_match(const char *pattern, const char *name)
{
    return glob_match_n(pattern, strlen(pattern), name);
}

int glob_list_match(const char *list, const char *name)
{
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *b = p, *e = p + n;
        while (b < e && isspace((unsigned char)*b))
            b++;
        while (e > b && isspace((unsigned char)e[-1]))
            e--;
        if (e > b && glob_match_n(b, (size_t)(e - b), name))
            return 1;
        p += n + (p[n] == ',');
    }
    return 0;
}
