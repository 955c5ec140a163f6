/* role: what the cluster knows of its roles, as rows the roles give.
 *
 * A role is a stream of jobs and the instances that serve it. common/ has
 * no branch on a particular role: each role's folder describes its role in
 * a struct role_def (<role>-instance/commands.c), every binary's main.c
 * hands the list to core_main, and core_main to roles_use, before anything
 * asks. What a row says (name, channels, who gets plain messages, who
 * takes over) is what config, ingress, failover and core go by.
 *
 * The ids below name the cluster's streams, as stored in Redis and sent
 * between instances; they are fixed so that instances built apart agree. */
#ifndef BC_ROLE_H
#define BC_ROLE_H

#include <stddef.h>

enum role { ROLE_CHAT = 1, ROLE_IMAGE = 2, ROLE_VIDEO = 3, ROLE_ADMIN = 4 };
#define ROLE_FIRST ROLE_CHAT
#define ROLE_LAST ROLE_ADMIN
#define ROLE_COUNT 4

struct config;
struct cmd_table; /* discord/cmds.h: carried here, read only by core */

struct role_def {
    enum role id;
    const char *name;           /* its stream, its consumers' and instances' names */
    int max_inflight;           /* MAX_INFLIGHT's default for its instances */
    /* the channel name globs of its commands (a setting), or NULL: its
     * commands may be used in any channel */
    const char *(*channels)(const struct config *cfg);
    unsigned gets_messages : 1; /* plain messages (mentions, DMs, chat mode) go to its stream */
    unsigned takes_over : 1;    /* serves any role with no live instance, and
                                 * registers the slash commands at start */
    const struct cmd_table *commands;
};

/* The rows of every role, NULL-terminated; kept (not copied). Call once,
 * before anything below (core_main does; so do ut.h and fuzz.h). */
void roles_use(const struct role_def *const *defs);

/* The row of r, or NULL when r is not a role. */
const struct role_def *role_def(enum role r);
/* r's name, or "unknown". */
const char *role_name(enum role r);
/* The role whose row says takes_over, or gets_messages (0 when none). */
enum role role_taker(void);
enum role role_for_messages(void);

#endif
