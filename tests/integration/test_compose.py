"""Docker Compose, the image and .env.multi.example, checked without a docker
engine (there is none on our machines): the YAML, Dockerfile, nginx and
Prometheus/Grafana files are parsed and held against each other, against
deploy/install-deps.sh, against the role binaries (their settings, their
/metrics, their shared libraries) and against the entrypoint script, run for
real. What only a docker engine could show (the image builds, the containers
start and pass their healthchecks) is not claimed here: see docs/compose.md.
"""

import ipaddress
import json
import os
import re
import shutil
import subprocess
import urllib.parse

import yaml  # Debian's python3-yaml, installed by deploy/install-deps.sh

import harness
from harness import check

ROLES = {"chat": 1, "image": 2, "video": 3, "admin": 4}
PORTS = {role: 8000 + n for role, n in ROLES.items()}
CONTAINERS = {role: "discord-bot-" + role for role in ROLES}
CORE = ("valkey", "postgres") + tuple(ROLES)
PROFILES = {"monitoring": {"prometheus", "grafana"}, "interactions": {"nginx"}}
PROVIDERS = ("OPENAI", "MINIMAX", "STABILITY")
SECRET_KEYS = ["DISCORD_TOKEN"] + ["%s_API_KEY_%d" % (p, n) for p in PROVIDERS for n in range(1, 5)]
# Keys some role uses: a placeholder in one of them must stop that instance;
# the others are read (KEY_INDEX) but unused, and stay empty in the example.
USED_KEYS = {"OPENAI_API_KEY_1", "MINIMAX_API_KEY_2", "STABILITY_API_KEY_2", "MINIMAX_API_KEY_3",
             "OPENAI_API_KEY_4", "MINIMAX_API_KEY_4", "STABILITY_API_KEY_4"}
PER_INSTANCE = ("INSTANCE_NUMBER", "KEY_INDEX", "HEALTH_PORT")

# The one mapping from deploy/install-deps.sh's build libraries to the
# Debian 12 runtime packages compose/Dockerfile installs (its runtime stage).
RUNTIME_OF = {
    "libuv1-dev": "libuv1",
    "libcurl4-openssl-dev": "libcurl4",
    "libwebsockets-dev": "libwebsockets17",
    "libwebsockets-evlib-uv": "libwebsockets-evlib-uv",  # the lws libuv plugin: a runtime package itself
    "libjson-c-dev": "libjson-c5",
    "libhiredis-dev": "libhiredis0.14",
    "libpq-dev": "libpq5",
    "libmicrohttpd-dev": "libmicrohttpd12",
    "libopus-dev": "libopus0",
    "libsodium-dev": "libsodium23",
    "zlib1g-dev": "zlib1g",
}
# install-deps.sh packages named lib* that are tools for building and
# testing (make fuzz), not libraries the binaries link: not in the image
BUILD_TOOLS_ONLY = {"libclang-rt-14-dev"}
# Not libraries, installed by install-deps.sh too and needed at run time.
RUNTIME_TOOLS = {"ca-certificates": "HTTPS to Discord and the providers", "curl": "the HEALTHCHECK"}
# In debian:bookworm-slim already (essential); a NEEDED library may come from it.
BASE_IMAGE_PKGS = {"libc6"}

# Metrics a Prometheus server makes itself, not an instance.
PROMETHEUS_SYNTHETIC = {"up"}
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "group",
    "count_values", "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "abs",
    "clamp_min", "clamp_max", "sort", "sort_desc", "time", "vector", "scalar", "absent", "changes", "resets",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "last_over_time", "label_replace",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
}
# What the dashboard must show (sample names of a live /metrics).
DASHBOARD_MUST_SHOW = {
    "discordbot_jobs_total", "discordbot_job_results_total", "discordbot_job_duration_seconds_bucket",
    "discordbot_jobs_inflight", "discordbot_peer_heartbeat_age_seconds", "discordbot_takeover",
    "discordbot_provider_requests_total", "discordbot_discord_requests_total", "discordbot_discord_429_total",
    "discordbot_gateway_connected", "discordbot_gateway_holder",
}


# --------------------------------------------------------------------------
# helpers


def path(t, *parts):
    return os.path.join(t.root, *parts)


def load_yaml(t, *parts):
    p = path(t, *parts)
    check(os.path.isfile(p), "missing %s" % os.path.relpath(p, t.root))
    with open(p, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    check(isinstance(doc, dict), "%s is not a YAML mapping" % os.path.relpath(p, t.root))
    return doc


def compose(t):
    return load_yaml(t, "compose", "docker-compose.multi.yml")


def defaults(value):
    """A compose value with its ${VAR:-default} interpolations resolved to
    the defaults (${VAR} and ${VAR:?err} become <VAR>), $$ to $."""
    def one(m):
        name, op, rest = m.group(1), m.group(2), m.group(3)
        return rest if op in (":-", "-") else "<%s>" % name
    s = re.sub(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}", one, str(value))
    return s.replace("$$", "$")


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def size_bytes(s):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", str(s).strip().lower())
    check(m, "bad memory size %r" % s)
    return float(m.group(1)) * {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)]


def seconds(s):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(s).strip())
    check(m and (m.group(1) or m.group(2)), "bad duration %r" % s)
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def config_table(t):
    """[(name, default)] from the binary's own table (what the README shows)."""
    exe = os.path.join(t.bin_dir, "chat-instance", "chat-instance")
    r = subprocess.run([exe, "--config-markdown"], capture_output=True, text=True,
                       env={"PATH": os.environ.get("PATH", "")}, timeout=30)
    check(r.returncode == 0, "--config-markdown failed: %s" % r.stderr)
    rows = []
    for line in r.stdout.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((cells[0].strip("`"), cells[1]))
    check(len(rows) > 40, "too few settings in --config-markdown: %r" % rows)
    return rows


def setting_names(t):
    """Every setting name, with OPENAI_API_KEY_<n> expanded to _1.._4."""
    names = []
    for name, _default in config_table(t):
        if name.endswith("_<n>"):
            names += [name[:-3] + str(n) for n in range(1, 5)]
        else:
            names.append(name)
    return names


