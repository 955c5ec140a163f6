/* The chat role's row (base/role.h) and slash commands (rows in commands.c;
 * see discord/cmds.h).
 * Every binary carries this table: any instance routes /채팅 to the chat
 * stream. */
#ifndef BC_CHAT_COMMANDS_H
#define BC_CHAT_COMMANDS_H

#include "base/role.h"
#include "discord/cmds.h"

enum chat_cmd { CHAT_CMD_CHAT, CHAT_CMD_RESET, CHAT_CMD_MODE, CHAT_CMD_USAGE };

extern const struct cmd_table chat_commands;
extern const struct role_def chat_role;

#endif
