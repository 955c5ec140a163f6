"""Chaos, measured: a steady flow of interactions (20 a second) through the
real binaries while one thing breaks, then every interaction is counted from
the Discord simulator's records:

    once     acknowledged, and its answer arrived exactly once
    twice    the answer arrived two or more times (completed twice in the
             original response, or a second message with it), or was
             replaced afterwards by another text
    lost     never acknowledged, or acknowledged and never answered by the
             end of the grace period (a loading message forever)
    refused  not served, but told why in a clear message ("please try
             again", "took too long", ...): not lost, not served
    unclear  ended on something that is neither the answer nor a clear
             refusal (a half-streamed answer, an unknown text)

Each scenario is its own test function; docs/chaos.md explains the figures,
the definitions and how to run them (`make chaos` runs every scenario,
including the long ones in tests/chaos/). Each prints a table and writes the
same figures as JSON to t.tmp/chaos-<scenario>.json (and to
$CHAOS_REPORT_DIR when set), then asserts 0 lost, 0 twice, 0 unclear.
"""

import json
import os
import re
import threading
import time

import harness
import test_discord
import test_failover
from harness import check, wait_until

SCALE = float(os.environ.get("BOT_TIMEOUT_SCALE") or 1.0)
RATE = 20.0
# Ten users take turns so that per-user limits (switched off here anyway)
# and conversation memory stay realistic but small.
USERS = ["6000000000000001%02d" % n for n in range(10)]
REFUSAL_WORDS = ("try again", "Temporary problem", "took too long", "not reachable", "unavailable", "busy",
                 "잠시 후", "다시 시도")


# --------------------------------------------------------------------------
# the flow of interactions


class Load:
    """Sends one interaction every 1/rate seconds from a thread, on a fixed
    schedule (a late send is made at once, not skipped). kind "ping" sends
    /핑, kind "chat" sends /채팅 with a unique question."""

    def __init__(self, c, kind, rate=RATE):
        self.c, self.kind, self.rate = c, kind, rate
        self.sent = []       # {n, id, at, question?}
        self.errors = []     # (n, str): the simulator refused or did not answer the POST
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def one(self, n):
        user = {"id": USERS[n % len(USERS)], "username": "chaos%02d" % (n % len(USERS))}
        if self.kind == "ping":
            ix = self.c.sim.interaction(name="핑", guild_id=test_failover.GUILD, channel_id=test_failover.CH_CHAT,
                                        locale="en-US", user=user, permissions="0")
            return {"n": n, "id": ix["id"], "at": time.time()}
        q = "chaos question %05d" % n
        ix = self.c.sim.interaction(name="채팅", guild_id=test_failover.GUILD, channel_id=test_failover.CH_CHAT,
                                    locale="en-US", user=user, options=[{"name": "질문", "type": 3, "value": q}])
        return {"n": n, "id": ix["id"], "at": time.time(), "question": q}

    def run(self):
        t0, n = time.monotonic(), 0
        while not self.stopping.is_set():
            wait = t0 + n / self.rate - time.monotonic()
            if wait > 0 and self.stopping.wait(wait):
                break
            try:
                self.sent.append(self.one(n))
            except Exception as e:  # noqa: BLE001 - counted and reported, never hidden
                self.errors.append((n, "%s: %s" % (type(e).__name__, e)))
            n += 1
        self.elapsed = time.monotonic() - t0

    def start(self):
        self.started_at = time.time()
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self.thread.join(30)
        check(not self.thread.is_alive(), "the load thread stopped")


# --------------------------------------------------------------------------
# counting


def is_refusal(text):
    return any(w.lower() in text.lower() for w in REFUSAL_WORDS)


def contents(msg):
    """What the user saw in a message over time: its first content (an
    immediate answer), then each edit's."""
    if not msg:
        return []
    if not msg.get("edits"):
        return [msg.get("content") or ""]
    return [e.get("content") or "" for e in msg["edits"]]


def times_answered(seq, is_answer):
    """How many times the answer was completed in a content history: every
    step into a complete answer counts (a job run twice streams it again)."""
    n, prev = 0, False
    for text in seq:
        now = is_answer(text)
        n += now and not prev
        prev = now
    return n


