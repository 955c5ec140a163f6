/* perf: what an instance has done, for operators: jobs by role and result,
 * job run times, provider requests by status.
 *
 * Plain counters in fixed arrays, updated and read on the loop: memory is
 * bounded whatever names callers pass (an unknown role, provider or status
 * is counted as "other"), nothing here allocates after perf_new, does I/O
 * other than perf_log's one log line, or calls back. The core owns one perf
 * per process (core_perf in core.h) and feeds it every job the bus finishes;
 * it serves the figures as Prometheus text on /metrics (perf_metrics), as
 * JSON on GET /performance (perf_json) and logs them every 60 s (perf_log).
 * Counters start at zero with the process and never go down. */
#ifndef BC_PERF_H
#define BC_PERF_H

#include <stdint.h>

#include "base/buf.h"

struct perf;

/* A new perf with every counter at zero; free it with perf_free. Never
 * NULL (mem.h policy). */
struct perf *perf_new(void);
/* NULL is a no-op. */
void perf_free(struct perf *p);

/* Count one finished job of role ("chat", "image", "video", "admin"; any
 * other name or NULL counts under "other") that ran ms milliseconds.
 * result is an enum bus_result (bus.h): BUS_DONE counts as succeeded,
 * BUS_FAILED as failed; any other value (BUS_RETRY: not finished) is
 * ignored. type is the job type; it is not kept (the set of types is open,
 * so labelling by it would not be bounded). p NULL is a no-op. */
void perf_job(struct perf *p, const char *role, const char *type, int result, uint64_t ms);

/* Count one request to provider ("openai", "minimax", "stability", else
 * "other") that came to status, a prov_status_name (prov.h): "ok", "auth",
 * "quota", "rate", "server", "timeout", "network", "bad_request",
 * "refused", "filtered", "protocol", "cancelled"; any other name or NULL
 * counts as "other". p NULL is a no-op. */
void perf_provider(struct perf *p, const char *provider, const char *status);

/* Append the Prometheus text exposition of the counters to out, each family
 * with its # HELP and # TYPE line once:
 *   discordbot_job_results_total{role,result}     counter, result done|failed
 *   discordbot_job_duration_seconds{role}         histogram (_bucket{le},
 *                                                 _sum, _count), buckets
 *                                                 0.05 s to 600 s and +Inf
 *   discordbot_provider_requests_total{provider,status}   counter
 * The four roles and every provider x status pair are always present (at
 * 0); the "other" role only once a job was counted under it. The
 * per-role job counter is not discordbot_jobs_total: the core already
 * exports that family, by result only (with retries and dead letters).
 * Returns 0, or buf_error(out) when out could not hold it all (out's cap,
 * or an earlier failed append to out): the text is then incomplete and
 * must not be served. */
int perf_metrics(const struct perf *p, struct buf *out) __attribute__((warn_unused_result));

/* Append the JSON object GET /performance answers to out:
 *   {"uptime_s", "commands_processed" (jobs finished: succeeded + failed),
 *    "succeeded", "failed", "success_rate" (0..1, null before the first
 *    job), "avg_response_ms" (null before the first job), "active_requests"
 *    (inflight, as given), "by_role": {role: {"processed", "failed",
 *    "avg_ms" (null when none)}}}
 * by_role always has the four roles; "other" only when it has jobs.
 * Returns 0 or buf_error(out), as perf_metrics. */
int perf_json(const struct perf *p, unsigned inflight, uint64_t uptime_s, struct buf *out)
    __attribute__((warn_unused_result));

/* Log one info line "performance" with the fields commands_processed,
 * succeeded, failed, success_rate and avg_response_ms (both left out
 * before the first job, where they have no value) and active_requests
 * (inflight, as given). */
void perf_log(const struct perf *p, unsigned inflight);

#endif
