/* dpath: see dpath.h. Each endpoint is a template ("/channels/{id}/typing")
 * that build() writes piece by piece into a struct out; the first problem
 * sticks (a bad id wins over a short buffer) and empties the buffer. */
#include "discord/dpath.h"

#include <errno.h>
#include <string.h>

#include "base/err.h"

struct out {
    char *buf;
    size_t cap, len;
    int err;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->err)
        return;
    if (n >= o->cap - o->len) {
        o->err = BC_ETOOBIG; /* keep going: a bad id after this still says -EINVAL */
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void lit(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void snowflake(struct out *o, const char *s)
{
    if (!s || !dpath_is_snowflake(s, strlen(s)))
        o->err = -EINVAL;
    else
        lit(o, s);
}

static int token_ok(const char *s)
{
    size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~");
    return n > 0 && n <= DPATH_TOKEN_MAX && !s[n] && strcmp(s, ".") && strcmp(s, "..");
}

static void token(struct out *o, const char *s)
{
    if (!s || !token_ok(s))
        o->err = -EINVAL;
    else
        lit(o, s);
}

/* Write tmpl into buf: its text as it is, each "{id}" replaced by the next
 * of ids checked as a snowflake, each "{token}" by the next checked as a
 * token. */
static int build(char *buf, size_t cap, const char *tmpl, const char *const *ids)
{
    struct out o = {.buf = buf, .cap = cap, .err = buf && cap ? 0 : buf ? BC_ETOOBIG : -EINVAL};
    while (*tmpl) {
        size_t n = strcspn(tmpl, "{");
        put(&o, tmpl, n);
        tmpl += n;
        if (!strncmp(tmpl, "{id}", 4)) {
            snowflake(&o, *ids++);
            tmpl += 4;
        } else if (!strncmp(tmpl, "{token}", 7)) {
            token(&o, *ids++);
            tmpl += 7;
        } else if (*tmpl) {
            put(&o, tmpl++, 1); /* a literal "{": copied, and the walk moves on */
        }
    }
    if (buf && cap)
        buf[o.err ? 0 : o.len] = '\0';
    return o.err;
}

#define BUILD(buf, cap, tmpl, ...) build(buf, cap, tmpl, (const char *const[]){__VA_ARGS__, NULL})

int dpath_is_snowflake(const char *s, size_t n)
{
    if (n < 1 || n > 20)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

int dpath_channel_messages(char *buf, size_t cap, const char *channel_id)
{
    return BUILD(buf, cap, "/channels/{id}/messages", channel_id);
}

int dpath_channel_message(char *buf, size_t cap, const char *channel_id, const char *message_id)
{
    return BUILD(buf, cap, "/channels/{id}/messages/{id}", channel_id, message_id);
}

int dpath_channel_typing(char *buf, size_t cap, const char *channel_id)
{
    return BUILD(buf, cap, "/channels/{id}/typing", channel_id);
}

int dpath_webhook(char *buf, size_t cap, const char *app_id, const char *tok)
{
    return BUILD(buf, cap, "/webhooks/{id}/{token}", app_id, tok);
}

int dpath_webhook_original(char *buf, size_t cap, const char *app_id, const char *tok)
{
    return BUILD(buf, cap, "/webhooks/{id}/{token}/messages/@original", app_id, tok);
}

int dpath_interaction_callback(char *buf, size_t cap, const char *interaction_id, const char *tok)
{
    return BUILD(buf, cap, "/interactions/{id}/{token}/callback", interaction_id, tok);
}

int dpath_app_commands(char *buf, size_t cap, const char *app_id)
{
    return BUILD(buf, cap, "/applications/{id}/commands", app_id);
}

int dpath_guild_commands(char *buf, size_t cap, const char *app_id, const char *guild_id)
{
    return BUILD(buf, cap, "/applications/{id}/guilds/{id}/commands", app_id, guild_id);
}

int dpath_me(char *buf, size_t cap)
{
    return BUILD(buf, cap, "/users/@me", NULL);
}
