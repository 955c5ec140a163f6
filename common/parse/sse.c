/* sse: see sse.h. The single buffer holds the joined data of the event being
 * built followed by the line being read; a finished `data:` line is moved
 * down to join the data, any other line is simply dropped. */
#include "parse/sse.h"

#include <string.h>

#include "base/err.h"

void sse_init(struct sse *p, size_t max_line, size_t max_event, sse_event_cb *cb, void *arg)
{
    memset(p, 0, sizeof *p);
    p->max_line = max_line ? max_line : SSE_DEFAULT_MAX_LINE;
    p->max_event = max_event ? max_event : SSE_DEFAULT_MAX_EVENT;
    buf_init(&p->b, p->max_line + p->max_event + 1);
    p->cb = cb;
    p->arg = arg;
}

void sse_reset(struct sse *p)
{
    buf_reset(&p->b);
    p->data_len = 0;
    p->has_data = 0;
    p->after_cr = 0;
    p->err = 0;
}

void sse_free(struct sse *p)
{
    buf_free(&p->b);
    p->data_len = 0;
}

/* Truncate the buffer to its first n bytes (keeping the NUL invariant). */
static void cut(struct sse *p, size_t n)
{
    p->b.len = n;
    if (p->b.p)
        p->b.p[n] = '\0';
}

static int dispatch(struct sse *p)
{
    if (!p->has_data)
        return 0;
    size_t n = p->data_len;
    p->has_data = 0;
    p->data_len = 0;
    cut(p, n);
    int rc = p->cb(buf_str(&p->b), n, p->arg);
    cut(p, 0);
    return rc;
}

/* The line in b[data_len, len) is complete. */
static int end_line(struct sse *p)
{
    char *line = p->b.p ? p->b.p + p->data_len : NULL;
    size_t n = p->b.len - p->data_len;
    if (n == 0)
        return dispatch(p);
    if (line[0] == ':' || n < 4 || memcmp(line, "data", 4) != 0 || (n > 4 && line[4] != ':')) {
        cut(p, p->data_len); /* comment, other field, or a field merely starting "data" */
        return 0;
    }
    size_t v = n > 4 ? 5 : 4; /* value starts after "data:" */
    if (v < n && line[v] == ' ')
        v++;
    size_t vlen = n - v;
    size_t sep = p->has_data ? 1 : 0;
    if (p->data_len + sep + vlen > p->max_event)
        return p->err = BC_ETOOBIG;
    /* Move the value down to follow the data so far (regions may overlap). */
    if (sep)
        line[0] = '\n';
    memmove(line + sep, line + v, vlen);
    p->data_len += sep + vlen;
    p->has_data = 1;
    cut(p, p->data_len);
    return 0;
}

int sse_feed(struct sse *p, const char *data, size_t len)
{
    if (p->err)
        return p->err;
    size_t i = 0;
    while (i < len) {
        if (p->after_cr) {
            p->after_cr = 0;
            if (data[i] == '\n') {
                i++;
                continue;
            }
        }
        /* Find the end of the run of ordinary bytes. */
        size_t j = i;
        while (j < len && data[j] != '\n' && data[j] != '\r')
            j++;
        if (j > i) {
            if (p->b.len - p->data_len + (j - i) > p->max_line)
                return p->err = BC_ETOOBIG;
            int rc = buf_append(&p->b, data + i, j - i);
            if (rc < 0)
                return p->err = rc;
        }
        if (j == len)
            break;
        p->after_cr = data[j] == '\r';
        i = j + 1;
        int rc = end_line(p);
        if (rc)
            return rc;
    }
    return 0;
}