def parse_env_example(t):
    """(active, shown): KEY -> value of `KEY=value` lines and of `# KEY=value`
    lines; raises on a key given twice."""
    active, shown, seen = {}, {}, set()
    with open(path(t, ".env.multi.example"), encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            m = re.match(r"^(#\s?)?([A-Z][A-Z0-9_]*)=(.*)$", line.rstrip("\n"))
            if not m:
                continue
            key, val = m.group(2), m.group(3).strip()
            if len(val) >= 2 and val[0] == val[-1] and val[0] in "\"'":
                val = val[1:-1]
            check(key not in seen, ".env.multi.example line %d: %s appears twice" % (lineno, key))
            seen.add(key)
            (shown if m.group(1) else active)[key] = val
    return active, shown


def install_deps_packages(t):
    text = open(path(t, "deploy", "install-deps.sh"), encoding="utf-8").read()
    m = re.search(r'^PKGS="([^"]*)"', text, re.M)
    check(m, "no PKGS=\"...\" in deploy/install-deps.sh")
    return m.group(1).replace("\\\n", " ").split()


def dockerfile(t):
    """[(stage_index, INSTRUCTION, args)] of compose/Dockerfile, continuation
    lines joined, comments dropped; stage_index counts FROMs from 0."""
    lines, cur = [], ""
    for raw in open(path(t, "compose", "Dockerfile"), encoding="utf-8"):
        s = raw.rstrip("\n")
        if not cur and (not s.strip() or s.lstrip().startswith("#")):
            continue
        if s.rstrip().endswith("\\"):
            cur += s.rstrip()[:-1] + " "
            continue
        lines.append(cur + s)
        cur = ""
    check(not cur, "Dockerfile ends inside a continuation")
    out, stage = [], -1
    for line in lines:
        instr, _, args = line.strip().partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stage += 1
        out.append((stage, instr, args.strip()))
    return out


def apt_installs(args):
    """Packages named by `apt-get install ...` in one RUN."""
    pkgs = []
    for seg in re.split(r"&&|;|\|\|", args):
        words = seg.split()
        if len(words) >= 2 and words[0] == "apt-get" and "install" in words:
            pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs


def stage_packages(df, stage):
    pkgs = []
    for st, instr, args in df:
        if st == stage and instr == "RUN":
            pkgs += apt_installs(args)
    return pkgs


def dpkg_owner(libpath):
    """Debian package owning a shared library (merged-/usr aware), or None."""
    cands = [libpath, os.path.realpath(libpath)]
    for p in list(cands):
        cands.append(p[4:] if p.startswith("/usr/") else "/usr" + p)
    for p in cands:
        r = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.split(":", 1)[0].strip()
    return None


def live_metrics(t):
    """name -> {label -> set(values)} from a running chat instance's /metrics,
    with Discord configured (so the gateway and REST metrics are there); its
    Discord API base is a closed local port."""
    redis = t.redis()
    inst = t.instance("chat", env={
        "REDIS_URL": redis.url, "HEALTH_PORT": t.free_port(), "HEARTBEAT_INTERVAL_MS": "200",
        "DISCORD_TOKEN": "not-a-real-token.compose-test",
        "DISCORD_API_BASE": "http://127.0.0.1:%d/api/v10" % t.free_port(),
    })
    inst.wait_healthy(20)
    # peers appear after the first heartbeats are read back
    text = harness.wait_until(lambda: (lambda r: r[1] if r[0] == 200 and "discordbot_peer_up{" in r[1] else None)(
        inst.get("/metrics")), 15, "/metrics with the peer table")
    fams = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s", line)
        check(m, "unparsable /metrics line %r" % line)
        labels = fams.setdefault(m.group(1), {})
        for lm in re.finditer(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""):
            labels.setdefault(lm.group(1), set()).add(lm.group(2))
    return fams


def promql_metrics(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", e)
    return {w for w in re.findall(r"(?<![\w.$])[a-zA-Z_:][\w:]*", e) if w not in PROMQL_WORDS}


def promql_grouping_labels(expr):
    labels = set()
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        labels |= {x.strip() for x in m.group(2).split(",") if x.strip()}
    return labels


def promql_matchers(expr):
    """[(metric, label, op, value)] of selectors metric{label op "value", ...}."""
    out = []
    for m in re.finditer(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expr):
        for lm in re.finditer(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', m.group(2)):
            out.append((m.group(1), lm.group(1), lm.group(2), lm.group(3)))
    return out


# --------------------------------------------------------------------------
# docker-compose.multi.yml


def test_compose_core_services_ports_env_and_dependencies(t):
    doc = compose(t)
    svcs = doc.get("services") or {}
    for name in CORE:
        check(name in svcs, "service %s missing" % name)
        check(not svcs[name].get("profiles"), "%s must run without a profile" % name)
    env_file = path(t, ".env.multi")
    drain = int(dict(config_table(t))["DRAIN_TIMEOUT_SEC"])
    for role, port in PORTS.items():
        s = svcs[role]
        check(defaults(s.get("container_name")) == CONTAINERS[role],
              "%s: container_name %r" % (role, s.get("container_name")))
        ef = s.get("env_file")
        ef = [ef] if isinstance(ef, str) else [e if isinstance(e, str) else e.get("path") for e in (ef or [])]
        ef = [defaults(e) for e in ef]
        check(any(os.path.normpath(os.path.join(path(t, "compose"), e)) == env_file for e in ef),
              "%s: env_file must be the repository root's .env.multi, is %r" % (role, ef))
        published = set()
        for p in s.get("ports") or []:
            parts = defaults(p).split(":")
            published.add((int(parts[-2]), int(parts[-1].split("/")[0])))
        check(published == {(port, port)}, "%s: ports %r, want %d:%d" % (role, s.get("ports"), port, port))
        # the host port comes from native mode's variable, so stacks can run side by side
        var = "%s_HEALTH_PORT" % role.upper()
        check(all(re.search(r"\$\{%s:-%d\}:%d\b" % (var, port, port), str(p)) for p in s.get("ports") or []),
              "%s: the host port must be ${%s:-%d}: %r" % (role, var, port, s.get("ports")))
        env = env_of(s)
        check(env.get("ROLE") == role, "%s: ROLE=%r" % (role, env.get("ROLE")))
        check(env.get("HEALTH_PORT") == str(port), "%s: HEALTH_PORT=%r" % (role, env.get("HEALTH_PORT")))
        check(env.get("HEALTH_BIND") == "0.0.0.0", "%s: HEALTH_BIND=%r" % (role, env.get("HEALTH_BIND")))
        test = " ".join(s.get("healthcheck", {}).get("test") or [])
        check("curl" in test and "127.0.0.1:%d/health" % port in test, "%s: healthcheck %r" % (role, test))
        deps = s.get("depends_on") or {}
        for dep in ("valkey", "postgres"):
            check(isinstance(deps, dict) and deps.get(dep, {}).get("condition") == "service_healthy",
                  "%s must depend on %s being healthy: %r" % (role, dep, deps))
        build = s.get("build") or {}
        check(os.path.normpath(os.path.join(path(t, "compose"), build.get("context", ""))) == t.root,
              "%s: build context must be the repository root: %r" % (role, build))
        check(os.path.normpath(os.path.join(t.root, build.get("dockerfile", ""))) == path(t, "compose", "Dockerfile"),
              "%s: build dockerfile %r" % (role, build.get("dockerfile")))
        # SIGTERM drains for DRAIN_TIMEOUT_SEC: Docker must wait longer before its SIGKILL
        check(seconds(s.get("stop_grace_period", "10s")) > drain,
              "%s: stop_grace_period %r is not longer than DRAIN_TIMEOUT_SEC (%d s)"
              % (role, s.get("stop_grace_period"), drain))
    valkey, pg = svcs["valkey"], svcs["postgres"]
    check(re.match(r"^(valkey/valkey|redis):7", valkey.get("image", "")), "valkey image %r" % valkey.get("image"))
    cmd = valkey.get("command")
    cmd = " ".join(cmd) if isinstance(cmd, list) else str(cmd)
    check(re.search(r"--appendonly\s+yes", cmd), "valkey: AOF must be on: %r" % cmd)
    check(re.search(r"(valkey|redis)-cli ping", " ".join(valkey["healthcheck"]["test"])), "valkey healthcheck")
    check(re.match(r"^postgres:15", pg.get("image", "")), "postgres image %r" % pg.get("image"))
    check("pg_isready" in " ".join(pg["healthcheck"]["test"]), "postgres healthcheck")
    pg_env = env_of(pg)
    for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        check(re.search(r"\$\{%s\b" % k, pg_env.get(k) or ""), "postgres: %s must come from ${%s}" % (k, k))
    volumes = doc.get("volumes") or {}
    for name, target in (("valkey", "/data"), ("postgres", "/var/lib/postgresql/data")):
        vols = [v.split(":") for v in svcs[name].get("volumes") or []]
        check(any(v[1] == target and v[0] in volumes for v in vols),
              "%s: a named volume on %s: %r" % (name, target, vols))


def test_compose_file_suits_compose_v2_and_docker_compose_1_29(t):
    """Debian 12 packages docker-compose 1.29, which refuses a top-level
    name: ("wrong Compose file version"); the project name comes from -p."""
    doc = compose(t)
    for key in ("name", "version"):
        check(key not in doc, "top-level %r: docker-compose 1.29 or Compose v2 refuses or warns about it" % key)
    for f in ("docker-compose.multi.yml", "docker-compose.secrets.yml"):
        check("version" not in load_yaml(t, "compose", f) and "name" not in load_yaml(t, "compose", f),
              "%s: no top-level name/version" % f)
    # every published host port is a variable with the old default
    for name, svc in (doc.get("services") or {}).items():
        for p in svc.get("ports") or []:
            host = str(p).rsplit(":", 1)[0]
            check(re.search(r"\$\{[A-Z_]+_PORT:-\d+\}$", host), "%s: host port of %r is fixed" % (name, p))
    deploy = open(path(t, "deploy", "deploy-multi.sh"), encoding="utf-8").read()
    body = deploy[deploy.index("# ---- compose mode"):deploy.index("# ---- mode, menu, dispatch")]
    check(not re.search(r"^\s*docker compose\s", body, re.M) and "DC=(docker-compose)" in body,
          "deploy-multi.sh compose mode must go through ${DC[@]} (docker compose or docker-compose)")
    # without name: the project (and its volumes' names) comes from -p: the
    # same one from the shell script and the Windows script
    check(re.search(r"COMPOSE_PROJECT=\$\{COMPOSE_PROJECT_NAME:-discordbot\}", deploy) and
          '-p "$COMPOSE_PROJECT"' in body, "deploy-multi.sh must pass -p discordbot")
    bat = open(path(t, "deploy", "deploy-multi.bat"), encoding="utf-8").read()
    check(re.search(r'^set "DC=docker compose -p discordbot ', bat, re.M), "deploy-multi.bat must pass -p discordbot")


def test_dockerignore_at_the_root_is_the_dockerfiles(t):
    """BuildKit reads compose/Dockerfile.dockerignore; the legacy builder
    (DOCKER_BUILDKIT=0, docker-compose 1.29, podman) only the context root's
    .dockerignore. Both must send the same allow-list (no .env.multi)."""
    def rules(*parts):
        return [l.strip() for l in open(path(t, *parts), encoding="utf-8") if l.strip() and l[0] != "#"]
    check(rules(".dockerignore") == rules("compose", "Dockerfile.dockerignore"),
          ".dockerignore and compose/Dockerfile.dockerignore differ")


def test_compose_test_override_keeps_the_official_images_contract(t):
    """tests/compose/override.yml swaps only the images of valkey,
    postgres and prometheus (and names podman's IPAM option); commands, environment,
    healthchecks and volumes stay the user-facing file's."""
    main = compose(t)["services"]
    over = load_yaml(t, "tests", "compose", "override.yml")
    check(set(over["services"]) == {"valkey", "postgres", "prometheus"}, "override services %r"
          % sorted(over["services"]))
    for name, svc in over["services"].items():
        check(set(svc) == {"image", "build"}, "%s: the override may set only image and build: %r" % (name, sorted(svc)))
        ctx = os.path.normpath(os.path.join(path(t, "compose"), svc["build"]["context"]))
        check(os.path.isfile(os.path.join(ctx, svc["build"]["dockerfile"])), "%s: no %s" % (name, svc["build"]))
        check(main[name]["image"] != svc["image"], "%s: the user-facing file keeps the official image" % name)
    net = over["networks"]["botnet"]["ipam"]
    check(net["config"] == compose(t)["networks"]["botnet"]["ipam"]["config"], "the override keeps the subnet")
    # the stand-ins provide what the main file's commands and healthchecks call
    df = open(path(t, "tests", "compose", "valkey.Dockerfile"), encoding="utf-8").read()
    for tool in ("valkey-server", "valkey-cli"):
        check(tool in df, "the valkey stand-in lacks %s" % tool)
    check("/data" in df, "the valkey stand-in keeps its data in /data")
    df = open(path(t, "tests", "compose", "postgres.Dockerfile"), encoding="utf-8").read()
    check("/var/lib/postgresql/data" in df and "postgresql-15" in df, "the postgres stand-in: 15, PGDATA")
    ep = open(path(t, "tests", "compose", "postgres-entrypoint.sh"), encoding="utf-8").read()
    for var in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        check(var in ep, "the postgres stand-in ignores %s" % var)


def test_compose_every_service_has_limits_restart_logging_and_healthcheck(t):
    svcs = compose(t)["services"]
    for name, s in svcs.items():
        check(s.get("restart") == "unless-stopped", "%s: restart %r" % (name, s.get("restart")))
        log = s.get("logging") or {}
        opts = log.get("options") or {}
        check(log.get("driver") == "json-file" and opts.get("max-size") and opts.get("max-file"),
              "%s: json-file logging with max-size and max-file: %r" % (name, log))
        size_bytes(opts["max-size"])
        check(int(opts["max-file"]) >= 1, "%s: max-file" % name)
        res = ((s.get("deploy") or {}).get("resources")) or {}
        lim, rsv = res.get("limits") or {}, res.get("reservations") or {}
        for what in ("cpus", "memory"):
            check(what in lim and what in rsv, "%s: deploy.resources limits and reservations need %s: %r"
                  % (name, what, res))
        check(0 < float(rsv["cpus"]) <= float(lim["cpus"]), "%s: cpus reservation > limit" % name)
        check(0 < size_bytes(rsv["memory"]) <= size_bytes(lim["memory"]), "%s: memory reservation > limit" % name)
        hc = s.get("healthcheck") or {}
        check(hc.get("test") and hc["test"][0] in ("CMD", "CMD-SHELL"), "%s: healthcheck %r" % (name, hc))
        for dep, cond in (s.get("depends_on") or {}).items():
            check(dep in svcs, "%s depends on unknown %s" % (name, dep))
            check(cond.get("condition") in ("service_healthy", "service_started"), "%s -> %s: %r" % (name, dep, cond))


def test_compose_postgres_by_fixed_ip_and_redis_by_name(t):
    doc = compose(t)
    svcs = doc["services"]
    subnets = [ipaddress.ip_network(defaults(c["subnet"]))
               for net in (doc.get("networks") or {}).values()
               for c in ((net or {}).get("ipam") or {}).get("config") or []]
    check(subnets, "a compose network with an ipam subnet is needed for PostgreSQL's fixed address")
    nets = svcs["postgres"].get("networks") or {}
    ips = [defaults(v["ipv4_address"]) for v in nets.values() if isinstance(v, dict) and v.get("ipv4_address")]
    check(len(ips) == 1, "postgres needs one fixed ipv4_address: %r" % nets)
    pg_ip = ipaddress.ip_address(ips[0])
    check(any(pg_ip in n for n in subnets), "postgres %s outside the subnets %r" % (pg_ip, subnets))
    for role in ROLES:
        env = env_of(svcs[role])
        db = urllib.parse.urlsplit(defaults(env.get("DATABASE_URL", "")))
        check(db.scheme in ("postgresql", "postgres") and db.hostname == str(pg_ip) and db.port == 5432,
              "%s: DATABASE_URL must name PostgreSQL by its IP %s (libpq resolves names blocking): %r"
              % (role, pg_ip, env.get("DATABASE_URL")))
        check(db.username and db.password, "%s: DATABASE_URL without user or password" % role)
        rd = urllib.parse.urlsplit(defaults(env.get("REDIS_URL", "")))
        check(rd.scheme == "redis" and rd.hostname == "valkey" and (rd.port or 6379) == 6379,
              "%s: REDIS_URL must point at the valkey service: %r" % (role, env.get("REDIS_URL")))
        check(set(svcs[role].get("networks") or []) & set(nets), "%s not on postgres's network" % role)


def test_compose_profiles_monitoring_and_interactions(t):
    doc = compose(t)
    svcs = doc["services"]
    for profile, names in PROFILES.items():
        have = {n for n, s in svcs.items() if profile in (s.get("profiles") or [])}
        check(have == names, "profile %s: %r, want %r" % (profile, sorted(have), sorted(names)))
    # bind-mounted configuration exists
    for name in ("prometheus", "grafana", "nginx"):
        for v in svcs[name].get("volumes") or []:
            src = v.split(":")[0]
            if src.startswith("."):
                check(os.path.exists(os.path.normpath(os.path.join(path(t, "compose"), src))),
                      "%s mounts %s, which does not exist" % (name, src))
    # Prometheus scrapes the four instances' /metrics by service name
    prom = load_yaml(t, "compose", "prometheus.yml")
    jobs = [j for j in prom.get("scrape_configs") or [] if j.get("job_name") == "discordbot"]
    check(len(jobs) == 1, "prometheus.yml needs one job discordbot")
    job = jobs[0]
    check(job.get("metrics_path", "/metrics") == "/metrics", "metrics_path")
    targets, target_labels = set(), set()
    for sc in job.get("static_configs") or []:
        targets |= set(sc.get("targets") or [])
        target_labels |= set(sc.get("labels") or {})
    check(targets == {"%s:%d" % (r, p) for r, p in PORTS.items()}, "prometheus targets %r" % sorted(targets))
    check("role" not in target_labels, "a target label 'role' would rename the metrics' own role label")
    # Grafana: the datasource points at the prometheus service, the dashboard
    # provider at the mounted dashboards directory
    ds_dir = path(t, "compose", "grafana", "provisioning", "datasources")
    ds_files = [f for f in os.listdir(ds_dir) if f.endswith(".yml")]
    check(ds_files, "no Grafana datasource provisioning file")
    sources = [d for f in ds_files for d in load_yaml(t, "compose", "grafana", "provisioning", "datasources", f)
               .get("datasources") or []]
    prom_ds = [d for d in sources if d.get("type") == "prometheus"]
    check(len(prom_ds) == 1 and prom_ds[0].get("url") == "http://prometheus:9090" and prom_ds[0].get("uid"),
          "Grafana needs one Prometheus datasource at http://prometheus:9090 with a uid: %r" % sources)
    prov_dir = path(t, "compose", "grafana", "provisioning", "dashboards")
    prov_files = [f for f in os.listdir(prov_dir) if f.endswith(".yml")]
    check(prov_files, "no Grafana dashboard provider file")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svcs["grafana"]["volumes"]}
    for f in prov_files:
        for p in load_yaml(t, "compose", "grafana", "provisioning", "dashboards", f).get("providers") or []:
            where = p.get("options", {}).get("path")
            check(mounts.get(where) == "./grafana/dashboards",
                  "dashboard provider path %r is not the mount of ./grafana/dashboards: %r" % (where, mounts))
    check(mounts.get("/etc/grafana/provisioning") == "./grafana/provisioning", "provisioning mount %r" % mounts)
    # nginx: the four /interactions endpoints behind one server on the published port
    conf = open(path(t, "compose", "nginx.conf"), encoding="utf-8").read()
    body = re.sub(r"#[^\n]*", "", conf)
    check(body.count("{") == body.count("}"), "nginx.conf: unbalanced braces")
    up = re.search(r"upstream\s+(\w+)\s*\{([^}]*)\}", body)
    check(up, "nginx.conf: no upstream")
    servers = set(re.findall(r"^\s*server\s+([\w.-]+:\d+)", up.group(2), re.M))
    check(servers == {"%s:%d" % (r, p) for r, p in PORTS.items()}, "nginx upstream servers %r" % sorted(servers))
    loc = re.search(r"location\s+=\s+/interactions\s*\{((?:[^{}]|\{[^{}]*\})*)\}", body)
    check(loc and re.search(r"proxy_pass\s+http://%s\s*;" % up.group(1), loc.group(1)),
          "nginx.conf: location = /interactions must proxy_pass to the upstream")
    listen = int(re.search(r"listen\s+(\d+)", body).group(1))
    published = {int(defaults(p).split(":")[-1]) for p in svcs["nginx"].get("ports") or []}
    check(published == {listen}, "nginx listens on %d, compose publishes %r" % (listen, published))


def test_compose_secrets_override_uses_file_variants(t):
    main = compose(t)
    over = load_yaml(t, "compose", "docker-compose.secrets.yml")
    declared = over.get("secrets") or {}
    for name, s in declared.items():
        check(s.get("file"), "secret %s has no file" % name)
    check("discord_token" in declared, "DISCORD_TOKEN as a secret is the point of the file")
    for role, n in ROLES.items():
        s = over["services"].get(role)
        check(s, "secrets override lacks %s" % role)
        env = env_of(s)
        names = set(s.get("secrets") or [])
        check(env.get("DISCORD_TOKEN_FILE") == "/run/secrets/discord_token" and "discord_token" in names,
              "%s: DISCORD_TOKEN_FILE from the discord_token secret: %r" % (role, env))
        for key, val in env.items():
            check(key.endswith("_FILE"), "%s: %s is not a NAME_FILE setting" % (role, key))
            base = key[:-5]
            check(base == "DISCORD_TOKEN" or re.fullmatch(r"(%s)_API_KEY_%d" % ("|".join(PROVIDERS), n), base),
                  "%s: %s is not a key of this instance's index %d" % (role, key, n))
            secret = val.rsplit("/", 1)[-1]
            check(val == "/run/secrets/" + secret and secret in names and secret in declared,
                  "%s: %s=%s is not a mounted, declared secret" % (role, key, val))
    for name in over["services"]:
        check(name in main["services"], "override names unknown service %s" % name)


# --------------------------------------------------------------------------
# compose/Dockerfile and the entrypoint


def test_dockerfile_stages_user_healthcheck_and_ports(t):
    df = dockerfile(t)
    # ARG before the first FROM: the base, substitutable (a local image where
    # no registry is reachable), debian:bookworm-slim by default
    args = dict(a.split("=", 1) for s, i, a in df if s == -1 and i == "ARG" and "=" in a)
    froms = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), a)
             for _, i, a in df if i == "FROM"]
    check(len(froms) == 2, "two stages (build, runtime), not %r" % froms)
    for f in froms:
        check(f.split()[0] == "debian:bookworm-slim", "stage FROM %r: want debian:bookworm-slim" % f)
    check(args.get("BASE_IMAGE") == "debian:bookworm-slim", "ARG BASE_IMAGE=debian:bookworm-slim before FROM")
    check(froms[0].split()[-1] == "build" and "AS" in froms[0].upper().split(), "the first stage is named build")
    build_runs = " ".join(a for s, i, a in df if s == 0 and i == "RUN")
    check(re.search(r"\bmake\b[^&;]*\bbins\b", build_runs) and "asan" not in build_runs,
          "the build stage runs make (release) for the binaries: %r" % build_runs)
    rt = [(i, a) for s, i, a in df if s == 1]
    users = [a for i, a in rt if i == "USER"]
    check(users and users[-1].split(":")[0] not in ("root", "0"), "runtime USER must not be root: %r" % users)
    uid = users[-1].split(":")[0]
    if uid.isdigit():
        check(re.search(r"useradd\b[^&;]*--uid\s+%s\b" % uid, " ".join(a for i, a in rt if i == "RUN")),
              "USER %s is never created" % uid)
    hcs = [a for i, a in rt if i == "HEALTHCHECK"]
    check(len(hcs) == 1 and "CMD" in hcs[0] and "curl" in hcs[0] and "/health" in hcs[0],
          "runtime HEALTHCHECK with curl on /health: %r" % hcs)
    exposed = set()
    for a in (a for i, a in rt if i == "EXPOSE"):
        for tok in a.split():
            lo, _, hi = tok.split("/")[0].partition("-")
            exposed |= set(range(int(lo), int(hi or lo) + 1))
    check(exposed == set(PORTS.values()), "EXPOSE %r, want 8001-8004" % sorted(exposed))
    envs = " ".join(a for i, a in rt if i == "ENV")
    check(re.search(r"\bHEALTH_BIND=0\.0\.0\.0\b", envs), "runtime ENV HEALTH_BIND=0.0.0.0: %r" % envs)
    copies = [a for i, a in rt if i == "COPY"]
    for role in ROLES:
        check(any(re.fullmatch(r"--from=build\s+/src/{0}-instance/{0}-instance\s+/usr/local/bin/{0}-instance"
                               .format(role), c) for c in copies), "the %s binary is not copied" % role)
    ep = [a for i, a in rt if i == "ENTRYPOINT"]
    check(len(ep) == 1, "one ENTRYPOINT")
    ep_path = json.loads(ep[0])[0]
    check(any(c.split()[-1] == ep_path and c.split()[-2] == "compose/entrypoint.sh" for c in copies),
          "ENTRYPOINT %s must be compose/entrypoint.sh" % ep_path)
    check("discordbot-entrypoint" in hcs[0] and ep_path.endswith("/discordbot-entrypoint"),
          "the HEALTHCHECK asks the entrypoint for the port")
    # every file the build copies from the context passes the ignore file
    ignore = [l.strip() for l in open(path(t, "compose", "Dockerfile.dockerignore")) if l.strip() and l[0] != "#"]
    check(ignore[0] == "*", "Dockerfile.dockerignore is an allow-list starting with *")
    allowed = [l[1:].rstrip("/") for l in ignore if l.startswith("!")]
    for s, i, a in df:
        if i == "COPY" and "--from=" not in a:
            for src in a.split()[:-1]:
                if src.startswith("--"):
                    continue
                src = src.rstrip("/")
                check(os.path.exists(path(t, src)), "COPY source %s missing" % src)
                check(any(src == p or src.startswith(p + "/") for p in allowed),
                      "COPY %s is excluded by compose/Dockerfile.dockerignore" % src)
    for secret in (".env.multi", "secrets", "data", ".git"):
        check(not any(secret == p or secret.startswith(p + "/") for p in allowed), "%s is sent to the builder" % secret)


