/* test_dl: the capped downloader (dl) against a file server (ut_fakehttp.h:
 * our httpd on 127.0.0.1, port 0), and dl_sniff_image. Each case gets its
 * own directory under the test's TMPDIR and checks what is left in it: the
 * finished file with mode 0600 and nothing else on success, nothing at all
 * after a failure or a cancel. Calls are waited for with ut_loop.h; at the
 * end client and server are closed and the loop finishes, so the sanitizers
 * see any leak. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "service/dl.h"
#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"
#include "ut.h"
#include "ut_fakehttp.h"
#include "ut_log.h"
#include "ut_loop.h"
#include "ut_sys.h"
#include "ut_thttp.h"

#define WAIT_MS 10000

/* ---- a slow disk ----------------------------------------------------------------- */

/* While slow_ms is set, every write to a download's temporary file (a
 * ".part-" name) takes that much longer, whoever makes it: the loop thread
 * (write) or libuv's thread pool (pwrite, which is pwrite64 here). A disk
 * under load, or a network file system, looks like this. */
static volatile int slow_ms;

static void slow_down(int fd)
{
    if (!slow_ms)
        return;
    char link[64], target[700];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return;
    target[n] = '\0';
    if (strstr(target, ".part-"))
        usleep((useconds_t)slow_ms * 1000);
}

ssize_t write(int fd, const void *p, size_t n)
{
    static ssize_t (*real)(int, const void *, size_t);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "write");
    slow_down(fd);
    return real(fd, p, n);
}

ssize_t pwrite(int fd, const void *p, size_t n, off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "pwrite64");
    slow_down(fd);
    return real(fd, p, n, off);
}
#define FILE_URL "/files/a.bin?sig=SIGsecretQUERY" /* on the file server */

struct got {
    int err;
    long status;
    char errstr[256], ctype[64];
    unsigned char *data; /* a copy, with the byte after len */
    int data_null;
    size_t len;
};

struct fx {
    struct utfake f; /* the file server: GET /files/a.bin answers f.cn */
    char dir[512], path[600];
    int calls, sync_calls;
    struct got g;
};

static void fx_init(struct fx *fx)
{
    memset(fx, 0, sizeof *fx);
    utfake_init(&fx->f, "test_dl", "application/octet-stream");
    utfake_route(&fx->f, "GET", "/files/a.bin", NULL, NULL);
    snprintf(fx->dir, sizeof fx->dir, "%s/dl_XXXXXX", utsys_tmp_dir());
    UT_ASSERT(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof fx->path, "%s/out.bin", fx->dir);
}

/* Names in fx's directory, ", "-separated, into out; returns how many. */
static int dir_list(const struct fx *fx, char *out, size_t outlen)
{
    DIR *d = opendir(fx->dir);
    UT_ASSERT(d);
    int n = 0;
    out[0] = '\0';
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        size_t l = strlen(out);
        snprintf(out + l, outlen - l, "%s%s", n ? ", " : "", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static void expect_dir_empty(const struct fx *fx)
{
    char names[1024];
    if (dir_list(fx, names, sizeof names))
        UT_FAIL("left behind: %s", names);
}

static void fx_end(struct fx *fx)
{
    utfake_end(&fx->f);
    utfake_free(&fx->f);
    unlink(fx->path);
    UT_EQ_INT(rmdir(fx->dir), 0); /* fails when anything else is left */
    mem_free(fx->g.data);
}

static void on_dl(const struct dl_result *r, void *arg)
{
    struct fx *fx = arg;
    fx->calls++;
    struct got *g = &fx->g;
    mem_free(g->data);
    memset(g, 0, sizeof *g);
    UT_ASSERT(r->errstr && r->content_type);
    g->err = r->err;
    g->status = r->status;
    snprintf(g->errstr, sizeof g->errstr, "%s", r->errstr);
    snprintf(g->ctype, sizeof g->ctype, "%s", r->content_type);
    g->len = r->len;
    g->data_null = r->data == NULL;
    if (r->data) {
        g->data = mem_alloc(r->len + 1);
        memcpy(g->data, r->data, r->len + 1); /* the NUL after the body is promised */
    }
}

static void start(struct fx *fx, size_t max, const char *path, long timeout_ms, struct dl **out)
{
    const char *url = utfake_url(&fx->f, FILE_URL);
    static const char *const hdrs[] = {"Authorization: Bot DLsecretTOKEN", NULL};
    int before = fx->calls;
    struct dl_req rq = {.url = url, .headers = hdrs, .max_bytes = max, .timeout_ms = timeout_ms,
                        .path = path};
    UT_EQ_INT(dl_get(fx->f.c, &rq, on_dl, fx, out), 0);
    UT_EQ_INT(fx->calls, before); /* never synchronously */
}

static void wait_calls(struct fx *fx, int n)
{
    UTLOOP_WAIT_FOR(&fx->f.ul, fx->calls >= n, WAIT_MS);
    UT_EQ_INT(fx->calls, n);
}

static unsigned char *pattern(size_t n)
{
    unsigned char *p = mem_alloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 131) ^ (i >> 9));
    return p;
}

