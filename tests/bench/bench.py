"""make bench: our figures side by side with a discord.js 14 bot and Redis.

    python3 tests/bench/bench.py [--bench idle,routing,ack,chats,failover,holder]
                                 [--quick] [--runs N] [--kills N] [--chats 1000,10000]
                                 [--events N] [--out bench/results] [--djs-dir DIR]

Run by `make bench` (BENCH=... selects measurements, QUICK=1 is a smoke
run), never by `make test`. It prints figures, their ratio to the budget
and to discord.js, and writes bench/results/<date>-<host>.json, .md and
.png plots (tests/bench/report.py). Benchmarks never assert timings: the
exit status is 0 whatever the figures are, non-zero only when the bench
itself could not run.

One cluster serves every measurement: a real redis-server (no AOF), the
Discord simulator, the OpenAI simulator, our four instances built in
BOT_BIN_DIR (default: the repository root) and the discord.js bot
(tests/bench/djs_bot.js, installed by tests/bench/setup.sh). Both bots talk
to the same simulator on uncompressed gateways (GATEWAY_COMPRESS=off for
ours, discord.js's default for theirs); the simulator aims floods and
interactions at one session at a time. See bench/README.md.
"""

import argparse
import datetime
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
import openaiclient  # noqa: E402
import report  # noqa: E402
import simclient  # noqa: E402

ALL = report.ALL_BENCHES
GUILD = "400000000000000001"
CHAT_CHAN = "500000000000000001"    # named ai-지원: a chat channel (CHAT_CHANNELS default)
OTHER_CHAN = "500000000000000002"   # named general: no role wants its messages
PREFIX = "discordbot"
EVENT_BYTES = 1200
CLK_TCK = os.sysconf("SC_CLK_TCK")
OPENAI_KEY = "sk-bench-0123456789"


def log(*a):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), " ".join(str(x) for x in a)), flush=True)


# --------------------------------------------------------------------------
# process figures from /proc


def status_kb(pid, field="VmRSS"):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def private_dirty_kb(pid):
    total = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Private_Dirty:"):
                total += int(line.split()[1])
    return total


def smaps_by_mapping(pid):
    """Resident kB per mapping name (a library, the binary; anonymous memory,
    heap and stacks together as "anonymous"), plus the process's PSS: what
    idle RSS is made of, and what sharing the libraries saves."""
    by, name = {}, None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split()
            if not head:
                continue
            if "-" in head[0] and not head[0].endswith(":"):
                path = head[5] if len(head) > 5 else ""
                name = os.path.basename(path) if path.startswith("/") else "anonymous"
            elif head[0] == "Rss:" and name is not None:
                by[name] = by.get(name, 0) + int(head[1])
    pss = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return {"rss_by_mapping_kb": by, "pss_kb": pss}


def cpu_s(pid):
    """utime + stime of a live process, in seconds."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read()
    fields = data[data.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pct(values, p):
    """The p-th percentile (nearest rank) of a non-empty list."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


# --------------------------------------------------------------------------
# the discord.js bot


class DjsBot:
    def __init__(self, t, sim, djs_dir):
        self.t, self.sim = t, sim
        self.port = harness.free_port()
        self.log_path = t.path("djs-bot.log")
        api = sim.api_base.rsplit("/v", 1)[0]  # discord.js appends /v10 itself
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "NODE_PATH": os.path.join(djs_dir, "node_modules"),
               "DISCORD_TOKEN": sim.token, "DISCORD_API": api, "BENCH_STATS_PORT": str(self.port)}
        self.proc = harness._spawn(["node", os.path.join(HERE, "djs_bot.js")], self.log_path, env)
        t.cleanup(self.stop)

    def stats(self, path="/stats"):
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                "http://127.0.0.1:%d%s" % (self.port, path), timeout=10) as r:
            return json.loads(r.read())

    def wait_ready(self, timeout=60):
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("discord.js bot exited %s:\n%s" % (self.proc.returncode, self.tail()))
            try:
                return self.stats()["ready"]
            except OSError:
                return False
        harness.wait_until(ready, timeout, lambda: "discord.js bot ready\n" + self.tail())

    def tail(self):
        return harness._tail(self.log_path, 30)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------
# the cluster


