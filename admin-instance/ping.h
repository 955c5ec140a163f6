/* ping: /핑 (/ping) — which instance answered, and the latencies of the
 * gateway heartbeat (as published by the holder), a REST round trip and a
 * Redis round trip. Open to everyone, answered ephemerally. Part of the
 * admin role, which any instance may serve (see admincmd.h), so it lives
 * in the core library. */
#ifndef BC_PING_H
#define BC_PING_H

struct core;
struct bus_job;
struct ixjob;

/* Takes over job and ix (ix is freed when done). */
void ping_run(struct core *c, struct bus_job *job, struct ixjob *ix);

#endif
