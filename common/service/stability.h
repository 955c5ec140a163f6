/* stability: Stability AI's v2beta stable-image generate endpoints on the
 * loop (via hcl).
 *
 * POST {base}/v2beta/stable-image/generate/{core|ultra|sd3} as
 * multipart/form-data (libcurl's mime API through hcl's form parts) and "Accept: image/" followed by "*" (any image type),
 * so a success carries the image bytes (headers finish-reason and seed). Errors are JSON {id, name,
 * errors[]} and are classified (prov.h): 400/422 bad request, 401 auth,
 * 402 quota (out of credits), 403 refused (content_moderation), 413 bad
 * request (too big), 429 rate (with Retry-After when sent, else 60 s), other
 * 4xx bad request, 5xx server; a 2xx whose finish-reason is CONTENT_FILTERED
 * is PROV_FILTERED, and a 2xx whose body is not an image type is protocol.
 * Transport errors as in minimax.h. Same callback contract as minimax.h;
 * the key never reaches a log line or the message. All functions must be
 * called on the loop thread of the hcl client. */
#ifndef BC_STABILITY_H
#define BC_STABILITY_H

#include <stddef.h>

#include "service/prov.h"

struct hcl;

#define ST_DEFAULT_BASE_URL "https://api.stability.ai"
#define ST_MAX_BODY (10u * 1024 * 1024)     /* Stability's own request limit */
#define ST_MAX_RESPONSE (32u * 1024 * 1024) /* cap on the image we accept */
#define ST_PROMPT_MAX 10000                 /* code points */
#define ST_RATE_DEFAULT_MS 60000L           /* after a 429 without Retry-After */

struct st_req {
    const char *base_url;        /* NULL = ST_DEFAULT_BASE_URL */
    const char *api_key;         /* required; borrowed for the call */
    const char *endpoint;        /* "core", "ultra" or "sd3" */
    const char *model;           /* sd3 only ("sd3.5-large" ...); NULL = not sent */
    const char *prompt;          /* required, <= ST_PROMPT_MAX code points */
    const char *negative_prompt; /* NULL = not sent */
    const char *aspect_ratio;    /* NULL = not sent (ignored with an image) */
    const char *output_format;   /* NULL = "png" */
    /* image-to-image (ultra, sd3): the image and its strength 0..1 */
    const void *image;
    size_t image_len;
    const char *image_type;      /* its content type, e.g. "image/png"; NULL =
                                  * application/octet-stream */
    double strength;             /* sent with an image only */
    long timeout_ms;             /* 0 = 120000 */
};

/* Everything the call learned, borrowed for the callback; strings never
 * NULL ("" when absent). */
struct st_result {
    int status;            /* enum prov_status */
    long http_status;
    long retry_after_ms;   /* -1 when unknown */
    const char *message;   /* "name: first errors[] entry" (redacted, cut to
                            * PROV_MAX_MESSAGE), the transport's text, or "" */
    const char *finish_reason; /* SUCCESS, CONTENT_FILTERED, or "" */
    const char *seed;
    const unsigned char *image; /* the bytes of a 2xx image answer (also with
                                 * PROV_FILTERED: then do not show them); else NULL */
    size_t image_len;
    const char *content_type;   /* of the answer */
};

typedef void st_cb(const struct st_result *r, void *arg);

/* With an image, sd3 is sent mode=image-to-image; ultra takes the image as
 * is; core refuses an image (-EINVAL). A strength outside 0..1 with an image
 * is -EINVAL; so are a missing key, prompt or endpoint, an unknown endpoint,
 * a prompt over ST_PROMPT_MAX and an image_type that is not a plain
 * "type/subtype". A form over ST_MAX_BODY is BC_ETOOBIG. Then, and when
 * hcl_request fails (BC_ESHUTDOWN, BC_EHTTP), nothing is sent and cb never
 * runs; otherwise cb runs exactly once, later. model and aspect_ratio are
 * sent only where they apply (sd3; without an image). */
int st_generate(struct hcl *c, const struct st_req *rq, st_cb *cb, void *arg);

/* ---- internal: shared with the tests and the fuzz target ---------------- */

struct hcl_response;

/* Decode an answer that did not come from the network, as st_generate
 * would for endpoint; cb runs as for st_generate, but synchronously,
 * before this returns. */
void st__decode(const char *endpoint, const struct hcl_response *h, const char *api_key, st_cb *cb, void *arg);

struct buf;

/* 1 when st_generate would accept rq (leaving out the client and callback
 * checks), else 0. */
int st__valid(const struct st_req *rq);


#endif
