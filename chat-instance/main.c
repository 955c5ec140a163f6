/* chat-instance: the chat role. Its job handlers arrive with the issues that
 * build them; until then its stream is consumed by the core, jobs of
 * unknown types are dead-lettered with a reason, and DIAG_JOBS=on enables
 * the pipeline probes. */
#include "core.h"

int main(int argc, char **argv, char **envp)
{
    return core_main(argc, argv, envp, ROLE_CHAT, NULL);
}