def test_dockerfile_runtime_packages_match_install_deps(t):
    pkgs = install_deps_packages(t)
    libs = [p for p in pkgs if p.startswith(("lib", "zlib")) and p not in BUILD_TOOLS_ONLY]
    unmapped = [p for p in libs if p not in RUNTIME_OF]
    check(not unmapped, "install-deps.sh libraries without a runtime package in RUNTIME_OF "
          "(add them here and to compose/Dockerfile): %r" % unmapped)
    stale = [p for p in RUNTIME_OF if p not in libs]
    check(not stale, "RUNTIME_OF names libraries install-deps.sh no longer installs: %r" % stale)
    for tool in RUNTIME_TOOLS:
        check(tool in pkgs, "%s is in the image but not in install-deps.sh" % tool)
    want = {RUNTIME_OF[p] for p in libs} | set(RUNTIME_TOOLS)
    df = dockerfile(t)
    runtime = stage_packages(df, 1)
    check(len(runtime) == len(set(runtime)), "runtime packages listed twice: %r" % runtime)
    check(not [p for p in runtime if p.endswith("-dev")], "a -dev package in the runtime stage: %r" % runtime)
    missing, extra = sorted(want - set(runtime)), sorted(set(runtime) - want)
    check(not missing and not extra, "compose/Dockerfile runtime packages differ from install-deps.sh's "
          "libraries: missing %r, not from install-deps.sh %r" % (missing, extra))
    build = set(stage_packages(df, 0))
    check(set(libs) <= build, "the build stage lacks %r" % sorted(set(libs) - build))
    # the mapping is Debian's own: each -dev package depends on its runtime
    # package, and every runtime package is a real Debian 12 package here
    for dev, rt in RUNTIME_OF.items():
        if dev == rt:
            continue
        r = subprocess.run(["dpkg-query", "-W", "-f=${Depends}", dev], capture_output=True, text=True)
        check(r.returncode == 0, "%s not installed (run deploy/install-deps.sh)" % dev)
        deps = {d.strip().split()[0].split(":")[0] for d in re.split(r"[,|]", r.stdout) if d.strip()}
        check(rt in deps, "%s does not depend on %s (Depends: %s): wrong runtime package" % (dev, rt, r.stdout))
    for rt in want:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", rt], capture_output=True, text=True)
        check(r.returncode == 0 and "ok installed" in r.stdout, "%s is not a Debian package installed here" % rt)