static void expect_file(const struct fx *fx, const unsigned char *want, size_t len)
{
    struct stat st;
    UT_EQ_INT(stat(fx->path, &st), 0);
    UT_EQ_INT(st.st_mode & 07777, 0600);
    UT_EQ_INT(st.st_size, len);
    int fd = open(fx->path, O_RDONLY);
    UT_ASSERT(fd >= 0);
    unsigned char *got = mem_alloc(len + 1);
    UT_EQ_INT(read(fd, got, len + 1), len);
    close(fd);
    UT_ASSERT(!memcmp(got, want, len));
    mem_free(got);
    char names[1024];
    UT_EQ_INT(dir_list(fx, names, sizeof names), 1); /* no temporary file left */
    UT_EQ_STR(names, "out.bin");
}

/* ---- success --------------------------------------------------------------------- */

static void test_memory_target(void)
{
    size_t n = 300 * 1024 + 7;
    unsigned char *body = pattern(n);
    struct fx fx;
    fx_init(&fx);
    fx.f.cn = (struct utfake_canned){.ctype = "image/png", .body = body, .len = n};
    start(&fx, 1 << 20, NULL, 0, NULL);
    wait_calls(&fx, 1);
    UT_EQ_INT(fx.g.err, 0);
    UT_EQ_STR(fx.g.errstr, "");
    UT_EQ_INT(fx.g.status, 200);
    UT_EQ_STR(fx.g.ctype, "image/png");
    UT_EQ_INT(fx.g.len, n);
    UT_ASSERT(!memcmp(fx.g.data, body, n));
    UT_EQ_INT(fx.g.data[n], 0);
    UT_EQ_STR(fx.f.auth, "Bot DLsecretTOKEN"); /* headers are sent */
    expect_dir_empty(&fx);
    fx_end(&fx);
    mem_free(body);
}

