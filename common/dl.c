/* dl: see dl.h.
 *
 * One streamed hcl transfer. on_data counts every byte against max_bytes
 * before keeping it, and either appends it to a capped buf or writes it to
 * the temporary file; it aborts the transfer (returns nonzero) on the cap,
 * on a write error and after dl_cancel. The outcome is decided once, in
 * on_xfer_done, in this order: cancel, a non-2xx status, our own abort
 * reason, the transport's error, and for a file the close and rename. */
#include "dl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"
#include "hcl.h"
#include "log.h"
#include "mem.h"

#define DEFAULT_TIMEOUT_MS 120000L
#define TMP_SUFFIX ".part-XXXXXX"
#define LOG_URL_MAX 512

struct dl {
    struct hcl_xfer *x; /* NULL once the transfer's callback started */
    dl_cb *cb;
    void *arg;
    size_t max, got;
    struct buf mem;     /* memory target */
    int fd;             /* file target: the temporary file, else -1 */
    char *path, *tmp;
    int abort_err;      /* why on_data stopped the transfer */
    int cancelled;
    char url[LOG_URL_MAX]; /* for logs: without the query string */
    char errstr[96];
};

/* ---- streaming ------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int on_data(const char *data, size_t len, void *arg)
{
    struct dl *d = arg;
    if (d->cancelled)
        return 1;
    if (len > d->max - d->got) {
        d->abort_err = BC_ETOOBIG;
        return 1;
    }
    d->got += len;
    int rc = d->fd >= 0 ? write_all(d->fd, data, len) : buf_append(&d->mem, data, len);
    if (rc) {
        d->abort_err = rc;
        return 1;
    }
    return 0;
}

/* ---- completion ----------------------------------------------------------- */

/* Close the temporary file and move it into place. Returns 0 or -errno. */
static int file_commit(struct dl *d)
{
    int rc = close(d->fd) ? -errno : 0;
    d->fd = -1;
    if (!rc && rename(d->tmp, d->path))
        rc = -errno;
    return rc;
}

static void file_discard(struct dl *d)
{
    if (d->fd >= 0)
        close(d->fd);
    d->fd = -1;
    if (d->tmp && unlink(d->tmp) && errno != ENOENT)
        log_warn("dl: cannot remove a temporary file", LF_STR("path", d->tmp), LF_ERR(-errno));
}

static int decide(struct dl *d, const struct hcl_response *h, const char **errstr)
{
    *errstr = NULL;
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
        *errstr = h->errstr;
        return h->err;
    }
    return d->fd >= 0 ? file_commit(d) : 0;
}

static void dl_free(struct dl *d)
{
    buf_free(&d->mem);
    mem_free(d->path);
    mem_free(d->tmp);
    mem_free(d);
}

static void on_xfer_done(const struct hcl_response *h, void *arg)
{
    struct dl *d = arg;
    d->x = NULL; /* from here dl_cancel only sets the flag */
    const char *errstr;
    struct dl_result r = {.status = h->status, .len = d->got};
    r.err = decide(d, h, &errstr);
    if (r.err && d->tmp)
        file_discard(d);
    r.errstr = !r.err ? "" : errstr ? errstr : d->errstr[0] ? d->errstr : bc_strerror(r.err);
    const char *ct = hcl_response_header(h, "content-type");
    r.content_type = ct ? ct : "";
    r.data = d->path ? NULL : (const unsigned char *)buf_str(&d->mem);
    if (r.err)
        log_info("dl failed", LF_URL("url", d->url), LF_ERR(r.err), LF_INT("status", h->status),
                 LF_INT("bytes", d->got), LF_INT("max", d->max));
    else
        log_debug("dl done", LF_URL("url", d->url), LF_INT("status", h->status),
                  LF_INT("bytes", d->got), LF_BOOL("file", d->path != NULL),
                  LF_DBL("ms", h->total_ms));
    d->cb(&r, d->arg);
    dl_free(d);
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
        file_discard(d);
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
