#include "commands.h"

#include "base/config.h"

static const struct cmd_choice choice_ratio[] = {
    {"1:1 square", "1:1 정사각형", "1:1"},   {"16:9 wide", "16:9 가로", "16:9"},   {"4:3", "4:3", "4:3"},
    {"3:2", "3:2", "3:2"},                   {"2:3", "2:3", "2:3"},               {"3:4", "3:4", "3:4"},
    {"9:16 tall", "9:16 세로", "9:16"},      {"21:9 cinema", "21:9 영화", "21:9"}, {0},
};
static const struct cmd_option opt_image[] = {
    {.key = "prompt", .name = "설명", .type = CMD_OPT_STRING, .required = 1, .desc_en = "What to draw",
     .desc_ko = "그릴 그림 설명", .max_length = 1500},
    {.key = "ratio", .name = "비율", .type = CMD_OPT_STRING, .desc_en = "Aspect ratio (default 1:1)",
     .desc_ko = "가로세로 비율 (기본 1:1)", .choices = choice_ratio},
    {.key = "count", .name = "개수", .type = CMD_OPT_INTEGER, .desc_en = "How many images (1-4, default 1)",
     .desc_ko = "만들 이미지 수 (1-4, 기본 1)", .has_range = 1, .min_value = 1, .max_value = 4},
    {0},
};
static const struct cmd_option opt_img[] = {
    {.key = "prompt", .name = "설명", .type = CMD_OPT_STRING, .required = 1, .desc_en = "What to draw",
     .desc_ko = "그릴 그림 설명", .max_length = 1500},
    {.key = "image", .name = "이미지", .type = CMD_OPT_ATTACHMENT,
     .desc_en = "Image to start from (PNG, JPEG or WEBP)", .desc_ko = "바탕이 될 이미지 (PNG, JPEG, WEBP)"},
    {.key = "strength", .name = "강도", .type = CMD_OPT_NUMBER, .desc_en = "How far to move from the image (0-1)",
     .desc_ko = "원본에서 벗어나는 정도 (0-1)", .has_range = 1, .min_value = 0, .max_value = 1},
    {0},
};

static const struct cmd_def defs[] = {
    {.key = "image", .id = IMAGE_CMD_MINIMAX, .name = "이미지", .role = ROLE_IMAGE,
     .desc_en = "Generate an image (MiniMax)", .desc_ko = "이미지를 만듭니다 (MiniMax)", .options = opt_image,
     .available = 1},
    {.key = "img", .id = IMAGE_CMD_STABILITY, .name = "img", .role = ROLE_IMAGE,
     .desc_en = "Generate or transform an image (Stability)", .desc_ko = "이미지를 만들거나 바꿉니다 (Stability)",
     .options = opt_img, .available = 1},
};

const struct cmd_table image_commands = {defs, sizeof(defs) / sizeof(defs[0])};

/* Its commands are used in the channels IMAGE_CHANNELS names. */
static const char *channels(const struct config *cfg)
{
    return cfg->image_channels;
}

/* What every instance knows of the image role (base/role.h). */
const struct role_def image_role = {.id = ROLE_IMAGE, .name = "image", .max_inflight = 64,
    .channels = channels, .commands = &image_commands};
