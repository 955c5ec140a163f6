/* perf: see perf.h. */
#include "process/perf.h"

#include <inttypes.h>
#include <string.h>

#include "service/bus.h"
#include "base/config.h"
#include "base/log.h"
#include "base/mem.h"

#define NROLES (ROLE_COUNT + 1) /* the four, then "other" */
#define ROLE_OTHER ROLE_COUNT

/* Bucket bounds in ms, and the same as Prometheus "le" labels (seconds),
 * written out so that the labels never depend on float formatting. */
static const uint64_t bucket_ms[] = {50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000, 600000};
static const char *const bucket_le[] = {"0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
                                        "10",   "30",  "60",   "120", "300", "600"};
#define NBUCKETS (sizeof(bucket_ms) / sizeof(bucket_ms[0]))

static const char *const providers[] = {"openai", "minimax", "stability", "other"};
#define NPROVIDERS (sizeof(providers) / sizeof(providers[0]))

/* prov_status_name's names (prov.h), then "other" for anything else */
static const char *const statuses[] = {"ok",       "auth",     "quota",    "rate",      "server",
                                       "timeout",  "network",  "bad_request", "refused", "filtered",
                                       "protocol", "cancelled", "other"};
#define NSTATUSES (sizeof(statuses) / sizeof(statuses[0]))

struct perf_role {
    uint64_t done, failed;
    uint64_t sum_ms;
    uint64_t bucket[NBUCKETS + 1]; /* not cumulative; the last is over 600 s */
};

struct perf {
    struct perf_role role[NROLES];
    uint64_t prov[NPROVIDERS][NSTATUSES];
};

struct perf *perf_new(void)
{
    return mem_calloc(1, sizeof(struct perf));
}

void perf_free(struct perf *p)
{
    mem_free(p);
}

static const char *role_label(int i)
{
    return i == ROLE_OTHER ? "other" : role_name((enum role)(i + 1));
}

static int role_index(const char *role)
{
    for (int i = 0; role && i < ROLE_OTHER; i++)
        if (!strcmp(role, role_label(i)))
            return i;
    return ROLE_OTHER;
}

/* The index of name in names[n], the last ("other") when absent. */
static size_t name_index(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; name && i < n - 1; i++)
        if (!strcmp(name, names[i]))
            return i;
    return n - 1;
}

void perf_job(struct perf *p, const char *role, const char *type, int result, uint64_t ms)
{
    (void)type;
    if (!p || (result != BUS_DONE && result != BUS_FAILED))
        return;
    struct perf_role *r = &p->role[role_index(role)];
    if (result == BUS_DONE)
        r->done++;
    else
        r->failed++;
    r->sum_ms += ms;
    size_t b = 0;
    while (b < NBUCKETS && ms > bucket_ms[b])
        b++;
    r->bucket[b]++;
}

void perf_provider(struct perf *p, const char *provider, const char *status)
{
    if (!p)
        return;
    p->prov[name_index(providers, NPROVIDERS, provider)][name_index(statuses, NSTATUSES, status)]++;
}

/* ---- reading --------------------------------------------------------------- */

struct totals {
    uint64_t done, failed, sum_ms;
};

static void totals(const struct perf *p, struct totals *t)
{
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < NROLES; i++) {
        t->done += p->role[i].done;
        t->failed += p->role[i].failed;
        t->sum_ms += p->role[i].sum_ms;
    }
}

static int role_shown(const struct perf *p, int i)
{
    return i != ROLE_OTHER || p->role[i].done + p->role[i].failed > 0;
}

static void metrics_jobs(const struct perf *p, struct buf *out)
{
    buf_puts(out, "# HELP discordbot_job_results_total Jobs finished, by the role whose stream they came from and "
                  "result.\n# TYPE discordbot_job_results_total counter\n");
    for (int i = 0; i < NROLES; i++)
        if (role_shown(p, i))
            buf_printf(out,
                       "discordbot_job_results_total{role=\"%s\",result=\"done\"} %" PRIu64 "\n"
                       "discordbot_job_results_total{role=\"%s\",result=\"failed\"} %" PRIu64 "\n",
                       role_label(i), p->role[i].done, role_label(i), p->role[i].failed);
}

