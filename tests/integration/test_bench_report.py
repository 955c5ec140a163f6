"""Self-test of make bench's report code (tests/bench/report.py) on made-up
figures: the table, the ratios, the gnuplot scripts and the files. The
bench itself is never run by make test; this needs neither npm nor the
bench's setup (the PNGs are checked only when gnuplot is installed)."""

import json
import os
import shutil
import sys

import harness
from harness import check

sys.path.insert(0, os.path.join(harness.ROOT, "tests", "bench"))
import report  # noqa: E402


def fake_results():
    flood = {"count": 1000, "bytes": 1205000, "build_s": 0.1, "write_s": 0.5, "drain_wait_s": 0.4,
             "write_started_at": 100.0}
    ours = [{"count": 1000, "rate": r, "consume_rate": 900, "cpu_s": {"holder": 0.2, "redis": 0.1, "chat": 0.3},
             "rss_after_kb": 20480, "sim": flood, "series": [(0.05, 100), (0.2, 500), (0.4, 1000)]}
            for r in (150000, 180000, 160000)]
    djs = [{"count": 1000, "rate": r, "cpu_s": {"node": 1.5}, "rss_after_kb": 102400, "sim": flood,
            "series": [(0.1, 1000)]} for r in (50000, 40000, 60000)]
    ack = {"ours": [{"p50_ms": 1.0, "p99_ms": 4.0, "on_time_frac": 1.0, "sim_send_rate": 100,
                     "latencies_ms": [1.0, 2.0, 4.0]}],
           "djs": [{"p50_ms": 2.0, "p99_ms": 8.0, "on_time_frac": 0.5, "sim_send_rate": 100,
                    "latencies_ms": [2.0, 8.0]}]}
    return {"started_at": "2026-12-07T15:00:00+00:00", "machine": {"host": "test host/1", "cpus": 2},
            "versions": {"ours": "abc", "discord.js": "14.28.1"}, "config": {"runs": 3},
            "idle": {"ours": {"chat": {"rss_kb": [9000, 9100, 9200], "pss_kb": 4100,
                                       "rss_by_mapping_kb": {"libcrypto.so.3": 3100, "anonymous": 1500,
                                                             "chat-instance": 300}}},
                     "djs": {"rss_kb": [90000, 91000, 92000]}},
            "routing": {"ours": ours, "djs": djs, "ours_discard": ours, "redis": [{"rate": 300000.0}] * 3,
                        "event_bytes": 1205},
            "ack": {"low": ack, "high": ack, "low_rate": 100, "high_rate": 1000},
            "chats": [{"n": 10000, "stream_s": 30, "correct": 10000, "acked_on_time": 9990, "peak_inflight": 10000,
                       "provider_streams_peak": 64, "waited_s": 60,
                       "peak_rss_kb": 100000, "hwm_kb": 140000, "samples": [(0, 0, 9000), (1, 5000, 60000)]}],
            "failover": {"kills": 3, "times_s": [1.0, None, 2.0], "p50_s": 1.0, "p99_s": 2.0},
            "holder": {"messages_lost": 0, "messages_sent": 10, "messages_duplicated": 0,
                       "interactions_lost": 1, "interactions_sent": 5}}


@harness.timeout(30)
def test_bench_report(t):
    check(report.parse_redis_benchmark_csv('"test","rps","avg_latency_ms"\n"XADD k * d xx","123456.78","0.1"\n')
          == 123456.78, "redis-benchmark --csv parsed")
    check(report.parse_redis_benchmark_csv("garbage") is None, "no number: None")
    check(report.fmt_range([3, 1, 2], "MB") == "1.00–3.00 MB", report.fmt_range([3, 1, 2], "MB"))
    check(report.fmt_range([None]) == "n/a", "nothing to show")
    check(report.ratio_range([100, 200], [50, 50]) == "2.00–4.00 x", report.ratio_range([100, 200], [50, 50]))
    check(report.budget_ratio([150000, 140000], 150000, True).endswith("(missed)"), "worst run decides")
    check(report.budget_ratio([4.0], 5.0, False).endswith("(met)"), "lower is better")
    check(report.rate_series([(0.1, 100), (0.2, 300)]) == [(0.05, 1000.0), (0.15, 2000.0)],
          report.rate_series([(0.1, 100), (0.2, 300)]))
    res = fake_results()
    md = report.markdown(res)
    for want in ("| idle RSS, chat-instance | 8.79–8.98 MB | 87.9–89.8 MB (discord.js) |",
                 "| 150,000–180,000 | 40,000–60,000 (discord.js) | 2.67–4.50 x |",
                 "1.00–1.20 x (met); vs discord.js 2.67–4.50 x, needs 3x",
                 "| deferred ack p99 at 100/s, ms | 4.00 ms | 8.00 ms (discord.js) | 0.50 x | 0.80 x (met) |",
                 "correct within 60 s", "| 10,000 / 9,990 / 10,000 / 64 |",
                 "1.07 x (missed)", "1.00 / 2.00 s (1 never)", "| 0 of 10 / 0 |", "| 1 of 5 |",
                 "Ratios are ours / theirs", "| mapping | chat-instance |", "| libcrypto.so.3 | 3100 |",
                 "| **RSS** | 4900 |", "| **PSS** | 4100 |"):
        check(want in md, lambda: "%r not in:\n%s" % (want, md))
    specs = report.plot_specs(res)
    check([s[0] for s in specs] == ["ack_latency", "events_rate", "rss_chats"], [s[0] for s in specs])
    script = report.gnuplot_script(specs[0], "/x/a.png", "/x/d")
    check("set terminal pngcairo" in script and "'/x/d/ack_latency_1.dat'" in script, script)
    out = t.path("results")
    paths = report.write_all(res, out)
    stem = "2026-12-07-test_host_1"
    check(paths[0] == os.path.join(out, stem + ".json") and paths[1] == os.path.join(out, stem + ".md"), paths)
    with open(paths[0]) as f:
        check(json.load(f)["routing"]["event_bytes"] == 1205, "the JSON holds the results")
    if shutil.which("gnuplot"):
        check(len(paths) == 5 and all(os.path.getsize(p) > 1000 for p in paths[2:]), paths)
        with open(paths[1]) as f:
            check("![events_rate](%s-events_rate.png)" % stem in f.read(), "the table links its plots")
    else:
        t.log("gnuplot not installed: PNGs not checked")
    res["quick"], res["config"]["bench"] = True, ["routing", "ack"]
    check(report.stem_of(res) == stem + "-routing-ack-quick", report.stem_of(res))
    check(sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in paths), "no data files left behind")