def test_dockerfile_runtime_packages_cover_the_binaries_libraries(t):
    """Every shared library a binary names (DT_NEEDED) comes from a package
    the runtime stage installs (their own dependencies are apt's business).
    The release binaries at the repository root, as the image builds them
    (an asan build links differently), whichever variant is under test."""
    runtime = set(stage_packages(dockerfile(t), 1)) | BASE_IMAGE_PKGS
    for role in ROLES:
        exe = path(t, "%s-instance" % role, "%s-instance" % role)
        check(os.access(exe, os.X_OK), "%s not built: run make (the release build)" % os.path.relpath(exe, t.root))
        r = subprocess.run(["readelf", "-d", exe], capture_output=True, text=True)
        check(r.returncode == 0, "readelf -d %s: %s" % (exe, r.stderr))
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)
        check(len(needed) >= 5, "%s: NEEDED %r" % (role, needed))
        r = subprocess.run(["ldd", exe], capture_output=True, text=True)
        check(r.returncode == 0, "ldd %s: %s" % (exe, r.stderr))
        where = dict(re.findall(r"^\s*(\S+)\s+=>\s+(/\S+)", r.stdout, re.M))
        for soname in needed:
            check(soname in where, "%s: %s not found by ldd" % (role, soname))
            owner = dpkg_owner(where[soname])
            check(owner, "no Debian package owns %s (%s)" % (where[soname], soname))
            check(owner in runtime, "%s needs %s from %s, which the image does not install" % (role, soname, owner))


