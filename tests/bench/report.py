"""What make bench writes from its results: the Markdown table, the PNG
plots (gnuplot) and the JSON. Pure functions of the results dict built by
tests/bench/bench.py, so that tests/integration/test_bench_report.py can
check them on made-up figures without running the bench.

    report.write_all(results, "bench/results") -> [json, md, png...] paths
"""

import csv
import io
import json
import os
import re
import shutil
import subprocess

# The budget of the issue "Faster than discord.js where it counts".
BUDGET = {
    "routed_eps": 150000,          # events/s routed into the Redis stream
    "routed_vs_djs": 3.0,          # ... and at least 3x discord.js in the same run
    "chats_rss_kb": 128 * 1024,    # 10,000 concurrent streamed chats within 128 MB
    "ack_p99_ms": 5.0,             # deferred ack p99 at 100 interactions/s
    "idle_rss_kb": 10 * 1024,      # per instance
    "failover_p99_s": 3.0,
}


ALL_BENCHES = ("idle", "routing", "ack", "chats", "failover", "holder")


def parse_redis_benchmark_csv(text):
    """Requests per second from `redis-benchmark --csv` output (the last
    data row; the header row, when there is one, is skipped). None if
    there is no number."""
    rate = None
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2:
            try:
                rate = float(row[1])
            except ValueError:
                continue
    return rate


def _nums(values):
    return [v for v in values if isinstance(v, (int, float))]


def span(values):
    """(min, max) of the numbers among values, or None."""
    v = _nums(values)
    return (min(v), max(v)) if v else None


def fmt_num(x, digits=None):
    if x is None:
        return "n/a"
    if isinstance(x, int) and digits is None:
        return "{:,}".format(x)
    if digits is None:
        digits = 0 if abs(x) >= 100 else (1 if abs(x) >= 10 else 2)
    s = "%.*f" % (digits, x)
    if digits == 0:
        s = "{:,}".format(int(round(x)))
    return s


def fmt_range(values, unit="", scale=1.0, digits=None):
    """'a–b unit' over the numbers in values (scaled), 'a unit' when they
    are all equal, 'n/a' when there are none."""
    sp = span(values)
    if sp is None:
        return "n/a"
    lo, hi = sp[0] * scale, sp[1] * scale
    text = fmt_num(lo, digits) if fmt_num(lo, digits) == fmt_num(hi, digits) else \
        "%s–%s" % (fmt_num(lo, digits), fmt_num(hi, digits))
    return text + (" " + unit if unit else "")


def ratio_range(ours, theirs):
    """Every ratio ours[i]/theirs[j] is not meaningful for alternating runs:
    pair run i with run i, and give min–max of those ratios."""
    pairs = [(a, b) for a, b in zip(ours, theirs) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b]
    if not pairs:
        return "n/a"
    return fmt_range([a / b for a, b in pairs], "x", digits=2)


def budget_ratio(values, budget, higher_is_better):
    """'x.xx–y.yy of budget, met/missed' (met judged on the worst run)."""
    v = _nums(values)
    if not v or not budget:
        return "n/a"
    worst = min(v) if higher_is_better else max(v)
    met = worst >= budget if higher_is_better else worst <= budget
    return "%s (%s)" % (fmt_range([x / budget for x in v], "x", digits=2), "met" if met else "missed")


def _get(d, *path):
    for p in path:
        if d is None:
            return None
        d = d.get(p) if isinstance(d, dict) else None
    return d