static void metrics_durations(const struct perf *p, struct buf *out)
{
    buf_puts(out, "# HELP discordbot_job_duration_seconds Run time of finished jobs, by role.\n"
                  "# TYPE discordbot_job_duration_seconds histogram\n");
    for (int i = 0; i < NROLES; i++) {
        if (!role_shown(p, i))
            continue;
        const struct perf_role *r = &p->role[i];
        uint64_t cum = 0;
        for (size_t b = 0; b < NBUCKETS; b++) {
            cum += r->bucket[b];
            buf_printf(out, "discordbot_job_duration_seconds_bucket{role=\"%s\",le=\"%s\"} %" PRIu64 "\n",
                       role_label(i), bucket_le[b], cum);
        }
        buf_printf(out,
                   "discordbot_job_duration_seconds_bucket{role=\"%s\",le=\"+Inf\"} %" PRIu64 "\n"
                   "discordbot_job_duration_seconds_sum{role=\"%s\"} %.3f\n"
                   "discordbot_job_duration_seconds_count{role=\"%s\"} %" PRIu64 "\n",
                   role_label(i), cum + r->bucket[NBUCKETS], role_label(i), (double)r->sum_ms / 1000.0,
                   role_label(i), r->done + r->failed);
    }
}

static void metrics_providers(const struct perf *p, struct buf *out)
{
    buf_puts(out, "# HELP discordbot_provider_requests_total AI provider requests, by provider and outcome.\n"
                  "# TYPE discordbot_provider_requests_total counter\n");
    for (size_t i = 0; i < NPROVIDERS; i++)
        for (size_t s = 0; s < NSTATUSES; s++)
            buf_printf(out, "discordbot_provider_requests_total{provider=\"%s\",status=\"%s\"} %" PRIu64 "\n",
                       providers[i], statuses[s], p->prov[i][s]);
}

/* The appends above are not checked one by one: a buf's failure is sticky
 * (buf.h), so one check at the end tells whether all of it is there. */
int perf_metrics(const struct perf *p, struct buf *out)
{
    metrics_jobs(p, out);
    metrics_durations(p, out);
    metrics_providers(p, out);
    return buf_error(out);
}

/* sum/n with that many decimals, or null when n is 0 */
static void json_avg(struct buf *out, uint64_t sum, uint64_t n, int decimals)
{
    if (n)
        buf_printf(out, "%.*f", decimals, (double)sum / (double)n);
    else
        buf_puts(out, "null");
}

int perf_json(const struct perf *p, unsigned inflight, uint64_t uptime_s, struct buf *out)
{
    struct totals t;
    totals(p, &t);
    uint64_t n = t.done + t.failed;
    buf_printf(out,
               "{\"uptime_s\":%" PRIu64 ",\"commands_processed\":%" PRIu64 ",\"succeeded\":%" PRIu64
               ",\"failed\":%" PRIu64 ",\"success_rate\":",
               uptime_s, n, t.done, t.failed);
    json_avg(out, t.done, n, 4);
    buf_puts(out, ",\"avg_response_ms\":");
    json_avg(out, t.sum_ms, n, 3);
    buf_printf(out, ",\"active_requests\":%u,\"by_role\":{", inflight);
    for (int i = 0, first = 1; i < NROLES; i++) {
        if (!role_shown(p, i))
            continue;
        const struct perf_role *r = &p->role[i];
        buf_printf(out, "%s\"%s\":{\"processed\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"avg_ms\":", first ? "" : ",",
                   role_label(i), r->done + r->failed, r->failed);
        json_avg(out, r->sum_ms, r->done + r->failed, 3);
        buf_puts(out, "}");
        first = 0;
    }
    buf_puts(out, "}}");
    return buf_error(out);
}

void perf_log(const struct perf *p, unsigned inflight)
{
    struct totals t;
    totals(p, &t);
    uint64_t n = t.done + t.failed;
    if (!n) {
        log_info("performance", LF_INT("commands_processed", 0), LF_INT("succeeded", 0), LF_INT("failed", 0),
                 LF_INT("active_requests", inflight));
        return;
    }
    log_info("performance", LF_INT("commands_processed", n), LF_INT("succeeded", t.done), LF_INT("failed", t.failed),
             LF_DBL("success_rate", (double)t.done / (double)n),
             LF_DBL("avg_response_ms", (double)t.sum_ms / (double)n), LF_INT("active_requests", inflight));
}
