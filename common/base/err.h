/* err: the project's one result convention.
 *
 * Every function that can fail returns int: 0 (or a count) on success and a
 * negative value on failure. A negative value is either -errno (system calls
 * and libuv, which use the same numbers on Linux) or one of the BC_E* codes
 * below, which live far away from errno's range. Human-readable detail lives
 * in the handle that failed (its errstr), never in a global. */
#ifndef BC_ERR_H
#define BC_ERR_H

enum {
    BC_EFIRST = -20000,
    BC_ECONFIG = BC_EFIRST, /* invalid configuration */
    BC_EREDIS,              /* Redis answered with an error reply */
    BC_EPG,                 /* PostgreSQL reported an error */
    BC_EPROTO,              /* peer sent something we cannot parse */
    BC_ETOOBIG,             /* input exceeds its configured cap */
    BC_ESHUTDOWN,           /* the component is closing */
    BC_ENOHANDLER,          /* no handler for this job type */
    BC_EHTTP,               /* HTTP transfer failed (detail in handle) */
    BC_EDEGRADED,           /* dependency down, feature unavailable */
    BC_ELAST
};

/* Returns a static description of err; never NULL. */
const char *bc_strerror(int err);

#endif