class Cluster:
    def __init__(self, t, args):
        self.t, self.args = t, args
        self.redis = t.redis(appendonly=False)
        self.r = self.redis.client()
        self.sim = simclient.start(t)
        self.sim.add_guild(GUILD, "bench", [{"id": CHAT_CHAN, "name": "ai-지원", "type": 0},
                                            {"id": OTHER_CHAN, "name": "general", "type": 0}])
        self.ai = openaiclient.start(t, keys={OPENAI_KEY: "ok"})
        self.insts = {}
        # admin holds the gateway; chat is the second candidate (for the
        # holder kill), image and video never hold it.
        self.start_instance("admin", GATEWAY="on")
        self.sim.wait_session(30)
        self.start_instance("chat", GATEWAY="auto", OPENAI_BASE_URL=self.ai.base_url, OPENAI_API_KEY_1=OPENAI_KEY,
                            USER_RATE_LIMIT="0", USER_DAILY_LIMIT="0", MAX_INFLIGHT=str(args.max_inflight),
                            EDIT_INTERVAL_MS=str(args.edit_interval_ms))
        self.start_instance("image", GATEWAY="off")
        self.start_instance("video", GATEWAY="off")
        self.djs = None
        if not args.no_djs:
            self.djs = DjsBot(t, self.sim, args.djs_dir)
            self.djs.wait_ready()
        self.ours_sid, self.djs_sid = self.session_ids()
        log("cluster up: our session %s, discord.js session %s" % (self.ours_sid, self.djs_sid))

    def env(self, **kw):
        e = {"REDIS_URL": self.redis.url, "HEALTH_PORT": harness.free_port(), "GATEWAY_COMPRESS": "off",
             "STREAM_MAXLEN": str(max(150000, self.args.events + 10000))}
        e.update(self.sim.bot_env())
        e.update(kw)
        return e

    def start_instance(self, role, **kw):
        inst = self.t.instance(role, env=self.env(**kw))
        inst.wait_healthy(30)
        self.insts[role] = inst
        return inst

    def session_ids(self):
        ours = djs = None
        for s in self.sim.gateway()["sessions"]:
            if s["state"] != "active" or not s["connected"]:
                continue
            browser = str(((s.get("identify") or {}).get("properties") or {}).get("browser", ""))
            if browser == "discordbot-c":
                ours = s["session_id"]
            else:
                djs = s["session_id"]
        if ours is None:
            raise RuntimeError("our holder has no gateway session: %s" % self.sim.gateway()["sessions"])
        return ours, djs

    @property
    def holder(self):
        return self.insts["admin"]

    def routed_seq(self):
        v = self.r.cmd("HGET", "%s:gw:0:session" % PREFIX, "seq")
        return int(v) if v else 0

    def group_consumed(self, stream):
        """Entries of the workers group delivered and acknowledged."""
        try:
            groups = self.r.cmd("XINFO", "GROUPS", stream)
        except harness.RedisError:
            return 0
        for g in groups:
            d = dict(zip(g[::2], g[1::2]))
            if d.get("name") == "workers":
                return int(d.get("entries-read") or 0) - int(d.get("pending") or 0)
        return 0


# --------------------------------------------------------------------------
# measurements


def bench_idle(c, res):
    time.sleep(c.args.idle_s)  # idle: connected, beating, nothing to do
    out = {"ours": {}, "samples": 3}
    for role, inst in c.insts.items():
        rss = []
        for _ in range(3):
            rss.append(status_kb(inst.pid))
            time.sleep(0.5)
        out["ours"][role] = {"rss_kb": rss, "private_dirty_kb": private_dirty_kb(inst.pid)}
        out["ours"][role].update(smaps_by_mapping(inst.pid))
    if c.djs:
        rss = []
        for _ in range(3):
            rss.append(status_kb(c.djs.pid))
            time.sleep(0.5)
        out["djs"] = {"rss_kb": rss, "private_dirty_kb": private_dirty_kb(c.djs.pid)}
    res["idle"] = out


def content_for(c, chan):
    """Message text that makes one MESSAGE_CREATE gateway message about
    EVENT_BYTES long: measured on a 100-event flood to our holder."""
    probe = "x" * 100
    before = c.routed_seq()
    r = c.sim.gw("flood", count=100, channel_id=chan, guild_id=GUILD, content=probe, session_id=c.ours_sid)
    harness.wait_until(lambda: c.routed_seq() >= before + 100, 30, "the probe flood routed")
    per_event = r["bytes"] / 100.0 - 4  # minus the WebSocket frame header
    n = max(1, int(EVENT_BYTES - (per_event - len(probe))))
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " * 40)[:n]
    return words