def test_entrypoint_chooses_the_role(t):
    bins = t.path("bin")
    os.makedirs(bins)
    for role in ROLES:
        os.symlink(os.path.join(t.bin_dir, "%s-instance" % role, "%s-instance" % role),
                   os.path.join(bins, "%s-instance" % role))
    script = path(t, "compose", "entrypoint.sh")
    sh = shutil.which("sh") or "/bin/sh"

    def run(args, **env):
        full = {"PATH": os.environ.get("PATH", ""), "DISCORDBOT_BIN_DIR": bins}
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            if os.environ.get(k):
                full[k] = os.environ[k]
        full.update(env)
        return subprocess.run([sh, script] + args, capture_output=True, text=True, env=full, timeout=30)

    for role in ROLES:
        r = run(["--version"], ROLE=role)
        check(r.returncode == 0 and r.stdout.startswith("%s-instance " % role), "ROLE=%s: %r" % (role, r))
        r = run([role, "--version"])
        check(r.returncode == 0 and r.stdout.startswith("%s-instance " % role), "command %s: %r" % (role, r))
        r = run(["%s-instance" % role, "--version"], ROLE="chat")
        check(r.returncode == 0 and r.stdout.startswith("%s-instance " % role), "command %s-instance: %r" % (role, r))
        r = run(["health-port"], ROLE=role)
        check(r.returncode == 0 and r.stdout.strip() == str(PORTS[role]), "health-port of %s: %r" % (role, r))
    r = run(["health-port"], ROLE="video", HEALTH_PORT="9123")
    check(r.stdout.strip() == "9123", "HEALTH_PORT wins: %r" % r)
    r = run(["health-port"], ROLE="video", INSTANCE_NUMBER="7")
    check(r.stdout.strip() == "8007", "8000 + INSTANCE_NUMBER, as the binary does: %r" % r)
    r = run(["--version"])
    check(r.returncode == 64 and "ROLE" in r.stderr, "no role is refused clearly: %r" % r)
    r = run([], ROLE="bogus")
    check(r.returncode == 64 and "bogus" in r.stderr, "an unknown role is refused: %r" % r)
    r = run(["echo", "hello"])
    check(r.returncode == 0 and r.stdout == "hello\n", "another command runs as is: %r" % r)
    # the binary's own default port agrees with the script's
    for role in ROLES:
        inst = t.instance(role, args=["--check-config"])
        check(inst.wait(20) == 0, inst.logs())
        check(re.search(r"^HEALTH_PORT=%d$" % PORTS[role], inst.logs(), re.M), inst.logs())


