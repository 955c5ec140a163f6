#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum log_level log__level = LOG_INFO;

static struct {
    char instance[64];
    char role[16];
    int fd;
} log_ctx = {"-", "-", STDERR_FILENO};

static const char *const log_names[] = {"debug", "info", "warn", "error", "off"};

void log_setup(const char *instance, const char *role, enum log_level level, int fd)
{
    snprintf(log_ctx.instance, sizeof(log_ctx.instance), "%s", instance ? instance : "-");
    snprintf(log_ctx.role, sizeof(log_ctx.role), "%s", role ? role : "-");
    if (fd >= 0)
        log_ctx.fd = fd;
    log__level = level;
}

void log_set_level(enum log_level level)
{
    log__level = level;
}

int log_level_parse(const char *s)
{
    if (!strcasecmp(s, "warning"))
        return LOG_WARN;
    for (int i = 0; i <= LOG_OFF; i++)
        if (!strcasecmp(s, log_names[i]))
            return i;
    return -1;
}

const char *log_level_name(enum log_level level)
{
    return (level >= LOG_DEBUG && level <= LOG_OFF) ? log_names[level] : "?";
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t n;
    unsigned int cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return n;
}

size_t log_json_escape(char *out, size_t outlen, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (outlen == 0)
        return 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        char esc[8];
        size_t elen;
        const char *src = esc;
        size_t adv = 1;
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            elen = 2;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            elen = 2;
        } else if (c < 0x20 || c == 0x7F) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        } else if (c < 0x80) {
            esc[0] = (char)c;
            elen = 1;
        } else {
            adv = utf8_seq(p + i, len - i);
            if (adv) {
                src = (const char *)p + i;
                elen = adv;
            } else {
                memcpy(esc, "\xEF\xBF\xBD", 3);
                elen = 3;
                adv = 1;
            }
        }
        if (o + elen >= outlen)
            break;
        memcpy(out + o, src, elen);
        o += elen;
        i += adv;
    }
    out[o] = '\0';
    return o;
}

void log_redact_url(const char *url, char *out, size_t outlen)
{
    const char *scheme = strstr(url, "://");
    const char *auth = scheme ? scheme + 3 : url;
    const char *end = auth + strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *q = auth; q < end; q++)
        if (*q == '@')
            at = q;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    /* password=... in a key=value conninfo or a URI query string: keep what
     * precedes it and hide the rest */
    const char *pw = strstr(url, "password=");
    int cut = pw ? (int)(pw - url) : -1;
    if (colon && (cut < 0 || colon < pw))
        snprintf(out, outlen, "%.*s:***%.*s%s", (int)(colon - url), url, cut < 0 ? (int)strlen(at) : (int)(pw - at),
                 at, cut < 0 ? "" : "password=*** (rest hidden)");
    else if (cut >= 0)
        snprintf(out, outlen, "%.*spassword=*** (rest hidden)", cut, url);
    else
        snprintf(out, outlen, "%s", url);
}

struct log_line {
    char b[LOG_LINE_MAX];
    size_t n;
    int truncated;
};

static void ll_raw(struct log_line *l, const char *s, size_t len)
{
    /* keep room for the closing `,"truncated":true}\n` */
    size_t room = sizeof(l->b) - 32;
    if (l->n + len > room) {
        len = l->n < room ? room - l->n : 0;
        l->truncated = 1;
    }
    memcpy(l->b + l->n, s, len);
    l->n += len;
}

static void ll_str(struct log_line *l, const char *s)
{
    size_t room = sizeof(l->b) - 32;
    size_t slen = strlen(s);
    ll_raw(l, "\"", 1);
    if (l->n < room) {
        size_t w = log_json_escape(l->b + l->n, room - l->n, s, slen);
        l->n += w;
        if (w < slen && l->n + 8 >= room)
            l->truncated = 1;
    }
    ll_raw(l, "\"", 1);
}

static void ll_key(struct log_line *l, const char *k)
{
    ll_raw(l, ",", 1);
    ll_str(l, k);
    ll_raw(l, ":", 1);
}

static void ext_render(const char *v, char *out);

