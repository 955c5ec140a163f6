"""Core platform, black-box: the real binaries against a real redis-server
and a real PostgreSQL, each started for the test on 127.0.0.1."""

import json
import os
import re
import signal
import time

import harness
from harness import check, wait_until

ROLES = ("chat", "image", "video", "admin")
NAMES = {"chat": "chat-1", "image": "image-2", "video": "video-3", "admin": "admin-4"}


def env_for(t, redis, pg=None, **extra):
    env = {
        "REDIS_URL": redis.url,
        "HEALTH_PORT": t.free_port(),
        "DIAG_JOBS": "on",
        "HEARTBEAT_INTERVAL_MS": "200",
        "JOB_BLOCK_MS": "1000",
        "LOG_LEVEL": "debug",
    }
    if pg is not None:
        env["DATABASE_URL"] = pg
    env.update({k: str(v) for k, v in extra.items()})
    return env


def results(r):
    """diag results as a list of dicts."""
    out = []
    for _id, fields in r.cmd("XRANGE", "discordbot:diag:results", "-", "+"):
        out.append(dict(zip(fields[::2], fields[1::2])))
    return out


def pending_count(r, role):
    return r.cmd("XPENDING", "discordbot:jobs:%s" % role, "workers")[0]


def add_job(r, role, type_, payload):
    return r.cmd("XADD", "discordbot:jobs:%s" % role, "*", "type", type_, "payload", json.dumps(payload),
                 "ts", str(int(time.time() * 1000)))


@harness.timeout(120)
def test_four_instances_healthy_beat_and_consume(t):
    redis = t.redis()
    pg = t.postgres()
    db = pg.create_database("bot")
    insts = {role: t.instance(role, env=env_for(t, redis, db)) for role in ROLES}
    for role, inst in insts.items():
        inst.wait_healthy(20)
        # 200 may come while the schema is still migrating ("degraded")
        wait_until(lambda: inst.health()[1]["status"] == "ok", 20, "%s status ok" % role)
        body = inst.health()[1]
        check(body["role"] == role and body["instance"] == NAMES[role], body)
        check(body["redis"]["ok"] and body["postgres"]["ok"], body)
        for key in ("version", "uptime_s", "inflight", "processed", "failed", "loop_lag_ms"):
            check(key in body, "health lacks %s" % key)
    r = redis.client()

    def beats():
        names = set()
        for _id, f in r.cmd("XRANGE", "discordbot:heartbeats", "-", "+"):
            d = dict(zip(f[::2], f[1::2]))
            names.add(d["name"])
            for key in ("role", "pid", "version", "uptime_s", "inflight", "processed", "failed"):
                check(key in d, "heartbeat lacks %s: %r" % (key, d))
        return names >= set(NAMES.values())
    wait_until(beats, 10, "heartbeats of all four instances")

    ids = {role: add_job(r, role, "diag.echo", {"role": role, "text": "안녕 " + role}) for role in ROLES}
    wait_until(lambda: len(results(r)) >= 4, 10, "four diag results")
    time.sleep(harness.scaled(0.5))  # a second answer, if any, would show up now
    res = results(r)
    check(len(res) == 4, "each job answered exactly once: %r" % res)
    for role in ROLES:
        mine = [x for x in res if x["job"] == ids[role] and x["role"] == role]
        check(len(mine) == 1 and mine[0]["consumer"] == NAMES[role], "job of %s taken by %r" % (role, mine))
        check(json.loads(mine[0]["payload"])["text"] == "안녕 " + role, "payload intact")
        wait_until(lambda: pending_count(r, role) == 0, 5, "%s job acked" % role)
    wait_until(lambda: insts["chat"].health()[1]["processed"] == 1, 5, "processed counter")
    # migrations ran exactly once although four instances started together
    rows = pg.psql("SELECT count(*), count(DISTINCT version) FROM schema_migrations", db="bot")
    check(rows and rows[0][0] == rows[0][1] and int(rows[0][0]) >= 1, "schema_migrations %r" % rows)


