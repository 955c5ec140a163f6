/* Unit tests for perf: the counters an operator reads on /metrics, GET
 * /performance and the 60 s "performance" log line. What would show if it
 * broke: a job counted under the wrong role or result, a histogram
 * Prometheus rejects (not cumulative, +Inf not equal to _count), a family
 * declared twice, JSON that does not parse or says 0 % before any job. */
#include <json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "service/bus.h"
#include "base/err.h"
#include "base/log.h"
#include "process/perf.h"
#include "service/prov.h"
#include "ut.h"
#include "ut_log.h"

static struct buf metrics_of(const struct perf *p)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    UT_EQ_INT(perf_metrics(p, &b), 0);
    return b;
}

/* The value of the sample "series value" (series with its labels, exactly
 * as written); fails the case when the series is absent or there twice. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    const char *found = NULL;
    for (const char *l = text; *l;) {
        const char *nl = strchr(l, '\n');
        UT_ASSERT(nl); /* every line ends in a newline */
        if (!strncmp(l, series, n) && l[n] == ' ') {
            if (found)
                UT_FAIL("%s twice", series);
            found = l + n + 1;
        }
        l = nl + 1;
    }
    if (!found)
        UT_FAIL("no sample %s in:\n%s", series, text);
    char *end;
    double v = strtod(found, &end);
    UT_ASSERT(*end == '\n');
    return v;
}

static struct json_object *json_of(const struct perf *p, unsigned inflight, uint64_t up)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    UT_EQ_INT(perf_json(p, inflight, up, &b), 0);
    struct json_object *o = json_tokener_parse(buf_str(&b));
    if (!o)
        UT_FAIL("not JSON: %s", buf_str(&b));
    buf_free(&b);
    return o;
}

static struct json_object *get(struct json_object *o, const char *k)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, k, &v))
        UT_FAIL("no key %s in %s", k, json_object_to_json_string(o));
    return v;
}

static void test_jobs_counted_by_role_and_result(void)
{
    struct perf *p = perf_new();
    perf_job(p, "chat", "chat.message", BUS_DONE, 120);
    perf_job(p, "chat", "chat.message", BUS_DONE, 80);
    perf_job(p, "chat", "chat.message", BUS_FAILED, 10);
    perf_job(p, "video", "video.generate", BUS_DONE, 90000);
    perf_job(p, "image", "image.generate", BUS_RETRY, 5); /* not finished: not counted */
    struct buf b = metrics_of(p);
    const char *t = buf_str(&b);
    UT_EQ_INT(sample(t, "discordbot_job_results_total{role=\"chat\",result=\"done\"}"), 2);
    UT_EQ_INT(sample(t, "discordbot_job_results_total{role=\"chat\",result=\"failed\"}"), 1);
    UT_EQ_INT(sample(t, "discordbot_job_results_total{role=\"video\",result=\"done\"}"), 1);
    UT_EQ_INT(sample(t, "discordbot_job_results_total{role=\"image\",result=\"done\"}"), 0);
    UT_EQ_INT(sample(t, "discordbot_job_results_total{role=\"admin\",result=\"failed\"}"), 0);
    UT_EQ_INT(sample(t, "discordbot_job_duration_seconds_count{role=\"image\"}"), 0);
    /* "other" appears only once something was counted there */
    UT_NOT_CONTAINS(t, "role=\"other\"");
    buf_free(&b);
    perf_job(p, "chat-1", "x", BUS_DONE, 1);
    perf_job(p, NULL, "x", BUS_FAILED, 1);
    b = metrics_of(p);
    t = buf_str(&b);
    UT_EQ_INT(sample(t, "discordbot_job_results_total{role=\"other\",result=\"done\"}"), 1);
    UT_EQ_INT(sample(t, "discordbot_job_results_total{role=\"other\",result=\"failed\"}"), 1);
    UT_EQ_INT(sample(t, "discordbot_job_results_total{role=\"chat\",result=\"done\"}"), 2);
    buf_free(&b);
    perf_free(p);
}

