#include "base/secret.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "base/mem.h"

void secret_fingerprint(const char *value, size_t len, char out[SECRET_FP_LEN])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)value, len);
    snprintf(out, SECRET_FP_LEN, "sha256:%02x%02x%02x%02x", h[0], h[1], h[2], h[3]);
}

void secret_set(struct secret *s, const char *value)
{
    secret_clear(s);
    if (!value || !*value)
        return;
    s->value = mem_strdup(value);
    secret_fingerprint(value, strlen(value), s->fp);
}

int secret_isset(const struct secret *s)
{
    return s->value != NULL;
}

void secret_clear(struct secret *s)
{
    if (s->value) {
        sodium_memzero(s->value, strlen(s->value));
        mem_free(s->value);
    }
    s->value = NULL;
    snprintf(s->fp, sizeof(s->fp), "unset");
}
