/* buf: a growable byte buffer with a hard size cap (like curl's dynbuf).
 *
 * Every buffer filled from the network or a file is a buf with a cap, so a
 * hostile peer can never make us allocate without bound. The content is kept
 * NUL-terminated (the NUL is not counted in len). The buf owns its memory;
 * buf_free releases it and leaves an empty, reusable buf. */
#ifndef BC_BUF_H
#define BC_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *p;    /* content, NUL-terminated; NULL until first append */
    size_t len; /* bytes used, excluding the NUL */
    size_t cap; /* bytes allocated */
    size_t max; /* hard cap on len */
};

void buf_init(struct buf *b, size_t max);
/* Append n bytes. Returns 0, or BC_ETOOBIG (buffer unchanged) when the
 * result would exceed max. */
int buf_append(struct buf *b, const void *data, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Content as a C string; "" when empty (never NULL). */
const char *buf_str(const struct buf *b);
void buf_reset(struct buf *b);
/* Drop the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
/* Hand the allocated string to the caller (mem_free it); b becomes empty. */
char *buf_detach(struct buf *b);
void buf_free(struct buf *b);

#endif
