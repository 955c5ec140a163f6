/* vidjob: the video role's /비디오 — minutes-long MiniMax videos that survive
 * crashes.
 *
 * Every video is a row of the jobs table (kind 'video'), keyed by the
 * interaction id, written BEFORE the paid submit:
 *   submitting → submitted (the task id recorded) → polling → done | failed.
 * The stream entry is acked once the row says submitted (or failed), so the
 * row, not the stream, carries the job from then on. A redelivered
 * interaction finds its row and never submits again; a row found in state
 * submitting after a crash cannot tell whether MiniMax got the request, so
 * it is reconciled (failed, the user told, the quota given back), never
 * resubmitted. On start, when PostgreSQL (re)connects and every 30 s, the
 * instance resumes polling every unfinished row it owns.
 *
 * While it waits, the deferred response shows the state, the elapsed time
 * and a progress bar; when the interaction token nears its 15 minutes (or
 * Discord refuses it) progress and the result move to a channel message
 * that mentions the user. The finished file is downloaded to VIDEO_DIR
 * (streamed, capped at VIDEO_MAX_MB) and attached if it fits the
 * interaction's attachment_size_limit, else linked. VIDEO_TIMEOUT_MIN ends a
 * job with a clear message. One video in progress per user
 * (USER_MAX_VIDEO_JOBS) and USER_DAILY_VIDEOS a day. See docs/videos.md. */
#ifndef BC_VIDJOB_H
#define BC_VIDJOB_H

struct core;

int vidjob_setup(struct core *c);

/* ---- internal: shared with the tests and the fuzz target ---------------- */

#include <stdint.h>
#include "discord/ixjob.h"

/* What a /비디오 interaction asks for, read from its options. */
struct vidjob__req {
    const char *prompt;     /* borrowed from the job; "" when absent */
    const char *resolution; /* borrowed; "768P" when absent (checked later) */
    int duration;           /* seconds as given (checked later); 6 when absent */
    int64_t upload_limit;   /* bytes an attachment may have here */
};

/* Read ix's options. Pure; never fails. */
void vidjob__decode(const struct ixjob *ix, struct vidjob__req *out);

#endif
