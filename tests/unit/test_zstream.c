/* test_zstream: message reassembly and zlib-stream inflation.
 *
 * The compressed streams are made here the way Discord makes them: one
 * deflate context per connection, every message followed by Z_SYNC_FLUSH,
 * so each message ends with 00 00 ff ff and later messages refer back to
 * earlier ones through the shared window. */
#include <stdint.h>
#include <time.h>
#include <zlib.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/mem.h"
#include "ut.h"
#include "parse/zstream.h"

/* ---- a deflating "server" ------------------------------------------------ */

struct defl {
    z_stream z;
};

static void defl_init(struct defl *d)
{
    memset(d, 0, sizeof *d);
    UT_EQ_INT(deflateInit(&d->z, Z_DEFAULT_COMPRESSION), Z_OK);
}

/* Compress one message with a sync flush; the result is appended to out
 * (an uncapped buf of the test). Returns the compressed length. */
static size_t defl_msg(struct defl *d, const void *msg, size_t len, struct buf *out)
{
    size_t before = out->len;
    unsigned char chunk[4096];
    d->z.next_in = (unsigned char *)msg;
    d->z.avail_in = (uInt)len;
    do {
        d->z.next_out = chunk;
        d->z.avail_out = sizeof chunk;
        int rc = deflate(&d->z, Z_SYNC_FLUSH);
        UT_ASSERT(rc == Z_OK || rc == Z_BUF_ERROR);
        UT_EQ_INT(buf_append(out, chunk, sizeof chunk - d->z.avail_out), 0);
    } while (d->z.avail_out == 0);
    UT_EQ_INT(d->z.avail_in, 0);
    size_t n = out->len - before;
    UT_ASSERT(n >= 4 && !memcmp(out->p + out->len - 4, "\x00\x00\xff\xff", 4));
    return n;
}

static void defl_end(struct defl *d)
{
    deflateEnd(&d->z);
}

static const char msg_a[] = "{\"op\":10,\"d\":{\"heartbeat_interval\":41250,"
                            "\"_trace\":[\"[\\\"gateway-prd-us-east1-b-0568\\\"]\"]}}";
static const char msg_b[] = "{\"t\":\"MESSAGE_CREATE\",\"s\":2,\"op\":0,\"d\":{\"content\":"
                            "\"안녕하세요! 봇에게 질문이 있어요 🤖\",\"channel_id\":\"1234567890\","
                            "\"author\":{\"id\":\"42\",\"username\":\"tester\"}}}";

/* Feed and expect exactly one complete message equal to want. */
static void expect_msg(struct zstream *zs, const void *data, size_t len, int fin, const char *want,
                       size_t want_len)
{
    const char *m = NULL;
    size_t ml = 0;
    int rc = zstream_feed(zs, data, len, fin, &m, &ml);
    if (rc != 1)
        UT_FAIL("zstream_feed returned %d, wanted a message", rc);
    UT_EQ_INT(ml, want_len);
    UT_ASSERT(!memcmp(m, want, want_len));
}

static void expect_more(struct zstream *zs, const void *data, size_t len, int fin)
{
    const char *m = NULL;
    size_t ml = 0;
    UT_EQ_INT(zstream_feed(zs, data, len, fin, &m, &ml), 0);
}

/* ---- cases ---------------------------------------------------------------- */

/* Several messages on one stream, each in one frame: the shared window is
 * what makes the later ones small, and every one comes back intact. */
static void test_stream_roundtrip(void)
{
    struct defl d;
    defl_init(&d);
    struct buf c;
    buf_init(&c, SIZE_MAX / 2);
    struct zstream zs;
    UT_EQ_INT(zstream_init(&zs, 1, 0), 0);
    for (int i = 0; i < 50; i++) {
        const char *m = (i % 2) ? msg_b : msg_a;
        size_t ml = strlen(m);
        buf_reset(&c);
        size_t n = defl_msg(&d, m, ml, &c);
        if (i > 2)
            UT_ASSERT(n < ml / 2); /* the window is shared across messages */
        expect_msg(&zs, c.p, n, 1, m, ml);
    }
    zstream_free(&zs);
    buf_free(&c);
    defl_end(&d);
}