@harness.timeout(90)
def test_redis_outage_then_recovery_loses_nothing(t):
    redis = t.redis(appendonly=True)
    inst = t.instance("image", env=env_for(t, redis))
    inst.wait_healthy(15)
    r = redis.client()
    add_job(r, "image", "diag.echo", {"n": 1})
    wait_until(lambda: len(results(r)) == 1, 10, "first job")
    redis.kill()

    def unhealthy():
        st, body = inst.health()
        return st == 503 and body["status"] == "unhealthy" and body["redis"]["ok"] is False
    wait_until(unhealthy, 10, "/health 503 while redis is down")
    time.sleep(harness.scaled(1.0))
    check(inst.alive(), "the instance lives through the outage")
    redis.restart()
    r = redis.client()
    queued = add_job(r, "image", "diag.echo", {"n": 2, "queued": "during recovery"})
    wait_until(lambda: inst.health()[0] == 200, 20, "/health 200 again")
    wait_until(lambda: any(x["job"] == queued for x in results(r)), 15, "job queued meanwhile processed")
    wait_until(lambda: pending_count(r, "image") == 0, 5, "acked")
    check(inst.find_records(msg="redis connection restored"), "recovery logged")


@harness.timeout(60)
def test_sigterm_finishes_job_in_flight(t):
    redis = t.redis()
    inst = t.instance("video", env=env_for(t, redis))
    inst.wait_healthy(15)
    r = redis.client()
    jid = add_job(r, "video", "diag.sleep", {"ms": 1500})
    wait_until(lambda: inst.health()[1]["inflight"] == 1, 5, "job in flight")
    inst.sigterm()
    # the signal reaches the loop asynchronously: a /health answered just
    # before it may still say running
    st, body = wait_until(lambda: (lambda h: h if h[1]["status"] == "draining" else None)(inst.health()), 5,
                          "draining shows in /health")
    check(st == 503, "draining answers 503: %r" % st)
    code = inst.wait(15)
    check(code == 0, "exit 0 after drain, got %r" % code)
    check([x for x in results(r) if x["job"] == jid], "the job finished")
    check(pending_count(r, "video") == 0, "and was acked")
    check(inst.find_records(msg="drained: every job taken was finished and acked"), "drain logged")


@harness.timeout(60)
def test_crash_with_job_in_flight_is_redone_after_restart(t):
    redis = t.redis()
    env = env_for(t, redis)
    inst = t.instance("chat", env=env)
    inst.wait_healthy(15)
    r = redis.client()
    jid = add_job(r, "chat", "diag.sleep", {"ms": 5000})
    wait_until(lambda: inst.health()[1]["inflight"] == 1, 5, "job in flight")
    inst.kill()
    inst.wait(5)
    check(pending_count(r, "chat") == 1, "the job stays pending after kill -9")
    inst.start()
    wait_until(lambda: [x for x in results(r) if x["job"] == jid], 15, "the job is done after restart")
    wait_until(lambda: pending_count(r, "chat") == 0, 5, "and acked")
    check(inst.find_records(redelivered=True, msg="job started"), "it ran as a redelivery")


@harness.timeout(60)
def test_unknown_job_type_is_dead_lettered(t):
    redis = t.redis()
    inst = t.instance("admin", env=env_for(t, redis))
    inst.wait_healthy(15)
    r = redis.client()
    jid = add_job(r, "admin", "no.such.type", {"x": 1})
    r.cmd("XADD", "discordbot:jobs:admin", "*", "payload", "{}")  # no type at all
    wait_until(lambda: r.cmd("XLEN", "discordbot:dead") == 2, 10, "two dead letters")
    dead = [dict(zip(f[::2], f[1::2])) for _i, f in r.cmd("XRANGE", "discordbot:dead", "-", "+")]
    check(dead[0]["id"] == jid and dead[0]["reason"] == "no handler for this job type", dead[0])
    check(dead[1]["reason"] == "entry has no type field", dead[1])
    wait_until(lambda: pending_count(r, "admin") == 0, 5, "dead letters are acked")
    check(inst.find_records(msg="job dead-lettered"), "logged with a reason")
    check(inst.alive(), "alive")


