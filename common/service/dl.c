/* dl: see dl.h.
 *
 * One streamed hcl transfer. on_data counts every byte against max_bytes
 * before keeping it, and either appends it to a capped buf or queues it
 * for the file; it aborts the transfer (returns nonzero) on the cap and
 * after dl_cancel.
 *
 * A file is written off the loop: the bytes wait in blocks of up to
 * BLK_SIZE and one uv_fs_write at a time writes the oldest block at its
 * offset (so the file is written in order) on libuv's thread pool. When
 * MAX_QUEUED bytes wait, on_data answers HCL_PAUSE and the transfer is
 * paused (curl keeps the refused chunk and the socket is not read); the
 * write that brings the queue down to half resumes it. Memory is thus
 * bounded by MAX_QUEUED plus one chunk, whatever the file's size and the
 * speeds of network and disk. Close, rename and unlink are fs requests too.
 *
 * The outcome is decided once the transfer ended and no write is in
 * flight, in this order: cancel, a non-2xx status, our own abort reason
 * (the cap, a write error), the transport's error, and for a file the
 * close and rename. */
#include "service/dl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "base/err.h"
#include "io/hcl.h"
#include "base/log.h"
#include "base/mem.h"

#define DEFAULT_TIMEOUT_MS 120000L
#define TMP_SUFFIX ".part-XXXXXX"
#define LOG_URL_MAX 512
#define BLK_SIZE (256 * 1024)      /* bytes one write takes at most */
#define MAX_QUEUED (4 * 1024 * 1024) /* bytes waiting for the disk before the transfer pauses */

/* Bytes waiting for the disk, oldest first. */
struct blk {
    struct blk *next;
    size_t len;
    char data[BLK_SIZE];
};

enum fstep { FS_IDLE, FS_WRITE, FS_CLOSE, FS_RENAME, FS_UNLINK };

struct dl {
    uv_loop_t *loop;
    struct hcl_xfer *x; /* NULL once the transfer's callback started */
    dl_cb *cb;
    void *arg;
    size_t max, got;
    struct buf mem;     /* memory target */
    int fd;             /* file target: the temporary file, else -1 */
    char *path, *tmp;
    struct blk *head, *tail; /* waiting for the disk; head is written first */
    size_t queued;      /* bytes in head..tail */
    int64_t off;        /* where the next write goes */
    uv_fs_t fs;         /* the one fs request in flight (fstep says which) */
    enum fstep step;
    int paused;         /* on_data answered HCL_PAUSE */
    int abort_err;      /* why the transfer was stopped (cap, write error) */
    int cancelled;
    /* the transfer's outcome, kept from on_xfer_done until the callback */
    int ended, herr, result;
    long status;
    double total_ms;
    char herrstr[160], ctype[128];
    char url[LOG_URL_MAX]; /* for logs: without the query string */
    char errstr[160];
};

static void settle(struct dl *d);

/* ---- writing the file ----------------------------------------------------------- */

static void blk_drop_all(struct dl *d)
{
    while (d->head) {
        struct blk *b = d->head;
        d->head = b->next;
        mem_free(b);
    }
    d->tail = NULL;
    d->queued = 0;
}

static void write_next(struct dl *d);

static void on_written(uv_fs_t *r)
{
    struct dl *d = r->data;
    ssize_t n = r->result;
    uv_fs_req_cleanup(r);
    d->step = FS_IDLE;
    struct blk *b = d->head;
    if (n <= 0 || d->abort_err) {
        if (!d->abort_err)
            d->abort_err = n < 0 ? (int)n : -EIO;
        blk_drop_all(d);
        if (d->x)
            hcl_cancel(d->x); /* completes with our abort_err */
        settle(d);
        return;
    }
    d->off += n;
    d->queued -= (size_t)n;
    if ((size_t)n < b->len) { /* a short write: the rest goes next */
        memmove(b->data, b->data + n, b->len - (size_t)n);
        b->len -= (size_t)n;
    } else {
        d->head = b->next;
        if (!d->head)
            d->tail = NULL;
        mem_free(b);
    }
    if (d->paused && d->queued <= MAX_QUEUED / 2 && d->x) {
        d->paused = 0;
        hcl_resume(d->x); /* may run on_data (and write_next) from here */
    }
    if (!(d->ended && d->result))
        write_next(d);
    settle(d);
}

/* Start writing the oldest block unless a write is in flight. */
static void write_next(struct dl *d)
{
    if (d->step != FS_IDLE || !d->head || d->abort_err)
        return;
    d->fs.data = d;
    uv_buf_t b = uv_buf_init(d->head->data, (unsigned)d->head->len);
    int rc = uv_fs_write(d->loop, &d->fs, d->fd, &b, 1, d->off, on_written);
    if (rc) {
        d->abort_err = rc;
        blk_drop_all(d);
        if (d->x)
            hcl_cancel(d->x);
        return;
    }
    d->step = FS_WRITE;
    /* the block in flight takes no more bytes: later ones start a new block */
    if (d->tail == d->head)
        d->tail = NULL;
}

