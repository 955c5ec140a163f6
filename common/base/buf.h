/* buf: a growable byte buffer with a hard size cap (like curl's dynbuf).
 *
 * Every buffer filled from the network or a file is a buf with a cap, so a
 * hostile peer can never make us allocate without bound. The content is kept
 * NUL-terminated (the NUL is not counted in len). The buf owns its memory;
 * buf_free releases it and leaves an empty, reusable buf.
 *
 * Failure is sticky: the first append that fails (the cap) leaves the
 * content as it was and records its error; every later append fails with
 * that error and changes nothing, until buf_reset, buf_detach or buf_free.
 * So a producer may append many times without checking each call and check
 * once, with buf_error, before it uses the text: output is then either
 * complete or known to be cut, never silently cut. */
#ifndef BC_BUF_H
#define BC_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *p;    /* content, NUL-terminated; NULL until first append */
    size_t len; /* bytes used, excluding the NUL */
    size_t cap; /* bytes allocated */
    size_t max; /* hard cap on len */
    int err;    /* 0, or the error of the first append that failed (sticky) */
};

void buf_init(struct buf *b, size_t max);
/* Append n bytes. Returns 0, or BC_ETOOBIG (buffer unchanged) when the
 * result would exceed max; once an append failed, every later one returns
 * that first error (see above). */
int buf_append(struct buf *b, const void *data, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* 0 while every append so far succeeded, else the first failure's error
 * (BC_ETOOBIG, -EINVAL): the content is then incomplete. Check it once at
 * the end of a producer, before the content is used. */
int buf_error(const struct buf *b) __attribute__((warn_unused_result));
/* Content as a C string; "" when empty (never NULL). */
const char *buf_str(const struct buf *b);
/* Empty the buffer and clear a recorded failure. */
void buf_reset(struct buf *b);
/* Drop the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
/* Hand the allocated string to the caller (mem_free it); b becomes empty
 * (failure cleared). Check buf_error first if the content must be whole. */
char *buf_detach(struct buf *b) __attribute__((warn_unused_result));
void buf_free(struct buf *b);

#endif