/* The second message of a stream split into two fragments at every byte
 * offset, and also split into two WebSocket messages at every offset: the
 * result is always the one message, produced only when it is complete. */
static void test_split_every_offset(void)
{
    struct defl d;
    defl_init(&d);
    struct buf c;
    buf_init(&c, SIZE_MAX / 2);
    size_t na = defl_msg(&d, msg_a, strlen(msg_a), &c);
    size_t nb = defl_msg(&d, msg_b, strlen(msg_b), &c);
    const char *b = c.p + na;
    for (size_t k = 0; k <= nb; k++) {
        for (int ws_split = 0; ws_split < 2; ws_split++) {
            struct zstream zs;
            UT_EQ_INT(zstream_init(&zs, 1, 0), 0);
            expect_msg(&zs, c.p, na, 1, msg_a, strlen(msg_a));
            if (k == nb) {
                expect_msg(&zs, b, k, 1, msg_b, strlen(msg_b));
            } else if (ws_split && k >= 4 && !memcmp(b + k - 4, "\x00\x00\xff\xff", 4)) {
                /* a prefix that itself ends with the marker: not a split
                 * a server could produce; skip it */
            } else {
                expect_more(&zs, b, k, ws_split);
                expect_msg(&zs, b + k, nb - k, 1, msg_b, strlen(msg_b));
            }
            zstream_free(&zs);
        }
    }
    buf_free(&c);
    defl_end(&d);
}

/* One message delivered one byte per fragment. */
static void test_many_fragments(void)
{
    struct defl d;
    defl_init(&d);
    struct buf c;
    buf_init(&c, SIZE_MAX / 2);
    size_t n = defl_msg(&d, msg_b, strlen(msg_b), &c);
    struct zstream zs;
    UT_EQ_INT(zstream_init(&zs, 1, 0), 0);
    for (size_t i = 0; i + 1 < n; i++)
        expect_more(&zs, c.p + i, 1, 0);
    expect_msg(&zs, c.p + n - 1, 1, 1, msg_b, strlen(msg_b));
    /* the next message on the same stream still works */
    buf_reset(&c);
    n = defl_msg(&d, msg_a, strlen(msg_a), &c);
    expect_msg(&zs, c.p, n, 1, msg_a, strlen(msg_a));
    zstream_free(&zs);
    buf_free(&c);
    defl_end(&d);
}

static char *filler(size_t n)
{
    char *p = mem_alloc(n + 1);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (char)('a' + (x >> 16) % 26);
    }
    p[n] = '\0';
    return p;
}

/* A big message (several inflate chunks) under the cap is fine; exactly
 * the cap is fine; one byte more is BC_ETOOBIG, and the stream then stays
 * broken until reset. A highly compressible bomb stops at the cap. */