# --------------------------------------------------------------------------
# Grafana dashboard against a live /metrics


def test_grafana_dashboard_queries_only_live_metrics(t):
    with open(path(t, "compose", "grafana", "dashboards", "discordbot.json"), encoding="utf-8") as f:
        dash = json.load(f)
    ds_uid = [d for f in os.listdir(path(t, "compose", "grafana", "provisioning", "datasources"))
              for d in load_yaml(t, "compose", "grafana", "provisioning", "datasources", f).get("datasources") or []
              if d.get("type") == "prometheus"][0]["uid"]
    prom = load_yaml(t, "compose", "prometheus.yml")
    target_labels = {"instance", "job"} | {l for j in prom["scrape_configs"] for sc in j.get("static_configs") or []
                                           for l in (sc.get("labels") or {})}
    fams = live_metrics(t)
    ids, used = set(), set()
    panels = [p for p in dash.get("panels") or [] if p.get("type") != "row"]
    check(len(panels) >= 10, "a dashboard of %d panels" % len(panels))
    for p in panels:
        check(p.get("id") not in ids, "panel id %r twice" % p.get("id"))
        ids.add(p.get("id"))
        for tgt in p.get("targets") or []:
            expr = tgt.get("expr", "")
            ds = tgt.get("datasource") or p.get("datasource") or {}
            check(ds.get("uid") == ds_uid, "%r: datasource %r is not the provisioned %r" % (p["title"], ds, ds_uid))
            names = promql_metrics(expr)
            check(names, "%r: no metric in %r" % (p["title"], expr))
            labels = set(target_labels) | {"le"}
            for n in names:
                if n in PROMETHEUS_SYNTHETIC:
                    continue
                check(n in fams, "%r queries %s, which /metrics does not have (%r)" % (p["title"], n, expr))
                labels |= set(fams[n])
            used |= names
            for lbl in promql_grouping_labels(expr):
                check(lbl in labels, "%r groups by %r, a label none of its metrics has: %r" % (p["title"], lbl, expr))
            for metric, lbl, op, val in promql_matchers(expr):
                if metric == "up" and lbl == "job":
                    check(val in {j["job_name"] for j in prom["scrape_configs"]}, "up{job=%r}: no such job" % val)
                    continue
                check(lbl in fams.get(metric, {}) or lbl in target_labels, "%s has no label %s" % (metric, lbl))
                if op in ("=", "!=") and lbl in fams.get(metric, {}):
                    check(val in fams[metric][lbl], "%s{%s%s%r}: /metrics has only %r"
                          % (metric, lbl, op, val, sorted(fams[metric][lbl])))
    missing = DASHBOARD_MUST_SHOW - used
    check(not missing, "the dashboard does not show %r" % sorted(missing))


