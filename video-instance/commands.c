#include "commands.h"

#include "base/config.h"

static const struct cmd_choice choice_length[] = {
    {"6 seconds", "6초", "6"},
    {"10 seconds", "10초", "10"},
    {0},
};
static const struct cmd_choice choice_resolution[] = {
    {"768P", "768P", "768P"},
    {"1080P (6 s only)", "1080P (6초만)", "1080P"},
    {0},
};
static const struct cmd_option opt_video[] = {
    {.key = "prompt", .name = "설명", .type = CMD_OPT_STRING, .required = 1, .desc_en = "What the video shows",
     .desc_ko = "만들 영상 설명", .max_length = 2000},
    {.key = "length", .name = "길이", .type = CMD_OPT_STRING, .desc_en = "Length (default 6 s)",
     .desc_ko = "길이 (기본 6초)", .choices = choice_length},
    {.key = "resolution", .name = "해상도", .type = CMD_OPT_STRING, .desc_en = "Resolution (default 768P)",
     .desc_ko = "해상도 (기본 768P)", .choices = choice_resolution},
    {0},
};

static const struct cmd_def defs[] = {
    {.key = "video", .id = VIDEO_CMD_VIDEO, .name = "비디오", .role = ROLE_VIDEO,
     .desc_en = "Generate a video (MiniMax)", .desc_ko = "영상을 만듭니다 (MiniMax)", .options = opt_video,
     .available = 1},
};

const struct cmd_table video_commands = {defs, sizeof(defs) / sizeof(defs[0])};

/* Its commands are used in the channels VIDEO_CHANNELS names. */
static const char *channels(const struct config *cfg)
{
    return cfg->video_channels;
}

/* What every instance knows of the video role (base/role.h). */
const struct role_def video_role = {.id = ROLE_VIDEO, .name = "video", .max_inflight = 64,
    .channels = channels, .commands = &video_commands};
