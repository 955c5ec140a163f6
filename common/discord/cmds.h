/* cmds: the slash commands, as tables the roles declare.
 *
 * Each role lists its commands in its own folder (<role>-instance/
 * commands.c): one row per command, with its canonical key (English, what
 * logs and handlers call it), the role's number for it (the case of the
 * role's dispatch switch), its Korean and English names and texts, its
 * options (each with a key of its own), whether it is an admin command
 * (default_member_permissions "0", usable everywhere), which members may use
 * it otherwise (a permission bitfield such as "16", MANAGE_CHANNELS) and
 * whether this build has a handler for it.
 *
 * A command's English name is either a localization of the same command
 * (핑 shows as "ping" to English clients) or, for a twin, a second
 * registered command served by the same row and handler (채팅 and chat:
 * two commands, so that each language types its own name and option
 * names). Every instance routes any command to the stream of the role that
 * serves it, so every binary carries every role's table (rows only, not
 * the roles' code): main.c hands them to cmds_use before anything looks a
 * command up. From the tables come the JSON for Discord's bulk overwrite
 * (PUT .../commands) and a hash of that JSON, so commands are registered
 * only when the set changed. */
#ifndef BC_CMDS_H
#define BC_CMDS_H

#include <stddef.h>

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
    const char *key;             /* what the handler asks for (ixjob_option) */
    const char *name;            /* as registered */
    const char *name_en;         /* its name in an English twin; NULL: name */
    int type;
    int required;
    const char *desc_en, *desc_ko;
    int max_length;              /* strings; 0 = none */
    int has_range;               /* numbers */
    double min_value, max_value;
    const struct cmd_choice *choices; /* strings; NULL or ended by a zero entry */
};

struct cmd_def {
    const char *key;             /* canonical, e.g. "chat" */
    int id;                      /* the role's number for it */
    const char *name;            /* as registered, e.g. "채팅" */
    const char *name_en;         /* English name, or NULL */
    int twin;                    /* name_en is a command of its own, not a localization */
    enum role role;
    const char *desc_en, *desc_ko;
    const struct cmd_option *options; /* NULL or ended by a zero entry */
    int admin;                   /* default_member_permissions "0", any channel */
    int open_everywhere;         /* not bound to the role's channels */
    int ephemeral;               /* deferred answer visible only to the caller */
    int available;               /* this build answers it */
    const char *permissions;     /* default_member_permissions of a non-admin
                                    command (decimal bitfield), or NULL: everyone */
};

/* One role's rows. */
struct cmd_table {
    const struct cmd_def *defs;
    size_t n;
};

/* The tables of every role, NULL-terminated, in registration order; kept
 * (not copied) until the next call. Call once before any lookup. */
void cmds_use(const struct cmd_table *const *tables);
/* The command registered as name (a twin's English name included) or
 * localized so, or NULL. *en (may be NULL) is 1 for an English twin's name,
 * whose options go by their name_en. */
const struct cmd_def *cmds_find(const char *name, int *en);
/* The name option key has in d's Korean (en 0) or English twin (en 1)
 * command, or NULL when d has no such option. */
const char *cmds_option_name(const struct cmd_def *d, int en, const char *key);
/* How many commands are registered (a twin counts twice). */
size_t cmds_count(void);
/* JSON array for PUT /applications/{app}/commands into out. */
void cmds_json(struct buf *out);
/* Hex SHA-256 of cmds_json (65 bytes with the NUL). */
void cmds_hash(char out[65]);

#endif
