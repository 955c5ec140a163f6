/* prov: what a paid provider call (MiniMax, Stability) came to, in one
 * vocabulary shared by the image and video roles and the key pool.
 *
 * The provider modules (minimax.h, stability.h) classify every answer into
 * a prov_status; the caller reports it to its key pool with
 * prov_keypool_outcome and tells the user with the status's meaning.
 *
 * The prov__ functions at the end are shared by the provider modules and
 * are not for the roles. Nothing here allocates or calls back. */
#ifndef BC_PROV_H
#define BC_PROV_H

#include <stddef.h>

#include "service/keypool.h"
#include "base/secret.h"

enum prov_status {
    PROV_OK = 0,
    PROV_AUTH,        /* the key is refused (401, MiniMax 1004/2049): out of rotation */
    PROV_QUOTA,       /* out of money (MiniMax 1008, Stability 402): out of rotation */
    PROV_RATE,        /* rate limited (429, MiniMax 1002/1041/2045): cool the key down */
    PROV_SERVER,      /* 5xx, MiniMax 1000/1001/1013/1024/1033: counts for the breaker */
    PROV_TIMEOUT,     /* no answer in time: counts for the breaker */
    PROV_NETWORK,     /* connect/DNS/TLS trouble: counts for the breaker */
    PROV_BAD_REQUEST, /* the request itself is wrong (400/413/422, MiniMax 2013/1039) */
    PROV_REFUSED,     /* the input is refused by moderation (403, MiniMax 1026) */
    PROV_FILTERED,    /* the output was filtered (CONTENT_FILTERED, MiniMax 1027) */
    PROV_PROTOCOL,    /* an answer we cannot read (also: one over its size cap) */
    PROV_CANCELLED,   /* cancelled, or the HTTP client closed */
};

/* Bytes kept of a provider's error text (struct mm_result / st_result
 * message), NUL included. */
#define PROV_MAX_MESSAGE 512

/* Static name ("ok", "auth", ...); never NULL ("unknown" out of range). */
const char *prov_status_name(int status);

/* What the key pool should learn from a status: RATE, QUOTA, AUTH map to
 * their outcomes, SERVER and NETWORK to KEYPOOL_SERVER_ERROR, TIMEOUT to
 * KEYPOOL_TIMEOUT; everything else is KEYPOOL_OK, because the provider
 * answered (a refused prompt or a filtered image says nothing bad about the
 * key; a cancelled call says nothing at all). */
enum keypool_outcome prov_keypool_outcome(int status);

/* ---- shared by minimax.c and stability.c --------------------------------- */

/* A Retry-After value in milliseconds: delta-seconds ("20", also "1.5"),
 * capped at one day. -1 for NULL, an HTTP date or anything else. */
long prov__retry_after_ms(const char *value);

/* The status for a transport error of hcl (hcl.h): -ETIMEDOUT timeout,
 * -ECANCELED and BC_ESHUTDOWN cancelled, BC_ETOOBIG (the answer passed its
 * cap) protocol, anything else network. */
int prov__transport_status(int err);

/* A provider's text made safe to show: copied into dst (dstlen bytes,
 * NUL-terminated) from len bytes of src, every occurrence of the key's
 * value replaced by "[redacted]", control characters by a space, and cut
 * on a UTF-8 boundary when it does not fit. key may be NULL. */
void prov__message(char *dst, size_t dstlen, const char *src, size_t len, const struct secret *key);

/* 1 when s is an absolute http:// or https:// URL (scheme in any case) with
 * a host part, at most maxlen bytes, and no spaces or control characters;
 * else 0. */
int prov__http_url(const char *s, size_t maxlen);

#endif
