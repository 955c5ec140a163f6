/* image-instance: the image role (/이미지 with MiniMax, /img with Stability). */
#include "core.h"
#include "imgjob.h"

int main(int argc, char **argv, char **envp)
{
    return core_main(argc, argv, envp, ROLE_IMAGE, imgjob_setup);
}
