"""deploy/deploy-multi.sh, black-box: start, status, health, try, chaos,
update, backup/restore, stop, and the .env.multi checks. Native mode, the
sandbox, a state directory and ports of the test's own."""

import json
import os
import pty
import re
import select
import signal
import socket
import stat
import struct
import subprocess
import threading
import time
import zlib

import harness
import simclient
from harness import check, wait_until

GUILD = "400000000000000001"
CHAT_CHANNEL = "500000000000000001"
ROLES = ("chat", "image", "video", "admin")


def run(t, env, *args, timeout=180, cwd=None):
    full = dict(os.environ)
    full.update(env)
    return subprocess.run([os.path.join(t.root, "deploy", "deploy-multi.sh")] + list(args), env=full, cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def png(w, h):
    """A small valid RGB PNG."""
    raw = b"".join(b"\x00" + b"".join(bytes((x * 4 % 256, y * 4 % 256, 128)) for x in range(w)) for y in range(h))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def deploy_env(t, env_file=None):
    """The environment of a cluster of this test's own: state in t.tmp,
    free ports, native mode."""
    env = {"DEPLOY_STATE_DIR": t.tmp, "ENV_FILE": env_file or t.path("none.env"), "DEPLOY_MODE": "native",
           "LOCAL_REDIS_PORT": str(t.free_port()), "LOCAL_PG_PORT": str(t.free_port()),
           "SANDBOX_DISCORD_PORT": str(t.free_port()), "SANDBOX_OPENAI_PORT": str(t.free_port()),
           "SANDBOX_MINIMAX_PORT": str(t.free_port()), "SANDBOX_STABILITY_PORT": str(t.free_port())}
    for role in ROLES:
        env[role.upper() + "_HEALTH_PORT"] = str(t.free_port())
    return env


def menu_session(t, env, steps, timeout=120):
    """Run the menu on a pseudo-terminal as a person would: for each
    (prompt, answer) wait until the prompt shows, then type the answer.
    Returns everything the terminal showed."""
    full = dict(os.environ)
    full.update(env)
    script = os.path.join(t.root, "deploy", "deploy-multi.sh")
    pid, fd = pty.fork()
    if pid == 0:  # the child: the script on the terminal
        try:
            os.execve(script, [script], full)
        finally:
            os._exit(127)
    seen, pos = b"", 0
    deadline = time.monotonic() + harness.scaled(timeout)
    try:
        for prompt, answer in steps:
            want = prompt.encode()
            while seen.find(want, pos) < 0:
                left = deadline - time.monotonic()
                check(left > 0, "the menu never showed %r; the terminal:\n%s" % (prompt, seen.decode(errors="replace")))
                r, _w, _x = select.select([fd], [], [], min(left, 1))
                if r:
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:
                        chunk = b""
                    check(chunk, "the menu ended before %r:\n%s" % (prompt, seen.decode(errors="replace")))
                    seen += chunk
            pos = seen.find(want, pos) + len(want)
            os.write(fd, answer.encode() + b"\n")
        while time.monotonic() < deadline:  # the last answer quits: read to the end
            r, _w, _x = select.select([fd], [], [], 1)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
        # the terminal closes a moment before the process is gone
        done = wait_until(lambda: (lambda r: r if r[0] else None)(os.waitpid(pid, os.WNOHANG)), 10,
                          "the menu ends on quit")
        pid = None
        check(os.WIFEXITED(done[1]) and os.WEXITSTATUS(done[1]) == 0,
              "the menu exits 0 on quit:\n" + seen.decode(errors="replace"))
    finally:
        if pid is not None:  # not reaped: the test failed on the way
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(fd)
    return seen.decode(errors="replace").replace("\r\n", "\n")


def status_rows(out):
    """The rows of status's table (up to the blank line), split."""
    rows = []
    for line in out.splitlines()[1:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def serving(out):
    """{role: text after the arrow} from status's "who serves" section."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s+(chat|image|video|admin)\s+→ (.*)$", out, re.M)}


def ok(r, what):
    check(r.returncode == 0, "%s failed (%d):\n%s\n%s" % (what, r.returncode, r.stdout, r.stderr))
    return r.stdout


@harness.timeout(300)
def test_deploy_start_status_health_stop(t):
    if t.variant != "release":
        return  # the script runs the release binaries; one run of it is enough
    env = deploy_env(t)
    t.cleanup(lambda: run(t, env, "stop", timeout=120))
    r = run(t, env, "start")
    check(r.returncode == 0, "start failed:\n%s\n%s" % (r.stdout, r.stderr))
    check("sandbox: Discord simulator" in r.stdout, "start says the sandbox runs:\n" + r.stdout)
    t0 = time.monotonic()
    r = run(t, env, "status")
    took = time.monotonic() - t0
    rows = status_rows(r.stdout)
    check(r.returncode == 0 and len(rows) == 4 and all(row[4] == "ok" for row in rows),
          "status (%d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
    check([row[0] for row in rows] == ["chat-1", "image-2", "video-3", "admin-4"], r.stdout)
    check(took < harness.scaled(2.0), "status answers at once, not in %.1f s" % took)
    r = run(t, env, "health")
    check(r.returncode == 0 and r.stdout.count("healthy") == 4, r.stdout)
    check(os.path.exists(os.path.join(t.tmp, "data", "redis", "appendonlydir")), "redis runs with AOF")
    # no DISCORD_TOKEN: the sandbox simulator runs and one instance holds its gateway
    ports = [env[r + "_HEALTH_PORT"] for r in ("CHAT", "IMAGE", "VIDEO", "ADMIN")]

    def gateway_states():
        out = []
        for p in ports:
            st, body = simclient.http("GET", "http://127.0.0.1:%s/health" % p)[0::2]
            out.append(json.loads(body).get("gateway", {}).get("state"))
        return out
    wait_until(lambda: "connected" in gateway_states(), 20, "the sandbox gateway connected")
    # /chat answers through the sandbox's model simulator
    sim_api = "http://127.0.0.1:%s" % env["SANDBOX_DISCORD_PORT"]
    st, _h, body = simclient.http("POST", sim_api + "/_sim/interactions", {
        "name": "chat", "guild_id": GUILD, "channel_id": CHAT_CHANNEL,
        "user": {"id": "600000000000000001", "username": "you"}, "locale": "en-US",
        "options": [{"name": "question", "type": 3, "value": "sandbox hello"}]})
    iid = json.loads(body)["id"]

    def answered():
        d = json.loads(simclient.http("GET", sim_api + "/_sim/interactions/" + iid)[2])
        return d.get("original") and "sandbox hello" in (d["original"].get("content") or "")
    wait_until(answered, 20, "the sandbox answers /chat")
    # /이미지 draws through the sandbox's MiniMax simulator
    st, _h, body = simclient.http("POST", sim_api + "/_sim/interactions", {
        "name": "이미지", "guild_id": GUILD, "channel_id": "500000000000000003",
        "user": {"id": "600000000000000001", "username": "you"}, "locale": "ko",
        "options": [{"name": "설명", "type": 3, "value": "sandbox cat"}]})
    iid = json.loads(body)["id"]

    def drawn():
        d = json.loads(simclient.http("GET", sim_api + "/_sim/interactions/" + iid)[2])
        return d.get("original") and d["original"].get("attachments")
    wait_until(drawn, 20, "the sandbox answers /이미지 with an image")

    # the menu offers try, chaos and restore too
    out = menu_session(t, env, [("choice: ", "10"), ("channel (empty: #채팅방-1): ", "#일반"), ("command: ", "/핑"),
                                ("choice: ", "9"), ("empty: latest): ", "no-such-backup"),
                                ("choice: ", "11"), ("(chat, image, video, admin): ", "video"),
                                ("choice: ", "0")])
    check("9) restore" in out and "10) try" in out and "11) chaos" in out
          and "12) cleanup" in out, "the menu lists restore, try and chaos:\n" + out)
    check("→ /핑 in #일반" in out and "answered in" in out, "try from the menu answers /핑:\n" + out)
    check("restore: no backup at no-such-backup" in out and "(exit status 1)" in out,
          "restore from the menu, of a backup that is not there:\n" + out)
    check("chaos: killed video-3" in out, "chaos from the menu kills video-3:\n" + out)
    r = run(t, env, "start")  # brings video-3 back
    check(r.returncode == 0, "start after chaos from the menu:\n" + r.stdout + r.stderr)

    # a hung instance (SIGSTOP) costs status one short timeout, not seconds per row
    image_pid = int(open(os.path.join(t.tmp, "data", "run", "image.pid")).read())
    os.kill(image_pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = run(t, env, "status")
        took = time.monotonic() - t0
    finally:
        os.kill(image_pid, signal.SIGCONT)
    rows = status_rows(r.stdout)
    check(r.returncode == 1 and [row[4] for row in rows] == ["ok", "no-answer", "ok", "ok"],
          "status names the hung instance and exits 1 (%d):\n%s" % (r.returncode, r.stdout))
    check(took < harness.scaled(3.0), "status with a hung instance took %.1f s" % took)

    r = run(t, env, "stop", timeout=120)
    check(r.returncode == 0 and r.stdout.count("stopped") == 4, r.stdout + r.stderr)
    r = run(t, env, "health")
    check(r.returncode != 0, "health fails once stopped")
    r = run(t, env, "status")
    check(r.returncode == 1 and [row[4] for row in status_rows(r.stdout)] == ["down"] * 4,
          "status exits 1 once stopped (%d):\n%s" % (r.returncode, r.stdout))
    for role in ROLES:
        log = open(os.path.join(t.tmp, "logs", role + ".log")).read()
        check('"msg":"drained: every job taken was finished and acked"' in log, "%s drained on stop" % role)


@harness.timeout(120)
def test_deploy_refuses_example_values_and_bad_settings(t):
    if t.variant != "release":
        return
    secrets = ["your-discord-bot-token-here", "sk-your-openai-key-here", "your_minimax_key", "notanumber4711",
               "chatty-level-99"]
    env_file = t.path("env.multi")
    with open(env_file, "w") as f:
        f.write("# placeholders straight from the example, and two bad settings\n"
                "DISCORD_TOKEN=%s\nOPENAI_API_KEY_1=%s\nMINIMAX_API_KEY_2=\"%s\"\n"
                "HEARTBEAT_INTERVAL_MS=%s\nLOG_LEVEL=%s\n" % tuple(secrets))
    env = deploy_env(t, env_file)
    t.cleanup(lambda: run(t, env, "stop", timeout=120))
    r = run(t, env, "start")
    out = r.stdout + r.stderr
    check(r.returncode == 2, "start refuses a bad configuration with status 2 (%d):\n%s" % (r.returncode, out))
    for key in ("DISCORD_TOKEN", "OPENAI_API_KEY_1", "MINIMAX_API_KEY_2", "HEARTBEAT_INTERVAL_MS", "LOG_LEVEL"):
        check(key in out, "%s is named:\n%s" % (key, out))
    check(re.search(r"still the example value.*DISCORD_TOKEN.*OPENAI_API_KEY_1.*MINIMAX_API_KEY_2", out),
          "the placeholders are named as such:\n" + out)
    check(re.search(r"HEARTBEAT_INTERVAL_MS: must be an integer", out), "the bad setting and why:\n" + out)
    check("missing: " in out and "OPENAI_API_KEY_4" in out, "missing keys are named:\n" + out)
    for s in secrets:
        check(s not in out, "the value %r is never printed:\n%s" % (s, out))
    run_dir = os.path.join(t.tmp, "data", "run")
    check(not os.path.isdir(run_dir) or not [f for f in os.listdir(run_dir) if f.endswith(".pid")],
          "nothing was started: %s" % (os.listdir(run_dir) if os.path.isdir(run_dir) else []))
    # without a terminal: no menu, usage and status 2; cleanup does not delete without --yes
    r = run(t, env)
    check(r.returncode == 2 and "usage:" in r.stderr, "no arguments, no terminal: usage (%d)\n%s" % (r.returncode, r.stderr))
    marker = os.path.join(t.tmp, "data", "keep-me")
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    open(marker, "w").close()
    r = run(t, env, "cleanup")
    check(r.returncode != 0 and os.path.exists(marker), "cleanup without --yes and no terminal deletes nothing")
    r = run(t, env, "try", "#채팅방-1", "/채팅 hi")
    check(r.returncode != 0 and "sandbox" in r.stderr, "try without a sandbox says so:\n" + r.stderr)
    r = run(t, env, "restore", t.path("no-such-backup"))
    check(r.returncode != 0 and "no backup" in r.stderr, "restore of nothing:\n" + r.stderr)


def pids_of(run_dir, pg_dir):
    """Every pid the script started: its pidfiles and PostgreSQL's."""
    pids = {}
    for f in os.listdir(run_dir):
        if f.endswith(".pid"):
            pids[f] = int(open(os.path.join(run_dir, f)).read().split()[0])
    pm = os.path.join(pg_dir, "postmaster.pid")
    if os.path.exists(pm):
        pids["postgres"] = int(open(pm).read().split()[0])
    return pids


def running(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def listening(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", int(port))) == 0


class ChatFlow:
    """/chat interactions sent straight to the sandbox's Discord simulator
    every `gap` seconds until stopped; each must get its own answer."""

    def __init__(self, sim_api, gap=0.3):
        self.api, self.gap = sim_api, gap
        self.sent, self.errors = [], []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        n = 0
        while not self.stop_flag.is_set():
            q = "update flow %d" % n
            try:
                st, _h, body = simclient.http("POST", self.api + "/_sim/interactions", {
                    "name": "chat", "guild_id": GUILD, "channel_id": CHAT_CHANNEL, "locale": "en-US",
                    "user": {"id": str(610000000000000000 + n), "username": "flow%d" % n},
                    "options": [{"name": "question", "type": 3, "value": q}]}, timeout=20)
                self.sent.append((json.loads(body)["id"], q))
            except (OSError, ValueError, KeyError) as e:
                self.errors.append(repr(e))
            n += 1
            self.stop_flag.wait(self.gap)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_flag.set()
        self.thread.join(30)

    def unanswered(self):
        left = []
        for iid, q in self.sent:
            d = json.loads(simclient.http("GET", self.api + "/_sim/interactions/" + iid)[2])
            if q not in ((d.get("original") or {}).get("content") or ""):
                left.append((q, d.get("acked"), d.get("errors")))
        return left


@harness.timeout(420)
def test_deploy_sandbox_try_chaos_update_backup_restore_stop(t):
    if t.variant != "release":
        return
    env_file = t.path("env.multi")
    with open(env_file, "w") as f:
        # quick failover for the test; no per-user limits (the flow is many requests)
        f.write("FAILOVER_AFTER_MS=1500\nHEARTBEAT_INTERVAL_MS=300\nGATEWAY_LEASE_MS=2000\n"
                "DRAIN_TIMEOUT_SEC=15\nUSER_RATE_LIMIT=0\nUSER_DAILY_LIMIT=0\n")
    os.chmod(env_file, 0o600)
    env = deploy_env(t, env_file)
    sim_api = "http://127.0.0.1:%s" % env["SANDBOX_DISCORD_PORT"]
    t.cleanup(lambda: run(t, env, "stop", timeout=120))

    def psql(sql):
        r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", env["LOCAL_PG_PORT"], "-U", "discordbot", "-d",
                            "discordbot", "-Atqc", sql], capture_output=True, text=True, timeout=30)
        check(r.returncode == 0, "psql: " + r.stderr)
        return r.stdout.strip()

    def status(rc=0):
        r = run(t, env, "status")
        check(r.returncode == rc, "status exits %d (%d):\n%s%s" % (rc, r.returncode, r.stdout, r.stderr))
        return r.stdout

    # start: every instance healthy, each serving its own role
    out = ok(run(t, env, "start"), "start")
    check("features:" in out and "OPENAI_API_KEY_1 missing → sandbox" in out, "start reports the features:\n" + out)
    out = status()
    rows = status_rows(out)
    check([(row[0], row[4]) for row in rows] == [("chat-1", "ok"), ("image-2", "ok"), ("video-3", "ok"),
                                                  ("admin-4", "ok")], "four healthy instances:\n" + out)
    wait_until(lambda: serving(status()).get("chat") == "chat-1", 10, "status says chat-1 serves chat")

    # try: a chat answer, an image file, the /상태 embed
    out = ok(run(t, env, "try", "#채팅방-1", "/채팅 안녕 샌드박스"), "try /채팅")
    check("안녕 샌드박스" in out.split("\n", 1)[1] and "answered in" in out, "the chat answer is printed:\n" + out)
    out = ok(run(t, env, "try", "#이미지생성-1", "/이미지 고양이 개수:2"), "try /이미지")
    files = re.findall(r"^\[file\] (\S+) \((\d+) bytes", out, re.M)
    check(len(files) == 2, "two images saved:\n" + out)
    for path, size in files:
        check(path.startswith(os.path.join(t.tmp, "try-output")) and os.path.getsize(path) == int(size),
              "saved under try-output: " + path)
        check(open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n", "a PNG: " + path)
    check("[embed] " in out, "the image embed is printed:\n" + out)
    # /img with an attached file: the path is the caller's, not the checkout's
    pics = t.path("pics")
    os.makedirs(pics)
    with open(os.path.join(pics, "photo.png"), "wb") as f:
        f.write(png(64, 64))
    out = ok(run(t, env, "try", "#이미지생성-1", "/img 수채화로 이미지:@photo.png 강도:0.4", cwd=pics), "try /img @file")
    check("이미지:@photo.png" in out and "image-to-image" in out, "img2img from ./photo.png:\n" + out)
    files = re.findall(r"^\[file\] (\S+) \(", out, re.M)
    check(len(files) == 1 and open(files[0], "rb").read(8) == b"\x89PNG\r\n\x1a\n", "the changed image:\n" + out)
    r = run(t, env, "try", "#이미지생성-1", "/img 수채화로 이미지:@photo.png", cwd=t.tmp)
    check(r.returncode == 1 and "cannot read photo.png" in r.stderr, "no ./photo.png here:\n" + r.stderr)
    out = ok(run(t, env, "try", "#일반", "/상태"), "try /상태")
    check("[embed] 클러스터 상태" in out and "chat-1" in out, "the /상태 embed as text:\n" + out)
    r = run(t, env, "try", "#없는-채널", "/채팅 hi")
    check(r.returncode != 0 and "채팅방-1" in r.stderr, "an unknown channel lists the real ones:\n" + r.stderr)

    # chaos: chat is killed, admin answers in its place
    out = ok(run(t, env, "chaos", "chat"), "chaos chat")
    check("SIGKILL" in out and "status" in out and "logs | grep routing" in out, "chaos says what to watch:\n" + out)
    chat_pid = int(re.search(r"\(pid (\d+)\)", out).group(1))
    check(not running(chat_pid), "chat-1 is dead")
    out = ok(run(t, env, "try", "#채팅방-1", "/채팅 아직 거기 있어?"), "try /채팅 after chaos")
    check("아직 거기 있어?" in out and "admin-4 (takeover)" in out, "admin answered for chat:\n" + out)
    out = status(rc=1)  # an instance is down: non-zero, as health
    check(serving(out).get("chat", "").startswith("admin-4 (takeover"), "status shows the takeover:\n" + out)
    check(status_rows(out)[0][4] == "down", "chat-1 is down:\n" + out)
    r = run(t, env, "logs")  # not a terminal: prints what is there and exits
    routing = [l for l in r.stdout.splitlines() if "routing" in l]
    check(any(l.startswith("[admin-4] ") and "taking over the role" in l for l in routing),
          "logs | grep routing shows the takeover:\n" + "\n".join(routing))

    # start again: only chat is started, and gets its role back
    out = ok(run(t, env, "start"), "start after chaos")
    check("admin-instance already running" in out, "start only starts what is not running:\n" + out)
    wait_until(lambda: serving(status()).get("chat") == "chat-1", 15, "chat-1 serves chat again")

    # update: a rolling restart while /chat jobs flow; every one is answered
    before = {row[0]: row[2] for row in status_rows(status())}
    flow = ChatFlow(sim_api).start()
    time.sleep(harness.scaled(1.0))
    try:
        out = ok(run(t, env, "update", "--no-pull", timeout=240), "update")
        time.sleep(harness.scaled(1.0))
    finally:
        flow.stop()
    check(out.index("chat-1: draining") < out.index("image-2: draining") < out.index("video-3: draining")
          < out.index("admin-4: draining"), "one at a time, admin last:\n" + out)
    after = {row[0]: row[2] for row in status_rows(status())}
    check(all(before[n] != after[n] for n in before), "every instance restarted: %s -> %s" % (before, after))
    check(len(flow.sent) >= 10 and not flow.errors, "the flow ran: %d sent, %s" % (len(flow.sent), flow.errors))
    wait_until(lambda: not flow.unanswered(), 60, lambda: "every flow job answered: %s" % flow.unanswered()[:5])
    r = run(t, env, "logs")
    check(re.search(r"^\[chat-1\] .*commands_processed", r.stdout, re.M), "logs | grep commands_processed")
    r = run(t, env, "logs", "image-2", "-n", "3")
    check(len(r.stdout.splitlines()) == 3 and all(l.startswith("[image-2] ") for l in r.stdout.splitlines()),
          "logs of one instance:\n" + r.stdout)

    # backup, /초기화 forgets the conversation, restore brings it back
    user = "600000000000000077"
    ok(run(t, env, "try", "--user", user, "#채팅방-1", "/채팅 내 이름은 철수야"), "try /채팅 before the backup")
    count = "SELECT count(*) FROM conversations WHERE user_id = '%s'" % user
    check(psql(count) == "1", "the conversation is stored")
    out = ok(run(t, env, "backup"), "backup")
    bdir = os.path.join(t.tmp, "backups", os.readlink(os.path.join(t.tmp, "backups", "latest")))
    check(bdir.rstrip("/") in out, "backup names its directory:\n" + out)
    check(stat.S_IMODE(os.stat(bdir).st_mode) == 0o700, "the backup directory is 0700")
    for name in ("postgres.dump", "redis.rdb", "env.multi", "MANIFEST"):
        p = os.path.join(bdir, name)
        check(os.path.exists(p) and stat.S_IMODE(os.stat(p).st_mode) == 0o600, "%s is there, 0600" % name)
    check(open(os.path.join(bdir, "postgres.dump"), "rb").read(5) == b"PGDMP", "pg_dump custom format")
    check(open(os.path.join(bdir, "redis.rdb"), "rb").read(5) == b"REDIS", "a Redis RDB snapshot")
    out = ok(run(t, env, "try", "--user", user, "#채팅방-1", "/초기화"), "try /초기화")
    check(psql(count) == "0", "/초기화 deleted the conversation")
    # a backup directory relative to where restore runs
    out = ok(run(t, env, "restore", os.path.relpath(bdir, t.tmp), timeout=240, cwd=t.tmp), "restore")
    check("postgresql: restored" in out and "redis: restored" in out, "restore says what it did:\n" + out)
    check("the backup's copy is" in out, "the existing .env.multi is kept:\n" + out)
    time.sleep(harness.scaled(2))  # nothing replays the /초기화 given after the backup
    check(psql(count) == "1", "the conversation is back after restore")
    out = ok(run(t, env, "try", "--user", user, "#채팅방-1", "/채팅 내 이름이 뭐지?"), "try /채팅 after restore")
    check(re.search(r"context: [1-9]", out), "the bot remembers the conversation:\n" + out)

    # stop: nothing of ours is left running or listening
    pids = pids_of(os.path.join(t.tmp, "data", "run"), os.path.join(t.tmp, "data", "pg", "db"))
    check({"chat.pid", "image.pid", "video.pid", "admin.pid", "redis.pid", "discord-sim.pid", "postgres"}
          <= set(pids), "pids: %s" % pids)
    ok(run(t, env, "stop", timeout=120), "stop")
    check(not [n for n, p in pids.items() if running(p)], "no process left: %s" %
          [(n, p) for n, p in pids.items() if running(p)])
    ports = [v for k, v in env.items() if k.endswith("_PORT")]
    check(not [p for p in ports if listening(p)], "no port left listening: %s" % [p for p in ports if listening(p)])


def fake_apt_path(t, apt_rc=0):
    """A PATH under which install-deps.sh sees three packages missing and
    installs them with a stand-in apt-get that talks as much as the real one
    on a fresh machine (through a stand-in sudo, so /usr/sbin is untouched)."""
    bindir = t.path("fakebin")
    os.makedirs(bindir, exist_ok=True)
    scripts = {
        "dpkg-query": 'case " $* " in *" redis-tools "*|*" libuv1-dev "*|*" clang "*|*" ffmpeg "*) exit 1 ;; esac\n'
                      "printf 'install ok installed'\n",
        "id": 'if [ "$1" = -u ]; then echo 1000; else exec /usr/bin/id "$@"; fi\n',
        "sudo": 'exec "$@"\n',
        "apt-get": 'echo "apt-get $*" >>"%s"\n'
                   'case " $* " in *" update "*) for i in 1 2 3 4 5; do echo "Get:$i http://deb.example bookworm"; done;'
                   ' exit 0 ;; esac\n'
                   'i=0; while [ $i -lt 150 ]; do echo "Setting up fake-package-$i (1.0) ..."; i=$((i+1)); done\n'
                   'if [ %d != 0 ]; then echo "E: Sub-process /usr/bin/dpkg returned an error code (1)"; fi\n'
                   'exit %d\n' % (t.path("apt-calls"), apt_rc, apt_rc),
    }
    for name, body in scripts.items():
        with open(os.path.join(bindir, name), "w") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(os.path.join(bindir, name), 0o755)
    return bindir + os.pathsep + os.environ["PATH"]


@harness.timeout(60)
def test_install_deps_prints_a_summary_and_keeps_apt_output_in_a_log(t):
    """The first start printed ~150 lines of apt output: now two lines, the
    rest in a log, and the log's tail when apt fails."""
    script = os.path.join(t.root, "deploy", "install-deps.sh")
    log = t.path("logs", "install-deps.log")
    env = dict(os.environ, PATH=fake_apt_path(t), INSTALL_DEPS_LOG=log)
    r = subprocess.run([script], env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    out = (r.stdout + r.stderr).splitlines()
    check(r.returncode == 0, "install-deps with a working apt (%d):\n%s" % (r.returncode, "\n".join(out)))
    check(len(out) <= 2 and "4 packages" in out[0] and log in out[0] and out[-1].startswith("install-deps: done"),
          "a two-line summary naming the log:\n" + "\n".join(out))
    text = open(log).read()
    check(text.count("Setting up fake-package-") == 150 and "Get:5" in text, "the full apt output is in the log")
    calls = open(t.path("apt-calls")).read()
    check("DPkg::Lock::Timeout" in calls and "redis-tools" in calls and "libuv1-dev" in calls and "ffmpeg" in calls,
          "apt waits for another apt's lock and installs what is missing:\n" + calls)
    # what start runs: the packages the tests alone need are left out
    os.remove(t.path("apt-calls"))
    r = subprocess.run([script, "--runtime"], env=env, capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    calls = open(t.path("apt-calls")).read()
    check(r.returncode == 0 and "3 packages" in r.stdout and "ffmpeg" not in calls and "clang" in calls,
          "--runtime (%d):\n%s%s\n%s" % (r.returncode, r.stdout, r.stderr, calls))

    env["PATH"] = fake_apt_path(t, apt_rc=100)
    r = subprocess.run([script], env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    check(r.returncode == 100, "apt's failure is install-deps' (%d):\n%s" % (r.returncode, out))
    check("returned an error code" in out and log in out and "Setting up fake-package-149" in out,
          "the failure shows the log's last lines and where the log is:\n" + out)
    check(len(out.splitlines()) <= 30, "only the tail, not the whole log:\n" + out)