def classify(st, is_answer):
    """(category, detail) of one interaction's simulator record."""
    if not st.get("acked"):
        late = [e for e in st.get("errors") or () if e.get("code") == 10062]
        return "lost", "acknowledged too late (10062)" if late else "never acknowledged"
    orig = st.get("original") or {}
    seen = contents(orig)
    in_orig = answers = times_answered(seen, is_answer)
    extra = [f for f in st.get("followups") or () if (f.get("content") or f.get("embeds") or f.get("attachments"))]
    answers += len(extra)
    if answers >= 2:
        return "twice", "answered %d times" % answers
    final = orig.get("content") or ""
    if in_orig and not is_answer(final):
        return "twice", "the answer was replaced by: %s" % final[:100]
    if answers == 1:
        return "once", ""
    if not final:
        return "lost", "acknowledged, never answered"
    if is_refusal(final):
        return "refused", final[:120]
    return "unclear", final[:120]


def census(c, sent, is_answer):
    """{id: (category, detail, st)} for every sent interaction."""
    wanted = {s["id"] for s in sent}
    out = {}
    for st in c.sim.get("/_sim/interactions", timeout=60)["interactions"]:
        if st["id"] in wanted:
            cat, detail = classify(st, is_answer(st))
            out[st["id"]] = (cat, detail, st)
    for s in sent:
        out.setdefault(s["id"], ("lost", "unknown to the simulator", {}))
    return out


def answered_at(st, is_answer):
    """When the answer was complete (simulator clock), or None."""
    orig = st.get("original") or {}
    for e in orig.get("edits") or ():
        if is_answer(e.get("content") or ""):
            return e["at"]
    if orig and not orig.get("edits") and is_answer(orig.get("content") or ""):
        return orig.get("created_at") or st["acked"]["at"]
    return None


def late_threshold(pre):
    """An answer slower than this is late: three times the p95 before the
    fault, and never under one second."""
    return round(max(1.0, 3 * (percentile(pre, 0.95) or 0)), 3)


def recovery_time(rows, counted, lat, pre, start):
    """(recovery seconds, number of late answers). Recovery runs from the
    start of the fault to the end of the last disruption: an interaction
    not served once counts at the moment it was sent, a late answer at the
    moment it arrived. None when the last interaction sent was not served."""
    limit = late_threshold(pre)
    end, slow = start, 0
    for s in rows:
        if counted[s["id"]][0] != "once":
            end = max(end, s["at"])
        elif lat.get(s["id"]) and lat[s["id"]][1] > limit:
            slow += 1
            end = max(end, lat[s["id"]][0])
    if rows and counted[rows[-1]["id"]][0] != "once":
        return None, slow
    return round(end - start, 2), slow


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p * len(xs)))], 3)


def summarize(name, load, fault, counted, is_answer, notes):
    """The figures of one scenario, as a JSON-able dict."""
    rows = sorted(load.sent, key=lambda s: s["at"])
    cats = {k: 0 for k in ("once", "twice", "lost", "refused", "unclear")}
    for s in rows:
        cats[counted[s["id"]][0]] += 1
    lat, pre = {}, []
    for s in rows:
        cat, _, st = counted[s["id"]]
        at = answered_at(st, is_answer(st)) if cat == "once" else None
        if at:
            lat[s["id"]] = (at, at - st["created_at"])
            if at < fault["start"]:
                pre.append(at - st["created_at"])
    recovery, slow = recovery_time(rows, counted, lat, pre, fault["start"])
    dup_acks = sum(1 for s in rows for e in counted[s["id"]][2].get("errors") or () if e.get("code") == 40060)
    details = {}
    for s in rows:
        cat, detail, _ = counted[s["id"]]
        if cat != "once":
            if cat in ("refused", "unclear"):  # "try again in 27 s" and "in 30 s" are one kind
                detail = re.sub(r"\d+", "N", detail)
            details.setdefault(cat, {}).setdefault(detail, 0)
            details[cat][detail] += 1
    bad = [s for s in rows if counted[s["id"]][0] != "once"]
    first_bad = [{"n": s["n"], "id": s["id"], "t": round(s["at"] - fault["start"], 2),
                  "category": counted[s["id"]][0], "detail": counted[s["id"]][1],
                  "discord_errors": ["%s %s %s" % (e.get("route"), e.get("status"), e.get("code"))
                                     for e in counted[s["id"]][2].get("errors") or ()][:4]} for s in bad[:10]]
    return {
        "scenario": name, "sent": len(rows), "send_errors": len(load.errors),
        "rate_per_s": round(len(rows) / load.elapsed, 1) if load.elapsed else None,
        **cats, "dup_acks_refused": dup_acks,
        "fault_at_s": round(fault["start"] - load.started_at, 2),
        "outage_s": round(fault["end"] - fault["start"], 2),
        "recovery_s": recovery,
        "disrupted_from_s": round(bad[0]["at"] - fault["start"], 2) if bad else None,
        "disrupted_until_s": round(bad[-1]["at"] - fault["start"], 2) if bad else None,
        "late": slow, "late_threshold_s": late_threshold(pre),
        "latency_p50_s": percentile([v[1] for v in lat.values()], 0.5),
        "latency_p95_s": percentile([v[1] for v in lat.values()], 0.95),
        "latency_max_s": percentile([v[1] for v in lat.values()], 1.0),
        "why_not_once": details, "first_not_once": first_bad, "notes": notes,
        "send_error_samples": load.errors[:5],
    }


