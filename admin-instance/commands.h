/* The admin role's row (base/role.h) and slash commands (rows in commands.c;
 * see discord/cmds.h).
 * Every binary carries this table: any instance routes /핑 to the admin
 * stream. */
#ifndef BC_ADMIN_COMMANDS_H
#define BC_ADMIN_COMMANDS_H

#include "base/role.h"
#include "discord/cmds.h"

enum admin_cmd { ADMIN_CMD_PING, ADMIN_CMD_STATUS, ADMIN_CMD_INSTANCES };

extern const struct cmd_table admin_commands;
extern const struct role_def admin_role;

#endif