def rows(res):
    """The table: (figure, ours, theirs or ceiling, ours/theirs, budget)."""
    out = []
    idle = res.get("idle")
    if idle:
        for role, v in sorted(idle["ours"].items()):
            out.append(("idle RSS, %s-instance" % role, fmt_range(v["rss_kb"], "MB", 1 / 1024.0),
                        fmt_range(_get(idle, "djs", "rss_kb") or [], "MB", 1 / 1024.0) + " (discord.js)",
                        ratio_range(v["rss_kb"], _get(idle, "djs", "rss_kb") or []),
                        budget_ratio(v["rss_kb"], BUDGET["idle_rss_kb"], False)))
    rt = res.get("routing")
    if rt:
        ours = [r.get("rate") for r in rt["ours"]]
        djs = [r.get("rate") for r in rt.get("djs", [])]
        red = [r.get("rate") for r in rt.get("redis", [])]
        n = fmt_num(rt["ours"][0]["count"]) if rt["ours"] else "?"
        eb = rt.get("event_bytes")
        out.append(("%s MESSAGE_CREATE (%s B): routed into Redis (ours) / counted (discord.js), events/s" % (n, eb),
                    fmt_range(ours), fmt_range(djs) + " (discord.js)", ratio_range(ours, djs),
                    budget_ratio(ours, BUDGET["routed_eps"], True) + "; vs discord.js %s, needs %gx"
                    % (ratio_range(ours, djs), BUDGET["routed_vs_djs"])))
        out.append(("routed vs redis-benchmark XADD (same payload, -c 4 -P 64), events/s", fmt_range(ours),
                    fmt_range(red) + " (redis ceiling)", ratio_range(ours, red), ""))
        out.append(("parse and discard (events no role wants), events/s",
                    fmt_range([r.get("rate") for r in rt.get("ours_discard", [])]), "", "", ""))
        out.append(("chat worker consumes, events/s", fmt_range([r.get("consume_rate") for r in rt["ours"]]),
                    "", "", ""))
        out.append(("CPU seconds for the burst: holder / Redis",
                    fmt_range([_get(r, "cpu_s", "holder") for r in rt["ours"]], "s") + " / "
                    + fmt_range([_get(r, "cpu_s", "redis") for r in rt["ours"]], "s"),
                    fmt_range([_get(r, "cpu_s", "node") for r in rt.get("djs", [])], "s") + " (node)",
                    ratio_range([_get(r, "cpu_s", "holder") for r in rt["ours"]],
                                [_get(r, "cpu_s", "node") for r in rt.get("djs", [])]), ""))
        ours_eff = [r["count"] / (_get(r, "cpu_s", "holder") + _get(r, "cpu_s", "redis")) for r in rt["ours"]
                    if (_get(r, "cpu_s", "holder") or 0) + (_get(r, "cpu_s", "redis") or 0) > 0]
        djs_eff = [r["count"] / _get(r, "cpu_s", "node") for r in rt.get("djs", []) if _get(r, "cpu_s", "node")]
        out.append(("events per CPU second: holder + Redis / node (less sensitive to a busy machine)",
                    fmt_range(ours_eff), fmt_range(djs_eff) + " (discord.js)", ratio_range(ours_eff, djs_eff), ""))
        out.append(("RSS after the burst (holder / discord.js)",
                    fmt_range([r.get("rss_after_kb") for r in rt["ours"]], "MB", 1 / 1024.0),
                    fmt_range([r.get("rss_after_kb") for r in rt.get("djs", [])], "MB", 1 / 1024.0) + " (discord.js)",
                    ratio_range([r.get("rss_after_kb") for r in rt["ours"]],
                                [r.get("rss_after_kb") for r in rt.get("djs", [])]), ""))
        sims = [r["sim"] for r in rt["ours"] + rt.get("djs", []) if r.get("sim")]
        out.append(("simulator: its own send rate (events/s, write time less waits) / time it waited on the bot",
                    fmt_range([s["count"] / (s["write_s"] - s.get("drain_wait_s", 0)) for s in sims
                               if s.get("write_s") and s["write_s"] > s.get("drain_wait_s", 0)]),
                    fmt_range([100.0 * s.get("drain_wait_s", 0) / s["write_s"] for s in sims if s.get("write_s")],
                              "% of the write"), "", ""))
    ack = res.get("ack")
    if ack:
        lo, hi = ack["low"], ack["high"]
        for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
            o = [r.get(key) for r in lo["ours"]]
            d = [r.get(key) for r in lo.get("djs", [])]
            out.append(("deferred ack %s at %d/s, ms" % (label, ack["low_rate"]), fmt_range(o, "ms"),
                        fmt_range(d, "ms") + " (discord.js)", ratio_range(o, d),
                        budget_ratio(o, BUDGET["ack_p99_ms"], False) if key == "p99_ms" else ""))
        o = [r.get("on_time_frac") for r in hi["ours"]]
        d = [r.get("on_time_frac") for r in hi.get("djs", [])]
        sent = fmt_range([r.get("sim_send_rate") for r in hi["ours"] + hi.get("djs", [])], "/s")
        out.append(("acks on time (< 3 s) at %d/s (simulator sent %s)" % (ack["high_rate"], sent),
                    fmt_range(o, "%", 100.0, 1), fmt_range(d, "%", 100.0, 1) + " (discord.js)", ratio_range(o, d),
                    ""))
    for r in res.get("chats", []):
        out.append(("%s concurrent streamed chats (%g s streams): correct within %s s / acked on time / "
                    "peak jobs in flight / peak streams at the provider"
                    % (fmt_num(r["n"]), r["stream_s"], fmt_num(r.get("waited_s"))),
                    " / ".join(fmt_num(r.get(k)) for k in ("correct", "acked_on_time", "peak_inflight",
                                                           "provider_streams_peak")),
                    "", "", ""))
        out.append(("%s concurrent chats: peak RSS of the chat instance" % fmt_num(r["n"]),
                    fmt_range([r.get("peak_rss_kb"), r.get("hwm_kb")], "MB", 1 / 1024.0), "", "",
                    budget_ratio([max(_nums([r.get("peak_rss_kb"), r.get("hwm_kb")]) or [None])],
                                 BUDGET["chats_rss_kb"], False) if r["n"] >= 10000 else ""))
    fo = res.get("failover")
    if fo:
        ok = _nums(fo["times_s"])
        out.append(("failover: kill -9 -> role served again, p50 / p99 over %d kills" % fo["kills"],
                    "%s / %s" % (fmt_num(fo.get("p50_s"), 2), fmt_num(fo.get("p99_s"), 2)) + " s"
                    + ("" if len(ok) == fo["kills"] else " (%d never)" % (fo["kills"] - len(ok))), "", "",
                    budget_ratio([fo.get("p99_s")], BUDGET["failover_p99_s"], False)))
    h = res.get("holder")
    if h:
        out.append(("holder kill -9: messages lost / duplicated",
                    "%d of %d / %d" % (h["messages_lost"], h["messages_sent"], h["messages_duplicated"]), "", "", ""))
        out.append(("holder kill -9: interactions lost (not acked in time or not routed)",
                    "%d of %d" % (h["interactions_lost"], h["interactions_sent"]), "", "", ""))
    return out


