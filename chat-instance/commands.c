#include "commands.h"

#include "base/config.h"

static const struct cmd_option opt_question[] = {
    {.key = "question", .name = "질문", .name_en = "question", .type = CMD_OPT_STRING, .required = 1,
     .desc_en = "What to ask", .desc_ko = "물어볼 내용", .max_length = 4000},
    {0},
};
static const struct cmd_choice choice_on_off[] = {
    {"on", "켜기", "on"},
    {"off", "끄기", "off"},
    {0},
};
static const struct cmd_option opt_mode[] = {
    {.key = "mode", .name = "모드", .name_en = "mode", .type = CMD_OPT_STRING, .required = 1,
     .desc_en = "on: every message; off: mentions only", .desc_ko = "켜기: 모든 메시지, 끄기: 멘션만",
     .choices = choice_on_off},
    {0},
};

/* Korean commands with English twins: each language types its own name. */
static const struct cmd_def defs[] = {
    {.key = "chat", .id = CHAT_CMD_CHAT, .name = "채팅", .name_en = "chat", .twin = 1, .role = ROLE_CHAT,
     .desc_en = "Chat with the AI", .desc_ko = "AI와 대화합니다", .options = opt_question, .available = 1},
    {.key = "reset", .id = CHAT_CMD_RESET, .name = "초기화", .name_en = "reset", .twin = 1, .role = ROLE_CHAT,
     .desc_en = "Forget your conversation in this channel", .desc_ko = "이 채널에서의 대화 기록을 지웁니다",
     .ephemeral = 1, .available = 1},
    {.key = "chatmode", .id = CHAT_CMD_MODE, .name = "채팅모드", .name_en = "chatmode", .twin = 1,
     .role = ROLE_CHAT, .desc_en = "Answer every message in this channel (on) or only mentions (off)",
     .desc_ko = "이 채널의 모든 메시지에 답할지(켜기) 멘션에만 답할지(끄기) 정합니다", .options = opt_mode,
     .available = 1, .permissions = "16" /* MANAGE_CHANNELS */},
    {.key = "usage", .id = CHAT_CMD_USAGE, .name = "사용량", .name_en = "usage", .twin = 1, .role = ROLE_CHAT,
     .desc_en = "Your usage today", .desc_ko = "오늘의 사용량", .open_everywhere = 1, .ephemeral = 1,
     .available = 1},
};

const struct cmd_table chat_commands = {defs, sizeof(defs) / sizeof(defs[0])};

/* Its commands are used in the channels CHAT_CHANNELS names. */
static const char *channels(const struct config *cfg)
{
    return cfg->chat_channels;
}

/* What every instance knows of the chat role (base/role.h). */
const struct role_def chat_role = {.id = ROLE_CHAT, .name = "chat", .max_inflight = 10000,
    .channels = channels, .gets_messages = 1, .commands = &chat_commands};