@harness.timeout(120)
def test_postgres_down_at_start_runs_degraded_then_recovers(t):
    redis = t.redis()
    pg = t.postgres(start=False)
    inst = t.instance("chat", env=env_for(t, redis, pg.url))
    body = inst.wait_healthy(15)
    check(body["status"] == "degraded" and body["postgres"]["ok"] is False, body)
    check(body["postgres"].get("error"), "the reason is shown")
    outage = [x for x in inst.records() if x.get("msg") == "postgres unavailable"]
    check(len(outage) == 1, "the outage is logged once, not per retry: %d lines" % len(outage))
    r = redis.client()
    add_job(r, "chat", "diag.echo", {"still": "served"})
    wait_until(lambda: len(results(r)) == 1, 10, "jobs still served without postgres")
    pg.start()
    wait_until(lambda: inst.health()[1]["status"] == "ok", 30, "ok once postgres is up")
    pg.kill()
    wait_until(lambda: inst.health()[1]["status"] == "degraded", 30, "degraded again when postgres dies")
    check(inst.health()[0] == 200, "postgres is a soft dependency: still 200")
    pg.restart()
    wait_until(lambda: inst.health()[1]["status"] == "ok", 30, "and back")


@harness.timeout(60)
def test_bad_config_exits_2_naming_key_without_secret(t):
    redis = t.redis()
    cases = [
        ({"HEALTH_PORT": "eighty"}, "HEALTH_PORT"),
        ({"OPENAI_API_KEY_1": "your_openai_api_key"}, "OPENAI_API_KEY_1"),
        ({"MAX_INFLIGHT": "0", "OPENAI_API_KEY_1": "sk-proj-REALSECRET123"}, "MAX_INFLIGHT"),
        ({"REDIS_URL": "http://:hunter2@host"}, "REDIS_URL"),
    ]
    for env, key in cases:
        full = env_for(t, redis)
        full.update(env)
        inst = t.instance("chat", env=full)
        code = inst.wait(10)
        out = inst.logs()
        check(code == 2, "%s: exit %r" % (key, code))
        errs = [x for x in inst.records() if x.get("msg") == "invalid configuration"]
        check(errs and errs[0]["key"] == key, "%s named: %r" % (key, errs))
        for secret in ("REALSECRET123", "hunter2", "your_openai_api_key"):
            check(secret not in out, "%s printed" % secret)
    # --help lists the settings and exits 0
    inst = t.instance("chat", args=["--help"])
    check(inst.wait(10) == 0 and "HEARTBEAT_INTERVAL_MS" in inst.logs(), "--help")
    # an env file with a problem on a line that holds a secret does not echo it
    path = t.path("bad.env")
    with open(path, "w") as f:
        f.write("OPENAI_API_KEY_1=sk-okay\nsk-leaked-line-without-equals\n")
    inst = t.instance("chat", env=env_for(t, redis), args=["--env-file", path])
    check(inst.wait(10) == 2, "bad env file exits 2")
    check("sk-leaked" not in inst.logs() and "sk-okay" not in inst.logs(), "no secret echoed")


@harness.timeout(60)
def test_secrets_never_in_logs_health_or_metrics(t):
    redis = t.redis()
    secrets = {"OPENAI_API_KEY_2": "sk-openai-TOPSECRET-1", "MINIMAX_API_KEY_2": "mm-TOPSECRET-2",
               "STABILITY_API_KEY_2": "st-TOPSECRET-3,st-TOPSECRET-4"}
    keyfile = t.path("secret_key")
    with open(keyfile, "w") as f:
        f.write("sk-from-file-TOPSECRET\n")
    env = env_for(t, redis, "postgresql://bot:pw-TOPSECRET@127.0.0.1:%d/bot" % t.free_port(), **secrets)
    env.pop("OPENAI_API_KEY_2")
    env["OPENAI_API_KEY_2_FILE"] = keyfile
    inst = t.instance("image", env=env)
    inst.wait_healthy(15)
    check_out = t.instance("image", env=env, args=["--check-config"])
    check(check_out.wait(10) == 0, "--check-config exits 0")
    texts = [inst.logs(), inst.get("/health")[1], inst.get("/metrics")[1], check_out.logs()]
    for text in texts:
        check("TOPSECRET" not in text, "a secret leaked: %s" % text[:2000])
    start = inst.find_records(msg="starting")[0]
    check(start["openai_keys"].startswith("sha256:") and start["minimax_keys"].startswith("sha256:"),
          "keys logged as fingerprints: %r" % start)