COLUMNS = ("scenario", "sent", "once", "twice", "lost", "refused", "unclear", "late", "dup_acks_refused",
           "outage_s", "recovery_s", "latency_p50_s", "latency_max_s")


def table(reports):
    """A plain-text table of the figures, one row per scenario, then why
    the others were not served once."""
    def cell(r, c):
        v = r.get(c)
        return "never" if c == "recovery_s" and v is None else ("-" if v is None else str(v))
    widths = [max([len(c)] + [len(cell(r, c)) for r in reports]) for c in COLUMNS]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths))]
    lines += ["  ".join(cell(r, c).ljust(w) for c, w in zip(COLUMNS, widths)) for r in reports]
    for r in reports:
        for cat, why in sorted(r["why_not_once"].items()):
            for detail, n in sorted(why.items(), key=lambda kv: -kv[1])[:6]:
                lines.append("  %s %s: %d x %s" % (r["scenario"], cat, n, detail))
    return "\n".join(lines)


def write_report(t, report):
    text = json.dumps(report, indent=2, ensure_ascii=False)
    with open(t.path("chaos-%s.json" % report["scenario"]), "w") as f:
        f.write(text + "\n")
    out_dir = os.environ.get("CHAOS_REPORT_DIR")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "chaos-%s.json" % report["scenario"]), "w") as f:
            f.write(text + "\n")
    print("CHAOS-JSON " + json.dumps(report, ensure_ascii=False), flush=True)


# --------------------------------------------------------------------------
# one scenario: warm up, break something, go on, count


def run_scenario(t, c, name, kind, fault, before_s=5.0, after_s=15.0, grace_s=30.0, notes=""):
    """Load c with `kind` interactions; after before_s call fault() (it
    breaks something and returns once that thing is back, or at once for a
    kill that nobody undoes), keep the load for after_s more, then wait up
    to grace_s (scaled) for every interaction to end, count, report and
    assert. Returns the report."""
    questions = {}  # interaction id -> its question (chat)

    def is_answer(st):
        """The predicate "this text is st's answer"."""
        if kind == "ping":
            return lambda text: text.startswith("Pong!")
        want = "Answer: " + questions.get(st["id"], "\0")
        # the OpenAI simulator echoes the question, and says how many
        # messages it saw when the conversation memory sent history
        return lambda text: text == want or (text.startswith(want + "\n(context: ") and text.endswith(" messages)"))
    load = Load(c, kind).start()
    time.sleep(before_s)
    fault_times = {"start": time.time()}
    t.log("chaos %s: fault starts" % name)
    fault()
    fault_times["end"] = time.time()
    t.log("chaos %s: fault over after %.1f s" % (name, fault_times["end"] - fault_times["start"]))
    time.sleep(after_s)
    load.stop()
    questions.update({s["id"]: s.get("question") for s in load.sent})
    t.log("chaos %s: %d sent in %.1f s; grace up to %.0f s" % (name, len(load.sent), load.elapsed, grace_s * SCALE))

    def settled():
        counted = census(c, load.sent, is_answer)
        return all(v[0] in ("once", "twice", "refused") for v in counted.values())
    try:
        wait_until(settled, grace_s * SCALE, "every interaction answered or refused", interval=1.0)
    except AssertionError:
        pass  # the ones still open are counted as lost (or unclear) below
    time.sleep(3.0 * SCALE)  # an answer that comes twice usually comes soon after
    counted = census(c, load.sent, is_answer)
    report = summarize(name, load, fault_times, counted, is_answer, notes)
    write_report(t, report)
    text = table([report])
    print(text, flush=True)
    check(report["lost"] == 0 and report["twice"] == 0 and report["unclear"] == 0 and not report["send_errors"],
          "chaos %s: every interaction must be answered once or clearly refused:\n%s" % (name, text))
    return report


