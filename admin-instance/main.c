/* admin-instance: monitoring and the backup for every role. It registers
 * the slash commands at start (when they changed) and answers the admin
 * commands (/핑, /상태, /인스턴스: see admincmd.h). It links the chat,
 * image and video roles' libraries because it takes their streams over
 * when their instances stop beating (docs/architecture.md); setup is the
 * list of the roles it can serve, each registering its handlers. */
#include "admincmd.h"
#include "chat-instance/chatjob.h"
#include "chat-instance/commands.h"
#include "commands.h"
#include "image-instance/commands.h"
#include "image-instance/imgjob.h"
#include "process/core.h"
#include "video-instance/commands.h"
#include "video-instance/vidjob.h"

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
    static const struct role_def *const roles[] = {&chat_role, &image_role, &video_role, &admin_role, NULL};
    return core_main(argc, argv, envp, ROLE_ADMIN, roles, setup);
}