# --------------------------------------------------------------------------
# .env.multi.example


def test_env_example_holds_the_keys_and_every_setting(t):
    active, shown = parse_env_example(t)
    for key in SECRET_KEYS:
        check(key in active, ".env.multi.example must set %s (uncommented)" % key)
    check(len([k for k in active if k in SECRET_KEYS]) == 13, "the 13 keys")
    known = setting_names(t)
    missing = [n for n in known if n not in active and n not in shown]
    check(not missing, ".env.multi.example lacks settings the binary knows (add them): %r" % missing)
    for n in PER_INSTANCE:
        check(n not in active, "%s is per instance: it must not be set in the shared file" % n)
    # compose-only variables: every ${VAR} of the compose files is shown
    texts = [open(path(t, "compose", f), encoding="utf-8").read()
             for f in ("docker-compose.multi.yml", "docker-compose.secrets.yml")]
    seen = {}
    for text in texts:
        for m in re.finditer(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}", text):
            name, op, dflt = m.groups()
            check(name in active or name in shown, "compose uses ${%s}: document it in .env.multi.example" % name)
            if op in (":-", "-"):
                check(seen.setdefault(name, dflt) == dflt, "${%s} has two defaults in compose" % name)
                val = active.get(name, shown.get(name))
                check(val in ("", dflt), ".env.multi.example shows %s=%s, compose's default is %s" % (name, val, dflt))