/* Queue len bytes for the file (the caller checked MAX_QUEUED). */
static void queue_bytes(struct dl *d, const char *p, size_t len)
{
    while (len) {
        struct blk *t = d->tail;
        if (!t || t->len == BLK_SIZE) {
            struct blk *b = mem_alloc(sizeof *b);
            b->next = NULL;
            b->len = 0;
            if (t)
                t->next = b;
            else {
                /* the last block (if any) is in flight: link after it */
                struct blk *last = d->head;
                while (last && last->next)
                    last = last->next;
                if (last)
                    last->next = b;
                else
                    d->head = b;
            }
            d->tail = t = b;
        }
        size_t k = BLK_SIZE - t->len < len ? BLK_SIZE - t->len : len;
        memcpy(t->data + t->len, p, k);
        t->len += k;
        d->queued += k;
        p += k;
        len -= k;
    }
    write_next(d);
}

/* ---- streaming ------------------------------------------------------------- */

static int on_data(const char *data, size_t len, void *arg)
{
    struct dl *d = arg;
    if (d->cancelled || d->abort_err)
        return 1;
    if (len > d->max - d->got) {
        d->abort_err = BC_ETOOBIG;
        return 1;
    }
    if (d->fd < 0) {
        int rc = buf_append(&d->mem, data, len);
        if (rc) {
            d->abort_err = rc;
            return 1;
        }
        d->got += len;
        return 0;
    }
    if (d->queued >= MAX_QUEUED) {
        d->paused = 1; /* back-pressure: the same bytes come again after hcl_resume */
        return HCL_PAUSE;
    }
    d->got += len;
    queue_bytes(d, data, len);
    return 0;
}

/* ---- completion ----------------------------------------------------------- */

static void dl_free(struct dl *d)
{
    blk_drop_all(d);
    buf_free(&d->mem);
    mem_free(d->path);
    mem_free(d->tmp);
    mem_free(d);
}

static void finish(struct dl *d)
{
    struct dl_result r = {.status = d->status, .len = d->got, .err = d->result};
    r.errstr = !r.err ? "" : d->errstr[0] ? d->errstr : bc_strerror(r.err);
    r.content_type = d->ctype;
    r.data = d->path ? NULL : (const unsigned char *)buf_str(&d->mem);
    if (r.err)
        log_info("dl failed", LF_URL("url", d->url), LF_ERR(r.err), LF_INT("status", d->status),
                 LF_INT("bytes", d->got), LF_INT("max", d->max));
    else
        log_debug("dl done", LF_URL("url", d->url), LF_INT("status", d->status), LF_INT("bytes", d->got),
                  LF_BOOL("file", d->path != NULL), LF_DBL("ms", d->total_ms));
    d->cb(&r, d->arg);
    dl_free(d);
}

static void on_fs_step(uv_fs_t *r)
{
    struct dl *d = r->data;
    int res = (int)r->result;
    enum fstep was = d->step;
    uv_fs_req_cleanup(r);
    d->step = FS_IDLE;
    if (was == FS_CLOSE) {
        d->fd = -1;
        if (res < 0 && !d->result)
            d->result = res;
        if (!d->result && d->cancelled)
            d->result = -ECANCELED;
    } else if (was == FS_RENAME) {
        if (res < 0)
            d->result = res;
        else {
            mem_free(d->tmp); /* it is the file now: nothing to remove */
            d->tmp = NULL;
        }
    } else if (was == FS_UNLINK) {
        if (res < 0 && res != UV_ENOENT)
            log_warn("dl: cannot remove a temporary file", LF_STR("path", d->tmp), LF_ERR(res));
        mem_free(d->tmp);
        d->tmp = NULL;
    }
    settle(d);
}

static int fs_start(struct dl *d, enum fstep step)
{
    d->fs.data = d;
    int rc;
    if (step == FS_CLOSE)
        rc = uv_fs_close(d->loop, &d->fs, d->fd, on_fs_step);
    else if (step == FS_RENAME)
        rc = uv_fs_rename(d->loop, &d->fs, d->tmp, d->path, on_fs_step);
    else
        rc = uv_fs_unlink(d->loop, &d->fs, d->tmp, on_fs_step);
    if (!rc)
        d->step = step;
    return rc;
}

/* Move on once the transfer ended and no fs request is in flight: drain
 * the queue (success only), close, then rename or unlink, then call back. */
