#include "commands.h"

#include "base/config.h"

/* One command each, with an English name localization. /핑 is for everyone;
 * the other two are hidden from members without Administrator ("0"). */
static const struct cmd_def defs[] = {
    {.key = "ping", .id = ADMIN_CMD_PING, .name = "핑", .name_en = "ping", .role = ROLE_ADMIN,
     .desc_en = "Latency of the gateway, REST and Redis", .desc_ko = "게이트웨이, REST, Redis 지연 시간",
     .open_everywhere = 1, .ephemeral = 1, .available = 1},
    {.key = "status", .id = ADMIN_CMD_STATUS, .name = "상태", .name_en = "status", .role = ROLE_ADMIN,
     .desc_en = "Cluster status", .desc_ko = "클러스터 상태", .admin = 1, .open_everywhere = 1, .ephemeral = 1,
     .available = 1},
    {.key = "instances", .id = ADMIN_CMD_INSTANCES, .name = "인스턴스", .name_en = "instances", .role = ROLE_ADMIN,
     .desc_en = "Which instance serves which role", .desc_ko = "어느 인스턴스가 어떤 역할을 맡는지", .admin = 1,
     .open_everywhere = 1, .ephemeral = 1, .available = 1},
};

const struct cmd_table admin_commands = {defs, sizeof(defs) / sizeof(defs[0])};

/* What every instance knows of the admin role (base/role.h). */
const struct role_def admin_role = {.id = ROLE_ADMIN, .name = "admin", .max_inflight = 64, .takes_over = 1,
    .commands = &admin_commands};