static void test_cap(void)
{
    const size_t cap = 256 * 1024;
    char *big = filler(cap + 1);
    struct defl d;
    struct buf c;
    buf_init(&c, SIZE_MAX / 2);
    struct zstream zs;
    UT_EQ_INT(zstream_init(&zs, 1, cap), 0);

    defl_init(&d);
    size_t n = defl_msg(&d, big, cap, &c);
    expect_msg(&zs, c.p, n, 1, big, cap);
    defl_end(&d);

    zstream_reset(&zs);
    defl_init(&d);
    buf_reset(&c);
    n = defl_msg(&d, big, cap + 1, &c);
    const char *m;
    size_t ml;
    UT_EQ_INT(zstream_feed(&zs, c.p, n, 1, &m, &ml), BC_ETOOBIG);
    UT_EQ_INT(zstream_feed(&zs, "x", 1, 1, &m, &ml), BC_EPROTO); /* broken */
    defl_end(&d);

    /* 64 MiB of zeros compress to ~64 KiB: stops at the cap, no 64 MiB */
    zstream_reset(&zs);
    defl_init(&d);
    buf_reset(&c);
    size_t bomb = 64u * 1024 * 1024;
    char *zeros = mem_calloc(1, bomb);
    n = defl_msg(&d, zeros, bomb, &c);
    UT_ASSERT(n < cap);
    UT_EQ_INT(zstream_feed(&zs, c.p, n, 1, &m, &ml), BC_ETOOBIG);
    UT_ASSERT(zs.out.cap <= cap + 1);
    mem_free(zeros);
    defl_end(&d);

    /* after a reset a new stream (a new connection) works again */
    zstream_reset(&zs);
    defl_init(&d);
    buf_reset(&c);
    n = defl_msg(&d, msg_a, strlen(msg_a), &c);
    expect_msg(&zs, c.p, n, 1, msg_a, strlen(msg_a));
    defl_end(&d);

    /* compressed input that never ends is capped too */
    zstream_reset(&zs);
    char junk[4096];
    memset(junk, 0x5a, sizeof junk);
    int rc = 0;
    size_t fed = 0;
    while (rc == 0 && fed <= cap + sizeof junk) {
        rc = zstream_feed(&zs, junk, sizeof junk, 0, &m, &ml);
        fed += sizeof junk;
    }
    UT_EQ_INT(rc, BC_ETOOBIG);
    UT_ASSERT(fed <= cap + sizeof junk);

    zstream_free(&zs);
    buf_free(&c);
    mem_free(big);
}

/* Garbage and corrupted streams fail cleanly (BC_EPROTO) or, when the
 * damage happens to decode, yield some message; never a crash, never more
 * than the cap. Every single-byte corruption of a real message is tried. */
static void test_corrupt(void)
{
    struct zstream zs;
    const char *m;
    size_t ml;
    UT_EQ_INT(zstream_init(&zs, 1, 4096), 0);
    UT_EQ_INT(zstream_feed(&zs, "hello world\x00\x00\xff\xff", 15, 1, &m, &ml), BC_EPROTO);
    UT_EQ_INT(zstream_feed(&zs, "x", 1, 1, &m, &ml), BC_EPROTO);
    zstream_reset(&zs);

    struct defl d;
    defl_init(&d);
    struct buf c;
    buf_init(&c, SIZE_MAX / 2);
    size_t na = defl_msg(&d, msg_a, strlen(msg_a), &c);
    size_t nb = defl_msg(&d, msg_b, strlen(msg_b), &c);
    int failed = 0, decoded = 0;
    for (size_t i = 0; i < na + nb - 4; i++) {
        char *copy = mem_alloc(na + nb);
        memcpy(copy, c.p, na + nb);
        copy[i] = (char)(copy[i] ^ 0x41);
        zstream_reset(&zs);
        int r1 = zstream_feed(&zs, copy, na, 1, &m, &ml);
        int r2 = r1 == 1 ? zstream_feed(&zs, copy + na, nb, 1, &m, &ml) : r1;
        UT_ASSERT(r1 == 1 || r1 == 0 || r1 == BC_EPROTO || r1 == BC_ETOOBIG);
        UT_ASSERT(r2 == 1 || r2 == 0 || r2 == BC_EPROTO || r2 == BC_ETOOBIG);
        if (r2 == 1) {
            decoded++;
            UT_ASSERT(ml <= 4096);
        } else {
            failed++;
        }
        mem_free(copy);
    }
    UT_ASSERT(failed > 0);
    fprintf(stderr, "test_corrupt: %d corruptions rejected, %d decoded to something\n", failed,
            decoded);
    zstream_free(&zs);
    buf_free(&c);
    defl_end(&d);
}

/* compress off: a one-fragment message comes back without a copy; a
 * fragmented one is reassembled; the cap holds for both. */
