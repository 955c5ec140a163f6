/* The video role's row (base/role.h) and slash commands (rows in commands.c;
 * see discord/cmds.h).
 * Every binary carries this table: any instance routes /비디오 to the video
 * stream. */
#ifndef BC_VIDEO_COMMANDS_H
#define BC_VIDEO_COMMANDS_H

#include "base/role.h"
#include "discord/cmds.h"

enum video_cmd { VIDEO_CMD_VIDEO };

extern const struct cmd_table video_commands;
extern const struct role_def video_role;

#endif