@harness.timeout(60)
def test_metrics_and_http_errors(t):
    redis = t.redis()
    inst = t.instance("chat", env=env_for(t, redis))
    inst.wait_healthy(15)
    st, text = inst.get("/metrics")
    check(st == 200, st)
    for name in ("discordbot_jobs_inflight", 'discordbot_jobs_total{result="done"}', "discordbot_redis_up 1",
                 "discordbot_postgres_up 0", "discordbot_uptime_seconds", "discordbot_loop_lag_seconds"):
        check(name in text, "metrics lack %s" % name)
    for line in text.splitlines():
        check(line.startswith("#") or line.startswith("discordbot_"), "bad metrics line %r" % line)
    check(inst.get("/nope")[0] == 404, "404")
    check(inst.request("POST", "/health", body=b"x")[0] == 405, "405")
    check(inst.request("GET", "/health", headers={"Content-Length": "5"}, body=b"\x00\xff\xfe\x01\x02")[0] in (200, 400),
          "junk body does not break anything")
    check(inst.alive() and inst.health()[0] == 200, "still healthy")


@harness.timeout(60)
def test_health_port_in_use_fails_clearly(t):
    redis = t.redis()
    env = env_for(t, redis)
    a = t.instance("chat", env=env)
    a.wait_healthy(15)
    b = t.instance("image", env=env)
    code = b.wait(10)
    check(code == 1, "second instance on the same port exits 1, got %r" % code)
    check(b.find_records(msg="cannot start the health server"), "clear error")


# ---- observability: /performance, Prometheus text, the performance line ----

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def _prom_value(text, where):
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    check(re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text), "%s: bad value %r" % (where, text))
    return float(text)


def _prom_labels(s, i, where):
    """Parse '{a="x",b="y"}' from s[i] == '{'; return (dict, index after '}')."""
    labels = {}
    i += 1
    while True:
        if s[i:i + 1] == "}":
            return labels, i + 1
        m = _LABEL_NAME.match(s, i)
        check(m, "%s: bad label name at %d" % (where, i))
        name, i = m.group(0), m.end()
        check(s[i:i + 2] == '="', "%s: expected =\" after %s" % (where, name))
        i += 2
        val = []
        while s[i:i + 1] != '"':
            check(i < len(s), "%s: unterminated label value" % where)
            if s[i] == "\\":
                esc = s[i + 1:i + 2]
                check(esc in ("\\", '"', "n"), "%s: bad escape \\%s" % (where, esc))
                val.append("\n" if esc == "n" else esc)
                i += 2
            else:
                val.append(s[i])
                i += 1
        i += 1
        check(name not in labels, "%s: label %s twice" % (where, name))
        labels[name] = "".join(val)
        if s[i:i + 1] == ",":
            i += 1
        else:
            check(s[i:i + 1] == "}", "%s: expected , or } at %d" % (where, i))


def _family_of(name, types):
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and types.get(base) in ("histogram", "summary"):
            return base
    return name


