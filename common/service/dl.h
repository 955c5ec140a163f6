/* dl: fetch one URL on the loop with a size cap, into memory or a file.
 *
 * For provider results (MiniMax image URLs, video files) and Discord
 * attachments. The body is streamed through hcl's on_data and capped while
 * it streams: the transfer is aborted with BC_ETOOBIG as soon as the bytes
 * received would exceed max_bytes. (hcl hands over no headers before the
 * body, so a Content-Length over the cap is caught by the same streaming
 * check, on the first chunk past the cap, rather than before the body.)
 * Non-2xx statuses are errors (BC_EHTTP with status set, whatever the body
 * did). A file target is written as the data arrives, off the loop (libuv
 * fs requests on its thread pool, in order; no fsync): while 4 MiB wait for
 * the disk the transfer is paused, so memory stays bounded whatever the
 * speeds. It goes to "<path>.part-XXXXXX", created by dl_get with mode 0600 in
 * path's directory, and renamed onto path (replacing any file there) only
 * when the transfer completed with a 2xx; on any failure or cancel the
 * temporary file is unlinked and nothing is left behind.
 *
 * Callback contract as hcl: dl_get returns an error and cb never runs, or
 * returns 0 and cb runs exactly once, later, from the loop (never from
 * inside dl_get or dl_cancel), also on dl_cancel (-ECANCELED) and hcl_close
 * (BC_ESHUTDOWN). URLs are not logged whole: their query strings (signed
 * URLs) are cut off. All functions must be called on the loop thread. */
#ifndef BC_DL_H
#define BC_DL_H

#include <stddef.h>

struct hcl;
struct dl;

struct dl_req {
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value", or NULL; copied */
    size_t max_bytes;           /* required, > 0 */
    long timeout_ms;            /* 0 = 120000 */
    const char *path;           /* NULL: into memory; else the file to create
                                 * (its directory must exist) */
};

/* Borrowed for the callback. */
struct dl_result {
    int err;                  /* 0, BC_ETOOBIG, BC_EHTTP (status set for a non-2xx;
                               * 0 for a transfer failure), -ETIMEDOUT, -ECANCELED,
                               * BC_ESHUTDOWN, a negative errno of write/close/rename
                               * (file; as libuv reports them),
                               * or another transport code of hcl.h */
    const char *errstr;       /* never NULL; "" when err is 0 */
    long status;              /* HTTP status; 0 when no response arrived */
    const char *content_type; /* never NULL; "" when absent */
    const unsigned char *data; /* memory target: the body (NUL-terminated; on an
                                * error whatever had arrived); file target: NULL */
    size_t len;               /* bytes received */
};

typedef void dl_cb(const struct dl_result *r, void *arg);

/* Start a download. Everything in rq is copied. Returns 0, sets *out (if out
 * is not NULL) to a handle valid until cb starts, and cb(arg) runs exactly
 * once later; or an error and cb never runs: -EINVAL (no url, cb or
 * max_bytes), -errno from creating the temporary file (-ENOENT, -EACCES,
 * -ENAMETOOLONG ...), or what hcl_request returns (BC_ESHUTDOWN, -EINVAL
 * for a bad header, BC_EHTTP). */
int dl_get(struct hcl *c, const struct dl_req *rq, dl_cb *cb, void *arg, struct dl **out);
/* Stop it: cb runs later with -ECANCELED. Harmless to repeat before then;
 * a use after free once cb started. */
void dl_cancel(struct dl *d);

/* The image type of data by its magic bytes: "image/png", "image/jpeg",
 * "image/webp", "image/gif", or NULL. */
const char *dl_sniff_image(const unsigned char *data, size_t len);

#endif