def flood_ours(c, count, chan, content, consume):
    sim_res = {}
    s0 = c.routed_seq()
    c0 = c.group_consumed("%s:jobs:chat" % PREFIX) if consume else 0
    cpu0 = {"holder": cpu_s(c.holder.pid), "redis": cpu_s(c.redis.pid), "chat": cpu_s(c.insts["chat"].pid)}
    samples = []

    def flood():
        sim_res.update(c.sim.gw("flood", count=count, channel_id=chan, guild_id=GUILD, content=content,
                                session_id=c.ours_sid))
    th = threading.Thread(target=flood)
    th.start()
    deadline = time.time() + c.args.event_timeout_s
    done_at = None
    while time.time() < deadline:
        n = c.routed_seq() - s0
        now = time.time()
        samples.append((now, n))
        if n >= count:
            done_at = now
            break
        time.sleep(0.02)
    th.join()
    cpu1 = {"holder": cpu_s(c.holder.pid), "redis": cpu_s(c.redis.pid)}
    out = {"count": count, "routed": samples[-1][1], "sim": sim_res,
           "cpu_s": {k: round(cpu1[k] - cpu0[k], 3) for k in cpu1},
           "rss_after_kb": status_kb(c.holder.pid), "hwm_kb": status_kb(c.holder.pid, "VmHWM"),
           "redis_rss_kb": status_kb(c.redis.pid)}
    t0 = sim_res.get("write_started_at", samples[0][0])
    out["series"] = [(round(t - t0, 3), n) for t, n in samples]
    out["elapsed_s"] = round((done_at or samples[-1][0]) - t0, 4) if done_at else None
    out["rate"] = round(count / out["elapsed_s"]) if out["elapsed_s"] else None
    if consume:
        cdone = None
        cdeadline = time.time() + c.args.consume_timeout_s
        n = 0
        while time.time() < cdeadline:
            n = c.group_consumed("%s:jobs:chat" % PREFIX) - c0
            if n >= count:
                cdone = time.time()
                break
            time.sleep(0.05)
        end = cdone or time.time()
        out["consumed"] = n
        out["consume_elapsed_s"] = round(end - t0, 3)
        out["consume_rate"] = round(n / (end - t0)) if end > t0 else None
        out["cpu_s"]["chat"] = round(cpu_s(c.insts["chat"].pid) - cpu0["chat"], 3)
    return out


def flood_djs(c, count, chan, content):
    c.djs.stats("/reset")
    cpu0 = cpu_s(c.djs.pid)
    sim_res = c.sim.gw("flood", count=count, channel_id=chan, guild_id=GUILD, content=content,
                       session_id=c.djs_sid)
    deadline = time.time() + c.args.event_timeout_s
    st = c.djs.stats()
    while st["messages"] < count and time.time() < deadline:
        time.sleep(0.1)
        st = c.djs.stats()
    t0 = sim_res["write_started_at"]
    out = {"count": count, "counted": st["messages"], "sim": sim_res, "cpu_s": {"node": round(cpu_s(c.djs.pid) - cpu0, 3)},
           "rss_after_kb": status_kb(c.djs.pid), "hwm_kb": status_kb(c.djs.pid, "VmHWM")}
    out["series"] = [(round(ms / 1000.0 - t0, 3), 1000 * (i + 1)) for i, ms in enumerate(st["marks"])]
    if st["messages"] >= count:
        out["elapsed_s"] = round(st["last_ms"] / 1000.0 - t0, 4)
        out["rate"] = round(count / out["elapsed_s"]) if out["elapsed_s"] > 0 else None
    else:
        out["elapsed_s"] = out["rate"] = None
    return out


def redis_xadd(c, payload_len):
    """redis-benchmark XADD with the same payload size: the ceiling."""
    n = c.args.events
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(c.redis.port), "-n", str(n), "-c", "4", "-P", "64",
            "--csv", "XADD", "bench:xadd", "MAXLEN", "~", "100000", "*", "data", "x" * payload_len]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    rate = report.parse_redis_benchmark_csv(p.stdout)
    c.r.cmd("DEL", "bench:xadd")
    return {"rate": rate, "count": n, "argv": " ".join(argv[:-1]) + " <%d bytes>" % payload_len}


