#include "base/log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "base/utf8.h"

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
            adv = utf8_decode(s + i, len - i, NULL);
            if (adv) {
                src = s + i;
                elen = adv;
            } else {
                src = UTF8_REPLACEMENT;
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

/* ---- redaction ------------------------------------------------------------
 *
 * log_redact_url takes what a user may put in REDIS_URL or DATABASE_URL: a
 * URL (redis://, postgresql://, http://...) or a libpq keyword/value
 * conninfo. It hides the password of a URL's userinfo, the value of every
 * ...password= query parameter and the value of every ...password keyword,
 * and keeps the rest, which is what an operator needs to see. Where the
 * text is ambiguous it hides more, never less. */

struct rw {
    char *out;
    size_t len, cap;
};

static void rw_put(struct rw *w, const char *s, size_t n)
{
    if (w->cap == 0)
        return;
    size_t room = w->cap - 1 - w->len;
    if (n > room)
        n = room;
    memcpy(w->out + w->len, s, n);
    w->len += n;
    w->out[w->len] = '\0';
}

static void rw_puts(struct rw *w, const char *s)
{
    rw_put(w, s, strlen(s));
}

/* A keyword or query parameter name that holds a secret: password,
 * sslpassword, and any other ...password (libpq keywords are lower case;
 * any case is hidden). */
static int is_password_key(const char *k, size_t n)
{
    return n >= 8 && !strncasecmp(k + n - 8, "password", 8);
}

/* [a, e) is a libpq/redis host list: "host[:port]" entries, comma
 * separated, a host being a name, an address, percent-encoded or an IPv6
 * address in brackets; empty is fine (postgresql:///db). */
static int is_host_list(const char *a, const char *e)
{
    while (a < e) {
        const char *c = memchr(a, ',', (size_t)(e - a)), *ee = c ? c : e;
        const char *h = a;
        if (h < ee && *h == '[') {
            const char *rb = memchr(h, ']', (size_t)(ee - h));
            if (!rb)
                return 0;
            for (const char *q = h + 1; q < rb; q++)
                if (!isxdigit((unsigned char)*q) && *q != ':' && *q != '.' && *q != '%')
                    return 0;
            h = rb + 1;
        } else {
            while (h < ee && (isalnum((unsigned char)*h) || strchr(".-_%", *h)))
                h++;
        }
        if (h < ee && *h == ':')
            for (h++; h < ee && isdigit((unsigned char)*h);)
                h++;
        if (h != ee)
            return 0;
        a = c ? c + 1 : e;
    }
    return 1;
}

/* The query string from q (just after '?'): every ...password parameter's
 * value becomes "***". libpq splits parameters on '&' only. */
static void redact_query(struct rw *w, const char *q)
{
    while (*q) {
        size_t n = strcspn(q, "&");
        const char *eq = memchr(q, '=', n);
        if (eq && is_password_key(q, (size_t)(eq - q))) {
            rw_put(w, q, (size_t)(eq - q) + 1);
            rw_puts(w, "***");
        } else {
            rw_put(w, q, n);
        }
        q += n;
        if (*q == '&')
            rw_put(w, q++, 1);
    }
}

/* The end of the userinfo ('@') of the URL whose authority starts at auth,
 * or NULL when it has none. libpq ends the userinfo at the first '@'
 * before the first '/', Redis URL parsers at the last; taking the last
 * hides both readings. A '/' in a password makes libpq see no userinfo at
 * all: then the authority before the '/' is no host list, and the last
 * '@' anywhere is taken. With a host list, an '@' after the '/' but
 * before the query is taken too (a password holding "/" and "@"; a
 * database name with '@' is rarer, and hiding it costs little). *doubt is
 * set when the authority is neither a host list nor has an '@'. */
static const char *userinfo_end(const char *auth, int *doubt)
{
    const char *slash = auth + strcspn(auth, "/"), *at = NULL, *last = strrchr(auth, '@');
    *doubt = 0;
    for (const char *p = auth; p < slash; p++)
        if (*p == '@')
            at = p;
    if (!is_host_list(at ? at + 1 : auth, slash)) {
        if (last)
            return last;
        *doubt = 1;
        return NULL;
    }
    if (*slash == '/') {
        const char *path = slash + 1, *qm = path + strcspn(path, "?");
        for (const char *p = path; p < qm; p++)
            if (*p == '@')
                at = p;
    }
    return at;
}

static void redact_uri(struct rw *w, const char *url, const char *auth)
{
    int doubt;
    const char *at = userinfo_end(auth, &doubt);
    rw_put(w, url, (size_t)(auth - url));
    const char *host = auth;
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        rw_put(w, auth, colon ? (size_t)(colon + 1 - auth) : (size_t)(at - auth));
        if (colon)
            rw_puts(w, "***");
        host = at;
    } else if (doubt) {
        /* no host list and no '@': "u:secret", "u:se#cret/db"; keep what
         * precedes the first ':' */
        const char *slash = auth + strcspn(auth, "/");
        const char *colon = memchr(auth, ':', (size_t)(slash - auth));
        if (colon) {
            rw_put(w, auth, (size_t)(colon + 1 - auth));
            rw_puts(w, "***");
            host = slash;
        }
    }
    const char *slash = host + strcspn(host, "/");
    const char *qm = *slash ? strchr(slash, '?') : NULL;
    if (!qm) {
        rw_puts(w, host);
        return;
    }
    rw_put(w, host, (size_t)(qm + 1 - host));
    redact_query(w, qm + 1);
}