static void test_file_target_renamed_0600(void)
{
    size_t n = 1024 * 1024 + 3;
    unsigned char *body = pattern(n);
    struct fx fx;
    fx_init(&fx);
    /* An older file at the path is replaced, and its mode goes with it. */
    int fd = open(fx.path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    UT_ASSERT(fd >= 0 && write(fd, "old", 3) == 3);
    close(fd);
    fx.f.cn = (struct utfake_canned){.body = body, .len = n};
    start(&fx, 2 * n, fx.path, 0, NULL);
    wait_calls(&fx, 1);
    UT_EQ_INT(fx.g.err, 0);
    UT_EQ_INT(fx.g.len, n);
    UT_ASSERT(fx.g.data_null);
    expect_file(&fx, body, n);
    fx_end(&fx);
    mem_free(body);
}

static void test_exact_cap_and_empty_body(void)
{
    unsigned char body[1000];
    memset(body, 'x', sizeof body);
    struct fx fx;
    fx_init(&fx);
    fx.f.cn = (struct utfake_canned){.body = body, .len = sizeof body};
    start(&fx, sizeof body, fx.path, 0, NULL); /* exactly max_bytes is fine */
    wait_calls(&fx, 1);
    UT_EQ_INT(fx.g.err, 0);
    expect_file(&fx, body, sizeof body);
    start(&fx, sizeof body - 1, NULL, 0, NULL); /* one byte more is not */
    wait_calls(&fx, 2);
    UT_EQ_INT(fx.g.err, BC_ETOOBIG);
    UT_EQ_INT(unlink(fx.path), 0);
    fx.f.cn = (struct utfake_canned){0}; /* an empty body */
    start(&fx, 10, fx.path, 0, NULL);
    wait_calls(&fx, 3);
    UT_EQ_INT(fx.g.err, 0);
    expect_file(&fx, body, 0);
    fx_end(&fx);
}

/* ---- failures leave nothing behind -------------------------------------------------- */

static void test_cap_exceeded_mid_stream(void)
{
    size_t n = 4 * 1024 * 1024, cap = 256 * 1024;
    unsigned char *body = pattern(n);
    struct fx fx;
    fx_init(&fx);
    fx.f.cn = (struct utfake_canned){.body = body, .len = n};
    start(&fx, cap, fx.path, 0, NULL);
    wait_calls(&fx, 1);
    UT_EQ_INT(fx.g.err, BC_ETOOBIG);
    UT_EQ_INT(fx.g.status, 200);
    UT_ASSERT(fx.g.errstr[0]);
    UT_ASSERT(fx.g.len > 0 && fx.g.len <= cap); /* some was written, then it stopped */
    expect_dir_empty(&fx);
    start(&fx, cap, NULL, 0, NULL);
    wait_calls(&fx, 2);
    UT_EQ_INT(fx.g.err, BC_ETOOBIG);
    UT_ASSERT(fx.g.len <= cap);
    UT_ASSERT(!memcmp(fx.g.data, body, fx.g.len));
    fx_end(&fx);
    mem_free(body);
}

static void test_non_2xx(void)
{
    static const unsigned char nf[] = "{\"message\":\"not here\"}";
    struct fx fx;
    fx_init(&fx);
    fx.f.cn = (struct utfake_canned){.status = 404, .ctype = "application/json", .body = nf,
                                     .len = sizeof nf - 1};
    start(&fx, 1 << 20, fx.path, 0, NULL);
    wait_calls(&fx, 1);
    UT_EQ_INT(fx.g.err, BC_EHTTP);
    UT_EQ_INT(fx.g.status, 404);
    UT_CONTAINS(fx.g.errstr, "404");
    expect_dir_empty(&fx);
    start(&fx, 1 << 20, NULL, 0, NULL);
    wait_calls(&fx, 2);
    UT_EQ_INT(fx.g.err, BC_EHTTP);
    UT_EQ_STR((const char *)fx.g.data, (const char *)nf); /* the error body, for a look */
    /* An error body over the cap is still reported as the status it is. */
    size_t n = 512 * 1024;
    unsigned char *big = pattern(n);
    fx.f.cn = (struct utfake_canned){.status = 503, .body = big, .len = n};
    start(&fx, 1024, fx.path, 0, NULL);
    wait_calls(&fx, 3);
    UT_EQ_INT(fx.g.err, BC_EHTTP);
    UT_EQ_INT(fx.g.status, 503);
    expect_dir_empty(&fx);
    fx_end(&fx);
    mem_free(big);
}

static void test_cancel(void)
{
    struct fx fx;
    fx_init(&fx);
    fx.f.cn.hold = 1;
    struct dl *d = NULL;
    start(&fx, 1 << 20, fx.path, 0, &d);
    UT_ASSERT(d);
    UTLOOP_WAIT_FOR(&fx.f.ul, fx.f.held != NULL, WAIT_MS);
    /* While it runs, only the temporary file exists, private to us. */
    char names[1024], tmp[1200];
    UT_EQ_INT(dir_list(&fx, names, sizeof names), 1);
    UT_ASSERT(!strncmp(names, "out.bin.part-", 13) && strlen(names) == 19);
    snprintf(tmp, sizeof tmp, "%s/%.19s", fx.dir, names);
    struct stat st;
    UT_EQ_INT(stat(tmp, &st), 0);
    UT_EQ_INT(st.st_mode & 07777, 0600);
    dl_cancel(d);
    dl_cancel(d); /* harmless twice */
    UT_EQ_INT(fx.calls, 0);
    wait_calls(&fx, 1);
    UT_EQ_INT(fx.g.err, -ECANCELED);
    UT_ASSERT(fx.g.errstr[0]);
    expect_dir_empty(&fx);
    fx_end(&fx);
}

static void test_timeout(void)
{
    struct fx fx;
    fx_init(&fx);
    fx.f.cn.hold = 1;
    start(&fx, 1 << 20, fx.path, 300, NULL);
    wait_calls(&fx, 1);
    UT_EQ_INT(fx.g.err, -ETIMEDOUT);
    expect_dir_empty(&fx);
    fx_end(&fx);
}

static void test_shutdown(void)
{
    struct fx fx;
    fx_init(&fx);
    fx.f.cn.hold = 1;
    start(&fx, 1 << 20, fx.path, 0, NULL);
    UTLOOP_WAIT_FOR(&fx.f.ul, fx.f.held != NULL, WAIT_MS);
    utfake_shutdown(&fx.f);
    wait_calls(&fx, 1);
    UT_EQ_INT(fx.g.err, BC_ESHUTDOWN);
    expect_dir_empty(&fx);
    fx_end(&fx);
}

static void test_network_error(void)
{
    struct fx fx;
    fx_init(&fx);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", utsys_free_port());
    UT_EQ_INT(dl_get(fx.f.c, &(struct dl_req){.url = url, .max_bytes = 10, .path = fx.path}, on_dl, &fx,
                     NULL),
              0);
    wait_calls(&fx, 1);
    UT_ASSERT(fx.g.err < 0 && fx.g.err != BC_EHTTP);
    UT_EQ_INT(fx.g.status, 0);
    expect_dir_empty(&fx);
    fx_end(&fx);
}

static void test_bad_args(void)
{
    struct fx fx;
    fx_init(&fx);
    const char *url = utfake_url(&fx.f, FILE_URL);
    char path[700];
    UT_EQ_INT(dl_get(fx.f.c, &(struct dl_req){.url = url}, on_dl, &fx, NULL), -EINVAL);
    UT_EQ_INT(dl_get(fx.f.c, &(struct dl_req){.max_bytes = 1}, on_dl, &fx, NULL), -EINVAL);
    UT_EQ_INT(dl_get(fx.f.c, &(struct dl_req){.url = url, .max_bytes = 1}, NULL, &fx, NULL), -EINVAL);
    snprintf(path, sizeof path, "%s/no/such/dir/f", fx.dir);
    UT_EQ_INT(dl_get(fx.f.c, &(struct dl_req){.url = url, .max_bytes = 1, .path = path}, on_dl, &fx, NULL),
              -ENOENT);
    static const char *const bad_hdr[] = {"X-Evil: a\r\nInjected: b", NULL};
    UT_EQ_INT(dl_get(fx.f.c, &(struct dl_req){.url = url, .max_bytes = 1, .path = fx.path,
                                            .headers = bad_hdr},
                     on_dl, &fx, NULL),
              -EINVAL);
    expect_dir_empty(&fx); /* the temporary file of a refused call is gone too */
    utloop_run_for(&fx.f.ul, 50);
    UT_EQ_INT(fx.calls, 0);
    UT_EQ_INT(fx.f.nreq, 0);
    fx_end(&fx);
}

static void test_secrets_not_logged(void)
{
    utlog_start("video-1", "video", NULL);
    static const unsigned char body[] = "data";
    struct fx fx;
    fx_init(&fx);
    fx.f.cn = (struct utfake_canned){.body = body, .len = 4};
    start(&fx, 100, fx.path, 0, NULL);
    wait_calls(&fx, 1);
    UT_EQ_INT(fx.g.err, 0);
    fx.f.cn.status = 403;
    start(&fx, 100, NULL, 0, NULL);
    wait_calls(&fx, 2);
    UT_EQ_INT(fx.g.err, BC_EHTTP);
    fx_end(&fx);
    const char *out = utlog_text();
    UT_CONTAINS(out, "/files/a.bin");
    UT_CONTAINS(out, "dl failed");
    UT_NOT_CONTAINS(out, "DLsecretTOKEN");
    UT_NOT_CONTAINS(out, "SIGsecretQUERY");
    utlog_stop(LOG_INFO);
}

/* ---- the disk is slow: writes leave the loop ------------------------------------------- */

static struct utlag lag;

static void stop_lag(const struct dl_result *r, void *arg)
{
    utlag_stop(&lag);
    on_dl(r, arg);
}

/* Each write to the file takes 300 ms: the loop keeps its pace (the writes
 * are libuv fs requests on its thread pool) and the file is whole. */
static void test_slow_disk_does_not_stall_the_loop(void)
{
    size_t n = 256 * 1024 + 5;
    unsigned char *body = pattern(n);
    struct fx fx;
    fx_init(&fx);
    fx.f.cn = (struct utfake_canned){.body = body, .len = n};
    double scale = ut_scale();
    slow_ms = (int)(300 * scale);
    utlag_start(&lag, &fx.f.loop, 5);
    const char *url = utfake_url(&fx.f, FILE_URL);
    struct dl_req rq = {.url = url, .max_bytes = 2 * n, .path = fx.path};
    UT_EQ_INT(dl_get(fx.f.c, &rq, stop_lag, &fx, NULL), 0);
    UTLOOP_WAIT_FOR(&fx.f.ul, fx.calls >= 1, (uint64_t)(60000 * scale));
    slow_ms = 0;
    fprintf(stderr, "slow disk: err %d, loop lag %.1f ms, ticks %lu\n", fx.g.err, lag.max_ms, lag.ticks);
    UT_EQ_INT(fx.g.err, 0);
    UT_EQ_INT(fx.g.len, n);
    expect_file(&fx, body, n);
    if (lag.max_ms > 150 * scale)
        UT_FAIL("the loop stalled %.0f ms while the file was written", lag.max_ms);
    fx_end(&fx);
    mem_free(body);
}

/* A fast server and a slower disk: the transfer is paused while too much
 * waits for the disk, so memory stays bounded whatever the size, and the
 * bytes land in order. */
static void test_back_pressure_bounds_memory(void)
{
    size_t n = (size_t)96 << 20;
    struct utth src;
    utth_source(&src, n);
    struct fx fx;
    fx_init(&fx);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v.mp4", src.port);
    long rss0 = utmem_kb("VmRSS");
    utmem_reset_peak();
    slow_ms = 3;
    struct dl_req rq = {.url = url, .max_bytes = (size_t)1 << 30, .path = fx.path, .timeout_ms = 120000};
    UT_EQ_INT(dl_get(fx.f.c, &rq, on_dl, &fx, NULL), 0);
    UTLOOP_WAIT_FOR(&fx.f.ul, fx.calls >= 1, (uint64_t)(60000 * ut_scale()));
    slow_ms = 0;
    long grown_mb = (utmem_kb("VmHWM") - rss0) / 1024;
    utth_stop(&src);
    fprintf(stderr, "back-pressure: err %d, peak RSS +%ld MiB\n", fx.g.err, grown_mb);
    UT_EQ_INT(fx.g.err, 0);
    UT_EQ_INT(fx.g.len, n);
    int fd = open(fx.path, O_RDONLY);
    UT_ASSERT(fd >= 0);
    unsigned char *buf = mem_alloc(1 << 20);
    size_t off = 0;
    for (ssize_t r; (r = read(fd, buf, 1 << 20)) > 0; off += (size_t)r)
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != utth_byte(off + (size_t)i))
                UT_FAIL("byte %zu is wrong", off + (size_t)i);
    close(fd);
    mem_free(buf);
    UT_EQ_INT(off, n);
#ifndef __SANITIZE_ADDRESS__
    /* (not under ASan: its quarantine keeps every freed block resident) */
    if (grown_mb > 32)
        UT_FAIL("the process grew by %ld MiB for a %zu MiB download", grown_mb, n >> 20);
#endif
    fx_end(&fx);
}

