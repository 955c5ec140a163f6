/* chat-instance: streaming LLM chat (/채팅, /chat). */
#include "chat.h"
#include "core.h"

int main(int argc, char **argv, char **envp)
{
    return core_main(argc, argv, envp, ROLE_CHAT, chat_setup);
}