def bench_routing(c, res):
    content = content_for(c, CHAT_CHAN)
    out = {"event_bytes_target": EVENT_BYTES, "ours": [], "ours_discard": [], "djs": [], "redis": []}
    for i in range(c.args.runs):
        log("routing run %d/%d: ours (chat channel)" % (i + 1, c.args.runs))
        r = flood_ours(c, c.args.events, CHAT_CHAN, content, consume=True)
        out["ours"].append(r)
        log("  routed %s/s, chat worker %s/s, holder %.2f cpu-s, sim drain wait %.2fs of %.2fs"
            % (r["rate"], r.get("consume_rate"), r["cpu_s"]["holder"], r["sim"].get("drain_wait_s", 0),
               r["sim"].get("write_s", 0)))
        if c.djs:
            log("routing run %d/%d: discord.js" % (i + 1, c.args.runs))
            d = flood_djs(c, c.args.events, CHAT_CHAN, content)
            out["djs"].append(d)
            log("  counted %s/s, node %.2f cpu-s, sim drain wait %.2fs of %.2fs"
                % (d["rate"], d["cpu_s"]["node"], d["sim"].get("drain_wait_s", 0), d["sim"].get("write_s", 0)))
        log("routing run %d/%d: ours (parse and discard)" % (i + 1, c.args.runs))
        r = flood_ours(c, c.args.events, OTHER_CHAN, content, consume=False)
        out["ours_discard"].append(r)
        log("  %s/s" % r["rate"])
        per_event = int(out["ours"][0]["sim"]["bytes"] / max(1, c.args.events))
        x = redis_xadd(c, per_event)
        out["redis"].append(x)
        log("  redis-benchmark XADD %s/s" % x["rate"])
    out["event_bytes"] = int(out["ours"][0]["sim"]["bytes"] / max(1, c.args.events))
    res["routing"] = out