static void test_histogram_is_cumulative_and_ends_in_count(void)
{
    struct perf *p = perf_new();
    /* bounds are inclusive (le): 50 ms is in 0.05, 51 ms is not */
    uint64_t ms[] = {0, 50, 51, 1000, 1001, 600000, 600001, 3600000};
    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
        perf_job(p, "image", "image.generate", i % 2 ? BUS_FAILED : BUS_DONE, ms[i]);
    struct buf b = metrics_of(p);
    const char *t = buf_str(&b);
    const char *le[] = {"0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "120", "300", "600", "+Inf"};
    double want[] = {2, 3, 3, 3, 4, 5, 5, 5, 5, 5, 5, 5, 6, 8};
    double prev = 0;
    for (size_t i = 0; i < sizeof(le) / sizeof(le[0]); i++) {
        char series[128];
        snprintf(series, sizeof series, "discordbot_job_duration_seconds_bucket{role=\"image\",le=\"%s\"}", le[i]);
        double v = sample(t, series);
        if (v != want[i])
            UT_FAIL("%s: %g, want %g", series, v, want[i]);
        UT_ASSERT(v >= prev);
        prev = v;
    }
    UT_EQ_INT(sample(t, "discordbot_job_duration_seconds_count{role=\"image\"}"), 8);
    double sum = sample(t, "discordbot_job_duration_seconds_sum{role=\"image\"}");
    UT_ASSERT(sum > 4802.103 - 0.0005 && sum < 4802.103 + 0.0005);
    buf_free(&b);
    perf_free(p);
}

/* Every family declared once, before its samples, and every sample in a
 * declared family (the Prometheus text format's rule). */
static void test_metrics_families_declared_once(void)
{
    struct perf *p = perf_new();
    perf_job(p, "admin", "diag.echo", BUS_DONE, 3);
    perf_provider(p, "openai", "ok");
    struct buf b = metrics_of(p);
    const char *t = buf_str(&b);
    const char *fam[] = {"discordbot_job_results_total", "discordbot_job_duration_seconds",
                         "discordbot_provider_requests_total"};
    for (size_t i = 0; i < 3; i++) {
        char line[128];
        snprintf(line, sizeof line, "# TYPE %s ", fam[i]);
        UT_EQ_INT(utlog_count_in(t, line), 1);
        snprintf(line, sizeof line, "# HELP %s ", fam[i]);
        UT_EQ_INT(utlog_count_in(t, line), 1);
    }
    UT_CONTAINS(t, "# TYPE discordbot_job_duration_seconds histogram\n");
    const char *current = NULL;
    for (const char *l = t; *l;) {
        const char *nl = strchr(l, '\n');
        if (!strncmp(l, "# TYPE ", 7)) {
            current = l + 7;
        } else if (*l != '#') {
            UT_ASSERT(current);
            size_t n = strcspn(current, " ");
            UT_ASSERT(!strncmp(l, current, n) && (l[n] == '{' || l[n] == '_'));
        }
        l = nl + 1;
    }
    buf_free(&b);
    perf_free(p);
}

static void test_provider_requests_by_status(void)
{
    struct perf *p = perf_new();
    /* every status a provider module can name has a row of its own */
    for (int s = PROV_OK; s <= PROV_CANCELLED; s++)
        for (int k = 0; k <= s; k++)
            perf_provider(p, "minimax", prov_status_name(s));
    perf_provider(p, "stability", "rate");
    perf_provider(p, "stability", "teapot");
    perf_provider(p, "stability", NULL);
    perf_provider(p, "anthropic", "ok");
    perf_provider(p, NULL, "ok");
    struct buf b = metrics_of(p);
    const char *t = buf_str(&b);
    for (int s = PROV_OK; s <= PROV_CANCELLED; s++) {
        char series[160];
        snprintf(series, sizeof series, "discordbot_provider_requests_total{provider=\"minimax\",status=\"%s\"}",
                 prov_status_name(s));
        UT_EQ_INT(sample(t, series), s + 1);
    }
    UT_EQ_INT(sample(t, "discordbot_provider_requests_total{provider=\"minimax\",status=\"other\"}"), 0);
    UT_EQ_INT(sample(t, "discordbot_provider_requests_total{provider=\"stability\",status=\"rate\"}"), 1);
    UT_EQ_INT(sample(t, "discordbot_provider_requests_total{provider=\"stability\",status=\"other\"}"), 2);
    UT_EQ_INT(sample(t, "discordbot_provider_requests_total{provider=\"other\",status=\"ok\"}"), 2);
    UT_EQ_INT(sample(t, "discordbot_provider_requests_total{provider=\"openai\",status=\"ok\"}"), 0);
    buf_free(&b);
    perf_free(p);
}

static void test_json_before_any_job(void)
{
    struct perf *p = perf_new();
    struct json_object *o = json_of(p, 0, 7);
    UT_EQ_INT(json_object_get_int64(get(o, "uptime_s")), 7);
    UT_EQ_INT(json_object_get_int64(get(o, "commands_processed")), 0);
    UT_ASSERT(get(o, "success_rate") == NULL);     /* null: no rate yet, not 0 % */
    UT_ASSERT(get(o, "avg_response_ms") == NULL);
    UT_EQ_INT(json_object_get_int64(get(o, "active_requests")), 0);
    struct json_object *by = get(o, "by_role");
    UT_EQ_INT(json_object_object_length(by), 4);
    UT_ASSERT(get(get(by, "video"), "avg_ms") == NULL);
    json_object_put(o);
    perf_free(p);
}

static void test_json_totals_and_rates(void)
{
    struct perf *p = perf_new();
    perf_job(p, "chat", "chat.message", BUS_DONE, 100);
    perf_job(p, "chat", "chat.message", BUS_DONE, 200);
    perf_job(p, "image", "image.generate", BUS_FAILED, 3000);
    perf_job(p, "nope", "x", BUS_DONE, 700);
    struct json_object *o = json_of(p, 3, 61);
    UT_EQ_INT(json_object_get_int64(get(o, "commands_processed")), 4);
    UT_EQ_INT(json_object_get_int64(get(o, "succeeded")), 3);
    UT_EQ_INT(json_object_get_int64(get(o, "failed")), 1);
    UT_ASSERT(json_object_get_double(get(o, "success_rate")) == 0.75);
    UT_ASSERT(json_object_get_double(get(o, "avg_response_ms")) == 1000.0);
    UT_EQ_INT(json_object_get_int64(get(o, "active_requests")), 3);
    struct json_object *by = get(o, "by_role");
    UT_EQ_INT(json_object_object_length(by), 5);
    UT_EQ_INT(json_object_get_int64(get(get(by, "chat"), "processed")), 2);
    UT_EQ_INT(json_object_get_int64(get(get(by, "chat"), "failed")), 0);
    UT_ASSERT(json_object_get_double(get(get(by, "chat"), "avg_ms")) == 150.0);
    UT_EQ_INT(json_object_get_int64(get(get(by, "image"), "failed")), 1);
    UT_EQ_INT(json_object_get_int64(get(get(by, "other"), "processed")), 1);
    json_object_put(o);
    perf_free(p);
}

static struct json_object *last_log_line(void)
{
    const char *text = utlog_text();
    UT_EQ_INT(utlog_count_in(text, "\n"), 1);
    struct json_object *o = json_tokener_parse(text);
    if (!o)
        UT_FAIL("not JSON: %s", text);
    return o;
}

static void test_log_line(void)
{
    struct perf *p = perf_new();
    utlog_start("chat-1", "chat", NULL);
    perf_log(p, 2);
    struct json_object *o = last_log_line();
    UT_EQ_STR(json_object_get_string(get(o, "msg")), "performance");
    UT_EQ_STR(json_object_get_string(get(o, "level")), "info");
    UT_EQ_INT(json_object_get_int64(get(o, "commands_processed")), 0);
    UT_EQ_INT(json_object_get_int64(get(o, "active_requests")), 2);
    UT_ASSERT(!json_object_object_get_ex(o, "success_rate", NULL)); /* no value yet */
    json_object_put(o);
    utlog_stop(LOG_INFO);

    perf_job(p, "video", "video.generate", BUS_DONE, 1000);
    perf_job(p, "video", "video.generate", BUS_FAILED, 2000);
    utlog_start("video-3", "video", NULL);
    perf_log(p, 0);
    o = last_log_line();
    UT_EQ_STR(json_object_get_string(get(o, "msg")), "performance");
    UT_EQ_INT(json_object_get_int64(get(o, "commands_processed")), 2);
    UT_EQ_INT(json_object_get_int64(get(o, "succeeded")), 1);
    UT_EQ_INT(json_object_get_int64(get(o, "failed")), 1);
    UT_ASSERT(json_object_get_double(get(o, "success_rate")) == 0.5);
    UT_ASSERT(json_object_get_double(get(o, "avg_response_ms")) == 1500.0);
    UT_EQ_INT(json_object_get_int64(get(o, "active_requests")), 0);
    json_object_put(o);
    utlog_stop(LOG_INFO);
    perf_free(p);
}

/* Past the cap of its buffer, /metrics and /performance text is refused
 * (the core then answers 500), never served cut: at every cap short of the
 * whole text the producer says so, and the whole text needs no more. Also
 * the size with every role, provider and status in use, so the cap the
 * core gives /metrics (64 KiB) is known to leave room. */
static void test_past_the_cap_is_an_error(void)
{
    struct perf *p = perf_new();
    perf_job(p, "chat", "t", BUS_DONE, 700000);
    perf_job(p, "nobody", "t", BUS_FAILED, 1);
    for (int i = 0; i < 60; i++)
        perf_provider(p, i % 2 ? "openai" : "minimax", "bad_request");
    struct buf whole = metrics_of(p);
    UT_ASSERT(whole.len > 4000 && whole.len < 16 << 10);
    for (size_t cap = 0; cap < whole.len; cap += cap < 64 ? 1 : 97) {
        struct buf b;
        buf_init(&b, cap);
        UT_EQ_INT(perf_metrics(p, &b), BC_ETOOBIG);
        buf_free(&b);
    }
    struct buf b;
    buf_init(&b, whole.len);
    UT_EQ_INT(perf_metrics(p, &b), 0);
    UT_EQ_STR(buf_str(&b), buf_str(&whole));
    buf_free(&b);
    /* an earlier failed append to the same buffer is reported too */
    buf_init(&b, 1 << 20);
    UT_EQ_INT(buf_append(&b, "x", 2 << 20), BC_ETOOBIG);
    UT_EQ_INT(perf_metrics(p, &b), BC_ETOOBIG);
    buf_free(&b);
    buf_init(&b, 40);
    UT_EQ_INT(perf_json(p, 0, 1, &b), BC_ETOOBIG);
    buf_free(&b);
    buf_free(&whole);
    perf_free(p);
}

static void test_null_perf_is_a_no_op(void)
{
    perf_job(NULL, "chat", "x", BUS_DONE, 1);
    perf_provider(NULL, "openai", "ok");
    perf_free(NULL);
}

static const struct ut_case cases[] = {
    UT_CASE(test_jobs_counted_by_role_and_result),
    UT_CASE(test_histogram_is_cumulative_and_ends_in_count),
    UT_CASE(test_metrics_families_declared_once),
    UT_CASE(test_provider_requests_by_status),
    UT_CASE(test_json_before_any_job),
    UT_CASE(test_json_totals_and_rates),
    UT_CASE(test_log_line),
    UT_CASE(test_past_the_cap_is_an_error),
    UT_CASE(test_null_perf_is_a_no_op),
    {NULL, NULL},
};

UT_MAIN(cases)
