#include "base/err.h"

#include <string.h>

static const char *const bc_msgs[] = {
    "invalid configuration",
    "redis error reply",
    "postgresql error",
    "protocol error",
    "input too large",
    "shutting down",
    "no handler for job type",
    "http transfer failed",
    "dependency unavailable",
};

const char *bc_strerror(int err)
{
    if (err >= 0)
        return "success";
    if (err >= BC_EFIRST && err < BC_ELAST)
        return bc_msgs[err - BC_EFIRST];
    if (err > -4096)
        return strerror(-err);
    return "unknown error";
}
