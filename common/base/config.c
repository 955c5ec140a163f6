#include "base/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/err.h"
#include "base/log.h"
#include "base/mem.h"

#define CFG_FILE_MAX (1 << 20)   /* env file */
#define CFG_SECRET_MAX (64 << 10) /* NAME_FILE content */

/* CT_NUM is a decimal number (double) within [min, max]; with CF_OPTIONAL an
 * empty value means "not set", recorded in the int at has_off. CT_IDS is a
 * comma-separated list of Discord ids (a string, blanks around ids
 * dropped). */
enum cfg_type { CT_INT, CT_BOOL, CT_STR, CT_NAME, CT_URL, CT_LEVEL, CT_SECRET, CT_ENUM, CT_ID, CT_HEX32, CT_NUM,
                CT_IDS };

/* Choices of CT_ENUM settings, '|'-separated, in enum order. */
static const char gateway_choices[] = "auto|on|off";
static const char img2img_choices[] = "sd3|ultra";

enum {
    CF_KEYED = 1,    /* name is NAME_<KEY_INDEX> */
    CF_FILE = 2,     /* may come from NAME_FILE */
    CF_ROLEDEF = 4,  /* default computed from the role */
    CF_OPTIONAL = 8, /* empty allowed */
};

struct cfg_def {
    const char *name;
    enum cfg_type type;
    const char *def;
    size_t off;
    long min, max;
    unsigned flags;
    const char *help;
    size_t has_off; /* CT_NUM: int set to 1 when a value is given, else 0 */
    const char *choices; /* CT_ENUM: '|'-separated, in enum order */
};

#define F(m) offsetof(struct config, m)

