/* The image role's row (base/role.h) and slash commands (rows in commands.c;
 * see discord/cmds.h).
 * Every binary carries this table: any instance routes /이미지 to the image
 * stream. */
#ifndef BC_IMAGE_COMMANDS_H
#define BC_IMAGE_COMMANDS_H

#include "base/role.h"
#include "discord/cmds.h"

enum image_cmd { IMAGE_CMD_MINIMAX, IMAGE_CMD_STABILITY };

extern const struct cmd_table image_commands;
extern const struct role_def image_role;

#endif
