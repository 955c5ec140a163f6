/* prov: see prov.h. */
#include "service/prov.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "base/err.h"
#include "base/utf8.h"

#define MAX_RETRY_MS (24L * 3600 * 1000)

const char *prov_status_name(int status)
{
    static const char *const names[] = {"ok",      "auth",        "quota",   "rate",
                                        "server",  "timeout",     "network", "bad_request",
                                        "refused", "filtered",    "protocol", "cancelled"};
    if (status < 0 || (size_t)status >= sizeof names / sizeof names[0])
        return "unknown";
    return names[status];
}

enum keypool_outcome prov_keypool_outcome(int status)
{
    switch (status) {
    case PROV_RATE:
        return KEYPOOL_RATE_LIMITED;
    case PROV_QUOTA:
        return KEYPOOL_QUOTA;
    case PROV_AUTH:
        return KEYPOOL_AUTH;
    case PROV_SERVER:
    case PROV_NETWORK:
        return KEYPOOL_SERVER_ERROR;
    case PROV_TIMEOUT:
        return KEYPOOL_TIMEOUT;
    default:
        return KEYPOOL_OK;
    }
}

long prov__retry_after_ms(const char *v)
{
    if (!v)
        return -1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v < '0' || *v > '9')
        return -1; /* an HTTP date starts with a day name */
    double ms = 0;
    while (*v >= '0' && *v <= '9') {
        ms = ms * 10 + (*v++ - '0') * 1000.0;
        if (ms > MAX_RETRY_MS)
            ms = MAX_RETRY_MS;
    }
    if (*v == '.') {
        double scale = 1000.0;
        v++;
        if (*v < '0' || *v > '9')
            return -1;
        while (*v >= '0' && *v <= '9')
            ms += (*v++ - '0') * (scale /= 10);
    }
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v)
        return -1;
    long out = (long)ms;
    if ((double)out < ms)
        out++; /* round up: waiting a little longer is harmless */
    return out > MAX_RETRY_MS ? MAX_RETRY_MS : out;
}

int prov__transport_status(int err)
{
    switch (err) {
    case 0:
        return PROV_OK;
    case -ETIMEDOUT:
        return PROV_TIMEOUT;
    case -ECANCELED:
    case BC_ESHUTDOWN:
        return PROV_CANCELLED;
    case BC_ETOOBIG:
        return PROV_PROTOCOL;
    default:
        return PROV_NETWORK;
    }
}

void prov__message(char *dst, size_t dstlen, const char *src, size_t len, const struct secret *key)
{
    static const char red[] = "[redacted]";
    const unsigned char *s = (const unsigned char *)src;
    size_t klen = key && key->value ? strlen(key->value) : 0;
    size_t o = 0, i = 0;
    if (dstlen == 0)
        return;
    while (i < len) {
        if (klen >= 8 && len - i >= klen && !memcmp(s + i, key->value, klen)) {
            if (o + sizeof red > dstlen)
                break;
            memcpy(dst + o, red, sizeof red - 1);
            o += sizeof red - 1;
            i += klen;
            continue;
        }
        size_t n = utf8_decode(src + i, len - i, NULL);
        if (o + (n ? n : 1) + 1 > dstlen)
            break;
        if (n == 0) {
            dst[o++] = '?';
            i++;
        } else if (n == 1) {
            dst[o++] = (s[i] < 0x20 || s[i] == 0x7f) ? ' ' : (char)s[i];
            i++;
        } else {
            memcpy(dst + o, s + i, n);
            o += n;
            i += n;
        }
    }
    dst[o] = '\0';
}

int prov__http_url(const char *s, size_t maxlen)
{
    size_t skip;
    if (!s)
        return 0;
    if (!strncasecmp(s, "https://", 8))
        skip = 8;
    else if (!strncasecmp(s, "http://", 7))
        skip = 7;
    else
        return 0;
    if (!s[skip] || s[skip] == '/' || s[skip] == '?' || s[skip] == '#')
        return 0; /* no host */
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++)
        if (*p <= 0x20 || *p == 0x7f || n >= maxlen)
            return 0;
    return 1;
}
