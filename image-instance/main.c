/* image-instance: the image role (/이미지, /img). Like every instance it can
 * also answer the admin commands while no admin instance is alive, so it
 * links the admin role's library too. Every instance routes any command to
 * the role that serves it, so it carries every role's command table (rows,
 * not code). */
#include "admin-instance/admincmd.h"
#include "admin-instance/commands.h"
#include "chat-instance/commands.h"
#include "commands.h"
#include "imgjob.h"
#include "process/core.h"
#include "video-instance/commands.h"

static int setup(struct core *c)
{
    int rc = imgjob_setup(c);
    return rc ? rc : admincmd_setup(c);
}

int main(int argc, char **argv, char **envp)
{
    static const struct role_def *const roles[] = {&chat_role, &image_role, &video_role, &admin_role, NULL};
    return core_main(argc, argv, envp, ROLE_IMAGE, roles, setup);
}