static const struct cfg_def cfg_defs[] = {
    {"INSTANCE_NUMBER", CT_INT, NULL, F(instance), 1, 999, CF_ROLEDEF,
     "Instance number; names the consumer <role>-<n>. Default: chat 1, image 2, video 3, admin 4."},
    {"KEY_INDEX", CT_INT, NULL, F(key_index), 1, 99, CF_ROLEDEF,
     "Which provider key set this instance uses (*_API_KEY_<n>). Default: the role's number."},
    {"HEALTH_BIND", CT_STR, "127.0.0.1", F(health_bind), 0, 0, 0,
     "Address the /health and /metrics server binds (0.0.0.0 in containers)."},
    {"HEALTH_PORT", CT_INT, NULL, F(health_port), 1, 65535, CF_ROLEDEF,
     "Port of the /health and /metrics server. Default: 8000 + INSTANCE_NUMBER."},
    {"LOG_LEVEL", CT_LEVEL, "info", F(log_level), 0, 0, 0, "debug, info, warn or error."},
    {"REDIS_URL", CT_URL, "redis://127.0.0.1:6379/0", F(redis_url), 0, 0, CF_FILE,
     "Redis/Valkey: redis://[:password@]host:port/db or unix:///path/to.sock."},
    {"REDIS_PREFIX", CT_NAME, "discordbot", F(redis_prefix), 0, 0, 0,
     "Prefix of every Redis key (<prefix>:jobs:<role>, <prefix>:heartbeats ...)."},
    {"DATABASE_URL", CT_URL, "", F(database_url), 0, 0, CF_FILE | CF_OPTIONAL,
     "PostgreSQL URI (postgresql://user:pass@host:port/db). Empty: run without PostgreSQL (degraded)."},
    {"HEARTBEAT_INTERVAL_MS", CT_INT, "1000", F(heartbeat_interval_ms), 100, 60000, 0,
     "How often the instance beats into <prefix>:heartbeats."},
    {"HEARTBEAT_MAXLEN", CT_INT, "10000", F(heartbeat_maxlen), 100, 10000000, 0,
     "Approximate length cap of the heartbeat stream."},
    {"STREAM_MAXLEN", CT_INT, "100000", F(stream_maxlen), 1000, 100000000, 0,
     "Approximate length cap of each job stream."},
    {"MAX_INFLIGHT", CT_INT, NULL, F(max_inflight), 1, 100000, CF_ROLEDEF,
     "Jobs processed at once; past it jobs wait in the stream. Default: 10000 for chat (streamed answers wait on I/O), 64 for the others."},
    {"JOB_BLOCK_MS", CT_INT, "5000", F(job_block_ms), 100, 60000, 0,
     "How long one XREADGROUP waits for new jobs."},
    {"CLAIM_IDLE_MS", CT_INT, "15000", F(claim_idle_ms), 1000, 3600000, 0,
     "A job pending this long on a silent consumer of the same role is reclaimed."},
    {"FAILOVER_AFTER_MS", CT_INT, "2500", F(failover_after_ms), 500, 60000, 0,
     "An instance silent this long is down: another instance takes over its role and its pending jobs."},
    {"QUEUE_WAIT_MAX_SEC", CT_INT, "600", F(queue_wait_max_sec), 1, 840, 0,
     "A command that waited longer than this for a worker gets a \"busy, try again\" reply instead of a late answer."},
    {"DRAIN_TIMEOUT_SEC", CT_INT, "30", F(drain_timeout_sec), 0, 3600, 0,
     "On SIGTERM, how long to let jobs in flight finish before exiting."},
    {"DIAG_JOBS", CT_BOOL, "off", F(diag_jobs), 0, 0, 0,
     "Accept diag.echo/diag.sleep jobs (pipeline probes used by tests and operators)."},
    {"OPENAI_API_KEY", CT_SECRET, "", F(openai_keys), 0, 0, CF_KEYED | CF_FILE | CF_OPTIONAL,
     "OpenAI(-compatible) key(s) of this instance, comma-separated."},
    {"MINIMAX_API_KEY", CT_SECRET, "", F(minimax_keys), 0, 0, CF_KEYED | CF_FILE | CF_OPTIONAL,
     "MiniMax key(s) of this instance, comma-separated."},
    {"STABILITY_API_KEY", CT_SECRET, "", F(stability_keys), 0, 0, CF_KEYED | CF_FILE | CF_OPTIONAL,
     "Stability AI key(s) of this instance, comma-separated."},
    {"DISCORD_TOKEN", CT_SECRET, "", F(discord_token), 0, 0, CF_FILE | CF_OPTIONAL,
     "Bot token. Empty: no Discord connection (the sandbox runs the simulators instead)."},
    {"DISCORD_APPLICATION_ID", CT_ID, "", F(discord_app_id), 0, 0, CF_OPTIONAL,
     "Application id; learned from READY when empty."},
    {"DISCORD_GUILD_ID", CT_ID, "", F(discord_guild_id), 0, 0, CF_OPTIONAL,
     "Register slash commands on this guild only (instant); empty: globally."},
    {"DISCORD_PUBLIC_KEY", CT_HEX32, "", F(discord_public_key), 0, 0, CF_OPTIONAL,
     "Application public key (64 hex digits) for POST /interactions; empty: endpoint off."},
    {"INTERACTION_MAX_SKEW_SEC", CT_INT, "5", F(interaction_max_skew_sec), 1, 300, 0,
     "POST /interactions: refuse a signed request whose timestamp is further than this from our clock (replays)."},
    {"DISCORD_API_BASE", CT_URL, "https://discord.com/api/v10", F(discord_api_base), 0, 0, 0,
     "Discord REST base URL; the gateway URL is asked from it (GET /gateway/bot)."},
    {"GATEWAY", CT_ENUM, "auto", F(gateway_mode), 0, 0, 0,
     "auto: compete for the gateway lease; on: same, and say so at start; off: never hold it.", 0, gateway_choices},
    {"GATEWAY_INTENTS", CT_INT, "37377", F(gateway_intents), 0, 33554431, 0,
     "Gateway intents bitfield (default guilds, guild messages, direct messages, message content)."},
    {"GATEWAY_LEASE_MS", CT_INT, "1500", F(gateway_lease_ms), 600, 60000, 0,
     "Time-to-live of the gateway lease; a dead holder is replaced within it (keep it well under Discord's 3 s "
     "to acknowledge an interaction)."},
    {"GATEWAY_COMPRESS", CT_BOOL, "on", F(gateway_compress), 0, 0, 0, "Use zlib-stream compression on the gateway."},
    {"CHAT_CHANNELS", CT_STR, "채팅방-*,ai-지원", F(chat_channels), 0, 0, 0,
     "Channel name globs owned by the chat role (comma-separated; * and ? match letters of any script)."},
    {"IMAGE_CHANNELS", CT_STR, "이미지생성-*,갤러리", F(image_channels), 0, 0, 0,
     "Channel name globs owned by the image role."},
    {"VIDEO_CHANNELS", CT_STR, "비디오생성-*", F(video_channels), 0, 0, 0,
     "Channel name globs owned by the video role."},
    {"ENFORCE_CHANNELS", CT_BOOL, "on", F(enforce_channels), 0, 0, 0,
     "A command used outside its role's channels gets a reply naming the right ones."},
    {"ADMIN_ROLE_IDS", CT_IDS, "", F(admin_role_ids), 0, 0, CF_OPTIONAL,
     "Discord role ids (comma-separated) whose members may use /상태 and /인스턴스, besides administrators."},
    {"OPENAI_BASE_URL", CT_URL, "https://api.openai.com/v1", F(openai_base_url), 0, 0, 0,
     "OpenAI-compatible API base (Groq https://api.groq.com/openai/v1, Ollama http://localhost:11434/v1 ...)."},
    {"OPENAI_MODEL", CT_STR, "gpt-4o-mini", F(openai_model), 0, 0, 0, "Chat model name."},
    {"SYSTEM_PROMPT", CT_STR,
     "You are a helpful assistant in a Discord server. Answer in the language the user writes in.",
     F(system_prompt), 0, 0, 0, "System prompt sent before every conversation."},
    {"MAX_TOKENS", CT_INT, "1024", F(max_tokens), 16, 128000, 0, "Most tokens one answer may use."},
    {"LLM_TEMPERATURE", CT_NUM, "", F(llm_temperature), 0, 2, CF_OPTIONAL,
     "Sampling temperature from 0 to 2 (e.g. 0.7); empty: the server's default.", F(has_llm_temperature)},
    {"CONTEXT_MAX_TOKENS", CT_INT, "3000", F(context_max_tokens), 100, 1000000, 0,
     "Most estimated tokens of conversation history sent with a question."},
    {"CONTEXT_MAX_TURNS", CT_INT, "10", F(context_max_turns), 0, 200, 0,
     "Most earlier exchanges sent with a question (0 = no memory)."},
    {"SESSION_TTL_MINUTES", CT_INT, "60", F(session_ttl_minutes), 1, 525600, 0,
     "A conversation idle this long is forgotten."},
    {"LLM_TIMEOUT_SEC", CT_INT, "120", F(llm_timeout_sec), 5, 3600, 0, "Longest one answer may take."},
    {"LLM_FIRST_TOKEN_SEC", CT_INT, "20", F(llm_first_token_sec), 1, 3600, 0,
     "A model that sends no text this long is given up (the key rests; another key or a \"busy\" reply takes over)."},
    {"LLM_IDLE_SEC", CT_INT, "30", F(llm_idle_sec), 1, 3600, 0, "A streaming answer silent this long is given up."},
    {"EDIT_INTERVAL_MS", CT_INT, "1000", F(edit_interval_ms), 200, 60000, 0,
     "At most one edit of a streaming answer per this interval (rate-limit headers may slow it further)."},
    {"USER_RATE_LIMIT", CT_INT, "10", F(user_rate_limit), 0, 100000, 0,
     "Requests one user may make per USER_RATE_WINDOW_SEC, across the cluster (0 = no limit)."},
    {"USER_RATE_WINDOW_SEC", CT_INT, "60", F(user_rate_window_sec), 1, 86400, 0,
     "The sliding window of USER_RATE_LIMIT."},
    {"USER_DAILY_LIMIT", CT_INT, "200", F(user_daily_limit), 0, 1000000, 0,
     "Requests one user may make per day (UTC) of each kind (0 = no limit)."},
    {"MODERATION", CT_BOOL, "off", F(moderation), 0, 0, 0,
     "Check each question with the provider's moderations endpoint before answering it."},
    {"MODERATION_MODEL", CT_STR, "omni-moderation-latest", F(moderation_model), 0, 0, 0,
     "Model of the moderations endpoint."},
    {"MINIMAX_BASE_URL", CT_URL, "https://api.minimax.io", F(minimax_base_url), 0, 0, 0,
     "MiniMax API host (https://api.minimaxi.com in mainland China; a key works only on its own host)."},
    {"MINIMAX_IMAGE_MODEL", CT_STR, "image-01", F(minimax_image_model), 0, 0, 0, "MiniMax image model of /이미지."},
    {"MINIMAX_VIDEO_MODEL", CT_STR, "MiniMax-Hailuo-02", F(minimax_video_model), 0, 0, 0,
     "MiniMax video model of /비디오 (MiniMax-Hailuo-02, MiniMax-Hailuo-2.3, T2V-01 ...)."},
    {"STABILITY_BASE_URL", CT_URL, "https://api.stability.ai", F(stability_base_url), 0, 0, 0,
     "Stability AI API host."},
    {"STABILITY_IMG2IMG", CT_ENUM, "sd3", F(stability_img2img), 0, 0, 0,
     "Endpoint of /img with an image: sd3 (STABILITY_SD3_MODEL) or ultra.", 0, img2img_choices},
    {"STABILITY_SD3_MODEL", CT_STR, "sd3.5-large", F(stability_sd3_model), 0, 0, 0,
     "Model of the sd3 endpoint (sd3.5-large, sd3.5-large-turbo, sd3.5-medium)."},
    {"IMG2IMG_STRENGTH", CT_NUM, "0.6", F(img2img_strength), 0, 1, 0,
     "Strength of /img with an image when the user gives none (0 keeps the image, 1 ignores it).",
     F(has_img2img_strength)},
    {"IMAGE_TIMEOUT_SEC", CT_INT, "120", F(image_timeout_sec), 5, 600, 0, "Longest one image request may take."},
    {"GALLERY_CHANNEL", CT_ID, "", F(gallery_channel), 0, 0, CF_OPTIONAL,
     "Channel id where every generated image is also posted, with its author; empty: off."},
    {"USER_DAILY_IMAGES", CT_INT, "50", F(user_daily_images), 0, 1000000, 0,
     "Images one user may generate per day (UTC) (0 = no limit)."},
    {"USER_DAILY_VIDEOS", CT_INT, "5", F(user_daily_videos), 0, 1000000, 0,
     "Videos one user may generate per day (UTC) (0 = no limit)."},
    {"USER_MAX_VIDEO_JOBS", CT_INT, "1", F(user_max_video_jobs), 1, 100, 0,
     "Videos one user may have in progress at once."},
    {"VIDEO_TIMEOUT_MIN", CT_INT, "20", F(video_timeout_min), 1, 240, 0,
     "A video not ready after this many minutes is given up with a clear message."},
    {"VIDEO_POLL_SEC", CT_INT, "10", F(video_poll_sec), 1, 300, 0,
     "First wait between two status checks of a video (backs off to 4x)."},
    {"VIDEO_DIR", CT_STR, "/tmp/discordbot-videos", F(video_dir), 0, 0, 0,
     "Directory where finished videos are downloaded before upload (created 0700)."},
    {"VIDEO_MAX_MB", CT_INT, "200", F(video_max_mb), 1, 4096, 0,
     "Largest video file downloaded; a bigger one is given as a link."},
};
#define CFG_NDEFS (sizeof(cfg_defs) / sizeof(cfg_defs[0]))