/* A conninfo value that is itself a URI or conninfo ("dbname" may be one:
 * libpq expands it), which may carry a password of its own. */
static int value_holds_uri(const char *v, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++)
        if ((v[i] == ':' && v[i + 1] == '/') || v[i] == '=' || v[i] == '@')
            return 1;
    return n && (v[n - 1] == '=' || v[n - 1] == '@');
}

/* A keyword/value conninfo as libpq reads it: keyword, blanks, '=',
 * blanks, then a value in single quotes (backslash escapes) or up to the
 * next blank (backslash escapes). ...password values become "***"; the
 * rest is copied as written. What libpq would refuse (a keyword without
 * '=', an unterminated quote) ends the copy with "***". */
static void redact_conninfo(struct rw *w, const char *s)
{
    const char *p = s;
    while (*p) {
        const char *k = p;
        while (*p && isspace((unsigned char)*p))
            p++;
        rw_put(w, k, (size_t)(p - k));
        if (!*p)
            return;
        k = p;
        while (*p && *p != '=' && !isspace((unsigned char)*p))
            p++;
        size_t klen = (size_t)(p - k);
        while (*p && isspace((unsigned char)*p))
            p++;
        if (*p != '=') {
            rw_puts(w, "***"); /* not key=value: hide the rest */
            return;
        }
        p++;
        while (*p && isspace((unsigned char)*p))
            p++;
        rw_put(w, k, (size_t)(p - k)); /* keyword, '=' and blanks as written */
        const char *v = p;
        if (*p == '\'') {
            for (p++; *p && *p != '\''; p++)
                if (*p == '\\' && p[1])
                    p++;
            if (!*p) {
                rw_puts(w, "***");
                return;
            }
            p++;
        } else {
            for (; *p && !isspace((unsigned char)*p); p++)
                if (*p == '\\' && p[1])
                    p++;
        }
        if (is_password_key(k, klen))
            rw_puts(w, "***");
        else if (value_holds_uri(v, (size_t)(p - v)))
            rw_puts(w, "***"); /* dbname=postgresql://u:pw@h/db: libpq expands it */
        else
            rw_put(w, v, (size_t)(p - v));
    }
}

/* "scheme://" at the start: lower-case letters, digits, '+', '-', '.'. */
static const char *after_scheme(const char *url)
{
    const char *p = url;
    if (!isalpha((unsigned char)*p))
        return NULL;
    while (isalnum((unsigned char)*p) || (*p && strchr("+-.", *p))) /* strchr finds the NUL too */
        p++;
    return *p && !strncmp(p, "://", 3) ? p + 3 : NULL;
}

void log_redact_url(const char *url, char *out, size_t outlen)
{
    struct rw w = {out, 0, outlen};
    if (outlen)
        out[0] = '\0';
    const char *auth = after_scheme(url);
    if (auth)
        redact_uri(&w, url, auth);
    else if (strchr(url, '='))
        redact_conninfo(&w, url);
    else if (strchr(url, '@'))
        redact_uri(&w, url, url); /* "user:pass@host" without a scheme */
    else
        rw_puts(&w, url);
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
    size_t full = strlen(v), n = utf8_trunc(v, full, LOG_EXT_MAX);
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
