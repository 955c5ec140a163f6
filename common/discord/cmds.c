#include "discord/cmds.h"

#include <json.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

static const struct cmd_option opt_question_ko[] = {
    {"질문", CMD_OPT_STRING, 1, "What to ask", "물어볼 내용", 4000, 0, 0, 0},
    {0},
};
static const struct cmd_option opt_question_en[] = {
    {"question", CMD_OPT_STRING, 1, "What to ask", "물어볼 내용", 4000, 0, 0, 0},
    {0},
};
static const struct cmd_choice choice_ratio[] = {
    {"1:1 square", "1:1 정사각형", "1:1"},   {"16:9 wide", "16:9 가로", "16:9"},   {"4:3", "4:3", "4:3"},
    {"3:2", "3:2", "3:2"},                   {"2:3", "2:3", "2:3"},               {"3:4", "3:4", "3:4"},
    {"9:16 tall", "9:16 세로", "9:16"},      {"21:9 cinema", "21:9 영화", "21:9"}, {0},
};
static const struct cmd_option opt_image[] = {
    {"설명", CMD_OPT_STRING, 1, "What to draw", "그릴 그림 설명", 1500, 0, 0, 0},
    {"비율", CMD_OPT_STRING, 0, "Aspect ratio (default 1:1)", "가로세로 비율 (기본 1:1)", 0, 0, 0, 0, choice_ratio},
    {"개수", CMD_OPT_INTEGER, 0, "How many images (1-4, default 1)", "만들 이미지 수 (1-4, 기본 1)", 0, 1, 1, 4},
    {0},
};
static const struct cmd_option opt_img[] = {
    {"설명", CMD_OPT_STRING, 1, "What to draw", "그릴 그림 설명", 1500, 0, 0, 0},
    {"이미지", CMD_OPT_ATTACHMENT, 0, "Image to start from (PNG, JPEG or WEBP)", "바탕이 될 이미지 (PNG, JPEG, WEBP)", 0,
     0, 0, 0},
    {"강도", CMD_OPT_NUMBER, 0, "How far to move from the image (0-1)", "원본에서 벗어나는 정도 (0-1)", 0, 1, 0, 1},
    {0},
};
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
    {"설명", CMD_OPT_STRING, 1, "What the video shows", "만들 영상 설명", 2000, 0, 0, 0},
    {"길이", CMD_OPT_STRING, 0, "Length (default 6 s)", "길이 (기본 6초)", 0, 0, 0, 0, choice_length},
    {"해상도", CMD_OPT_STRING, 0, "Resolution (default 768P)", "해상도 (기본 768P)", 0, 0, 0, 0, choice_resolution},
    {0},
};

static const struct cmd_choice choice_on_off[] = {
    {"on", "켜기", "on"},
    {"off", "끄기", "off"},
    {0},
};
static const struct cmd_option opt_mode_ko[] = {
    {"모드", CMD_OPT_STRING, 1, "on: every message; off: mentions only", "켜기: 모든 메시지, 끄기: 멘션만", 0, 0, 0, 0,
     choice_on_off},
    {0},
};
static const struct cmd_option opt_mode_en[] = {
    {"mode", CMD_OPT_STRING, 1, "on: every message; off: mentions only", "켜기: 모든 메시지, 끄기: 멘션만", 0, 0, 0, 0,
     choice_on_off},
    {0},
};

#define PERM_MANAGE_CHANNELS "16"
#define DESC_RESET_EN "Forget your conversation in this channel"
#define DESC_RESET_KO "이 채널에서의 대화 기록을 지웁니다"
#define DESC_MODE_EN "Answer every message in this channel (on) or only mentions (off)"
#define DESC_MODE_KO "이 채널의 모든 메시지에 답할지(켜기) 멘션에만 답할지(끄기) 정합니다"

/* A Korean command with an English twin (채팅 and chat) has no en-US name
 * localization: English clients would otherwise see two commands of the
 * same name. */
