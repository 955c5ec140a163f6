/* dpath: every Discord REST path the bot asks for, built in one place.
 *
 * One function per endpoint writes its path, relative to the API base and
 * ready for drest_req.path, into the caller's buffer. Each id is checked
 * before it is written, so an id taken from a job payload or from Discord
 * can never add a segment, a dot segment or a query to a path, nor move a
 * request into another route's rate limit bucket:
 *  - a snowflake (channel, message, guild, application, interaction id) is
 *    1 to 20 decimal digits, the test drest uses to find a route's major
 *    parameter (dpath_is_snowflake);
 *  - a webhook or interaction token is 1 to DPATH_TOKEN_MAX characters
 *    that need no percent-encoding in a URL (A-Z a-z 0-9 - . _ ~), and not
 *    "." or "..".
 *
 * Every builder returns 0 with the path in buf, or, with buf set to ""
 * whenever cap > 0, so that a truncated path is never sent:
 *   -EINVAL     an id is NULL or not a snowflake, a token is not a token,
 *               or buf is NULL
 *   BC_ETOOBIG  the path and its NUL need more than cap bytes (ids valid);
 *               a buffer of DPATH_MAX bytes is always big enough.
 * Nothing is kept and nothing is freed; callable from any thread. */
#ifndef BC_DPATH_H
#define BC_DPATH_H

#include <stddef.h>

#define DPATH_TOKEN_MAX 511 /* the ingress refuses longer interaction tokens */
#define DPATH_MAX 600       /* > "/webhooks/" 20 "/" DPATH_TOKEN_MAX "/messages/@original" */

/* 1 when s[0..n) is a Discord snowflake (1 to 20 decimal digits), else 0. */
int dpath_is_snowflake(const char *s, size_t n);

/* POST: /channels/{channel}/messages */
int dpath_channel_messages(char *buf, size_t cap, const char *channel_id);
/* PATCH, DELETE: /channels/{channel}/messages/{message} */
int dpath_channel_message(char *buf, size_t cap, const char *channel_id, const char *message_id);
/* POST: /channels/{channel}/typing */
int dpath_channel_typing(char *buf, size_t cap, const char *channel_id);
/* POST (a follow-up message): /webhooks/{application}/{token} */
int dpath_webhook(char *buf, size_t cap, const char *app_id, const char *token);
/* GET, PATCH, DELETE: /webhooks/{application}/{token}/messages/@original */
int dpath_webhook_original(char *buf, size_t cap, const char *app_id, const char *token);
/* POST: /interactions/{interaction}/{token}/callback */
int dpath_interaction_callback(char *buf, size_t cap, const char *interaction_id, const char *token);
/* PUT: /applications/{application}/commands */
int dpath_app_commands(char *buf, size_t cap, const char *app_id);
/* PUT: /applications/{application}/guilds/{guild}/commands */
int dpath_guild_commands(char *buf, size_t cap, const char *app_id, const char *guild_id);
/* GET: /users/@me */
int dpath_me(char *buf, size_t cap);

#endif