/* One raw value per setting, as text, with where it came from. */
struct cfg_raw {
    char *val[CFG_NDEFS];
    const char *src[CFG_NDEFS];
    char *file[CFG_NDEFS]; /* NAME_FILE path */
};

/* The last line of problems (warnings) when not all of them fit. */
#define CFG_MORE_PROBLEMS "...\tmore problems were found and not listed\n"
#define CFG_MORE_WARNINGS "...\tmore warnings were found and not listed\n"

/* Append one whole "KEY\ttext\n" line to list, or, when it would not fit
 * with room left for the note, the note once: a line is never cut, so
 * whoever splits the list on the tab and the newline (the core does)
 * always finds both. */
static void add_line(struct buf *list, const char *key, const char *text, const char *note)
{
    size_t n = strlen(key) + strlen(text) + 2, more = strlen(note);
    if (list->len + n + more > list->max) {
        if (list->len < more || memcmp(list->p + list->len - more, note, more))
            (void)buf_puts(list, note); /* fits: room for it was always kept */
        return;
    }
    (void)buf_printf(list, "%s\t%s\n", key, text);
}

static void problem(struct config *c, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(struct config *c, const char *key, const char *fmt, ...)
{
    /* a problem names a path or a redacted URL at most: 8 KiB is plenty,
     * and a longer one is cut visibly */
    char text[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(text, sizeof(text), "(could not format the problem)");
    else if ((size_t)n >= sizeof(text))
        memcpy(text + sizeof(text) - 4, "...", 4);
    add_line(&c->problems, key, text, CFG_MORE_PROBLEMS);
}

static void warning(struct config *c, const char *key, const char *msg)
{
    add_line(&c->warnings, key, msg, CFG_MORE_WARNINGS);
}

/* The full name of a setting for this instance (keyed ones get _<n>). */
static void def_name(const struct cfg_def *d, int key_index, char *out, size_t len)
{
    if (d->flags & CF_KEYED)
        snprintf(out, len, "%s_%d", d->name, key_index);
    else
        snprintf(out, len, "%s", d->name);
}

static int is_keyed_name(const char *name, size_t nlen)
{
    for (size_t i = 0; i < CFG_NDEFS; i++) {
        const struct cfg_def *d = &cfg_defs[i];
        size_t l = strlen(d->name);
        if (!(d->flags & CF_KEYED) || nlen <= l + 1 || strncmp(name, d->name, l) || name[l] != '_')
            continue;
        size_t j = l + 1;
        while (j < nlen && isdigit((unsigned char)name[j]))
            j++;
        if (j == nlen || (j + 5 == nlen && !strncmp(name + j, "_FILE", 5)))
            return 1;
    }
    return 0;
}

/* Index of the setting called name (len bytes) for key_index; sets *is_file
 * when it is the NAME_FILE form. -1 when unknown. */
static int find_def(const char *name, size_t len, int key_index, int *is_file)
{
    char full[96];
    *is_file = 0;
    if (len > 5 && !strncmp(name + len - 5, "_FILE", 5)) {
        int idx = find_def(name, len - 5, key_index, is_file);
        if (idx >= 0 && (cfg_defs[idx].flags & CF_FILE)) {
            *is_file = 1;
            return idx;
        }
        return -1;
    }
    for (size_t i = 0; i < CFG_NDEFS; i++) {
        def_name(&cfg_defs[i], key_index, full, sizeof(full));
        if (strlen(full) == len && !strncmp(full, name, len))
            return (int)i;
    }
    return -1;
}

static void raw_set(struct cfg_raw *raw, int idx, int is_file, const char *val, size_t len,
                    const char *src)
{
    char **slot = is_file ? &raw->file[idx] : &raw->val[idx];
    mem_free(*slot);
    *slot = mem_strndup(val, len);
    raw->src[idx] = src;
}

/* Parse one env-file value: quotes, escapes in double quotes, and inline
 * comments after unquoted values. Returns a new string or NULL on error. */
static char *envfile_value(const char *v, const char *end)
{
    struct buf b;
    buf_init(&b, CFG_FILE_MAX);
    if (v < end && (*v == '"' || *v == '\'')) {
        char q = *v++;
        while (v < end && *v != q) {
            char ch = *v++;
            if (q == '"' && ch == '\\' && v < end) {
                ch = *v++;
                ch = ch == 'n' ? '\n' : ch == 't' ? '\t' : ch;
            }
            (void)buf_append(&b, &ch, 1); /* checked once below */
        }
        if (v >= end || buf_error(&b)) {
            buf_free(&b);
            return NULL;
        }
        v++;
        while (v < end && isspace((unsigned char)*v))
            v++;
        if (v < end && *v != '#') {
            buf_free(&b);
            return NULL;
        }
        return buf_detach(&b);
    }
    const char *e = v;
    while (e < end && !(*e == '#' && (e == v || isspace((unsigned char)e[-1]))))
        e++;
    while (e > v && isspace((unsigned char)e[-1]))
        e--;
    if (buf_append(&b, v, (size_t)(e - v))) {
        buf_free(&b);
        return NULL;
    }
    return buf_detach(&b);
}

static int read_file(const char *path, size_t max, struct buf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char tmp[4096];
    for (;;) {
        ssize_t n = read(fd, tmp, sizeof(tmp));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = -errno;
            close(fd);
            return e;
        }
        if (n == 0)
            break;
        int rc = out->len + (size_t)n > max ? BC_ETOOBIG : buf_append(out, tmp, (size_t)n);
        if (rc) {
            close(fd);
            return rc;
        }
    }
    close(fd);
    return 0;
}

static void load_envfile(struct config *c, struct cfg_raw *raw, int key_index)
{
    struct buf f;
    buf_init(&f, CFG_FILE_MAX);
    int rc = read_file(c->env_file, CFG_FILE_MAX, &f);
    if (rc) {
        problem(c, "--env-file", "cannot read %s: %s", c->env_file, bc_strerror(rc));
        buf_free(&f);
        return;
    }
    const char *p = buf_str(&f), *end = p + f.len;
    for (int lineno = 1; p < end; lineno++) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            eol = end;
        const char *s = p, *e = eol;
        p = eol < end ? eol + 1 : end;
        while (s < e && isspace((unsigned char)*s))
            s++;
        while (e > s && isspace((unsigned char)e[-1]))
            e--;
        if (s == e || *s == '#')
            continue;
        if (e - s > 7 && !strncmp(s, "export ", 7))
            s += 7;
        const char *eq = memchr(s, '=', (size_t)(e - s));
        const char *k = s, *ke = eq ? eq : e;
        while (ke > k && isspace((unsigned char)ke[-1]))
            ke--;
        int ok = eq && ke > k;
        for (const char *q = k; ok && q < ke; q++)
            ok = isalnum((unsigned char)*q) || *q == '_';
        char where[64];
        snprintf(where, sizeof(where), "%s line %d", "--env-file", lineno);
        if (!ok) {
            /* never echo the line: it may hold a secret */
            problem(c, where, "expected KEY=VALUE");
            continue;
        }
        const char *v = eq + 1;
        while (v < e && isspace((unsigned char)*v))
            v++;
        char *val = envfile_value(v, e);
        char key[128];
        snprintf(key, sizeof(key), "%.*s", (int)(ke - k), k);
        if (!val) {
            problem(c, key, "unterminated or malformed quoted value (%s)", where);
            continue;
        }
        int is_file, idx = find_def(key, strlen(key), key_index, &is_file);
        if (idx >= 0)
            raw_set(raw, idx, is_file, val, strlen(val), "env file");
        else if (!is_keyed_name(key, strlen(key)))
            warning(c, key, "unknown setting in env file, ignored");
        mem_free(val);
    }
    buf_free(&f);
}

