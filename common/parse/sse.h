/* sse: an incremental Server-Sent-Events parser (the text/event-stream format).
 *
 * Bytes are fed in pieces of any size, split anywhere (inside a UTF-8
 * sequence, between the \r and \n of a CRLF); the parser calls back once per
 * complete event with the event's data: the values of its `data:` lines
 * joined with "\n". Lines may end in \n, \r\n or \r. Comment lines (starting
 * with ':') and fields other than `data` (event, id, retry, unknown ones) are
 * ignored; a block of lines without any `data:` line dispatches nothing, as
 * the WHATWG algorithm says. An event whose data is present but empty
 * ("data:" alone) is dispatched with len 0. A partial event at end of input
 * is not dispatched (the caller decides what a stream cut short means).
 *
 * Memory: one buf, capped at max_line + max_event, grown by whole runs of
 * input (never per byte). A line longer than max_line, or an event whose data
 * grows beyond max_event, fails with BC_ETOOBIG; the parser then stays failed.
 *
 * The parser does no I/O and never touches a loop; it is plain data owned by
 * the caller (embed it anywhere) and released with sse_free. */
#ifndef BC_SSE_H
#define BC_SSE_H

#include <stddef.h>

#include "base/buf.h"

#define SSE_DEFAULT_MAX_LINE (256u * 1024)
#define SSE_DEFAULT_MAX_EVENT (1024u * 1024)

/* Called once per complete event. data is NUL-terminated (NUL not counted in
 * len) and borrowed for the duration of the call. Return 0 to go on; any
 * other value stops sse_feed at once and is returned by it (the rest of that
 * piece is dropped, the parser stays usable). */
typedef int sse_event_cb(const char *data, size_t len, void *arg);

struct sse {
    struct buf b;       /* [0, data_len): event data so far; then the current line */
    size_t data_len;    /* bytes of joined data (excluding the pending line) */
    size_t max_line, max_event;
    int has_data;       /* the current event has seen a data field */
    int after_cr;       /* the previous byte was \r: a following \n is part of it */
    int err;            /* sticky error (BC_ETOOBIG) */
    sse_event_cb *cb;
    void *arg;
};

/* Prepare p. max_line / max_event of 0 take the defaults. cb must not be
 * NULL. Never fails. */
void sse_init(struct sse *p, size_t max_line, size_t max_event, sse_event_cb *cb, void *arg);

/* Feed len bytes. Returns 0; BC_ETOOBIG when a cap was passed (also on every
 * later call); or the nonzero value a callback returned. Callbacks run
 * synchronously from inside this call. The callback must not call sse_free
 * or sse_feed on the same parser. */
int sse_feed(struct sse *p, const char *data, size_t len);

/* Forget any partial line and event (e.g. to reuse p for a new stream);
 * clears a sticky error. */
void sse_reset(struct sse *p);

/* Release the buffer. p may be sse_init'ed again afterwards. */
void sse_free(struct sse *p);

#endif
