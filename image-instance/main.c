/* image-instance: the image role. Like every instance it can also answer the
 * admin commands while no admin instance is alive. */
#include "admin-instance/admincmd.h"
#include "process/core.h"
#include "imgjob.h"

static int setup(struct core *c)
{
    int rc = imgjob_setup(c);
    return rc ? rc : admincmd_setup(c);
}

int main(int argc, char **argv, char **envp)
{
    return core_main(argc, argv, envp, ROLE_IMAGE, setup);
}