static void load_environ(struct cfg_raw *raw, char **envp, int key_index)
{
    for (char **e = envp; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        int is_file, idx = find_def(*e, (size_t)(eq - *e), key_index, &is_file);
        if (idx >= 0)
            raw_set(raw, idx, is_file, eq + 1, strlen(eq + 1), "environment");
    }
}

/* --health-port / --HEALTH_PORT -> HEALTH_PORT */
static void flag_to_key(const char *flag, size_t len, char *out, size_t outlen)
{
    size_t i;
    for (i = 0; i < len && i + 1 < outlen; i++)
        out[i] = flag[i] == '-' ? '_' : (char)toupper((unsigned char)flag[i]);
    out[i] = '\0';
}

enum cfg_special { SP_NONE, SP_HELP, SP_VERSION, SP_MARKDOWN };

/* Pre-scan for flags that decide how the rest is read. */
static enum cfg_special scan_special(struct config *c, int argc, char **argv, struct buf *out)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            buf_printf(out, "usage: %s-instance [--env-file FILE] [--check-config] [--SETTING=value ...]\n\n",
                       role_name(c->role));
            return SP_HELP;
        }
        if (!strcmp(a, "--version"))
            return SP_VERSION;
        if (!strcmp(a, "--config-markdown"))
            return SP_MARKDOWN;
        if (!strcmp(a, "--env-file") || !strncmp(a, "--env-file=", 11)) {
            const char *v = a[10] == '=' ? a + 11 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || !*v) {
                problem(c, "--env-file", "needs a path");
                continue;
            }
            mem_free(c->env_file);
            c->env_file = mem_strdup(v);
        }
    }
    return SP_NONE;
}

