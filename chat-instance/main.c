/* chat-instance: streaming LLM chat (/채팅, /chat, chat channels). Like
 * every instance it can also answer the admin commands while no admin
 * instance is alive. */
#include "admin-instance/admincmd.h"
#include "chatjob.h"
#include "process/core.h"

static int setup(struct core *c)
{
    int rc = chatjob_setup(c);
    return rc ? rc : admincmd_setup(c);
}

int main(int argc, char **argv, char **envp)
{
    return core_main(argc, argv, envp, ROLE_CHAT, setup);
}
