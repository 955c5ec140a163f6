/* minimax: MiniMax's native image and video API on the loop (via hcl).
 *
 * Every call takes the base URL (MINIMAX_BASE_URL, e.g.
 * https://api.minimax.io; a trailing "/" is fine) and a key, and ends in
 * exactly one callback with a struct mm_result; errors that MiniMax reports
 * as HTTP 200 with a non-zero base_resp.status_code are classified like
 * HTTP errors (see prov.h):
 *   0 ok; 1002, 1041, 2045 rate; 1004, 2049 auth; 1008 quota; 1026 refused;
 *   1027 filtered; 2013, 1039 bad request; 1000, 1001, 1013, 1024, 1033 and
 *   any other non-zero code server.
 * HTTP 401 is auth, 429 rate (Retry-After in retry_after_ms), 5xx server,
 * other 4xx bad request, anything else not 2xx protocol; a 2xx that cannot
 * be read (not JSON, required fields missing, bad base64, no valid URL) is
 * protocol. Transport errors: -ETIMEDOUT timeout, cancel/shutdown
 * cancelled, an answer over its cap protocol, the rest network. Keys never
 * reach a log line or an error text (an echo of the key in status_msg is
 * replaced by "[redacted]").
 *
 * Calls: mm_image (POST /v1/image_generation), mm_video_submit (POST
 * /v1/video_generation), mm_video_query (GET /v1/query/video_generation),
 * mm_file_retrieve (GET /v1/files/retrieve). Returns 0 and the callback runs
 * exactly once, later (never from inside the call), also with
 * PROV_CANCELLED when the hcl closes; or an error and the callback never
 * runs: -EINVAL (a missing base URL, key, model, prompt, task or file id; a
 * prompt over its limit counted in UTF-8 code points; n outside
 * 1..MM_IMAGE_MAX), or what hcl_request returns (BC_ESHUTDOWN, BC_EHTTP).
 * Nothing is sent when a call returns an error. There is no cancel: a
 * submitted paid call is left to finish (hcl_close ends it).
 *
 * Answers are capped: MM_MAX_BASE64_RESPONSE for mm_image with base64,
 * MM_MAX_RESPONSE for everything else. All functions must be called on the
 * loop thread of the hcl client. */
#ifndef BC_MINIMAX_H
#define BC_MINIMAX_H

#include <stddef.h>

#include "service/prov.h"

struct hcl;

#define MM_IMAGE_MAX 9                 /* images per request */
#define MM_IMAGE_PROMPT_MAX 1500       /* code points */
#define MM_VIDEO_PROMPT_MAX 2000       /* code points */
#define MM_MAX_RESPONSE (1024u * 1024) /* bytes of a JSON answer */
#define MM_MAX_BASE64_RESPONSE (64u * 1024 * 1024) /* mm_image with base64 */
#define MM_MAX_URL 4096                /* longer result URLs are not valid */

struct mm_blob {
    const unsigned char *data;
    size_t len;
};

/* Everything a call learned. Everything is borrowed for the callback:
 * strings are never NULL ("" when absent); fields a call does not produce
 * are ""/0, and urls/images are NULL when their count is 0. status is about
 * the call itself: a video task that failed is a successful mm_video_query
 * (PROV_OK) with state "Fail". */
struct mm_result {
    int status;           /* enum prov_status */
    int code;             /* base_resp.status_code (0 = success) */
    long http_status;     /* 0 when no response arrived */
    long retry_after_ms;  /* -1 when unknown */
    const char *message;  /* base_resp.status_msg (redacted, cut to PROV_MAX_MESSAGE),
                           * the transport's text, or what we could not read */
    /* mm_image */
    const char *const *urls; /* response_format "url"; only valid http(s) URLs
                              * (others are dropped and logged) */
    size_t nurls;
    const struct mm_blob *images; /* response_format "base64", decoded (the
                                   * bytes as sent: check them with dl_sniff_image) */
    size_t nimages;
    int success_count, failed_count; /* metadata; 0 when absent */
    /* mm_video_submit */
    const char *task_id;
    /* mm_video_query: Preparing, Queueing, Processing, Success, Fail (or
     * whatever else MiniMax says: treat unknown states as still running).
     * file_id is set with Success (a Success without one is protocol). */
    const char *state;
    const char *file_id;
    int width, height;
    /* mm_file_retrieve: download_url is a valid http(s) URL (else protocol) */
    const char *download_url, *filename;
    long long bytes; /* 0 when absent */
};

typedef void mm_cb(const struct mm_result *r, void *arg);

struct mm_image_req {
    const char *base_url, *api_key; /* required; the key is borrowed for the call */
    const char *model;        /* NULL = "image-01" */
    const char *prompt;       /* required, <= 1500 characters */
    const char *aspect_ratio; /* NULL = "1:1" */
    int n;                    /* 1..MM_IMAGE_MAX */
    int base64;               /* ask for base64 instead of URLs */
    long timeout_ms;          /* 0 = 120000 */
};
int mm_image(struct hcl *c, const struct mm_image_req *rq, mm_cb *cb, void *arg);

struct mm_video_req {
    const char *base_url, *api_key; /* required; the key is borrowed for the call */
    const char *model;      /* required, e.g. "MiniMax-Hailuo-02" */
    const char *prompt;     /* required, <= 2000 characters */
    int duration;           /* seconds; 0 = not sent */
    const char *resolution; /* "768P", "1080P"...; NULL = not sent */
    long timeout_ms;        /* 0 = 60000 */
    const char *first_frame_image; /* image-to-video models: a URL or a
                                    * "data:image/...;base64," URL; NULL = not sent */
};
/* A submit that fails on the transport (timeout, network) may still have
 * created a task that costs money: do not resubmit blindly. */
int mm_video_submit(struct hcl *c, const struct mm_video_req *rq, mm_cb *cb, void *arg);

/* task_id and file_id are sent percent-encoded; timeout_ms 0 = 30000. */
int mm_video_query(struct hcl *c, const char *base_url, const char *api_key, const char *task_id,
                   long timeout_ms, mm_cb *cb, void *arg);
int mm_file_retrieve(struct hcl *c, const char *base_url, const char *api_key, const char *file_id,
                     long timeout_ms, mm_cb *cb, void *arg);

/* ---- internal: shared with the tests and the fuzz target ---------------- */

struct hcl_response;

/* Decode an answer that did not come from the network, as the call of kind
 * op would (0 image, 1 video submit, 2 video query, 3 file retrieve); cb
 * runs as for that call, but synchronously, before this returns. */
void mm__decode(int op, const struct hcl_response *h, const char *api_key, mm_cb *cb, void *arg);

#endif