static int load_flags(struct config *c, struct cfg_raw *raw, int argc, char **argv, int key_index)
{
    int check = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--env-file")) {
            i++;
            continue;
        }
        if (!strncmp(a, "--env-file=", 11))
            continue;
        if (!strcmp(a, "--check-config")) {
            check = 1;
            continue;
        }
        if (!strcmp(a, "--register-commands")) {
            c->register_commands = 1;
            continue;
        }
        if (strncmp(a, "--", 2) || !a[2]) {
            problem(c, a, "unknown argument (see --help)");
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        const char *val;
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        char key[96];
        flag_to_key(name, nlen, key, sizeof(key));
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else {
            problem(c, key, "flag needs a value");
            continue;
        }
        int is_file, idx = find_def(key, strlen(key), key_index, &is_file);
        if (idx < 0) {
            problem(c, key, "unknown setting (see --help)");
            continue;
        }
        raw_set(raw, idx, is_file, val, strlen(val), "flag");
    }
    return check;
}

static int looks_like_example(const char *v)
{
    return !strncasecmp(v, "your_", 5) || !strncasecmp(v, "your-", 5) || !strcasecmp(v, "changeme");
}

static int parse_int(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end)
        return -EINVAL;
    *out = v;
    return 0;
}

/* A plain decimal number: digits, sign, point and exponent only, so "inf",
 * "nan" and hex floats are refused. */
static int parse_num(const char *s, double *out)
{
    char *end;
    if (!*s || s[strspn(s, "0123456789+-.eE")])
        return -EINVAL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"1", "on", "true", "yes"}, *const no[] = {"0", "off", "false", "no"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, yes[i]))
            return *out = 1, 0;
        if (!strcasecmp(s, no[i]))
            return *out = 0, 0;
    }
    return -EINVAL;
}