def idle_breakdown(res, top=12):
    """Where an idle instance's RSS goes, by mapping, for each role; PSS
    shows what the four instances' shared library pages cost each."""
    ours = _get(res, "idle", "ours") or {}
    roles = [r for r in sorted(ours) if ours[r].get("rss_by_mapping_kb")]
    if not roles:
        return []
    total = {}
    for r in roles:
        for name, kb in ours[r]["rss_by_mapping_kb"].items():
            total[name] = total.get(name, 0) + kb
    names = sorted(total, key=lambda n: -total[n])[:top]
    lines = ["", "Idle RSS by mapping, kB (smaps; the rest is spread over smaller libraries):", "",
             "| mapping | " + " | ".join("%s-instance" % r for r in roles) + " |",
             "|---|" + "---|" * len(roles)]
    for n in names:
        lines.append("| %s | %s |" % (n, " | ".join(str(ours[r]["rss_by_mapping_kb"].get(n, 0)) for r in roles)))
    lines.append("| **RSS** | %s |" % " | ".join(str(sum(ours[r]["rss_by_mapping_kb"].values())) for r in roles))
    lines.append("| **PSS** | %s |" % " | ".join(str(ours[r].get("pss_kb", "?")) for r in roles))
    return lines


def markdown(res, images=()):
    m = res.get("machine", {})
    v = res.get("versions", {})
    lines = ["# make bench, %s" % res.get("started_at", "?"), ""]
    lines.append("Machine: %s, %s CPUs (%s), %s MB RAM, load average %s at the start, %s at the end."
                 % (m.get("host"), m.get("cpus"), m.get("cpu"), (m.get("mem_kb") or 0) // 1024,
                    " ".join(m.get("loadavg_start") or []), " ".join(m.get("loadavg_end") or [])))
    lines.append("Versions: ours %s, discord.js %s, node %s, %s." % (v.get("ours"), v.get("discord.js"), v.get("node"),
                                                                  (v.get("redis") or "redis ?").split(" sha=")[0]))
    cfg = res.get("config", {})
    lines.append("Runs: %s alternating per comparison%s; min–max over the runs. Uncompressed gateway on both "
                 "sides (GATEWAY_COMPRESS=off for ours). Ratios are ours / theirs." %
                 (cfg.get("runs"), ", quick smoke run" if res.get("quick") else ""))
    if res.get("note"):
        lines.append("")
        lines.append("Note: " + res["note"])
    lines += ["", "| figure | ours | discord.js / ceiling | ours / theirs | budget |", "|---|---|---|---|---|"]
    for r in rows(res):
        lines.append("| " + " | ".join(x.replace("|", "/") for x in r) + " |")
    lines += idle_breakdown(res)
    if res.get("errors"):
        lines.append("")
        for k, e in sorted(res["errors"].items()):
            lines.append("- `%s` did not finish: %s" % (k, e))
    if images:
        lines.append("")
        for p in images:
            name = os.path.splitext(os.path.basename(p))[0].rsplit("-", 1)[-1]
            lines.append("![%s](%s)" % (name, os.path.basename(p)))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# plots


def rate_series(series, min_dt=0.1):
    """[(t, count so far)] -> [(t, events/s over the step)], steps at
    least min_dt long, starting from (0, 0)."""
    out = []
    pt, pn = 0.0, 0
    for t, n in series:
        if t - pt >= min_dt and n >= pn:
            out.append((round((t + pt) / 2, 3), (n - pn) / (t - pt)))
            pt, pn = t, n
    return out


def cdf(values):
    v = sorted(values)
    return [(x, (i + 1) / float(len(v))) for i, x in enumerate(v)]


