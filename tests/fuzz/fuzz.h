/* fuzz.h: what every libFuzzer target in tests/fuzz/ shares.
 *
 * A target is tests/fuzz/fuzz_<name>.c defining LLVMFuzzerTestOneInput (and
 * optionally calling fuzz_setup from LLVMFuzzerInitialize). Targets never
 * touch the network, Redis or PostgreSQL, and free everything they allocate
 * per input (libFuzzer reports leaks). Header-only, like tests/unit/ut_*.h. */
#ifndef BC_FUZZ_H
#define BC_FUZZ_H
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include "admin-instance/commands.h"
#include "base/log.h"
#include "base/mem.h"
#include "chat-instance/commands.h"
#include "image-instance/commands.h"
#include "io/hcl.h"
#include "process/core.h"
#include "video-instance/commands.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const struct role_def *const fuzz_roles[] = {&chat_role, &image_role, &video_role, &admin_role, NULL};

/* Every role's row and command table are in use, as in a binary. Logging stays on
 * at debug level, so the log formatter sees the hostile strings too, but
 * goes to /dev/null: a fuzzer logs millions of lines. */
static inline void fuzz_setup(void)
{
    core_use_roles(fuzz_roles);
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    log_setup("fuzz", "fuzz", LOG_DEBUG, fd < 0 ? 2 : fd);
}

/* The initializer of a target that needs nothing but fuzz_setup. */
#define FUZZ_INIT_DEFAULT                                                                          \
    int LLVMFuzzerInitialize(int *argc, char ***argv)                                              \
    {                                                                                              \
        (void)argc, (void)argv;                                                                    \
        fuzz_setup();                                                                              \
        return 0;                                                                                  \
    }

/* A reader over the input, for targets that take a few parameters before
 * the bytes they feed (like FuzzedDataProvider, in C). */
struct fz {
    const uint8_t *p;
    size_t n;
};

static inline unsigned fz_byte(struct fz *f)
{
    if (!f->n)
        return 0;
    f->n--;
    return *f->p++;
}

static inline unsigned fz_u16(struct fz *f)
{
    unsigned hi = fz_byte(f);
    return hi << 8 | fz_byte(f);
}

/* The bytes up to the next separator byte sep (not included), or to the end;
 * the separator is consumed. */
static inline const uint8_t *fz_until(struct fz *f, uint8_t sep, size_t *len)
{
    const uint8_t *s = f->p, *e = memchr(f->p, sep, f->n);
    *len = e ? (size_t)(e - s) : f->n;
    f->p += *len + (e != NULL);
    f->n -= *len + (e != NULL);
    return s;
}

/* A NUL-terminated copy of len bytes (free with mem_free). */
static inline char *fz_str(const uint8_t *s, size_t len)
{
    return mem_strndup((const char *)s, len);
}

/* All of the rest of the input as a NUL-terminated copy. */
static inline char *fz_rest(struct fz *f, size_t *len)
{
    char *s = mem_strndup((const char *)f->p, f->n);
    if (len)
        *len = f->n;
    f->p += f->n;
    f->n = 0;
    return s;
}

/* The key the provider targets pass: no error text may ever carry it. */
#define FUZZ_KEY "sk-FUZZKEY-0123456789abcdef"

#define FUZZ_MAX_HEADERS 8

/* An HTTP answer as hcl hands it over, read from the input:
 * [status][header lines "Name: value\n"... up to a NUL][body]. The status
 * byte picks one of a list (and now and then a transport error). Strings
 * point into *store (free with fz_response_free). */
struct fz_response {
    struct hcl_response h;
    struct hcl_header hdr[FUZZ_MAX_HEADERS];
    char *head, *body;
};

static inline void fz_response(struct fz *f, struct fz_response *r)
{
    static const long statuses[] = {200, 200, 200, 201, 400, 401, 402, 403, 404, 413, 422,
                                    429, 500, 502, 503, 302, 100, 0, 299, 600};
    unsigned s = fz_byte(f);
    memset(r, 0, sizeof(*r));
    r->h.errstr = "";
    r->h.status = statuses[s % (sizeof(statuses) / sizeof(statuses[0]))];
    if (s >= 0xF0) { /* a transport error: status and body mean nothing */
        static const int errs[] = {-110, -111, -104, -125}; /* -ETIMEDOUT ... */
        r->h.err = errs[s & 3];
        r->h.errstr = "transport trouble";
    }
    size_t hl;
    const uint8_t *hp = fz_until(f, 0, &hl);
    r->head = fz_str(hp, hl);
    for (char *line = r->head, *next; line && *line && r->h.nheaders < FUZZ_MAX_HEADERS; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        *colon++ = '\0';
        while (*colon == ' ')
            colon++;
        r->hdr[r->h.nheaders].name = line;
        r->hdr[r->h.nheaders++].value = colon;
    }
    r->h.headers = r->hdr;
    r->body = fz_rest(f, &r->h.body_len);
    r->h.body = r->body;
    r->h.total_ms = 12.5;
}

static inline void fz_response_free(struct fz_response *r)
{
    mem_free(r->head);
    mem_free(r->body);
}

/* No text handed out may carry the whole key. */
static inline void fz_no_key(const char *s)
{
    if (s && strstr(s, FUZZ_KEY))
        __builtin_trap();
}
#endif