/* Secrets: printable, no spaces; a list is comma-separated. */
static const char *secret_problem(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p <= ' ' || *p == 0x7F)
            return "contains whitespace or control characters";
    if (strstr(v, ",,") || *v == ',' || v[strlen(v) - 1] == ',')
        return "has an empty entry in its comma-separated list";
    return NULL;
}

static int enum_index(const char *choices, const char *v)
{
    int i = 0;
    for (const char *p = choices; *p; i++) {
        size_t n = strcspn(p, "|");
        if (strlen(v) == n && !strncasecmp(p, v, n))
            return i;
        p += n + (p[n] == '|');
    }
    return -1;
}

static int is_snowflake(const char *v)
{
    size_t n = strspn(v, "0123456789");
    return !v[n] && n >= 17 && n <= 20;
}

/* "id,id , id": every entry a snowflake; into out (blanks dropped). */
static int ids_list(const char *v, struct buf *out)
{
    for (const char *p = v;;) {
        size_t n = strcspn(p, ",");
        char one[32];
        const char *s = p, *e = p + n;
        while (s < e && isspace((unsigned char)*s))
            s++;
        while (e > s && isspace((unsigned char)e[-1]))
            e--;
        if ((size_t)(e - s) >= sizeof(one))
            return -EINVAL;
        snprintf(one, sizeof(one), "%.*s", (int)(e - s), s);
        if (!is_snowflake(one))
            return -EINVAL;
        int rc = buf_printf(out, "%s%s", out->len ? "," : "", one);
        if (rc)
            return rc;
        if (!p[n])
            return 0;
        p += n + 1;
    }
}

static int is_hex32(const char *v)
{
    return strspn(v, "0123456789abcdefABCDEF") == 64 && !v[64];
}

static const char *url_problem(const struct cfg_def *d, const char *v)
{
    if (!strcmp(d->name, "REDIS_URL")) {
        if (!strncmp(v, "rediss://", 9))
            return "TLS (rediss://) is not supported by this build; use a local TLS proxy";
        if (strncmp(v, "redis://", 8) && strncmp(v, "unix://", 7))
            return "must start with redis:// or unix://";
    } else if (!strcmp(d->name, "DISCORD_API_BASE") || !strcmp(d->name, "OPENAI_BASE_URL") ||
               !strcmp(d->name, "MINIMAX_BASE_URL") || !strcmp(d->name, "STABILITY_BASE_URL")) {
        if (strncmp(v, "https://", 8) && strncmp(v, "http://", 7))
            return "must start with https:// (or http:// for a local server)";
    } else if (strncmp(v, "postgresql://", 13) && strncmp(v, "postgres://", 11) && !strchr(v, '=')) {
        return "must be a postgresql:// URI or a key=value conninfo";
    }
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p < ' ' || *p == 0x7F)
            return "contains control characters";
    return NULL;
}

static void apply_one(struct config *c, const struct cfg_def *d, const char *key, const char *v)
{
    void *field = (char *)c + d->off;
    char shown[256];
    long n;
    int b;
    double x;
    if (*v && looks_like_example(v)) {
        problem(c, key, "still has the example value (your_...); set the real value or remove it");
        return;
    }
    switch (d->type) {
    case CT_INT:
        if (parse_int(v, &n) || n < d->min || n > d->max)
            problem(c, key, "must be an integer from %ld to %ld", d->min, d->max);
        else
            *(int *)field = (int)n;
        break;
    case CT_NUM:
        if (!*v && (d->flags & CF_OPTIONAL)) {
            *(double *)field = 0;
            *(int *)((char *)c + d->has_off) = 0;
        } else if (parse_num(v, &x) || x < (double)d->min || x > (double)d->max) {
            problem(c, key, "must be a number from %ld to %ld%s", d->min, d->max,
                    (d->flags & CF_OPTIONAL) ? ", or empty" : "");
        } else {
            *(double *)field = x;
            *(int *)((char *)c + d->has_off) = 1;
        }
        break;
    case CT_BOOL:
        if (parse_bool(v, &b))
            problem(c, key, "must be on/off, true/false, yes/no or 1/0");
        else
            *(int *)field = b;
        break;
    case CT_LEVEL:
        n = log_level_parse(v);
        if (n < 0 || n == LOG_OFF)
            problem(c, key, "must be debug, info, warn or error");
        else
            *(int *)field = (int)n;
        break;
    case CT_NAME:
        for (const char *p = v; *p; p++)
            if (!isalnum((unsigned char)*p) && !strchr("_-.", *p)) {
                problem(c, key, "may contain only letters, digits, '_', '-' and '.'");
                return;
            }
        /* fall through */
    case CT_STR:
        if (!*v && !(d->flags & CF_OPTIONAL)) {
            problem(c, key, "must not be empty");
            return;
        }
        mem_free(*(char **)field);
        *(char **)field = mem_strdup(v);
        break;
    case CT_URL:
        if (*v && url_problem(d, v)) {
            log_redact_url(v, shown, sizeof(shown));
            problem(c, key, "%s (got %s)", url_problem(d, v), shown);
            return;
        }
        if (!*v && !(d->flags & CF_OPTIONAL)) {
            problem(c, key, "must not be empty");
            return;
        }
        mem_free(*(char **)field);
        *(char **)field = mem_strdup(v);
        break;
    case CT_ENUM:
        n = enum_index(d->choices, v);
        if (n < 0)
            problem(c, key, "must be one of %s", d->choices);
        else
            *(int *)field = (int)n;
        break;
    case CT_ID:
    case CT_HEX32:
        if (*v && !(d->type == CT_ID ? is_snowflake(v) : is_hex32(v))) {
            problem(c, key, d->type == CT_ID ? "must be a Discord id (17 to 20 digits)"
                                              : "must be 64 hexadecimal digits");
            return;
        }
        mem_free(*(char **)field);
        *(char **)field = mem_strdup(v);
        break;
    case CT_IDS: {
        /* the list without its blanks is never longer than the value, so
         * a buffer of its size holds all of it: no id is ever dropped */
        struct buf ids;
        buf_init(&ids, strlen(v) + 1);
        int rc = *v ? ids_list(v, &ids) : 0;
        if (rc) {
            buf_free(&ids);
            problem(c, key, "%s", rc == -EINVAL ? "must be Discord ids (17 to 20 digits), comma-separated"
                                                : "could not be read whole");
            return;
        }
        mem_free(*(char **)field);
        *(char **)field = mem_strdup(buf_str(&ids));
        buf_free(&ids);
        break;
    }
    case CT_SECRET:
        if (*v && secret_problem(v)) {
            problem(c, key, "%s", secret_problem(v));
            return;
        }
        secret_set((struct secret *)field, v);
        break;
    }
}

