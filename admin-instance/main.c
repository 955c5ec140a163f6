/* admin-instance: monitoring and the backup for every role. It registers
 * the slash commands at start (when they changed) and answers the admin
 * commands (/핑, /상태, /인스턴스: see common/admincmd.h). Setup is a short
 * list of role setups: each role that this instance can serve registers
 * its handlers here. */
#include "admincmd.h"
#include "chatjob.h"
#include "core.h"
#include "imgjob.h"
#include "vidjob.h"

static int setup(struct core *c)
{
    int rc = admincmd_setup(c);
    /* the roles it takes over when their instances are down (its own keys) */
    if (!rc)
        rc = chatjob_setup(c);
    if (!rc)
        rc = imgjob_setup(c);
    if (!rc)
        rc = vidjob_setup(c);
    return rc;
}

int main(int argc, char **argv, char **envp)
{
    return core_main(argc, argv, envp, ROLE_ADMIN, setup);
}
