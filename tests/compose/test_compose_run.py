"""The cluster in containers, for real (`make test-compose`): a container
engine on this machine (tests/compose/engine.sh: podman behind the Docker
API socket), the image built from compose/Dockerfile on a local Debian 12
base, compose/docker-compose.multi.yml brought up with the test override
(tests/compose/override.yml: local Valkey and PostgreSQL stand-ins) on free
host ports, and then what a user relies on: all four /health answer through
the published ports, jobs of every role are served; after `docker kill` of
the chat container the admin container serves chat and `up -d` brings chat
back, which takes its role back; after a crash of chat (SIGKILL from
outside) the restart policy brings it back; deploy-multi.sh --compose
health, status, start, backup, restore and stop work against the stack.
(`docker kill` is a manual stop
for Docker and podman alike: the restart policy leaves such a container
down.)

Figures (image size, compose start, kill -> served, kill -> back) are
printed and written to build/compose/report.json.

    make test-compose
    python3 tests/run.py -v --integration-dir tests/compose -k compose_run
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import harness
from harness import check

ROLES = {"chat": 1, "image": 2, "video": 3, "admin": 4}
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
REPORT_DIR = os.path.join(ROOT, "build", "compose")


def log(msg):
    print("compose: %s" % msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_env():
    """Run engine.sh; the environment it asks for (DOCKER_HOST, BASE_IMAGE)."""
    r = subprocess.run([os.path.join(HERE, "engine.sh")], capture_output=True, text=True, timeout=900)
    check(r.returncode == 0, "tests/compose/engine.sh: %s" % r.stderr.strip())
    env = {}
    for line in r.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            k, v = line[len("export "):].split("=", 1)
            env[k] = v
    check("DOCKER_HOST" in env, "engine.sh printed no DOCKER_HOST: %r" % r.stdout)
    return env


def compose_cli(env):
    """Compose v2 when it works, else docker-compose 1.x (as deploy-multi.sh)."""
    if subprocess.run(["docker", "compose", "version"], env=env, capture_output=True).returncode == 0:
        return ["docker", "compose"]
    check(shutil.which("docker-compose"), "neither docker compose nor docker-compose is installed")
    return ["docker-compose"]


class Stack:
    def __init__(self, t, env):
        self.t = t
        tag = "t%d%s" % (os.getpid(), secrets.token_hex(2))
        self.project = "dbtest" + tag
        self.prefix = "dbtest-" + tag
        self.ports = {role: free_port() for role in ROLES}
        self.env_file = t.path("env.multi")
        # the instances' settings: the example with its placeholders emptied
        lines = []
        for line in open(os.path.join(ROOT, ".env.multi.example"), encoding="utf-8"):
            k, sep, v = line.rstrip("\n").partition("=")
            if sep and not k.startswith("#") and v.startswith("your-"):
                line = k + "=\n"
            lines.append(line if line.endswith("\n") else line + "\n")
        lines += ["POSTGRES_PASSWORD=%s\n" % secrets.token_hex(12), "DIAG_JOBS=on\n"]
        with open(self.env_file, "w", encoding="utf-8") as f:
            f.writelines(lines)
        # the compose file's ${...} values, as an operator sets them
        net = 100 + os.getpid() % 150
        self.env = dict(env)
        self.env.update({
            "DOCKER_BUILDKIT": "0",
            "DISCORDBOT_ENV_FILE": self.env_file,
            "DISCORDBOT_CONTAINER_PREFIX": self.prefix,
            "DISCORDBOT_IMAGE": "localhost/discordbot:test",
            "DISCORDBOT_BASE_IMAGE": env.get("BASE_IMAGE", "localhost/discordbot-base:bookworm-slim"),
            "DISCORDBOT_SUBNET": "172.29.%d.0/24" % net,
            "DISCORDBOT_PG_IP": "172.29.%d.5" % net,
            "GIT_REV": "compose-test",
        })
        for role, port in self.ports.items():
            self.env["%s_HEALTH_PORT" % role.upper()] = str(port)
        self.prom_port = free_port()
        self.env["PROMETHEUS_PORT"] = str(self.prom_port)
        self.cli = compose_cli(self.env)
        log("through %s, project %s, ports %r" % (" ".join(self.cli), self.project, self.ports))

    def dc(self, *args, timeout=600, check_rc=True):
        argv = self.cli + ["-p", self.project, "--env-file", self.env_file,
                           "-f", os.path.join(ROOT, "compose", "docker-compose.multi.yml"),
                           "-f", os.path.join(HERE, "override.yml")] + list(args)
        r = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        if check_rc:
            check(r.returncode == 0, "%s: rc %d\n%s\n%s" % (" ".join(args), r.returncode, r.stdout[-3000:],
                                                             r.stderr[-3000:]))
        return r

    def docker(self, *args, timeout=60):
        return subprocess.run(["docker"] + list(args), env=self.env, capture_output=True, text=True, timeout=timeout)

    def container(self, role):
        return "%s-%s" % (self.prefix, role)

    def health(self, role):
        try:
            s = socket.create_connection(("127.0.0.1", self.ports[role]), timeout=2)
        except OSError:
            return None
        try:
            s.sendall(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return None
        finally:
            s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0] + b" ":
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def prom(self, api_path):
        """GET api_path of the published Prometheus: its data, or None."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.prom_port, api_path), timeout=3) as r:
                doc = json.loads(r.read())
        except (OSError, ValueError):
            return None
        return doc.get("data") if doc.get("status") == "success" else None

    def vcli(self, *args):
        r = self.docker("exec", self.container("valkey"), "valkey-cli", "--json", *args)
        check(r.returncode == 0, "valkey-cli %s: %s" % (" ".join(args), r.stderr))
        return json.loads(r.stdout or "null")

    def add_job(self, role, payload):
        return self.vcli("XADD", "discordbot:jobs:%s" % role, "*", "type", "diag.echo", "payload",
                         json.dumps(payload))

    def result_of(self, job_id):
        """consumer of the diag result of job_id, or None yet."""
        for _id, fields in self.vcli("XREVRANGE", "discordbot:diag:results", "+", "-", "COUNT", "200") or []:
            d = dict(zip(fields[::2], fields[1::2]))
            if d.get("job") == job_id:
                return d.get("consumer")
        return None

    def serve(self, role, timeout):
        """Send a diag.echo to role's stream; (consumer, seconds) once served."""
        t0 = time.monotonic()
        jid = self.add_job(role, {"probe": role, "at": time.time()})
        while time.monotonic() - t0 < timeout:
            who = self.result_of(jid)
            if who:
                return who, time.monotonic() - t0
            time.sleep(0.2)
        return None, timeout

    def deploy(self, *args, timeout=300):
        """deploy/deploy-multi.sh --compose ARGS against this stack."""
        env = dict(self.env)
        env.update({"ENV_FILE": self.env_file, "DEPLOY_STATE_DIR": self.t.path("state"),
                    "COMPOSE_PROJECT_NAME": self.project,
                    "COMPOSE_FILE": "%s:%s" % (os.path.join(ROOT, "compose", "docker-compose.multi.yml"),
                                               os.path.join(HERE, "override.yml"))})
        return subprocess.run([os.path.join(ROOT, "deploy", "deploy-multi.sh"), "--compose"] + list(args),
                              env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              stdin=subprocess.DEVNULL)

    def logs(self):
        r = self.dc("logs", "--no-color", "--tail", "60", timeout=120, check_rc=False)
        return r.stdout[-12000:] + r.stderr[-2000:]

    def down(self):
        self.dc("down", "-v", "--remove-orphans", "-t", "5", timeout=300, check_rc=False)


