#include "base/role.h"

static const struct role_def *rows[ROLE_LAST + 1]; /* by id; set by roles_use */

void roles_use(const struct role_def *const *defs)
{
    for (int r = 0; r <= ROLE_LAST; r++)
        rows[r] = NULL;
    for (; defs && *defs; defs++)
        if ((*defs)->id >= ROLE_FIRST && (*defs)->id <= ROLE_LAST)
            rows[(*defs)->id] = *defs;
}

const struct role_def *role_def(enum role r)
{
    return r >= ROLE_FIRST && r <= ROLE_LAST ? rows[r] : NULL;
}

const char *role_name(enum role r)
{
    const struct role_def *d = role_def(r);
    return d ? d->name : "unknown";
}

enum role role_taker(void)
{
    for (int r = ROLE_FIRST; r <= ROLE_LAST; r++)
        if (rows[r] && rows[r]->takes_over)
            return (enum role)r;
    return 0;
}

enum role role_for_messages(void)
{
    for (int r = ROLE_FIRST; r <= ROLE_LAST; r++)
        if (rows[r] && rows[r]->gets_messages)
            return (enum role)r;
    return 0;
}