static void ll_field(struct log_line *l, const struct log_field *f)
{
    char tmp[512];
    ll_key(l, f->key);
    switch (f->type) {
    case LOGF_STR:
        ll_str(l, f->v.s ? f->v.s : "");
        break;
    case LOGF_INT:
        snprintf(tmp, sizeof(tmp), "%lld", f->v.i);
        ll_raw(l, tmp, strlen(tmp));
        break;
    case LOGF_DBL:
        snprintf(tmp, sizeof(tmp), "%.3f", f->v.d);
        ll_raw(l, tmp, strlen(tmp));
        break;
    case LOGF_BOOL:
        ll_raw(l, f->v.i ? "true" : "false", f->v.i ? 4 : 5);
        break;
    case LOGF_SECRET:
        ll_str(l, f->v.sec ? f->v.sec->fp : "unset");
        break;
    case LOGF_URL:
        log_redact_url(f->v.s ? f->v.s : "", tmp, sizeof(tmp));
        ll_str(l, tmp);
        break;
    case LOGF_EXT: {
        char ext[LOG_EXT_MAX * 4 + 8];
        ext_render(f->v.s ? f->v.s : "", ext);
        ll_str(l, ext);
        break;
    }
    case LOGF_END:
        break;
    }
}

void log__emit(enum log_level level, const char *msg, const struct log_field *fields)
{
    struct log_line l;
    l.n = 0;
    l.truncated = 0;

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[64];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));

    ll_raw(&l, "{\"ts\":", 6);
    ll_str(&l, ts);
    ll_key(&l, "level");
    ll_str(&l, log_level_name(level));
    ll_key(&l, "instance");
    ll_str(&l, log_ctx.instance);
    ll_key(&l, "role");
    ll_str(&l, log_ctx.role);
    ll_key(&l, "msg");
    ll_str(&l, msg);
    for (const struct log_field *f = fields; f && f->key; f++)
        ll_field(&l, f);
    if (l.truncated) {
        memcpy(l.b + l.n, ",\"truncated\":true", 17);
        l.n += 17;
    }
    l.b[l.n++] = '}';
    l.b[l.n++] = '\n';

    size_t off = 0;
    while (off < l.n) {
        ssize_t w = write(log_ctx.fd, l.b + off, l.n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* a broken log pipe must not take the bot down */
        off += (size_t)w;
    }
}

/* ---- outside values (LF_EXT) ---------------------------------------------- */

#define LOG_MASKS 64
#define LOG_MASK_LEN 256
#define LOG_MASK_PART 12 /* this many bytes of a secret in a value hide it */

static char log_masks[LOG_MASKS][LOG_MASK_LEN];
static int log_nmasks;

void log_mask_add(const char *value)
{
    if (!value || strlen(value) < 8)
        return;
    for (int i = 0; i < log_nmasks; i++)
        if (!strncmp(log_masks[i], value, LOG_MASK_LEN - 1))
            return;
    if (log_nmasks < LOG_MASKS)
        snprintf(log_masks[log_nmasks++], LOG_MASK_LEN, "%s", value);
}

static int ext_key_like(const char *s, size_t n)
{
    for (size_t i = 0; i + 3 <= n; i++) {
        if (n - i >= 7 && !strncasecmp(s + i, "bearer ", 7))
            return 1;
        if (memcmp(s + i, "sk-", 3))
            continue;
        size_t j = i + 3;
        while (j < n && (s[j] == '-' || s[j] == '_' || (s[j] >= '0' && s[j] <= '9') ||
                         ((s[j] | 32) >= 'a' && (s[j] | 32) <= 'z')))
            j++;
        if (j - i - 3 >= 8)
            return 1;
    }
    return 0;
}

/* Does the shown part s[0..n) reveal a registered secret? full is the whole
 * value (its first bytes past n are checked for a whole secret too). */
static int ext_masked(const char *s, size_t n, size_t full)
{
    for (int m = 0; m < log_nmasks; m++) {
        const char *k = log_masks[m];
        size_t klen = strlen(k);
        if (memmem(s, full < n + klen ? full : n + klen, k, klen))
            return 1;
        for (size_t i = 0; i < n; i++) {
            size_t left = n - i;
            if (left >= LOG_MASK_PART ? memmem(k, klen, s + i, LOG_MASK_PART) != NULL
                                      : left >= 4 && !memcmp(s + i, k, left))
                return 1;
        }
    }
    return 0;
}

/* The text an LF_EXT field shows, into out (LOG_EXT_MAX * 4 + 8 bytes). */
static void ext_render(const char *v, char *out)
{
    size_t full = strlen(v), n = full;
    if (n > LOG_EXT_MAX) {
        n = LOG_EXT_MAX;
        while (n && ((unsigned char)v[n] & 0xC0) == 0x80)
            n--; /* never cut inside a UTF-8 sequence */
    }
    if (ext_key_like(v, n) || ext_masked(v, n, full)) {
        strcpy(out, "[redacted]");
        return;
    }
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c == 0x7F) {
            out[o++] = '\\', out[o++] = 'x', out[o++] = hex[c >> 4], out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    if (n < full)
        memcpy(out + o, "...", 3), o += 3;
    out[o] = '\0';
}