def wait(pred, timeout, step=0.25):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v, time.monotonic() - t0
        time.sleep(step)
    return None, timeout


@harness.timeout(1800)
def test_compose_cluster_in_containers(t):
    figures = {}
    env = dict(os.environ)
    env.update(engine_env())
    stack = Stack(t, env)
    figures["compose_cli"] = " ".join(stack.cli)
    try:
        t0 = time.monotonic()
        stack.dc("build", timeout=1500)
        figures["build_s"] = round(time.monotonic() - t0, 1)
        r = stack.docker("image", "inspect", "--format", "{{.Size}}", stack.env["DISCORDBOT_IMAGE"])
        check(r.returncode == 0, "the built image is missing: %s" % r.stderr)
        figures["image_mb"] = round(int(r.stdout.strip()) / 1e6, 1)
        r = stack.docker("run", "--rm", stack.env["DISCORDBOT_IMAGE"], "chat", "--version")
        check(r.returncode == 0 and "compose-test" in r.stdout + r.stderr, "chat --version in the image: %r" % r)
        r = stack.docker("run", "--rm", "--entrypoint", "id", stack.env["DISCORDBOT_IMAGE"], "-u")
        check(r.stdout.strip() == "10001", "the image runs as uid 10001, not %r" % r.stdout)
        log("image %s: %.1f MB, built in %.0f s" % (stack.env["DISCORDBOT_IMAGE"], figures["image_mb"],
                                                    figures["build_s"]))

        # up: Valkey and PostgreSQL healthy first, then the four instances
        t0 = time.monotonic()
        stack.dc("up", "-d")
        up_s = time.monotonic() - t0
        healthy, _ = wait(lambda: all(stack.health(r) for r in ROLES), 120)
        figures["start_s"] = round(time.monotonic() - t0, 1)
        check(healthy, "not all four /health answered within 120 s of up:\n%s" % stack.logs())
        log("compose up: %.1f s; all four /health 200 through the published ports after %.1f s"
            % (up_s, figures["start_s"]))
        for role in ROLES:
            body = stack.health(role)
            check(body and body.get("role") == role and body.get("status") == "ok", "%s /health: %r" % (role, body))
            check(body["redis"]["ok"] and body["postgres"]["ok"], "%s: Redis and PostgreSQL reachable: %r"
                  % (role, body))
        for role in ROLES:
            who, s = stack.serve(role, 20)
            check(who == "%s-%d" % (role, ROLES[role]), "a %s job served by %r" % (role, who))

        # the monitoring profile: Prometheus scrapes all four over the compose
        # network (compose/prometheus.yml), as an operator's would
        t0 = time.monotonic()
        stack.dc("--profile", "monitoring", "up", "-d", "prometheus")

        def scraped():
            data = stack.prom("/api/v1/targets")
            ups = {tg["labels"].get("service"): tg["health"] for tg in (data or {}).get("activeTargets", [])
                   if tg["labels"].get("job") == "discordbot"}
            return ups if ups == {r: "up" for r in ROLES} else None
        ups, _ = wait(scraped, 120, 1.0)
        check(ups, "Prometheus did not scrape all four within 120 s: %r\n%s"
              % (stack.prom("/api/v1/targets"), stack.logs()))
        res = stack.prom("/api/v1/query?query=discordbot_uptime_seconds")
        got = sorted(x["metric"].get("service") for x in (res or {}).get("result", []))
        check(got == sorted(ROLES), "discordbot_uptime_seconds by service: %r" % got)
        figures["prometheus_all_up_s"] = round(time.monotonic() - t0, 1)
        log("monitoring profile: Prometheus scrapes all four (up) %.1f s after its start"
            % figures["prometheus_all_up_s"])

        # deploy-multi.sh's compose mode drives the same stack
        r = stack.deploy("health")
        check(r.returncode == 0, "deploy-multi.sh --compose health: rc %d\n%s%s" % (r.returncode, r.stdout, r.stderr))
        check("compose mode through %s" % " ".join(stack.cli) in r.stderr,
              "deploy-multi.sh must say which compose it uses: %r" % r.stderr)
        r = stack.deploy("status")
        check(r.returncode == 0 and all("%s-%d" % (k, n) in r.stdout for k, n in ROLES.items()),
              "deploy-multi.sh --compose status: rc %d\n%s%s" % (r.returncode, r.stdout, r.stderr))
        log("deploy-multi.sh --compose health and status: ok (%s)" % r.stderr.strip().splitlines()[0])

        # docker kill chat -> admin serves chat; docker kill is a manual stop
        # (Docker and podman alike), so the restart policy leaves it down
        # and deploy-multi.sh start brings it back -> the role is handed back
        t0 = time.monotonic()
        r = stack.docker("kill", stack.container("chat"))
        check(r.returncode == 0, "docker kill: %s" % r.stderr)
        who, _ = stack.serve("chat", 30)
        figures["kill_to_served_s"] = round(time.monotonic() - t0, 1)
        check(who == "admin-4", "after docker kill a chat job was served by %r:\n%s" % (who, stack.logs()))
        log("docker kill chat: a chat job served by %s %.1f s after the kill" % (who, figures["kill_to_served_s"]))
        t0 = time.monotonic()
        r = stack.deploy("start")
        check(r.returncode == 0, "deploy-multi.sh --compose start: rc %d\n%s%s" % (r.returncode, r.stdout, r.stderr))
        back, _ = wait(lambda: stack.health("chat"), 60, 0.5)
        check(back, "chat did not come back after deploy-multi.sh start:\n%s" % stack.logs())
        ok, _ = wait(lambda: stack.serve("chat", 5)[0] == "chat-1", 60, 0.5)
        check(ok, "chat did not take its role back from admin within 60 s:\n%s" % stack.logs())
        figures["start_to_handback_s"] = round(time.monotonic() - t0, 1)
        log("deploy-multi.sh --compose start: chat back and serving its role again after %.1f s"
            % figures["start_to_handback_s"])

        # a crash (SIGKILL of the instance from outside, as the OOM killer
        # does) -> admin serves chat -> the restart policy brings chat back
        pid = stack.docker("inspect", "--format", "{{.State.Pid}}", stack.container("chat")).stdout.strip()
        check(pid.isdigit() and int(pid) > 1, "chat container's pid: %r" % pid)
        t0 = time.monotonic()
        os.kill(int(pid), 9)
        who, _ = stack.serve("chat", 30)
        figures["crash_to_served_s"] = round(time.monotonic() - t0, 1)
        figures["crash_served_by"] = who
        check(who in ("admin-4", "chat-1"), "after the crash a chat job was served by %r" % who)
        log("crash of chat: a chat job served by %s %.1f s after it" % (who, figures["crash_to_served_s"]))
        back, _ = wait(lambda: stack.health("chat"), 90, 0.5)
        figures["crash_to_back_s"] = round(time.monotonic() - t0, 1)
        state = stack.docker("inspect", "--format", "{{.State.Status}} restarts={{.RestartCount}}",
                             stack.container("chat")).stdout.strip()
        check(back, "the restart policy did not bring chat back within 90 s of a crash (%s)" % state)
        ok, _ = wait(lambda: stack.serve("chat", 5)[0] == "chat-1", 60, 0.5)
        check(ok, "chat did not take its role back after the restart:\n%s" % stack.logs())
        figures["crash_to_handback_s"] = round(time.monotonic() - t0, 1)
        log("restart policy: chat back %.1f s after the crash (%s), serving its role after %.1f s"
            % (figures["crash_to_back_s"], state, figures["crash_to_handback_s"]))

        # backup and restore in compose mode: a Valkey key written before the
        # backup and deleted after it is back after the restore
        stack.vcli("SET", "discordbot:compose-test:marker", "before-backup")
        t0 = time.monotonic()
        r = stack.deploy("backup")
        check(r.returncode == 0, "deploy-multi.sh --compose backup: rc %d\n%s%s" % (r.returncode, r.stdout, r.stderr))
        figures["backup_s"] = round(time.monotonic() - t0, 1)
        stack.vcli("DEL", "discordbot:compose-test:marker")
        t0 = time.monotonic()
        r = stack.deploy("restore", "latest")
        check(r.returncode == 0, "deploy-multi.sh --compose restore latest: rc %d\n%s%s"
              % (r.returncode, r.stdout, r.stderr))
        figures["restore_s"] = round(time.monotonic() - t0, 1)
        check("postgresql: restored" in r.stdout and "valkey: restored" in r.stdout, "restore said: %s" % r.stdout)
        got = stack.vcli("GET", "discordbot:compose-test:marker")
        check(got == "before-backup", "the Valkey key written before the backup: %r after the restore" % got)
        ok, _ = wait(lambda: all(stack.health(r) for r in ROLES), 60)
        check(ok, "not all four healthy after the restore:\n%s" % stack.logs())
        log("deploy-multi.sh --compose backup %.1f s, restore %.1f s: data back, all four healthy"
            % (figures["backup_s"], figures["restore_s"]))

        # update under load: jobs of every role keep coming while
        # deploy-multi.sh --compose update recreates the four one by one
        # (each drains on SIGTERM; its role is served meanwhile); every job
        # is served, once, and none fails
        sent, stop_sending = [], threading.Event()

        def send():
            i = 0
            while not stop_sending.is_set():
                role = list(ROLES)[i % len(ROLES)]
                sent.append(stack.add_job(role, {"probe": "update", "n": i}))
                i += 1
                stop_sending.wait(0.3)
        sender = threading.Thread(target=send, daemon=True)
        dead_before = stack.vcli("XLEN", "discordbot:dead")
        t0 = time.monotonic()
        sender.start()
        try:
            r = stack.deploy("update", "--no-pull", timeout=900)
        finally:
            stop_sending.set()
            sender.join(10)
        figures["update_s"] = round(time.monotonic() - t0, 1)
        check(r.returncode == 0, "deploy-multi.sh --compose update: rc %d\n%s%s" % (r.returncode, r.stdout, r.stderr))

        def served():
            got = {}
            for _id, fields in stack.vcli("XRANGE", "discordbot:diag:results", "-", "+") or []:
                d = dict(zip(fields[::2], fields[1::2]))
                got.setdefault(d.get("job"), []).append(d.get("consumer"))
            return got if all(j in got for j in sent) else None
        got, _ = wait(served, 90, 1.0)
        missing = [j for j in sent if j not in (got or {})]
        check(got, "%d of %d jobs sent during the update were never served: %r" % (len(missing), len(sent), missing[:5]))
        twice = {j: got[j] for j in sent if len(got[j]) > 1}
        check(not twice, "jobs served twice during the update: %r" % twice)
        dead = stack.vcli("XLEN", "discordbot:dead")
        check(dead == dead_before, "jobs dead-lettered during the update: %d" % (dead - dead_before))
        figures["update_jobs"] = len(sent)
        log("deploy-multi.sh --compose update: %.1f s, %d jobs sent meanwhile, all served once, none failed"
            % (figures["update_s"], len(sent)))

        # stop drains the instances and leaves nothing of the stack running
        t0 = time.monotonic()
        r = stack.deploy("stop")
        check(r.returncode == 0, "deploy-multi.sh --compose stop: rc %d\n%s%s" % (r.returncode, r.stdout, r.stderr))
        figures["stop_s"] = round(time.monotonic() - t0, 1)
        running = stack.docker("ps", "-q", "--filter", "name=%s-" % stack.prefix).stdout.split()
        check(not running, "containers still running after stop: %r" % running)
        log("deploy-multi.sh --compose stop: %.1f s, nothing left running" % figures["stop_s"])
    finally:
        os.makedirs(REPORT_DIR, exist_ok=True)
        with open(os.path.join(REPORT_DIR, "report.json"), "w") as f:
            json.dump(figures, f, indent=1)
        log("figures: %s" % json.dumps(figures))
        stack.down()