static void role_default(struct config *c, const struct cfg_def *d, char *out, size_t len)
{
    if (!strcmp(d->name, "HEALTH_PORT"))
        snprintf(out, len, "%d", 8000 + c->instance);
    else if (!strcmp(d->name, "MAX_INFLIGHT"))
        snprintf(out, len, "%d", role_def(c->role) ? role_def(c->role)->max_inflight : 64);
    else
        snprintf(out, len, "%d", (int)c->role);
}

/* NAME_FILE: read the file; both NAME and NAME_FILE set is an error. */
static int resolve_file(struct config *c, struct cfg_raw *raw, int i, const char *key)
{
    if (!raw->file[i])
        return 0;
    if (raw->val[i]) {
        problem(c, key, "set either %s or %s_FILE, not both", key, key);
        return -1;
    }
    struct buf b;
    buf_init(&b, CFG_SECRET_MAX);
    int rc = read_file(raw->file[i], CFG_SECRET_MAX, &b);
    if (rc) {
        problem(c, key, "cannot read %s_FILE (%s): %s", key, raw->file[i], bc_strerror(rc));
        buf_free(&b);
        return -1;
    }
    while (b.len && isspace((unsigned char)b.p[b.len - 1]))
        b.p[--b.len] = '\0';
    raw->val[i] = buf_detach(&b);
    return 0;
}

/* Apply settings in table order; role defaults depend on INSTANCE_NUMBER,
 * which comes first in the table. */
static void apply_all(struct config *c, struct cfg_raw *raw)
{
    char key[96], def[32];
    for (size_t i = 0; i < CFG_NDEFS; i++) {
        const struct cfg_def *d = &cfg_defs[i];
        def_name(d, c->key_index, key, sizeof(key));
        if (resolve_file(c, raw, (int)i, key))
            continue;
        const char *v = raw->val[i];
        if (!v) {
            if (d->flags & CF_ROLEDEF) {
                role_default(c, d, def, sizeof(def));
                v = def;
            } else {
                v = d->def;
            }
        }
        apply_one(c, d, key, v);
    }
}

static int help_text(struct buf *out)
{
    buf_puts(out, "Settings (defaults < --env-file < environment < --flags):\n");
    for (size_t i = 0; i < CFG_NDEFS; i++) {
        const struct cfg_def *d = &cfg_defs[i];
        char name[96];
        snprintf(name, sizeof(name), "%s%s", d->name, (d->flags & CF_KEYED) ? "_<KEY_INDEX>" : "");
        buf_printf(out, "  %-28s %s\n", name, d->help);
        buf_printf(out, "  %-28s default: %s%s%s\n", "",
                   (d->flags & CF_ROLEDEF) ? "(by role)" : (*d->def ? d->def : "(empty)"),
                   d->type == CT_SECRET ? "; secret" : "",
                   (d->flags & CF_FILE) ? "; or from " : "");
        if (d->flags & CF_FILE)
            buf_printf(out, "%s_FILE\n", name);
        else
            buf_puts(out, "\n");
    }
    buf_puts(out, "\nOther flags: --env-file FILE, --check-config (validate, print, exit),"
                  " --register-commands (register slash commands, exit), --version, --help.\n"
                  "Bad configuration exits with status 2.\n");
    return buf_error(out);
}

int cfg_markdown(struct buf *out)
{
    buf_puts(out, "| Setting | Default | Meaning |\n|---|---|---|\n");
    for (size_t i = 0; i < CFG_NDEFS; i++) {
        const struct cfg_def *d = &cfg_defs[i];
        buf_printf(out, "| `%s%s` | %s | %s%s%s |\n", d->name, (d->flags & CF_KEYED) ? "_<n>" : "",
                   (d->flags & CF_ROLEDEF) ? "by role" : (*d->def ? d->def : "(empty)"), d->help,
                   d->type == CT_SECRET ? " Secret: logged only as a fingerprint." : "",
                   (d->flags & CF_FILE) ? " Also `_FILE`." : "");
    }
    return buf_error(out);
}

