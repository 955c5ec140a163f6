/* fuzz_gw_frame: what the gateway connection does with the bytes Discord
 * sends: WebSocket fragments through the zlib-stream inflater
 * (common/parse/zstream.c) into complete messages, each decoded by the gateway
 * envelope decoder (gw__decode in common/io/gw.c: the envelope scanned with
 * jscan, op, d, and for a dispatch t and s), then d parsed with json-c as
 * the ingress does for the events it reads.
 *
 * Input: [mode][max] then fragments, each [hdr][hdr & 0x7f bytes]; hdr bit 7
 * ends a WebSocket message (fin).
 *   mode % 3 == 0: plain text frames, fed as they are;
 *   mode % 3 == 1: compressed, the fragments are the raw zlib-stream bytes
 *                  (corrupt streams, bombs, markers split across fragments);
 *   mode % 3 == 2: compressed, but each message is deflated here with a
 *                  sync flush first, so mutations reach the JSON decoder
 *                  through a valid stream.
 * Checks: a message never exceeds max; after an error every feed fails
 * until zstream_reset; in mode 2 every message comes back exactly. */
#include <json.h>
#include <stdlib.h>
#include <zlib.h>
#include "base/buf.h"
#include "base/err.h"
#include "fuzz.h"
#include "io/gw.h"
#include "parse/zstream.h"

static struct json_tokener *tok;
static z_stream def; /* mode 2's deflater, reset per input (deflateInit costs 256 KiB) */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_setup();
    tok = json_tokener_new_ex(64); /* as gw_new makes it */
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    if (deflateInit(&def, Z_DEFAULT_COMPRESSION) != Z_OK)
        abort();
    return 0;
}

static void decode(const char *msg, size_t len)
{
    struct gw__frame f;
    const char *why;
    if (gw__decode(msg, len, &f, &why)) {
        if (!why)
            abort(); /* an error must say why */
        return;
    }
    /* d lies inside the message (or is the literal "null") */
    if (!f.d || (strcmp(f.d, "null") && (f.d < msg || f.d + f.d_len > msg + len)))
        abort();
    if (f.op == 0 && (!f.type[0] || strlen(f.type) >= sizeof(f.type) || (f.has_seq && f.seq <= 0)))
        abort();
    /* what the owner reads next: d parsed as JSON, as ingress does for
     * interactions and channel events */
    json_tokener_reset(tok);
    struct json_object *d = json_tokener_parse_ex(tok, f.d, (int)f.d_len);
    if (d)
        (void)json_object_to_json_string_ext(d, JSON_C_TO_STRING_PLAIN);
    json_object_put(d);
}

/* Feed one fragment; returns the feed's result after checking it. */
static int feed(struct zstream *zs, const void *p, size_t n, int fin, const char *expect, size_t expect_len)
{
    const char *msg;
    size_t ml;
    int broken = zs->broken;
    int rc = zstream_feed(zs, p, n, fin, &msg, &ml);
    if (broken && rc != BC_EPROTO)
        abort(); /* a broken stream must stay broken until reset */
    if (rc == 1) {
        if (ml > zs->max)
            abort();
        if (expect && (ml != expect_len || memcmp(msg, expect, ml)))
            abort(); /* deflate + inflate changed the message */
        decode(msg, ml);
    } else if (rc != 0 && rc != BC_ETOOBIG && rc != BC_EPROTO) {
        abort();
    }
    if (rc < 0 && (rc & 1)) /* now and then, start a new connection */
        zstream_reset(zs);
    return rc;
}

/* Mode 2: deflate each message with a sync flush and feed it in pieces. */
static void feed_deflated(struct zstream *zs, struct fz *f)
{
    z_stream *z = &def;
    if (deflateReset(z) != Z_OK)
        abort();
    struct buf msg, out;
    buf_init(&msg, (size_t)1 << 20);
    buf_init(&out, (size_t)1 << 22);
    while (f->n) {
        unsigned hdr = fz_byte(f);
        size_t n = hdr & 0x7f;
        if (n > f->n)
            n = f->n;
        buf_append(&msg, f->p, n);
        f->p += n, f->n -= n;
        if (!(hdr & 0x80) && f->n)
            continue;
        unsigned char chunk[4096];
        buf_reset(&out);
        z->next_in = (unsigned char *)(msg.p ? msg.p : "");
        z->avail_in = (uInt)msg.len;
        do {
            z->next_out = chunk;
            z->avail_out = sizeof chunk;
            deflate(z, Z_SYNC_FLUSH);
            buf_append(&out, chunk, sizeof chunk - z->avail_out);
        } while (z->avail_out == 0);
        if (!out.len)
            break; /* a second flush with nothing new emits nothing: no message */
        /* one WebSocket message, in two fragments when it is long enough */
        size_t half = out.len > 8 ? out.len / 2 : 0;
        int fits = msg.len <= zs->max && out.len <= zs->max;
        int rc = half ? feed(zs, out.p, half, 0, NULL, 0) : 0;
        if (rc == 0)
            rc = feed(zs, out.p + half, out.len - half, 1, fits ? buf_str(&msg) : NULL, msg.len);
        if (fits && rc != 1)
            abort(); /* a valid message within max must come out */
        if (rc < 0)
            break; /* the rest of our stream no longer matches the inflater */
        buf_reset(&msg);
    }
    buf_free(&msg);
    buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    unsigned mode = fz_byte(&f) % 3, m = fz_byte(&f);
    /* up to 64 KiB: the 8 MiB default behaves the same, only slower (bombs) */
    size_t max = 16 + (size_t)m * 256;
    struct zstream zs;
    if (zstream_init(&zs, mode != 0, max))
        abort();
    if (mode == 2) {
        feed_deflated(&zs, &f);
    } else {
        while (f.n) {
            unsigned hdr = fz_byte(&f);
            size_t n = hdr & 0x7f;
            if (n > f.n)
                n = f.n;
            feed(&zs, f.p, n, hdr >> 7, NULL, 0);
            f.p += n, f.n -= n;
        }
    }
    zstream_free(&zs);
    return 0;
}
