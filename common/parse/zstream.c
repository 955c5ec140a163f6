#include "parse/zstream.h"

#include <string.h>

#include "base/err.h"

/* Inflate output goes through a stack chunk and then into the capped buf,
 * so the cap is checked on every chunk and buf keeps its own invariants. */
#define ZS_CHUNK 16384

static const unsigned char zs_flush_marker[4] = {0x00, 0x00, 0xff, 0xff};

/* The adler32 check value is only compared at the end of a zlib stream,
 * and the gateway's stream never ends: computing it is pure cost (a few
 * percent of the dispatch path). */
static void zs_no_checksum(struct zstream *zs)
{
#if ZLIB_VERNUM >= 0x1290
    inflateValidate(&zs->z, 0);
#else
    (void)zs;
#endif
}

int zstream_init(struct zstream *zs, int compressed, size_t max)
{
    memset(zs, 0, sizeof *zs);
    zs->max = max ? max : ZSTREAM_DEFAULT_MAX;
    zs->compressed = !!compressed;
    buf_init(&zs->in, zs->max);
    buf_init(&zs->out, zs->max);
    if (!zs->compressed)
        return 0;
    if (inflateInit(&zs->z) != Z_OK) {
        zs->broken = 1;
        return BC_EPROTO;
    }
    zs->zready = 1;
    zs_no_checksum(zs);
    return 0;
}

void zstream_reset(struct zstream *zs)
{
    buf_reset(&zs->in);
    buf_reset(&zs->out);
    zs->in_done = 0;
    if (zs->compressed) {
        if (zs->zready && inflateReset(&zs->z) == Z_OK)
            zs->broken = 0;
        else if (!zs->zready && inflateInit(&zs->z) == Z_OK)
            zs->zready = 1, zs->broken = 0;
        if (zs->zready)
            zs_no_checksum(zs);
        return;
    }
    zs->broken = 0;
}

static int zs_fail(struct zstream *zs, int err)
{
    zs->broken = 1;
    buf_reset(&zs->in);
    buf_reset(&zs->out);
    return err;
}

static int ends_with_marker(const unsigned char *p, size_t n)
{
    return n >= 4 && !memcmp(p + n - 4, zs_flush_marker, 4);
}

/* Inflate one complete message (it ends with the flush marker) into out. */
static int zs_inflate(struct zstream *zs, const unsigned char *data, size_t len)
{
    unsigned char chunk[ZS_CHUNK];
    buf_reset(&zs->out);
    zs->z.next_in = (unsigned char *)data; /* zlib's API is not const */
    zs->z.avail_in = (uInt)len;            /* len <= max, far below 4 GiB */
    for (;;) {
        zs->z.next_out = chunk;
        zs->z.avail_out = sizeof chunk;
        uInt in_before = zs->z.avail_in;
        int rc = inflate(&zs->z, Z_SYNC_FLUSH);
        if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END)
            return zs_fail(zs, BC_EPROTO);
        size_t have = sizeof chunk - zs->z.avail_out;
        if (have && buf_append(&zs->out, chunk, have))
            return zs_fail(zs, BC_ETOOBIG);
        if (rc == Z_STREAM_END) {
            if (inflateReset(&zs->z) != Z_OK)
                return zs_fail(zs, BC_EPROTO);
            zs_no_checksum(zs);
        }
        if (zs->z.avail_out == 0)
            continue; /* more output may be pending */
        if (zs->z.avail_in == 0)
            break;
        if (!have && zs->z.avail_in == in_before)
            return zs_fail(zs, BC_EPROTO); /* no progress with input left */
    }
    zs->z.next_in = NULL;
    return 0;
}

static int zs_feed_compressed(struct zstream *zs, const unsigned char *data, size_t len, int fin,
                              const char **msg, size_t *msg_len)
{
    const unsigned char *src = data;
    size_t n = len;
    if (zs->in.len || !fin || !ends_with_marker(data, len)) {
        if (buf_append(&zs->in, data, len))
            return zs_fail(zs, BC_ETOOBIG);
        if (!fin || !ends_with_marker((const unsigned char *)zs->in.p, zs->in.len))
            return 0;
        src = (const unsigned char *)zs->in.p;
        n = zs->in.len;
    } else if (len > zs->max) {
        return zs_fail(zs, BC_ETOOBIG);
    }
    int rc = zs_inflate(zs, src, n);
    buf_reset(&zs->in);
    if (rc)
        return rc;
    *msg = buf_str(&zs->out);
    *msg_len = zs->out.len;
    return 1;
}

static int zs_feed_plain(struct zstream *zs, const char *data, size_t len, int fin,
                         const char **msg, size_t *msg_len)
{
    if (!zs->in.len && fin) { /* the usual case: one fragment, no copy */
        if (len > zs->max)
            return zs_fail(zs, BC_ETOOBIG);
        *msg = data;
        *msg_len = len;
        return 1;
    }
    if (buf_append(&zs->in, data, len))
        return zs_fail(zs, BC_ETOOBIG);
    if (!fin)
        return 0;
    zs->in_done = 1; /* handed out; dropped at the next feed */
    *msg = buf_str(&zs->in);
    *msg_len = zs->in.len;
    return 1;
}

int zstream_feed(struct zstream *zs, const void *data, size_t len, int fin, const char **msg,
                 size_t *msg_len)
{
    if (zs->broken)
        return BC_EPROTO;
    if (zs->in_done) {
        buf_reset(&zs->in);
        zs->in_done = 0;
    }
    if (!data)
        data = "";
    if (zs->compressed)
        return zs_feed_compressed(zs, data, len, fin, msg, msg_len);
    return zs_feed_plain(zs, data, len, fin, msg, msg_len);
}

void zstream_free(struct zstream *zs)
{
    if (zs->zready)
        inflateEnd(&zs->z);
    zs->zready = 0;
    buf_free(&zs->in);
    buf_free(&zs->out);
}
