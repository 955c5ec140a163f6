/* secret: a value that must never be printed.
 *
 * A secret is kept with its fingerprint ("sha256:" and 8 hex digits of the
 * SHA-256 of the value), and the fingerprint is the only form any log line,
 * health page or error message may carry. The log module accepts a secret
 * only as a struct secret, so printing one by accident takes effort. */
#ifndef BC_SECRET_H
#define BC_SECRET_H

#include <stddef.h>

#define SECRET_FP_LEN 16 /* "sha256:" + 8 hex + NUL */

struct secret {
    char *value;              /* owned; NULL when unset */
    char fp[SECRET_FP_LEN];   /* fingerprint, or "unset" */
};

/* Take a copy of value (NULL or "" leaves it unset). */
void secret_set(struct secret *s, const char *value);
int secret_isset(const struct secret *s);
/* Wipe and free the value. */
void secret_clear(struct secret *s);
/* Fingerprint of an arbitrary value into out (SECRET_FP_LEN bytes). */
void secret_fingerprint(const char *value, size_t len, char out[SECRET_FP_LEN]);

#endif