static void test_plain(void)
{
    struct zstream zs;
    const char *m;
    size_t ml;
    UT_EQ_INT(zstream_init(&zs, 0, 64), 0);
    UT_EQ_INT(zstream_feed(&zs, msg_a, 20, 1, &m, &ml), 1);
    UT_ASSERT(m == msg_a); /* zero copy */
    UT_EQ_INT(ml, 20);

    expect_more(&zs, "{\"op\":", 6, 0);
    expect_more(&zs, "11", 2, 0);
    expect_msg(&zs, "}", 1, 1, "{\"op\":11}", 9);
    expect_msg(&zs, "{}", 2, 1, "{}", 2); /* the previous one was dropped */

    char big[65];
    memset(big, 'x', sizeof big);
    expect_msg(&zs, big, 64, 1, big, 64);
    UT_EQ_INT(zstream_feed(&zs, big, 65, 1, &m, &ml), BC_ETOOBIG);
    zstream_reset(&zs);
    expect_more(&zs, big, 60, 0);
    UT_EQ_INT(zstream_feed(&zs, big, 5, 0, &m, &ml), BC_ETOOBIG);
    UT_EQ_INT(zstream_feed(&zs, "{}", 2, 1, &m, &ml), BC_EPROTO);
    zstream_reset(&zs);
    expect_msg(&zs, "{}", 2, 1, "{}", 2);
    zstream_free(&zs);
}

/* A compressed message split across two WebSocket messages (the first
 * without the marker) waits for the second. */
static void test_marker_across_messages(void)
{
    struct defl d;
    defl_init(&d);
    struct buf c;
    buf_init(&c, SIZE_MAX / 2);
    size_t n = defl_msg(&d, msg_b, strlen(msg_b), &c);
    struct zstream zs;
    UT_EQ_INT(zstream_init(&zs, 1, 0), 0);
    expect_more(&zs, c.p, n - 2, 1);
    expect_msg(&zs, c.p + n - 2, 2, 1, msg_b, strlen(msg_b));
    zstream_free(&zs);
    buf_free(&c);
    defl_end(&d);
}

/* Cheap enough for the gateway's dispatch rate: inflating 100,000 typical
 * events takes well under a second on one core (printed, loosely checked). */
static void test_throughput(void)
{
    struct defl d;
    defl_init(&d);
    struct buf c;
    buf_init(&c, SIZE_MAX / 2);
    struct zstream zs;
    UT_EQ_INT(zstream_init(&zs, 1, 0), 0);
    enum { N = 100000 };
    size_t *off = mem_alloc((N + 1) * sizeof *off);
    char ev[600];
    for (int i = 0; i < N; i++) {
        int len = snprintf(ev, sizeof ev,
                           "{\"t\":\"MESSAGE_CREATE\",\"s\":%d,\"op\":0,\"d\":{\"id\":\"%d\","
                           "\"content\":\"message number %d\",\"channel_id\":\"99\"}}",
                           i + 1, 1000000 + i * 7, i);
        off[i] = c.len;
        defl_msg(&d, ev, (size_t)len, &c);
    }
    off[N] = c.len;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t total = 0;
    for (int i = 0; i < N; i++) {
        const char *m;
        size_t ml;
        UT_EQ_INT(zstream_feed(&zs, c.p + off[i], off[i + 1] - off[i], 1, &m, &ml), 1);
        total += ml;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    fprintf(stderr, "test_throughput: %d messages (%zu bytes) in %.3f s = %.0f msg/s\n", N, total,
            s, N / s);
    UT_ASSERT(s < 5.0); /* generous: ASan builds are several times slower */
    mem_free(off);
    zstream_free(&zs);
    buf_free(&c);
    defl_end(&d);
}

static const struct ut_case cases[] = {
    UT_CASE(test_stream_roundtrip),
    UT_CASE(test_split_every_offset),
    UT_CASE(test_many_fragments),
    UT_CASE(test_cap),
    UT_CASE(test_corrupt),
    UT_CASE(test_plain),
    UT_CASE(test_marker_across_messages),
    UT_CASE(test_throughput),
    {0},
};
UT_MAIN(cases)
