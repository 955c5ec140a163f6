/* video-instance: the video role (/비디오 with MiniMax, durable jobs). */
#include "core.h"
#include "vidjob.h"

int main(int argc, char **argv, char **envp)
{
    return core_main(argc, argv, envp, ROLE_VIDEO, vidjob_setup);
}