/* ---- sniffing ------------------------------------------------------------------------- */

static void test_sniff_image(void)
{
    static const struct {
        const char *data;
        size_t len;
        const char *type;
    } T[] = {
        {"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16, "image/png"},
        {"\x89PNG\r\n\x1a", 7, NULL},
        {"\xff\xd8\xff\xe0\0\x10JFIF", 10, "image/jpeg"},
        {"\xff\xd8\xff", 3, "image/jpeg"},
        {"\xff\xd8", 2, NULL},
        {"RIFF\x24\0\0\0WEBPVP8 ", 16, "image/webp"},
        {"RIFF\x24\0\0\0WAVEfmt ", 16, NULL},
        {"RIFF\x24\0\0\0WEB", 11, NULL},
        {"GIF87a\x01\0", 8, "image/gif"},
        {"GIF89a", 6, "image/gif"},
        {"GIF88a", 6, NULL},
        {"<html>", 6, NULL},
        {"", 0, NULL},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
        const char *t = dl_sniff_image((const unsigned char *)T[i].data, T[i].len);
        if (T[i].type ? !t || strcmp(t, T[i].type) : t != NULL)
            UT_FAIL("case %zu: %s, want %s", i, t ? t : "NULL", T[i].type ? T[i].type : "NULL");
    }
    UT_ASSERT(dl_sniff_image(NULL, 10) == NULL);
}

static const struct ut_case cases[] = {
    UT_CASE(test_memory_target),
    UT_CASE(test_file_target_renamed_0600),
    UT_CASE(test_exact_cap_and_empty_body),
    UT_CASE(test_cap_exceeded_mid_stream),
    UT_CASE(test_non_2xx),
    UT_CASE(test_cancel),
    UT_CASE(test_timeout),
    UT_CASE(test_shutdown),
    UT_CASE(test_network_error),
    UT_CASE(test_bad_args),
    UT_CASE(test_secrets_not_logged),
    UT_CASE(test_sniff_image),
    UT_CASE(test_slow_disk_does_not_stall_the_loop),
    UT_CASE(test_back_pressure_bounds_memory),
    {0},
};

UT_MAIN(cases)