def parse_prometheus(text):
    """Strict parse of the text exposition format 0.0.4. Returns
    {family: {"type", "samples": [(name, labels, value)]}}; fails the test on
    anything Prometheus would reject or misread."""
    check(text.endswith("\n"), "metrics end with a newline")
    types, helps, fams, done, seen = {}, set(), {}, set(), set()
    current = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d %r" % (n, line)
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                check(_METRIC_NAME.fullmatch(name), "%s: bad metric name" % where)
                if parts[1] == "HELP":
                    check(name not in helps, "%s: second HELP for %s" % (where, name))
                    helps.add(name)
                else:
                    check(len(parts) == 4 and parts[3] in _TYPES, "%s: bad TYPE" % where)
                    check(name not in types, "%s: second TYPE for %s" % (where, name))
                    check(name not in fams, "%s: TYPE after samples of %s" % (where, name))
                    types[name] = parts[3]
            continue
        m = _METRIC_NAME.match(line)
        check(m, "%s: bad metric name" % where)
        name, i = m.group(0), m.end()
        labels = {}
        if i < len(line) and line[i] == "{":
            labels, i = _prom_labels(line, i, where)
        check(line[i:i + 1] == " ", "%s: expected a space before the value" % where)
        rest = line[i + 1:].split(" ")
        check(1 <= len(rest) <= 2, "%s: expected value [timestamp]" % where)
        value = _prom_value(rest[0], where)
        fam = _family_of(name, types)
        check(fam in types, "%s: sample of %s without a TYPE line" % (where, fam))
        if fam != current:
            check(fam not in done, "%s: samples of %s are not in one group" % (where, fam))
            if current:
                done.add(current)
            current = fam
        key = (name, tuple(sorted(labels.items())))
        check(key not in seen, "%s: duplicate sample" % where)
        seen.add(key)
        if types[fam] == "counter":
            check(value >= 0, "%s: negative counter" % where)
        fams.setdefault(fam, {"type": types[fam], "samples": []})["samples"].append((name, labels, value))
    for fam, f in fams.items():
        if f["type"] == "histogram":
            _check_histogram(fam, f["samples"])
    return fams


def _check_histogram(fam, samples):
    series = {}
    for name, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        s = series.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if name == fam + "_bucket":
            check("le" in labels, "%s bucket without le" % fam)
            s["buckets"].append((_prom_value(labels["le"], fam + " le"), value))
        elif name == fam + "_sum":
            s["sum"] = value
        elif name == fam + "_count":
            s["count"] = value
        else:
            check(False, "%s: stray sample %s" % (fam, name))
    for rest, s in series.items():
        where = "%s%r" % (fam, dict(rest))
        b = s["buckets"]
        check(b and s["sum"] is not None and s["count"] is not None, "%s: buckets, _sum and _count" % where)
        check([le for le, _v in b] == sorted(le for le, _v in b), "%s: buckets in order of le" % where)
        check(b[-1][0] == float("inf"), "%s: last bucket is +Inf" % where)
        check(all(b[k][1] <= b[k + 1][1] for k in range(len(b) - 1)), "%s: buckets cumulative: %r" % (where, b))
        check(b[-1][1] == s["count"], "%s: +Inf bucket %r != _count %r" % (where, b[-1][1], s["count"]))


def prom_value(fams, name, **labels):
    fam = _family_of(name, {k: v["type"] for k, v in fams.items()})
    hits = [v for n, lab, v in fams.get(fam, {"samples": []})["samples"] if n == name and lab == labels]
    check(len(hits) == 1, "one sample %s%r, got %r" % (name, labels, hits))
    return hits[0]


def performance(inst):
    st, text = inst.get("/performance")
    check(st == 200, "/performance answers 200: %r %r" % (st, text))
    return json.loads(text)


@harness.timeout(60)
def test_performance_counts_jobs_by_result(t):
    redis = t.redis()
    inst = t.instance("image", env=env_for(t, redis))
    inst.wait_healthy(15)
    perf = performance(inst)
    check(perf["commands_processed"] == 0 and perf["active_requests"] == 0, perf)
    check(perf["success_rate"] is None and perf["avg_response_ms"] is None, "no rate before any job: %r" % perf)
    check(set(perf["by_role"]) == set(ROLES), perf)
    r = redis.client()
    for n in range(3):
        add_job(r, "image", "diag.echo", {"n": n})
    add_job(r, "image", "diag.fail", {})
    wait_until(lambda: performance(inst)["commands_processed"] == 4, 10, "four jobs finished")
    perf = performance(inst)
    check(perf["succeeded"] == 3 and perf["failed"] == 1, perf)
    check(perf["success_rate"] == 0.75, perf)
    check(isinstance(perf["avg_response_ms"], (int, float)) and perf["avg_response_ms"] >= 0, perf)
    check(perf["by_role"]["image"]["processed"] == 4 and perf["by_role"]["image"]["failed"] == 1, perf)
    check(perf["by_role"]["chat"]["processed"] == 0, perf)
    check(perf["uptime_s"] >= 0 and perf["active_requests"] == 0, perf)
    add_job(r, "image", "diag.sleep", {"ms": 3000})
    wait_until(lambda: performance(inst)["active_requests"] == 1, 10, "a job in flight")
    check(performance(inst)["commands_processed"] == 4, "a running job is not counted yet")
    check(not inst.find_records(msg="performance"), "the first performance line comes 60 s after start")


