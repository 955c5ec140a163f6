/* cmds: the slash commands, declared once.
 *
 * One table lists every command with its Korean and English texts, its
 * options, the role whose stream serves it, whether it is an admin command
 * (default_member_permissions "0", usable everywhere), which members may use
 * it otherwise (a permission bitfield such as "16", MANAGE_CHANNELS) and
 * whether this build has a handler for it. A Korean command and its English
 * twin (채팅 and chat) are two entries served by one handler. From the table
 * come the JSON for Discord's bulk overwrite (PUT .../commands) and a hash of
 * that JSON, so commands are registered only when the set changed. */
#ifndef BC_CMDS_H
#define BC_CMDS_H

#include "base/buf.h"
#include "base/config.h"

enum cmd_opt_type { CMD_OPT_STRING = 3, CMD_OPT_INTEGER = 4, CMD_OPT_BOOLEAN = 5, CMD_OPT_NUMBER = 10,
                    CMD_OPT_ATTACHMENT = 11 };

/* A fixed choice of a string option: shown as name_en (name_ko for Korean
 * clients), sent to the bot as value. */
struct cmd_choice {
    const char *name_en, *name_ko, *value;
};

struct cmd_option {
    const char *name;
    int type;
    int required;
    const char *desc_en, *desc_ko;
    int max_length;              /* strings; 0 = none */
    int has_range;               /* numbers */
    double min_value, max_value;
    const struct cmd_choice *choices; /* strings; NULL or ended by a zero entry */
};

struct cmd_def {
    const char *name;            /* as registered, e.g. "채팅" or "chat" */
    const char *name_en;         /* en-US name localization, or NULL */
    enum role role;
    const char *desc_en, *desc_ko;
    const struct cmd_option *options;
    int admin;                   /* default_member_permissions "0", any channel */
    int open_everywhere;         /* not bound to the role's channels */
    int ephemeral;               /* deferred answer visible only to the caller */
    int available;               /* this build answers it */
    const char *permissions;     /* default_member_permissions of a non-admin
                                    command (decimal bitfield), or NULL: everyone */
};

/* The command named name (as registered or by its en-US localization), or NULL. */
const struct cmd_def *cmds_find(const char *name);
const struct cmd_def *cmds_all(int *n);
/* JSON array for PUT /applications/{app}/commands into out. */
void cmds_json(struct buf *out);
/* Hex SHA-256 of cmds_json (65 bytes with the NUL). */
void cmds_hash(char out[65]);

#endif
