/* dpath: see dpath.h. A path is written piece by piece into a struct out;
 * the first problem sticks (a bad id wins over a short buffer) and done()
 * turns it into the result, emptying the buffer on failure. */
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

static struct out start(char *buf, size_t cap)
{
    return (struct out){.buf = buf, .cap = cap, .err = buf && cap ? 0 : buf ? BC_ETOOBIG : -EINVAL};
}

static int done(struct out *o)
{
    if (o->buf && o->cap)
        o->buf[o->err ? 0 : o->len] = '\0';
    return o->err;
}

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
    struct out o = start(buf, cap);
    lit(&o, "/channels/");
    snowflake(&o, channel_id);
    lit(&o, "/messages");
    return done(&o);
}

int dpath_channel_message(char *buf, size_t cap, const char *channel_id, const char *message_id)
{
    struct out o = start(buf, cap);
    lit(&o, "/channels/");
    snowflake(&o, channel_id);
    lit(&o, "/messages/");
    snowflake(&o, message_id);
    return done(&o);
}

int dpath_channel_typing(char *buf, size_t cap, const char *channel_id)
{
    struct out o = start(buf, cap);
    lit(&o, "/channels/");
    snowflake(&o, channel_id);
    lit(&o, "/typing");
    return done(&o);
}

int dpath_webhook(char *buf, size_t cap, const char *app_id, const char *tok)
{
    struct out o = start(buf, cap);
    lit(&o, "/webhooks/");
    snowflake(&o, app_id);
    lit(&o, "/");
    token(&o, tok);
    return done(&o);
}

int dpath_webhook_original(char *buf, size_t cap, const char *app_id, const char *tok)
{
    struct out o = start(buf, cap);
    lit(&o, "/webhooks/");
    snowflake(&o, app_id);
    lit(&o, "/");
    token(&o, tok);
    lit(&o, "/messages/@original");
    return done(&o);
}

int dpath_interaction_callback(char *buf, size_t cap, const char *interaction_id, const char *tok)
{
    struct out o = start(buf, cap);
    lit(&o, "/interactions/");
    snowflake(&o, interaction_id);
    lit(&o, "/");
    token(&o, tok);
    lit(&o, "/callback");
    return done(&o);
}

int dpath_app_commands(char *buf, size_t cap, const char *app_id)
{
    struct out o = start(buf, cap);
    lit(&o, "/applications/");
    snowflake(&o, app_id);
    lit(&o, "/commands");
    return done(&o);
}

int dpath_guild_commands(char *buf, size_t cap, const char *app_id, const char *guild_id)
{
    struct out o = start(buf, cap);
    lit(&o, "/applications/");
    snowflake(&o, app_id);
    lit(&o, "/guilds/");
    snowflake(&o, guild_id);
    lit(&o, "/commands");
    return done(&o);
}

int dpath_me(char *buf, size_t cap)
{
    struct out o = start(buf, cap);
    lit(&o, "/users/@me");
    return done(&o);
}