@harness.timeout(60)
def test_metrics_are_valid_prometheus_text(t):
    redis = t.redis()
    # a public key alone adds the Discord REST and interaction families
    inst = t.instance("chat", env=env_for(t, redis, DISCORD_PUBLIC_KEY="11" * 32))
    inst.wait_healthy(15)
    r = redis.client()
    add_job(r, "chat", "diag.echo", {"text": 'quote " and \\ backslash'})
    add_job(r, "chat", "diag.echo", {"n": 2})
    add_job(r, "chat", "diag.fail", {})
    wait_until(lambda: performance(inst)["commands_processed"] == 3, 10, "three jobs finished")
    st, text = inst.get("/metrics")
    check(st == 200, st)
    fams = parse_prometheus(text)
    for fam in fams:
        check(fam.startswith("discordbot_"), "every name prefixed discordbot_: %s" % fam)
    check(prom_value(fams, "discordbot_job_results_total", role="chat", result="done") == 2, "done by role")
    check(prom_value(fams, "discordbot_job_results_total", role="chat", result="failed") == 1, "failed by role")
    check(prom_value(fams, "discordbot_job_results_total", role="video", result="done") == 0, "other roles at 0")
    check(fams["discordbot_job_duration_seconds"]["type"] == "histogram", fams["discordbot_job_duration_seconds"])
    check(prom_value(fams, "discordbot_job_duration_seconds_count", role="chat") == 3, "histogram count")
    check(prom_value(fams, "discordbot_job_duration_seconds_bucket", role="chat", le="+Inf") == 3, "+Inf")
    check(prom_value(fams, "discordbot_provider_requests_total", provider="openai", status="ok") == 0,
          "provider requests exported")
    # what was there before is still there
    check(prom_value(fams, "discordbot_jobs_total", result="done") == 2, "jobs_total by result")
    for fam in ("discordbot_jobs_inflight", "discordbot_loop_lag_seconds", "discordbot_discord_requests_total",
                "discordbot_discord_ratelimit_waits_total", "discordbot_interactions_total", "discordbot_info"):
        check(fam in fams, "metrics lack %s" % fam)


@harness.timeout(60)
def test_performance_logged_when_draining(t):
    redis = t.redis()
    inst = t.instance("video", env=env_for(t, redis))
    inst.wait_healthy(15)
    r = redis.client()
    add_job(r, "video", "diag.echo", {"n": 1})
    add_job(r, "video", "diag.fail", {})
    wait_until(lambda: performance(inst)["commands_processed"] == 2, 10, "two jobs finished")
    add_job(r, "video", "diag.sleep", {"ms": 1500})
    wait_until(lambda: performance(inst)["active_requests"] == 1, 10, "a job in flight")
    check(not inst.find_records(msg="performance"), "no performance line before 60 s")
    inst.sigterm()
    rec = inst.wait_record(msg="performance", timeout=5)
    check(rec["level"] == "info", rec)
    check(rec["commands_processed"] == 2 and rec["succeeded"] == 1 and rec["failed"] == 1, rec)
    check(rec["success_rate"] == 0.5 and rec["avg_response_ms"] >= 0, rec)
    check(rec["active_requests"] == 1, "the job still running is active: %r" % rec)
    check(inst.wait(15) == 0, "exit 0 after the drain")
    check(len(inst.find_records(msg="performance")) == 1, "logged once at the drain")
    check('"commands_processed":2' in inst.logs(), "operators grep for commands_processed")
