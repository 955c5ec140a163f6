/* zstream: turns the WebSocket frames of one gateway connection into
 * complete gateway messages.
 *
 * Discord sends either plain JSON text messages (compress off) or, with
 * compress=zlib-stream, ONE zlib stream per connection in which every
 * message ends with a sync flush: the bytes 00 00 ff ff. A message may
 * arrive in several WebSocket fragments (and, in principle, several
 * WebSocket messages), so bytes are collected until the transport says a
 * message ended AND, when compressed, the collected bytes end with the
 * flush marker; then they are inflated with the connection's one inflate
 * context (zlib keeps its window across messages).
 *
 * What it promises:
 *  - Memory is bounded: the collected input and the inflated message are
 *    each capped at max bytes. More is BC_ETOOBIG, never a bigger buffer
 *    (a small compressed frame that inflates to gigabytes stops at max).
 *  - After an error (BC_ETOOBIG, BC_EPROTO for corrupt zlib data) the
 *    stream is out of sync: every later feed fails with BC_EPROTO until
 *    zstream_reset. The caller resets the connection (a new connection
 *    starts a new zlib stream).
 *  - No allocation per message once the buffers have grown to the usual
 *    message size; a message that arrives in one fragment uncompressed is
 *    handed back without copying.
 *
 * Not thread-safe; one zstream per connection. */
#ifndef BC_ZSTREAM_H
#define BC_ZSTREAM_H

#include <stddef.h>
#include <zlib.h>

#include "base/buf.h"

#define ZSTREAM_DEFAULT_MAX (8u * 1024 * 1024)

struct zstream {
    z_stream z;     /* the connection's inflate context (compressed only) */
    struct buf in;  /* bytes of the message still incomplete */
    struct buf out; /* the last inflated message */
    size_t max;     /* cap on one message, compressed and inflated */
    int compressed;
    int zready;     /* inflateInit succeeded */
    int broken;     /* an error happened; zstream_reset before reuse */
    int in_done;    /* in holds a message already handed out */
};

/* Prepare zs. compressed selects zlib-stream; max 0 = ZSTREAM_DEFAULT_MAX.
 * Returns 0, or BC_EPROTO if zlib cannot be initialised. zstream_free
 * releases it (also after a failed init). */
int zstream_init(struct zstream *zs, int compressed, size_t max);

/* Forget any partial message and start a new zlib stream (call it for every
 * new connection). Keeps the buffers' memory. */
void zstream_reset(struct zstream *zs);

/* Feed one piece of what the WebSocket delivered. fin is nonzero when it
 * ends a WebSocket message (lws_is_final_fragment).
 *
 * Returns 1 when a complete message is ready: *msg and *msg_len describe
 * it, borrowed until the next zstream call (the bytes are not necessarily
 * NUL-terminated). Returns 0 when more input is needed, BC_ETOOBIG when the
 * message exceeds max, BC_EPROTO for corrupt compressed data or a broken
 * stream. */
int zstream_feed(struct zstream *zs, const void *data, size_t len, int fin, const char **msg,
                 size_t *msg_len);

void zstream_free(struct zstream *zs);

#endif