def _dat(path, pts):
    with open(path, "w") as f:
        for p in pts:
            f.write(" ".join(str(x) for x in p) + "\n")


def plot_specs(res):
    """[(name, title, xlabel, ylabel, extra gnuplot lines, [(label, points, style)])]."""
    specs = []
    ack = res.get("ack")
    if ack:
        series = []
        for who, label in (("ours", "ours"), ("djs", "discord.js")):
            lat = [x for r in ack["low"].get(who, []) for x in r.get("latencies_ms", [])]
            if lat:
                series.append(("%s, %d/s" % (label, ack["low_rate"]), cdf(lat), "lines lw 2"))
        if series:
            specs.append(("ack_latency", "Deferred ack latency (interaction created -> callback received)",
                          "ms", "fraction of interactions", ["set logscale x", "set yrange [0:1]"], series))
    rt = res.get("routing")
    if rt:
        series = []
        for key, label, color in (("ours", "ours, routed (chat channel)", "#1f5fbf"),
                                  ("ours_discard", "ours, parse and discard", "#2e9e3e"),
                                  ("djs", "discord.js, counted", "#d03020")):
            for i, r in enumerate(rt.get(key, [])):
                pts = rate_series(r.get("series") or [], 0.25)
                if pts:
                    series.append(("%s #%d" % (label, i + 1), pts,
                                   "lines lw 1.5 lc rgb '%s' dt %d" % (color, i % 5 + 1)))
        if series:
            specs.append(("events_rate", "MESSAGE_CREATE flood: events/s over time (0.25 s steps)",
                          "s since the flood began",
                          "events/s", ["set yrange [0:*]"], series))
    series = []
    for r in res.get("chats", []):
        pts = [(s[1], s[2] / 1024.0) for s in r.get("samples", []) if s[1] is not None and s[2]]
        if pts:
            series.append(("%s chats sent" % fmt_num(r["n"]), pts, "linespoints pt 7 ps 0.5"))
    if series:
        specs.append(("rss_chats", "Chat instance RSS vs chats in flight (sampled every 0.5 s)", "chats in flight",
                      "RSS, MB", ["set yrange [0:*]"], series))
    return specs


def gnuplot_script(spec, png, datdir):
    name, title, xl, yl, extra, series = spec
    lines = ["set terminal pngcairo size 900,520 noenhanced font ',10'", "set output '%s'" % png,
             "set title '%s'" % title.replace("'", ""), "set xlabel '%s'" % xl, "set ylabel '%s'" % yl,
             "set grid", "set key outside bottom center horizontal"] + list(extra)
    plots = []
    for i, (label, _pts, style) in enumerate(series):
        plots.append("'%s' using 1:2 with %s title '%s'" % (os.path.join(datdir, "%s_%d.dat" % (name, i)), style,
                                                            label.replace("'", "")))
    lines.append("plot " + ", \\\n     ".join(plots))
    return "\n".join(lines) + "\n"


def write_plots(res, outdir, stem):
    """One PNG per spec (needs gnuplot on PATH); returns their paths."""
    gp = shutil.which("gnuplot")
    if not gp:
        return []
    datdir = os.path.join(outdir, ".%s-data" % stem)
    os.makedirs(datdir, exist_ok=True)
    made = []
    for spec in plot_specs(res):
        for i, (_l, pts, _s) in enumerate(spec[5]):
            _dat(os.path.join(datdir, "%s_%d.dat" % (spec[0], i)), pts)
        png = os.path.join(outdir, "%s-%s.png" % (stem, spec[0]))
        p = subprocess.run([gp], input=gnuplot_script(spec, png, datdir), text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        if p.returncode == 0 and os.path.exists(png):
            made.append(png)
        else:
            print("gnuplot failed for %s: %s" % (spec[0], p.stderr.strip()[-500:]))
    shutil.rmtree(datdir, ignore_errors=True)
    return made


def stem_of(res):
    date = (res.get("started_at") or "0000-00-00")[:10]
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", str(res.get("machine", {}).get("host") or "host"))
    stem = "%s-%s" % (date, host)
    # a smoke run or a subset never overwrites the day's full run
    picked = (res.get("config") or {}).get("bench")
    if picked and set(picked) != set(ALL_BENCHES):
        stem += "-" + "-".join(b for b in ALL_BENCHES if b in picked)
    if res.get("quick"):
        stem += "-quick"
    return stem


def write_all(res, outdir):
    os.makedirs(outdir, exist_ok=True)
    stem = stem_of(res)
    pngs = write_plots(res, outdir, stem)
    jpath = os.path.join(outdir, stem + ".json")
    with open(jpath, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")
    mpath = os.path.join(outdir, stem + ".md")
    with open(mpath, "w") as f:
        f.write(markdown(res, pngs))
    return [jpath, mpath] + pngs
