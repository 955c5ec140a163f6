/* admin-instance: monitoring and the backup for every role. It registers
 * the slash commands at start (when they changed) and answers the admin
 * commands; /핑 is served in this version, /상태 and /인스턴스 say they are
 * not available yet (see common/cmds.c). */
#include <string.h>

#include "bus.h"
#include "core.h"
#include "ixjob.h"
#include "ping.h"

static void on_interaction(struct bus *b, struct bus_job *job, void *arg)
{
    (void)b;
    struct core *c = arg;
    struct ixjob ix;
    if (ixjob_parse(&ix, job->payload)) {
        bus_finish(job, BUS_FAILED, "malformed interaction job");
        return;
    }
    if (!strcmp(ix.command, "핑")) {
        ping_run(c, job, &ix);
        return;
    }
    ixjob_free(&ix);
    bus_finish(job, BUS_FAILED, "command not served by the admin role in this version");
}

static int admin_setup(struct core *c)
{
    return bus_register(core_bus(c), "discord.interaction", on_interaction, c);
}

int main(int argc, char **argv, char **envp)
{
    return core_main(argc, argv, envp, ROLE_ADMIN, admin_setup);
}