static const struct cmd_def cmd_table[] = {
    {"채팅", NULL, ROLE_CHAT, "Chat with the AI", "AI와 대화합니다", opt_question_ko, 0, 0, 0, 1},
    {"chat", NULL, ROLE_CHAT, "Chat with the AI", "AI와 대화합니다", opt_question_en, 0, 0, 0, 1},
    {"초기화", NULL, ROLE_CHAT, DESC_RESET_EN, DESC_RESET_KO, NULL, 0, 0, 1, 1, NULL},
    {"reset", NULL, ROLE_CHAT, DESC_RESET_EN, DESC_RESET_KO, NULL, 0, 0, 1, 1, NULL},
    {"채팅모드", NULL, ROLE_CHAT, DESC_MODE_EN, DESC_MODE_KO, opt_mode_ko, 0, 0, 0, 1, PERM_MANAGE_CHANNELS},
    {"chatmode", NULL, ROLE_CHAT, DESC_MODE_EN, DESC_MODE_KO, opt_mode_en, 0, 0, 0, 1, PERM_MANAGE_CHANNELS},
    {"사용량", NULL, ROLE_CHAT, "Your usage today", "오늘의 사용량", NULL, 0, 1, 1, 1, NULL},
    {"usage", NULL, ROLE_CHAT, "Your usage today", "오늘의 사용량", NULL, 0, 1, 1, 1, NULL},
    {"이미지", NULL, ROLE_IMAGE, "Generate an image (MiniMax)", "이미지를 만듭니다 (MiniMax)", opt_image, 0, 0, 0, 1},
    {"img", NULL, ROLE_IMAGE, "Generate or transform an image (Stability)", "이미지를 만들거나 바꿉니다 (Stability)",
     opt_img, 0, 0, 0, 1},
    {"비디오", NULL, ROLE_VIDEO, "Generate a video (MiniMax)", "영상을 만듭니다 (MiniMax)", opt_video, 0, 0, 0, 1},
    {"핑", "ping", ROLE_ADMIN, "Latency of the gateway, REST and Redis", "게이트웨이, REST, Redis 지연 시간", NULL, 0, 1,
     1, 1},
    {"상태", "status", ROLE_ADMIN, "Cluster status", "클러스터 상태", NULL, 1, 1, 1, 1},
    {"인스턴스", "instances", ROLE_ADMIN, "Which instance serves which role", "어느 인스턴스가 어떤 역할을 맡는지", NULL, 1,
     1, 1, 1},
};
#define CMD_COUNT (sizeof(cmd_table) / sizeof(cmd_table[0]))

const struct cmd_def *cmds_all(int *n)
{
    *n = (int)CMD_COUNT;
    return cmd_table;
}

const struct cmd_def *cmds_find(const char *name)
{
    for (size_t i = 0; i < CMD_COUNT; i++)
        if (!strcmp(cmd_table[i].name, name) || (cmd_table[i].name_en && !strcmp(cmd_table[i].name_en, name)))
            return &cmd_table[i];
    return NULL;
}

static struct json_object *ko(const char *text)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "ko", json_object_new_string(text));
    return o;
}

static struct json_object *choices_json(const struct cmd_choice *ch)
{
    struct json_object *arr = json_object_new_array();
    for (; ch->value; ch++) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string(ch->name_en));
        json_object_object_add(o, "name_localizations", ko(ch->name_ko));
        json_object_object_add(o, "value", json_object_new_string(ch->value));
        json_object_array_add(arr, o);
    }
    return arr;
}

static struct json_object *option_json(const struct cmd_option *op)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_int(op->type));
    json_object_object_add(o, "name", json_object_new_string(op->name));
    json_object_object_add(o, "description", json_object_new_string(op->desc_en));
    json_object_object_add(o, "description_localizations", ko(op->desc_ko));
    json_object_object_add(o, "required", json_object_new_boolean(op->required));
    if (op->max_length)
        json_object_object_add(o, "max_length", json_object_new_int(op->max_length));
    if (op->has_range) {
        json_object_object_add(o, "min_value", json_object_new_double(op->min_value));
        json_object_object_add(o, "max_value", json_object_new_double(op->max_value));
    }
    if (op->choices)
        json_object_object_add(o, "choices", choices_json(op->choices));
    return o;
}

static struct json_object *command_json(const struct cmd_def *c)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(c->name));
    if (c->name_en) {
        struct json_object *loc = json_object_new_object();
        json_object_object_add(loc, "en-US", json_object_new_string(c->name_en));
        json_object_object_add(loc, "en-GB", json_object_new_string(c->name_en));
        json_object_object_add(o, "name_localizations", loc);
    }
    json_object_object_add(o, "type", json_object_new_int(1));
    json_object_object_add(o, "description", json_object_new_string(c->desc_en));
    json_object_object_add(o, "description_localizations", ko(c->desc_ko));
    if (c->admin || c->permissions)
        json_object_object_add(o, "default_member_permissions",
                               json_object_new_string(c->admin ? "0" : c->permissions));
    struct json_object *opts = json_object_new_array();
    for (const struct cmd_option *op = c->options; op && op->name; op++)
        json_object_array_add(opts, option_json(op));
    json_object_object_add(o, "options", opts);
    return o;
}

void cmds_json(struct buf *out)
{
    struct json_object *arr = json_object_new_array();
    for (size_t i = 0; i < CMD_COUNT; i++)
        json_object_array_add(arr, command_json(&cmd_table[i]));
    buf_puts(out, json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(arr);
}

void cmds_hash(char out[65])
{
    struct buf b;
    buf_init(&b, 1 << 20);
    cmds_json(&b);
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)buf_str(&b), b.len);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
    buf_free(&b);
}