int cfg_load(struct config *c, enum role role, int argc, char **argv, char **envp, struct buf *out)
{
    memset(c, 0, sizeof(*c));
    c->role = role;
    buf_init(&c->problems, 64 << 10);
    buf_init(&c->warnings, 64 << 10);
    secret_clear(&c->openai_keys);
    secret_clear(&c->minimax_keys);
    secret_clear(&c->stability_keys);
    secret_clear(&c->discord_token);

    enum cfg_special special = scan_special(c, argc, argv, out);
    if (special != SP_NONE) {
        int rc;
        if (special == SP_HELP)
            rc = help_text(out);
        else if (special == SP_VERSION)
            rc = buf_printf(out, "%s-instance %s (%s)\n", role_name(role), BC_VERSION, BC_GIT_REV);
        else
            rc = cfg_markdown(out);
        if (rc) {
            problem(c, special == SP_HELP ? "--help" : special == SP_VERSION ? "--version" : "--config-markdown",
                    "the text does not fit in the output buffer (%s)", bc_strerror(rc));
            return BC_ECONFIG;
        }
        return CFG_EXIT_OK;
    }

    /* KEY_INDEX decides which keyed names are ours, so it is resolved in a
     * first pass over all sources, then everything is read again. */
    struct cfg_raw raw;
    int check = 0;
    c->key_index = (int)role;
    for (int pass = 0; pass < 2; pass++) {
        memset(&raw, 0, sizeof(raw));
        buf_reset(&c->problems);
        buf_reset(&c->warnings);
        if (c->env_file)
            load_envfile(c, &raw, c->key_index);
        load_environ(&raw, envp, c->key_index);
        check = load_flags(c, &raw, argc, argv, c->key_index);
        if (pass == 0) {
            int is_file, ki = find_def("KEY_INDEX", 9, 0, &is_file);
            long n;
            if (raw.val[ki] && !parse_int(raw.val[ki], &n) && n >= 1 && n <= 99)
                c->key_index = (int)n;
            for (size_t i = 0; i < CFG_NDEFS; i++) {
                mem_free(raw.val[i]);
                mem_free(raw.file[i]);
            }
        }
    }
    apply_all(c, &raw);
    for (size_t i = 0; i < CFG_NDEFS; i++) {
        if (raw.val[i])
            memset(raw.val[i], 0, strlen(raw.val[i])); /* may be a secret */
        mem_free(raw.val[i]);
        mem_free(raw.file[i]);
    }
    snprintf(c->name, sizeof(c->name), "%s-%d", role_name(role), c->instance);
    if (c->problems.len)
        return BC_ECONFIG;
    return check ? CFG_CHECK_ONLY : CFG_RUN;
}

int cfg_dump(const struct config *c, struct buf *out)
{
    char key[96], shown[512];
    for (size_t i = 0; i < CFG_NDEFS; i++) {
        const struct cfg_def *d = &cfg_defs[i];
        const void *field = (const char *)c + d->off;
        def_name(d, c->key_index, key, sizeof(key));
        switch (d->type) {
        case CT_INT:
            buf_printf(out, "%s=%d\n", key, *(const int *)field);
            break;
        case CT_BOOL:
            buf_printf(out, "%s=%s\n", key, *(const int *)field ? "on" : "off");
            break;
        case CT_NUM:
            if (*(const int *)((const char *)c + d->has_off))
                buf_printf(out, "%s=%g\n", key, *(const double *)field);
            else
                buf_printf(out, "%s=\n", key);
            break;
        case CT_LEVEL:
            buf_printf(out, "%s=%s\n", key, log_level_name(*(const int *)field));
            break;
        case CT_STR:
        case CT_NAME:
        case CT_ID:
        case CT_IDS:
        case CT_HEX32:
            buf_printf(out, "%s=%s\n", key, *(char *const *)field ? *(char *const *)field : "");
            break;
        case CT_ENUM: {
            const char *p = d->choices;
            for (int k = 0; k < *(const int *)field; k++)
                p += strcspn(p, "|") + 1;
            buf_printf(out, "%s=%.*s\n", key, (int)strcspn(p, "|"), p);
            break;
        }
        case CT_URL:
            log_redact_url(*(char *const *)field ? *(char *const *)field : "", shown, sizeof(shown));
            buf_printf(out, "%s=%s\n", key, shown);
            break;
        case CT_SECRET:
            buf_printf(out, "%s=%s\n", key, ((const struct secret *)field)->fp);
            break;
        }
    }
    /* appends are checked once: a buf's failure is sticky (buf.h) */
    return buf_error(out);
}

void cfg_free(struct config *c)
{
    for (size_t i = 0; i < CFG_NDEFS; i++) {
        const struct cfg_def *d = &cfg_defs[i];
        void *field = (char *)c + d->off;
        if (d->type == CT_STR || d->type == CT_NAME || d->type == CT_URL || d->type == CT_ID ||
            d->type == CT_IDS || d->type == CT_HEX32) {
            mem_free(*(char **)field);
            *(char **)field = NULL;
        } else if (d->type == CT_SECRET) {
            secret_clear(field);
        }
    }
    mem_free(c->env_file);
    c->env_file = NULL;
    buf_free(&c->problems);
    buf_free(&c->warnings);
}