def cluster(t, pg=False):
    """Redis, the Discord and OpenAI simulators (test_failover.Cluster),
    PostgreSQL when asked, with fast failover settings and no user limits
    (USER_RATE_LIMIT=0: twenty requests a second come from ten users)."""
    c = test_failover.Cluster(t, ai_delay_ms=20)
    # /핑 measures a REST round trip with GET /users/@me, whose bucket is
    # 10 per 5 s: at 20 pings a second the queue would grow without end and
    # we would be measuring that bucket, not the fault.
    c.sim.config(rate_limits={"GET /users/@me": {"limit": 1000, "window_s": 1}})
    if pg:
        c.pg = t.postgres()
        c.db = c.pg.create_database("bot")
    return c


def start_pair(c, holder, other, **extra):
    """Two instances; `holder` starts first and holds the gateway session."""
    a = c.start(holder, **extra)
    c.sim.wait_session()
    b = c.start(other, **extra)
    for inst in (a, b):
        if c.db:
            wait_until(lambda: inst.health()[1]["postgres"]["ok"], 30, "postgres up and migrated")
    wait_until(lambda: test_discord.holder_of([a, b]) is a, 10, "%s holds the gateway" % holder)
    time.sleep(1.0)  # both beat: each knows the other is up
    return a, b


# --------------------------------------------------------------------------
# the scenarios (tests/chaos/ has the long ones)


@harness.timeout(150)
def test_chaos_redis_kill9_restart_on_aof(t):
    """/핑 at 20/s; Redis is killed with SIGKILL and restarted on its AOF
    one second later (a supervisor's restart)."""
    c = cluster(t)
    start_pair(c, "admin", "chat")

    def fault():
        c.redis.kill()
        time.sleep(1.0)
        c.redis.restart()
    run_scenario(t, c, "redis_kill9_aof", "ping", fault, notes="Redis SIGKILL, restarted on its AOF after 1 s")


@harness.timeout(150)
def test_chaos_gateway_holder_kill9(t):
    """/핑 at 20/s; the instance holding the gateway session (chat) is
    killed with SIGKILL; the admin instance must take the lease, resume the
    session and serve what Discord replays. GATEWAY_LEASE_MS is its default
    (1500, was 5000): events of the gap wait for the lease to expire, and
    Discord wants an acknowledgement within 3 s."""
    holder_kill9(t, "gateway_holder_kill9", lease_ms=1500)


def holder_kill9(t, name, lease_ms):
    c = cluster(t)
    holder, admin = start_pair(c, "chat", "admin", GATEWAY_LEASE_MS=lease_ms)

    def fault():
        holder.kill()
        wait_until(lambda: admin.health()[1]["gateway"]["holder"], 20 * SCALE, "admin took the gateway")
    run_scenario(t, c, name, "ping", fault,
                 notes="SIGKILL of the gateway holder (chat), GATEWAY_LEASE_MS=%d; fault over = the admin "
                       "instance holds the gateway" % lease_ms)


@harness.timeout(180)
def test_chaos_model_hang(t):
    """/채팅 at 20/s; the model stops answering (requests are read and never
    answered) for 10 s. LLM_TIMEOUT_SEC is 8 here: a hung request must end
    in a clear "took too long" message, later ones must be answered."""
    model_hang(t, "model_hang", after_s=12.0)


def model_hang(t, name, after_s):
    c = cluster(t, pg=True)
    start_pair(c, "chat", "admin", LLM_TIMEOUT_SEC="8")

    def fault():
        c.ai.keys(test_failover.KEY_CHAT, "hang")
        time.sleep(10.0)
        c.ai.keys(test_failover.KEY_CHAT, "ok")
    run_scenario(t, c, name, "chat", fault, after_s=after_s, grace_s=40.0,
                 notes="chat key hangs for 10 s (LLM_TIMEOUT_SEC=8), load goes on %g s after" % after_s)


# the 30-second PostgreSQL stop lives in tests/chaos/test_chaos_long.py;
# it is shared here so that `make chaos` and this file use one body
def postgres_stopped_30s(t):
    """/채팅 at 20/s (chat keeps conversation memory in PostgreSQL);
    PostgreSQL is stopped for 30 s, then started again."""
    c = cluster(t, pg=True)
    chat, admin = start_pair(c, "chat", "admin")

    def fault():
        t0 = time.monotonic()
        c.pg.stop()
        wait_until(lambda: not chat.health()[1]["postgres"]["ok"], 25, "chat saw PostgreSQL go away")
        time.sleep(max(0.0, 30.0 - (time.monotonic() - t0)))
        c.pg.start()
    run_scenario(t, c, "postgres_stopped_30s", "chat", fault, after_s=10.0,
                 notes="PostgreSQL stopped (fast shutdown) for 30 s, then started")
