/* log: structured JSON-lines logging.
 *
 * Each record is one line: {"ts","level","instance","role","msg", fields...},
 * written with a single write(2) to the log fd (stderr by default), so lines
 * from one process never interleave. The level is checked before anything is
 * formatted. Fields are typed; a secret can only be logged as LF_SECRET (its
 * fingerprint) and a URL as LF_URL (password replaced by "***"): redaction is
 * by construction, not by scanning text. A value from outside (a provider's
 * header, a Discord id) goes through LF_EXT: capped, escaped, and masked when
 * it holds a registered secret (log_mask_add). Lines longer than LOG_LINE_MAX are
 * cut and marked "truncated":true. Core code never printf()s; it logs.
 *
 * Usage:  log_info("redis connected", LF_STR("addr", a), LF_INT("ms", 3));
 */
#ifndef BC_LOG_H
#define BC_LOG_H

#include <stdint.h>

#include "base/secret.h"

#define LOG_LINE_MAX 8192

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };

enum log_ftype { LOGF_END = 0, LOGF_STR, LOGF_INT, LOGF_DBL, LOGF_BOOL, LOGF_SECRET, LOGF_URL, LOGF_EXT };

struct log_field {
    const char *key;
    enum log_ftype type;
    union {
        const char *s;
        long long i;
        double d;
        const struct secret *sec;
    } v;
};

#define LF_STR(k, x) ((struct log_field){.key = (k), .type = LOGF_STR, .v.s = (x)})
#define LF_INT(k, x) ((struct log_field){.key = (k), .type = LOGF_INT, .v.i = (long long)(x)})
#define LF_DBL(k, x) ((struct log_field){.key = (k), .type = LOGF_DBL, .v.d = (double)(x)})
#define LF_BOOL(k, x) ((struct log_field){.key = (k), .type = LOGF_BOOL, .v.i = !!(x)})
#define LF_SECRET(k, x) ((struct log_field){.key = (k), .type = LOGF_SECRET, .v.sec = (x)})
#define LF_URL(k, x) ((struct log_field){.key = (k), .type = LOGF_URL, .v.s = (x)})
/* A value from outside (a provider's header, an id or text from a request):
 * at most LOG_EXT_MAX bytes are shown (then "..."), control characters as
 * "\xNN", and the whole value becomes "[redacted]" when what would be shown
 * holds a value registered with log_mask_add (or 12 bytes of one, or its
 * start at the cut) or looks like a key ("sk-...", "Bearer ..."). */
#define LF_EXT(k, x) ((struct log_field){.key = (k), .type = LOGF_EXT, .v.s = (x)})
#define LOG_EXT_MAX 128
/* An error code as "err" (its bc_strerror text) plus "code". */
#define LF_ERR(x) LF_STR("err", bc_strerror(x)), LF_INT("code", (x))

extern enum log_level log__level;

#define log_at(lvl, msg, ...)                                                                      \
    do {                                                                                           \
        if ((lvl) >= log__level)                                                                   \
            log__emit((lvl), (msg), (const struct log_field[]){__VA_ARGS__ __VA_OPT__(, ){0}});    \
    } while (0)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_at(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)

/* Set the context every line carries. Strings are copied. fd < 0 keeps the
 * current fd (stderr initially). */
void log_setup(const char *instance, const char *role, enum log_level level, int fd);
void log_set_level(enum log_level level);
/* "debug", "info", "warn"/"warning", "error", "off" -> level; -1 if unknown. */
int log_level_parse(const char *s);
const char *log_level_name(enum log_level level);

/* Render url into out (cut to outlen - 1 bytes, NUL-terminated) with any
 * password replaced by "***": a URL's userinfo password (read as both libpq
 * and Redis URL parsers would: it may hold '?', '#', '@' and even '/'), the
 * value of every ...password= query parameter, and in a libpq keyword/value
 * conninfo every ...password value. When the text is ambiguous, more is
 * hidden, never less. */
void log_redact_url(const char *url, char *out, size_t outlen);

/* Append s to out as a JSON string body (no quotes), escaping as needed and
 * replacing invalid UTF-8 with U+FFFD. Returns bytes written (<= outlen-1);
 * stops early rather than split an escape. */
size_t log_json_escape(char *out, size_t outlen, const char *s, size_t len);

/* Register a secret value (an API key as configured) that LF_EXT fields
 * must never show; copied (its first 255 bytes), values under 8 bytes are
 * ignored. Up to 64 values; call it at setup, before other threads log. */
void log_mask_add(const char *value);

void log__emit(enum log_level level, const char *msg, const struct log_field *fields);

#endif