static void settle(struct dl *d)
{
    if (!d->ended || d->step != FS_IDLE)
        return;
    if (!d->result && d->abort_err) /* a write failed after the transfer ended */
        d->result = d->abort_err;
    if (d->fd >= 0 && !d->result && d->head) {
        write_next(d);
        if (d->step != FS_IDLE)
            return;
        if (d->abort_err)
            d->result = d->abort_err;
    }
    if (d->fd >= 0) {
        blk_drop_all(d);
        if (!fs_start(d, FS_CLOSE))
            return;
        close(d->fd); /* uv_fs_close cannot fail to start on a valid loop; be safe */
        d->fd = -1;
    }
    if (d->tmp && !d->result && d->cancelled)
        d->result = -ECANCELED;
    if (d->tmp && !d->result && !fs_start(d, FS_RENAME))
        return;
    if (d->tmp && d->result && !fs_start(d, FS_UNLINK))
        return;
    finish(d);
}

static int decide(struct dl *d, const struct hcl_response *h)
{
    if (d->cancelled)
        return -ECANCELED;
    /* A status that arrived is the best explanation, even when we stopped
     * reading its (error) body at the cap. */
    if (h->status && (h->status < 200 || h->status > 299) && (!h->err || d->abort_err)) {
        snprintf(d->errstr, sizeof d->errstr, "HTTP status %ld", h->status);
        return BC_EHTTP;
    }
    if (d->abort_err)
        return d->abort_err;
    if (h->err) {
        snprintf(d->herrstr, sizeof d->herrstr, "%s", h->errstr);
        return h->err;
    }
    return 0;
}

static void on_xfer_done(const struct hcl_response *h, void *arg)
{
    struct dl *d = arg;
    d->x = NULL; /* from here dl_cancel only sets the flag */
    d->ended = 1;
    d->status = h->status;
    d->total_ms = h->total_ms;
    const char *ct = hcl_response_header(h, "content-type");
    snprintf(d->ctype, sizeof d->ctype, "%s", ct ? ct : "");
    d->result = decide(d, h);
    if (d->result && !d->errstr[0] && d->herrstr[0])
        snprintf(d->errstr, sizeof d->errstr, "%s", d->herrstr);
    settle(d);
}

/* ---- starting ---------------------------------------------------------------- */

static int file_open(struct dl *d, const char *path)
{
    size_t n = strlen(path);
    if (n == 0 || n + sizeof TMP_SUFFIX > PATH_MAX)
        return n ? -ENAMETOOLONG : -EINVAL;
    d->path = mem_strdup(path);
    d->tmp = mem_alloc(n + sizeof TMP_SUFFIX);
    memcpy(d->tmp, path, n);
    memcpy(d->tmp + n, TMP_SUFFIX, sizeof TMP_SUFFIX);
    /* mkostemp creates the file with mode 0600 (the umask can only take away). */
    d->fd = mkostemp(d->tmp, O_CLOEXEC);
    if (d->fd < 0) {
        int rc = -errno;
        mem_free(d->tmp);
        d->tmp = NULL;
        return rc;
    }
    return 0;
}

static void url_for_log(char *out, size_t outlen, const char *url)
{
    size_t n = strcspn(url, "?#");
    snprintf(out, outlen, "%.*s", (int)(n < outlen ? n : outlen - 1), url);
}

int dl_get(struct hcl *c, const struct dl_req *rq, dl_cb *cb, void *arg, struct dl **out)
{
    if (!c || !rq || !rq->url || !*rq->url || !cb || rq->max_bytes == 0)
        return -EINVAL;
    struct dl *d = mem_calloc(1, sizeof *d);
    d->cb = cb;
    d->arg = arg;
    d->max = rq->max_bytes;
    d->fd = -1;
    buf_init(&d->mem, rq->max_bytes);
    url_for_log(d->url, sizeof d->url, rq->url);
    d->loop = hcl_loop(c);
    int rc = rq->path ? file_open(d, rq->path) : 0;
    if (!rc) {
        struct hcl_request hr = {
            .url = rq->url,
            .headers = rq->headers,
            .timeout_ms = rq->timeout_ms > 0 ? rq->timeout_ms : DEFAULT_TIMEOUT_MS,
            .on_data = on_data,
        };
        rc = hcl_request(c, &hr, on_xfer_done, d, &d->x);
    }
    if (rc) {
        if (d->fd >= 0)
            close(d->fd);
        if (d->tmp)
            unlink(d->tmp); /* just created, empty: nothing to free on disk */
        dl_free(d);
        return rc;
    }
    if (out)
        *out = d;
    return 0;
}

void dl_cancel(struct dl *d)
{
    if (!d || d->cancelled)
        return;
    d->cancelled = 1;
    if (d->x)
        hcl_cancel(d->x);
}

/* ---- sniffing ------------------------------------------------------------------ */

const char *dl_sniff_image(const unsigned char *p, size_t n)
{
    if (!p)
        return NULL;
    if (n >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8))
        return "image/png";
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF)
        return "image/jpeg";
    if (n >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4))
        return "image/webp";
    if (n >= 6 && (!memcmp(p, "GIF87a", 6) || !memcmp(p, "GIF89a", 6)))
        return "image/gif";
    return NULL;
}