class Sender:
    """Creates interactions on the simulator at a fixed rate, from a few
    threads with keep-alive connections."""

    def __init__(self, sim, body_fn, rate, seconds, threads=None):
        self.sim, self.body_fn, self.rate, self.seconds = sim, body_fn, float(rate), float(seconds)
        self.n = int(self.rate * self.seconds)
        self.threads = threads or max(2, min(32, int(self.rate // 40) + 1))
        self.ids = [None] * self.n
        self.sent_at = [None] * self.n
        self.errors = 0

    def run(self):
        t0 = time.time() + 0.2
        ths = [threading.Thread(target=self.worker, args=(k, t0)) for k in range(self.threads)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        done = [s for s in self.sent_at if s]
        self.elapsed = (max(done) - t0) if done else 0.0
        self.achieved = len(done) / self.elapsed if self.elapsed > 0 else 0.0
        self.behind = max((s - (t0 + i / self.rate)) for i, s in enumerate(self.sent_at) if s) if done else None
        return self

    def worker(self, k, t0):
        conn = None
        for i in range(k, self.n, self.threads):
            delay = t0 + i / self.rate - time.time()
            if delay > 0:
                time.sleep(delay)
            body = json.dumps(self.body_fn(i)).encode()
            for _attempt in range(2):
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.sim.port, timeout=30)
                    conn.request("POST", "/_sim/interactions", body, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    data = resp.read()
                    if resp.status == 200:
                        self.ids[i] = json.loads(data)["id"]
                        self.sent_at[i] = time.time()
                    else:
                        self.errors += 1
                    break
                except (OSError, http.client.HTTPException):
                    conn = None
            else:
                self.errors += 1


def interactions_by_id(c, ids):
    want = set(i for i in ids if i)
    return {it["id"]: it for it in c.sim.get("/_sim/interactions")["interactions"] if it["id"] in want}


def ack_run(c, who, rate, seconds):
    sid = c.ours_sid if who == "ours" else c.djs_sid
    c.sim.reset(keep_guilds=True)  # interactions, log, stats; sessions stay

    def body(i):
        return {"guild_id": GUILD, "channel_id": CHAT_CHAN, "name": "ping", "session_id": sid,
                "user": {"id": str(100000000000000100 + i % 5000), "username": "u%d" % (i % 5000)}}
    s = Sender(c.sim, body, rate, seconds).run()
    time.sleep(4.0)  # everything acknowledged or too late by now (3 s window)
    its = interactions_by_id(c, s.ids)
    lat = [it["acked"]["after_ms"] for it in its.values() if it.get("acked")]
    sent = sum(1 for i in s.ids if i)
    on_time = sum(1 for x in lat if x <= 3000)
    out = {"who": who, "rate": rate, "seconds": seconds, "sent": sent, "send_errors": s.errors,
           "sim_send_rate": round(s.achieved, 1), "sim_behind_s": round(s.behind or 0, 3),
           "acked": len(lat), "on_time": on_time, "on_time_frac": round(on_time / sent, 4) if sent else None,
           "latencies_ms": sorted(lat)}
    if lat:
        out["p50_ms"], out["p99_ms"], out["max_ms"] = pct(lat, 50), pct(lat, 99), max(lat)
    return out


def bench_ack(c, res):
    out = {"low": {"ours": [], "djs": []}, "high": {"ours": [], "djs": []},
           "low_rate": c.args.ack_rate, "high_rate": c.args.ack_rate_high}
    whos = ["ours"] + (["djs"] if c.djs else [])
    for i in range(c.args.runs):
        for who in whos:
            r = ack_run(c, who, c.args.ack_rate, c.args.ack_seconds)
            out["low"][who].append(r)
            log("ack %d/s run %d %s: p50 %s ms p99 %s ms, %d/%d on time, sim sent %.0f/s"
                % (c.args.ack_rate, i + 1, who, r.get("p50_ms"), r.get("p99_ms"), r["on_time"], r["sent"],
                   r["sim_send_rate"]))
        for who in whos:
            r = ack_run(c, who, c.args.ack_rate_high, c.args.ack_seconds_high)
            out["high"][who].append(r)
            log("ack %d/s run %d %s: p50 %s ms p99 %s ms, %d/%d on time, sim sent %.0f/s (behind %.2fs)"
                % (c.args.ack_rate_high, i + 1, who, r.get("p50_ms"), r.get("p99_ms"), r["on_time"], r["sent"],
                   r["sim_send_rate"], r["sim_behind_s"]))
    res["ack"] = out


def fresh_chat(c):
    """A new chat instance with an empty job stream: what an earlier run left
    in flight neither counts nor takes memory. Back within a second, so the
    role does not fail over meanwhile."""
    chat = c.insts["chat"]
    chat.kill()
    c.r.cmd("DEL", "%s:jobs:chat" % PREFIX)
    chat.start()
    chat.wait_healthy(30)
    return chat


def chats_run(c, n):
    """n chats at once in the one chat instance: every answer streams for
    about chats_stream_s seconds from the OpenAI simulator."""
    chat = fresh_chat(c)
    c.sim.reset(keep_guilds=True)
    c.ai.reset()
    c.ai.keys(OPENAI_KEY, "ok")  # the reset forgets keys given at start
    filler = " lorem ipsum dolor sit amet" * 8
    qlen = len("Answer: q00000" + filler)
    chunk = 8
    chunks = (qlen + chunk - 1) // chunk
    c.ai.config(chunk_chars=chunk, delay_ms=int(c.args.chats_stream_s * 1000 / chunks))
    questions = ["q%05d%s" % (i, filler) for i in range(n)]

    def body(i):
        return {"guild_id": GUILD, "channel_id": CHAT_CHAN, "name": "chat", "session_id": c.ours_sid,
                "user": {"id": str(200000000000000000 + i), "username": "c%d" % i},
                "options": [{"name": "question", "type": 3, "value": questions[i]}]}
    samples = []
    stop = threading.Event()

    def sampler():
        t0 = time.time()
        while not stop.is_set():
            try:
                _st, h = chat.health()
                inflight = (h or {}).get("inflight")
            except OSError:
                inflight = None
            samples.append((round(time.time() - t0, 2), inflight, status_kb(chat.pid)))
            stop.wait(0.5)
    th = threading.Thread(target=sampler)
    th.start()
    rss0 = status_kb(chat.pid)
    # as fast as the simulator takes them
    s = Sender(c.sim, body, rate=100000, seconds=n / 100000.0, threads=16).run()
    deadline = time.time() + max(3 * c.args.chats_stream_s, 60)

    def n_correct(its):
        ok = 0
        for i, iid in enumerate(s.ids):
            it = its.get(iid)
            if it and it.get("original") and ("Answer: " + questions[i]) in (it["original"].get("content") or ""):
                ok += 1
        return ok
    its, idle = {}, 0
    while time.time() < deadline:
        time.sleep(2)
        its = interactions_by_id(c, s.ids)
        correct = n_correct(its)
        if correct >= sum(1 for i in s.ids if i):
            break
        # done, some of them wrong: nothing in flight twice in a row
        idle = idle + 1 if samples and samples[-1][1] == 0 else 0
        if idle >= 2:
            break
    stop.set()
    th.join()
    correct = n_correct(its)
    stats = c.ai.stats()
    hwm = status_kb(chat.pid, "VmHWM")
    fresh_chat(c)  # leave no jobs running into the next measurement
    acked_on_time = sum(1 for it in its.values() if it.get("acked") and it["acked"]["after_ms"] <= 3000)
    peak = max((x[1] or 0) for x in samples) if samples else 0
    return {"n": n, "sent": sum(1 for i in s.ids if i), "sim_send_rate": round(s.achieved, 1),
            "correct": correct, "acked_on_time": acked_on_time, "peak_inflight": peak,
            "rss_before_kb": rss0, "peak_rss_kb": max((x[2] or 0) for x in samples) if samples else None,
            "hwm_kb": hwm, "samples": samples,
            "stream_s": c.args.chats_stream_s, "openai_stats": stats,
            "provider_streams_peak": stats.get("max_concurrent_streams"),
            "waited_s": round(max(3 * c.args.chats_stream_s, 60), 1)}


def bench_chats(c, res):
    out = []
    for n in c.args.chats:
        log("chats: %d at once" % n)
        r = chats_run(c, n)
        out.append(r)
        log("  %d/%d correct within %gs, %d acked on time, peak %s jobs in flight, %s streams at the provider, "
            "peak RSS %s kB" % (r["correct"], r["n"], r["waited_s"], r["acked_on_time"], r["peak_inflight"],
                                r["provider_streams_peak"], r["peak_rss_kb"]))
    res["chats"] = out


def bench_failover(c, res):
    admin, chat = c.holder, c.insts["chat"]
    times = []
    for n in range(c.args.kills):
        time.sleep(4.5)  # the restarted instance is beating and has its role back
        before = len([r for r in admin.find_records(msg="routing: taking over the role") if r.get("for_role") == "chat"])
        chat.kill()
        t0 = time.time()
        got = None
        while time.time() - t0 < 20:
            recs = [r for r in admin.find_records(msg="routing: taking over the role") if r.get("for_role") == "chat"]
            if len(recs) > before:
                got = time.time() - t0
                break
            time.sleep(0.01)
        times.append(round(got, 3) if got is not None else None)
        log("failover kill %d/%d: %s s" % (n + 1, c.args.kills, times[-1]))
        chat.start()
        chat.wait_healthy(30)
    ok = [x for x in times if x is not None]
    res["failover"] = {"kills": c.args.kills, "times_s": times,
                       "p50_s": pct(ok, 50) if ok else None, "p99_s": pct(ok, 99) if ok else None,
                       "max_s": max(ok) if ok else None, "failover_after_ms": 2500}


def bench_holder(c, res):
    """kill -9 of the gateway holder while messages and interactions keep
    coming: how many did the cluster lose?"""
    if c.djs:
        c.djs.stop()  # from here on every event goes to our session only
    c.sim.reset(keep_guilds=True)
    last = c.r.cmd("XREVRANGE", "%s:jobs:chat" % PREFIX, "+", "-", "COUNT", "1")
    last_admin = c.r.cmd("XREVRANGE", "%s:jobs:admin" % PREFIX, "+", "-", "COUNT", "1")
    msg_ids, ix_ids = [], []
    stop = threading.Event()
    errors = [0]

    def messages():
        i = 0
        t0 = time.time()
        while not stop.is_set():
            try:
                r = c.sim.message(channel_id=CHAT_CHAN, guild_id=GUILD, content="holder kill %d" % i,
                                  author={"id": str(300000000000000000 + i % 100), "username": "h"})
                msg_ids.append(r["id"])
            except (OSError, simclient.SimError):
                errors[0] += 1
            i += 1
            delay = t0 + i / 100.0 - time.time()
            if delay > 0:
                time.sleep(delay)

    def interactions():
        i = 0
        t0 = time.time()
        while not stop.is_set():
            try:
                r = c.sim.interaction(guild_id=GUILD, channel_id=CHAT_CHAN, name="ping",
                                      user={"id": str(400000000000000000 + i), "username": "p"})
                ix_ids.append(r["id"])
            except (OSError, simclient.SimError):
                errors[0] += 1
            i += 1
            delay = t0 + i / 10.0 - time.time()
            if delay > 0:
                time.sleep(delay)
    ths = [threading.Thread(target=messages), threading.Thread(target=interactions)]
    for th in ths:
        th.start()
    time.sleep(3)
    c.holder.kill()
    killed_at = time.time()
    time.sleep(7)
    stop.set()
    for th in ths:
        th.join()
    time.sleep(5)  # the new holder has resumed and routed the replay
    start = "(" + last[0][0] if last else "-"
    entries = c.r.cmd("XRANGE", "%s:jobs:chat" % PREFIX, start, "+")
    blob = "\n".join(" ".join(str(x) for x in e[1]) for e in entries)
    routed = sum(1 for m in msg_ids if m in blob)
    dup = sum(1 for m in msg_ids if blob.count('"' + m + '"') > 1)
    start = "(" + last_admin[0][0] if last_admin else "-"
    ablob = "\n".join(" ".join(str(x) for x in e[1]) for e in c.r.cmd("XRANGE", "%s:jobs:admin" % PREFIX, start, "+"))
    its = interactions_by_id(c, ix_ids)
    ix_acked = sum(1 for it in its.values() if it.get("acked") and it["acked"]["after_ms"] <= 3000)
    ix_routed = sum(1 for i in ix_ids if i in ablob)
    # when the lost ones were created, relative to the kill: the gap shows
    # how long the cluster had no holder able to acknowledge
    lost_at = sorted(round(its[i]["created_at"] - killed_at, 2) for i in ix_ids if i in its
                     and not (its[i].get("acked") and its[i]["acked"]["after_ms"] <= 3000 and i in ablob))
    gw = c.sim.gateway()
    resumed = [round(x["at"] - killed_at, 2) for x in gw.get("identify_log", []) if x.get("at", 0) > killed_at] \
        if isinstance(gw.get("identify_log"), list) else []
    holders = [s for s in c.sim.gateway()["sessions"] if s["state"] == "active"]
    c.holder.start()  # back as a candidate; chat holds the gateway now
    c.holder.wait_healthy(30)
    res["holder"] = {"messages_sent": len(msg_ids), "messages_routed": routed, "messages_lost": len(msg_ids) - routed,
                     "messages_duplicated": dup, "interactions_sent": len(ix_ids), "interactions_acked_on_time": ix_acked,
                     "interactions_routed": ix_routed, "interactions_lost": len(ix_ids) - min(ix_acked, ix_routed),
                     "send_errors": errors[0], "killed_at": killed_at,
                     "lost_interactions_created_s_after_kill": lost_at,
                     "connections_after_kill_s": [round(x["opened_at"] - killed_at, 2) for x in gw["connections"]
                                                  if x.get("opened_at", 0) > killed_at],
                     "identifies_after_kill_s": resumed,
                     "resumes": c.sim.stats().get("resumes"), "sessions_active": len(holders)}
    log("holder kill: %d/%d messages routed (%d duplicated), %d/%d interactions acked on time, %d routed; "
        "new gateway connection %s s after the kill; lost ones created at %s s"
        % (routed, len(msg_ids), dup, ix_acked, len(ix_ids), ix_routed,
           res["holder"]["connections_after_kill_s"], lost_at[:3] + (["..."] if len(lost_at) > 3 else []) + lost_at[-1:]))


# --------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default=os.environ.get("BENCH") or ",".join(ALL),
                    help="comma-separated measurements: " + ",".join(ALL))
    ap.add_argument("--quick", action="store_true", default=os.environ.get("QUICK", "") not in ("", "0"),
                    help="a smoke run: small counts, one run each")
    ap.add_argument("--runs", type=int, help="alternating runs of each comparison (default 3; quick 1)")
    ap.add_argument("--events", type=int, help="events per flood (default 100000; quick 5000)")
    ap.add_argument("--kills", type=int, help="kill -9 for the failover p99 (default 20; quick 2)")
    ap.add_argument("--chats", help="concurrent chats, comma-separated (default 1000,10000; quick 100)")
    ap.add_argument("--chats-stream-s", type=float, help="how long each streamed answer lasts (default 10; quick 5)")
    ap.add_argument("--ack-rate", type=int, default=100)
    ap.add_argument("--ack-rate-high", type=int, default=1000)
    ap.add_argument("--ack-seconds", type=float, help="default 10; quick 2")
    ap.add_argument("--ack-seconds-high", type=float, help="default 3; quick 1")
    ap.add_argument("--idle-s", type=float, default=5.0)
    ap.add_argument("--max-inflight", type=int, default=12000, help="MAX_INFLIGHT of the chat instance")
    ap.add_argument("--edit-interval-ms", type=int, default=5000, help="EDIT_INTERVAL_MS of the chat instance")
    ap.add_argument("--event-timeout-s", type=float, default=120.0)
    ap.add_argument("--consume-timeout-s", type=float, default=60.0)
    ap.add_argument("--no-djs", action="store_true", help="skip the discord.js bot")
    ap.add_argument("--djs-dir", default=os.environ.get("BENCH_DJS_DIR") or os.path.join(ROOT, "build", "bench", "djs"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--note", default=os.environ.get("BENCH_NOTE", ""), help="a remark stored with the results")
    ap.add_argument("--report-only", metavar="JSON",
                    help="measure nothing: write the table and plots again from a results file")
    a = ap.parse_args(argv)
    if a.report_only:
        return a
    q = a.quick
    a.runs = a.runs or (1 if q else 3)
    a.events = a.events or (5000 if q else 100000)
    a.kills = a.kills if a.kills is not None else (2 if q else 20)
    a.chats = [int(x) for x in (a.chats or ("100" if q else "1000,10000")).split(",") if x]
    a.chats_stream_s = a.chats_stream_s or (5.0 if q else 10.0)
    a.ack_seconds = a.ack_seconds or (2.0 if q else 10.0)
    a.ack_seconds_high = a.ack_seconds_high or (1.0 if q else 3.0)
    a.bench = [b.strip() for b in a.bench.split(",") if b.strip()]
    bad = [b for b in a.bench if b not in ALL]
    if bad:
        ap.error("unknown measurement %s (known: %s)" % (",".join(bad), ",".join(ALL)))
    if not a.no_djs and not os.path.isdir(os.path.join(a.djs_dir, "node_modules", "discord.js")):
        ap.error("discord.js is not installed in %s: run tests/bench/setup.sh (or pass --no-djs)" % a.djs_dir)
    return a


def machine():
    info = {"host": socket.gethostname(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
        with open("/proc/meminfo") as f:
            info["mem_kb"] = int(f.readline().split()[1])
        info["loadavg_start"] = open("/proc/loadavg").read().split()[:3]
    except (OSError, StopIteration):
        pass
    info["kernel"] = os.uname().release
    return info


def versions(args):
    v = {}
    for name, argv in (("redis", ["redis-server", "--version"]), ("node", ["node", "--version"]),
                       ("gnuplot", ["gnuplot", "--version"])):
        try:
            v[name] = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=10).stdout.strip()
        except OSError:
            v[name] = None
    try:
        with open(os.path.join(args.djs_dir, "node_modules", "discord.js", "package.json")) as f:
            v["discord.js"] = json.load(f)["version"]
    except OSError:
        v["discord.js"] = None
    try:
        v["ours"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                                   text=True, timeout=10).stdout.strip()
    except OSError:
        v["ours"] = None
    return v


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        with open(args.report_only) as f:
            res = json.load(f)
        for p in report.write_all(res, os.path.dirname(os.path.abspath(args.report_only))):
            log("wrote %s" % p)
        print(report.markdown(res))
        return 0
    res = {"started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine(), "versions": versions(args), "quick": args.quick, "note": args.note,
           "config": {k: v for k, v in vars(args).items() if k not in ("out", "djs_dir")}}
    funcs = {"idle": bench_idle, "routing": bench_routing, "ack": bench_ack, "chats": bench_chats,
             "failover": bench_failover, "holder": bench_holder}
    t0 = time.time()
    with harness.TestContext("bench") as t:
        c = Cluster(t, args)
        for name in ALL:  # holder last: it moves the gateway and stops discord.js
            if name in args.bench:
                log("== %s" % name)
                try:
                    funcs[name](c, res)
                except Exception as e:  # noqa: BLE001 - report it, go on with the rest
                    log("%s failed: %s: %s" % (name, type(e).__name__, e))
                    res.setdefault("errors", {})[name] = "%s: %s" % (type(e).__name__, e)
    res["duration_s"] = round(time.time() - t0, 1)
    res["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    paths = report.write_all(res, args.out)
    print(report.markdown(res))
    for p in paths:
        log("wrote %s" % os.path.relpath(p, ROOT) if p.startswith(ROOT) else p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
