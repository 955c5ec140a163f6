/* admincmd: the admin role's commands, servable by any instance.
 *
 * The admin role's stream carries /핑 (ping.h, open to everyone), /상태 and
 * /인스턴스. Any instance may read that stream (the admin instance, or
 * whoever takes the role over when it is down: see failover.h), so every
 * instance registers this handler for the "admin" role.
 *
 *  /상태 (/status)      an ephemeral embed: every instance seen (role,
 *                       state, uptime, jobs in flight, processed, failed;
 *                       "taken over" when another instance serves its
 *                       role), each role's stream backlog and pending
 *                       count, the provider keys' state by fingerprint
 *                       (never anything else of a key), today's usage
 *                       (UTC) against the per-user daily limits, and
 *                       whether Redis and PostgreSQL answer (with their
 *                       round trip).
 *  /인스턴스 (/instances) an ephemeral embed: who serves each role right
 *                       now and which channels (CHAT_CHANNELS ...) are the
 *                       role's.
 *
 * Both are checked here, on the server side, whatever Discord's command
 * permissions say: the member must hold ADMINISTRATOR (bit 3 of the
 * interaction's member permissions) or one of the roles in ADMIN_ROLE_IDS;
 * in a DM they are refused. Refusals and answers are in Korean when the
 * user's locale starts with "ko", else English. Embeds keep within
 * Discord's limits (25 fields, 1024 characters per field value, 6000 in
 * all): what does not fit ends with "… and N more".
 *
 * Everything runs on the loop; a job's Redis and PostgreSQL requests run
 * in parallel and are bounded (at most 16 key-pool hashes and 20 keys
 * shown). A job cancelled by the bus at shutdown touches nothing after
 * its cancel callback; its memory is freed once the last reply owed to it
 * has come back. */
#ifndef BC_ADMINCMD_H
#define BC_ADMINCMD_H

struct core;

/* Register the admin role's interaction handler on core_bus(c) (for the
 * "admin" stream only). Call it from a role's setup. Returns 0 or
 * bus_register_role's error (-EEXIST when already registered). */
int admincmd_setup(struct core *c);

#endif
