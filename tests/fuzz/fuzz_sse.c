/* fuzz_sse: the Server-Sent-Events parser (common/parse/sse.c), which reads the
 * OpenAI-compatible streaming answers byte by byte from the network.
 *
 * Input: [caps][chunking seed] then the stream. The stream is parsed twice,
 * once in one piece and once cut into pieces of 1..16 bytes; both must give
 * the same events and the same final result (the header promises that
 * bytes may be split anywhere). Small caps are chosen half the time so the
 * BC_ETOOBIG paths are reached. */
#include <stdlib.h>
#include "base/buf.h"
#include "fuzz.h"
#include "parse/sse.h"

struct seen {
    struct buf log; /* "<len>:<data>\n" per event */
    int events;
};

static int on_event(const char *data, size_t len, void *arg)
{
    struct seen *s = arg;
    if (strlen(data) > len) /* data is NUL-terminated at len (embedded NULs allowed) */
        abort();
    s->events++;
    buf_printf(&s->log, "%zu:", len);
    buf_append(&s->log, data, len);
    buf_puts(&s->log, "\n");
    return 0;
}

static int parse(const uint8_t *d, size_t n, size_t max_line, size_t max_event, unsigned seed,
                 struct seen *s)
{
    struct sse p;
    sse_init(&p, max_line, max_event, on_event, s);
    int rc = 0;
    if (!seed) {
        rc = sse_feed(&p, (const char *)d, n);
    } else {
        size_t i = 0;
        while (i < n && !rc) {
            seed = seed * 1103515245u + 12345u;
            size_t k = 1 + (seed >> 16) % 16;
            if (k > n - i)
                k = n - i;
            rc = sse_feed(&p, (const char *)d + i, k);
            i += k;
        }
    }
    sse_free(&p);
    return rc;
}

FUZZ_INIT_DEFAULT

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = {data, size};
    unsigned caps = fz_byte(&f), seed = fz_byte(&f) | 0x100u;
    size_t max_line = 0, max_event = 0;
    if (caps & 1) {
        max_line = 1 + (caps >> 1 & 7) * 9;
        max_event = 1 + (caps >> 4) * 13;
    }
    struct seen a = {0}, b = {0};
    buf_init(&a.log, (size_t)1 << 26);
    buf_init(&b.log, (size_t)1 << 26);
    int ra = parse(f.p, f.n, max_line, max_event, 0, &a);
    int rb = parse(f.p, f.n, max_line, max_event, seed, &b);
    if (ra != rb || a.events != b.events || a.log.len != b.log.len ||
        (a.log.len && memcmp(a.log.p, b.log.p, a.log.len)))
        abort(); /* splitting the input changed what was parsed */
    buf_free(&a.log);
    buf_free(&b.log);
    return 0;
}