def test_env_example_has_no_real_secret_and_its_placeholders_are_refused(t):
    active, _ = parse_env_example(t)
    text = open(path(t, ".env.multi.example"), encoding="utf-8").read()
    for key in SECRET_KEYS:
        val = active[key]
        if key in USED_KEYS or key == "DISCORD_TOKEN":
            check(re.fullmatch(r"your-[a-z0-9-]+", val), "%s=%r: want an obvious your-... placeholder" % (key, val))
        else:
            check(val == "", "%s is used by no role: leave it empty (a placeholder stops that instance)" % key)
    for key, val in active.items():
        if re.search(r"PASSWORD|SECRET|TOKEN|KEY", key):
            check(val == "" or val.startswith("your-"), "%s=%r looks like a real secret" % (key, val))
    patterns = {
        "OpenAI-style key": r"\bsk-(?!your)[A-Za-z0-9_-]{16,}",
        "Groq key": r"\bgsk_[A-Za-z0-9]{16,}",
        "Discord bot token": r"[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}",
        "JWT": r"\beyJ[A-Za-z0-9_-]{10,}\.",
    }
    for what, rx in patterns.items():
        m = re.search(rx, text)
        check(not m, ".env.multi.example holds something like a %s: %r" % (what, m and m.group(0)))
    for tok in re.findall(r"[A-Za-z0-9+/_-]{24,}", text):
        randomish = re.search(r"\d", tok) and re.search(r"[a-z]", tok) and re.search(r"[A-Z]", tok)
        check("your" in tok or not randomish, ".env.multi.example holds a random-looking string %r" % tok)
    # the binary refuses exactly the placeholders of the keys each role uses
    for role, n in ROLES.items():
        inst = t.instance(role, args=["--env-file", path(t, ".env.multi.example"), "--check-config"])
        check(inst.wait(20) == 2, "%s must refuse the unedited example: %s" % (role, inst.logs()))
        refused = {r.get("key") for r in inst.records() if r.get("msg") == "invalid configuration"}
        want = {k for k in SECRET_KEYS if active[k] and (k == "DISCORD_TOKEN" or k.endswith("_%d" % n))}
        check(refused == want, "%s refused %r, want the placeholders %r" % (role, sorted(refused), sorted(want)))
        for r in inst.records():
            if r.get("msg") == "invalid configuration":
                check("example value" in r.get("problem", ""), r)
        check("your-" not in inst.logs(), "a placeholder value was echoed: %s" % inst.logs())


def test_env_example_defaults_are_the_binarys(t):
    """With its placeholders emptied and every shown setting uncommented, the
    example is a valid configuration for each role, equal to no file at all."""
    known = set(setting_names(t))
    filled = []
    for line in open(path(t, ".env.multi.example"), encoding="utf-8"):
        line = line.rstrip("\n")
        m = re.match(r"^#\s?([A-Z][A-Z0-9_]*)=(.+)$", line)
        if m and m.group(1) in known:
            line = line.lstrip("#").lstrip()
        line = re.sub(r"^([A-Z][A-Z0-9_]*)=your-[a-z0-9-]+$", r"\1=", line)
        filled.append(line)
    filled_path = t.path("filled.env")
    empty_path = t.path("empty.env")
    with open(filled_path, "w", encoding="utf-8") as f:
        f.write("\n".join(filled) + "\n")
    open(empty_path, "w").close()

    def effective(role, env_file):
        inst = t.instance(role, args=["--env-file", env_file, "--check-config"])
        rc = inst.wait(20)
        check(rc == 0, "%s --check-config with %s: rc %s\n%s" % (role, os.path.basename(env_file), rc, inst.logs()))
        return [l for l in inst.logs().splitlines() if re.match(r"^[A-Z][A-Z0-9_]*=", l)]

    for role in ROLES:
        got, want = effective(role, filled_path), effective(role, empty_path)
        check(len(want) > 40, "--check-config printed no settings: %r" % want)
        diff = sorted(set(got) ^ set(want))
        check(got == want, "%s: the example's shown values differ from the binary's defaults: %r" % (role, diff))


def test_compose_doc_covers_the_commands(t):
    doc = open(path(t, "docs", "compose.md"), encoding="utf-8").read()
    for needle in ("cp .env.multi.example .env.multi", "compose/docker-compose.multi.yml", "--profile monitoring",
                   "--profile interactions", "docker-compose.secrets.yml", "--env-file .env.multi"):
        check(needle in doc, "docs/compose.md does not mention %r" % needle)
