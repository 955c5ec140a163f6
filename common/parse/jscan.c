#include "parse/jscan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A cursor over [p, end). Every step checks end before it reads. */
struct cur {
    const char *p, *end;
};

static void ws(struct cur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int hex(char ch)
{
    return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f');
}

/* Bytes that end a plain run inside a string: the quote, the backslash
 * and the control characters (which JSON forbids there). */
static const unsigned char special[256] = {
    [0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1, [0x06] = 1, [0x07] = 1,
    [0x08] = 1, [0x09] = 1, [0x0a] = 1, [0x0b] = 1, [0x0c] = 1, [0x0d] = 1, [0x0e] = 1, [0x0f] = 1,
    [0x10] = 1, [0x11] = 1, [0x12] = 1, [0x13] = 1, [0x14] = 1, [0x15] = 1, [0x16] = 1, [0x17] = 1,
    [0x18] = 1, [0x19] = 1, [0x1a] = 1, [0x1b] = 1, [0x1c] = 1, [0x1d] = 1, [0x1e] = 1, [0x1f] = 1,
    ['"'] = 1,  ['\\'] = 1,
};

/* At the opening quote; leaves c after the closing one. Plain runs go
 * through a table lookup per byte: strings are most of what is scanned. */
static int string(struct cur *c, struct jscan_val *v)
{
    const char *start = ++c->p;
    while (c->p < c->end) {
        while (c->p < c->end && !special[(unsigned char)*c->p])
            c->p++;
        if (c->p >= c->end)
            break;
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            v->type = JSCAN_STRING;
            v->p = start;
            v->n = (size_t)(c->p - start);
            c->p++;
            return 0;
        }
        if (ch < 0x20)
            return -1;
        if (ch == '\\') {
            if (c->end - c->p < 2)
                return -1;
            char e = c->p[1];
            if (e == 'u') {
                if (c->end - c->p < 6 || !hex(c->p[2]) || !hex(c->p[3]) || !hex(c->p[4]) || !hex(c->p[5]))
                    return -1;
                c->p += 6;
                continue;
            }
            if (!e || !strchr("\"\\/bfnrt", e))
                return -1;
            c->p += 2;
            continue;
        }
        c->p++;
    }
    return -1;
}

static int digits(struct cur *c)
{
    const char *s = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
        c->p++;
    return c->p > s ? 0 : -1;
}

static int number(struct cur *c, struct jscan_val *v)
{
    const char *start = c->p;
    if (*c->p == '-')
        c->p++;
    if (c->p < c->end && *c->p == '0')
        c->p++;
    else if (digits(c))
        return -1;
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (digits(c))
            return -1;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (digits(c))
            return -1;
    }
    v->type = JSCAN_NUMBER;
    v->p = start;
    v->n = (size_t)(c->p - start);
    return 0;
}

static int literal(struct cur *c, const char *word, enum jscan_type t, struct jscan_val *v)
{
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n))
        return -1;
    v->type = t;
    v->p = c->p;
    v->n = n;
    c->p += n;
    return 0;
}

static int value(struct cur *c, struct jscan_val *v, int depth);

/* At '{' or '['; leaves c after the matching close. */
static int container(struct cur *c, struct jscan_val *v, int depth)
{
    if (depth >= JSCAN_MAX_DEPTH)
        return -1;
    const char *start = c->p;
    char close = *c->p == '{' ? '}' : ']';
    int obj = close == '}';
    c->p++;
    ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
    } else {
        for (;;) {
            struct jscan_val tmp;
            if (obj) {
                if (c->p >= c->end || *c->p != '"' || string(c, &tmp))
                    return -1;
                ws(c);
                if (c->p >= c->end || *c->p != ':')
                    return -1;
                c->p++;
            }
            if (value(c, &tmp, depth + 1))
                return -1;
            ws(c);
            if (c->p >= c->end)
                return -1;
            if (*c->p == ',') {
                c->p++;
                ws(c);
                continue;
            }
            if (*c->p != close)
                return -1;
            c->p++;
            break;
        }
    }
    v->type = obj ? JSCAN_OBJECT : JSCAN_ARRAY;
    v->p = start;
    v->n = (size_t)(c->p - start);
    return 0;
}

static int value(struct cur *c, struct jscan_val *v, int depth)
{
    ws(c);
    if (c->p >= c->end)
        return -1;
    switch (*c->p) {
    case '"':
        return string(c, v);
    case '{':
    case '[':
        return container(c, v, depth);
    case 't':
        return literal(c, "true", JSCAN_TRUE, v);
    case 'f':
        return literal(c, "false", JSCAN_FALSE, v);
    case 'n':
        return literal(c, "null", JSCAN_NULL, v);
    default:
        if (*c->p == '-' || (*c->p >= '0' && *c->p <= '9'))
            return number(c, v);
        return -1;
    }
}

int jscan_object(const char *p, size_t len, const char *const *keys, int nkeys, struct jscan_val *out)
{
    struct cur c = {p, p + len};
    for (int i = 0; i < nkeys; i++)
        out[i].type = JSCAN_ABSENT;
    ws(&c);
    if (c.p >= c.end || *c.p != '{')
        return -1;
    c.p++;
    ws(&c);
    if (c.p < c.end && *c.p == '}') {
        c.p++;
    } else {
        for (;;) {
            struct jscan_val key, val;
            if (c.p >= c.end || *c.p != '"' || string(&c, &key))
                return -1;
            ws(&c);
            if (c.p >= c.end || *c.p != ':')
                return -1;
            c.p++;
            if (value(&c, &val, 1))
                return -1;
            for (int i = 0; i < nkeys; i++)
                if (key.n == strlen(keys[i]) && !memcmp(key.p, keys[i], key.n))
                    out[i] = val;
            ws(&c);
            if (c.p >= c.end)
                return -1;
            if (*c.p == ',') {
                c.p++;
                ws(&c);
                continue;
            }
            if (*c.p != '}')
                return -1;
            c.p++;
            break;
        }
    }
    ws(&c);
    return c.p == c.end ? 0 : -1;
}

int jscan_array_next(const struct jscan_val *v, size_t *pos, struct jscan_val *el)
{
    if (v->type != JSCAN_ARRAY || v->n < 2)
        return -1;
    struct cur c = {v->p + (*pos ? *pos : 1), v->p + v->n - 1};
    ws(&c);
    if (*pos && c.p < c.end) {
        if (*c.p != ',')
            return -1;
        c.p++;
    }
    ws(&c);
    if (c.p >= c.end)
        return 0;
    if (value(&c, el, 1))
        return -1;
    *pos = (size_t)(c.p - v->p);
    return 1;
}

int jscan_eq(const struct jscan_val *v, const char *s)
{
    size_t n = strlen(s);
    return v->type == JSCAN_STRING && v->n == n && !memcmp(v->p, s, n);
}

int jscan_int64(const struct jscan_val *v, int64_t *out)
{
    if (v->type != JSCAN_NUMBER || v->n == 0 || v->n > 20)
        return -1;
    char tmp[24];
    memcpy(tmp, v->p, v->n);
    tmp[v->n] = '\0';
    if (strpbrk(tmp, ".eE"))
        return -1;
    char *end;
    errno = 0;
    long long x = strtoll(tmp, &end, 10);
    if (errno || *end)
        return -1;
    *out = x;
    return 0;
}
