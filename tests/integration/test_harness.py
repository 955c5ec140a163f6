"""Self-tests of the integration harness and of tests/run.py.

They need no bot binary: where an instance is needed they use a small fake
role binary (a Python script) written into the test's temp dir, and the
runner is exercised on throwaway test files, never on failing tests kept in
the suite."""

import os
import socket
import subprocess
import sys
import threading
import time

import harness

RUN_PY = os.path.join(harness.ROOT, "tests", "run.py")

FAKE_ROLE = r'''
import http.server, json, os, signal, sys, threading
mode = os.environ.get("FAKE_MODE", "")
def log(msg, **kw):
    print(json.dumps(dict(level="info", msg=msg, **kw)), file=sys.stderr, flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body, code = json.dumps({"status": "ok", "role": "chat"}).encode(), 200
        else:
            body, code = b"not found", 404
        self.send_response(code); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass
if mode == "ignore_term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *a: (log("stopping"), os._exit(0)))
srv = http.server.HTTPServer(("127.0.0.1", int(os.environ["HEALTH_PORT"])), H)
print("plain text line, not JSON", file=sys.stderr, flush=True)
log("ready", env=sorted(os.environ), argv=sys.argv[1:], cwd=os.getcwd())
if mode == "asan":
    print("==42==ERROR: AddressSanitizer: heap-use-after-free on address 0x6020", file=sys.stderr, flush=True)
srv.serve_forever()
'''


def write_script(path, body):
    # An absolute interpreter: `env python3` may find a shim (pyenv) that
    # adds its own variables to the environment we check.
    with open(path, "w") as f:
        f.write("#!%s\n%s" % (sys.executable, body))
    os.chmod(path, 0o755)


def fake_bin_dir(t):
    """A BOT_BIN_DIR holding the fake binary as chat-instance."""
    d = t.path("bin", "chat-instance")
    os.makedirs(d)
    path = os.path.join(d, "chat-instance")
    write_script(path, FAKE_ROLE)
    return path


def alive(pid):
    st = harness._proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


# --------------------------------------------------------------------------
# Redis


def test_redis_roundtrip_korean(t):
    r = t.redis()
    c = r.client()
    t.check(c.cmd("PING") == "PONG", "PING")
    text = "안녕하세요, 봇 클러스터 🎉"
    sid = c.cmd("XADD", "jobs", "*", "prompt", text, "n", 7)
    rows = c.cmd("XRANGE", "jobs", "-", "+")
    t.check(rows == [[sid, ["prompt", text, "n", "7"]]], "XRANGE round trip: %r" % rows)
    t.check(c.cmd("XGROUP", "CREATE", "jobs", "g", "0") == "OK", "XGROUP CREATE")
    got = c.cmd("XREADGROUP", "GROUP", "g", "w1", "COUNT", 10, "STREAMS", "jobs", ">")
    t.check(got == [["jobs", [[sid, ["prompt", text, "n", "7"]]]]], "XREADGROUP nesting: %r" % got)
    pending = c.cmd("XPENDING", "jobs", "g")
    t.check(pending[0] == 1 and pending[3] == [["w1", "1"]], "XPENDING: %r" % pending)
    info = c.cmd("XINFO", "STREAM", "jobs")
    t.check(dict(zip(info[::2], info[1::2]))["length"] == 1, "XINFO: %r" % info)
    c.cmd("HSET", "h", "이름", "값", "bin", b"\xff\x00\r\n")
    t.check(c.cmd("HGETALL", "h") == ["이름", "값", "bin", b"\xff\x00\r\n"], "HGETALL")
    t.check(c.cmd("GET", "missing") is None, "nil bulk")
    t.check(c.cmd("BLPOP", "nolist", "0.1") is None, "nil array")
    try:
        c.cmd("INCR", "h")
    except harness.RedisError as e:
        t.check("WRONGTYPE" in str(e), str(e))
    else:
        raise AssertionError("error reply not raised")
    c.cmd("MULTI")
    c.cmd("SET", "k", "v")
    c.cmd("INCR", "k")
    res = c.cmd("EXEC")
    t.check(res[0] == "OK" and isinstance(res[1], harness.RedisError), "nested error: %r" % res)
    raw = harness.RespClient("127.0.0.1", r.port, decode=False)
    t.check(raw.cmd("GET", "k") == b"v", "decode=False")
    t.check(r.url == "redis://127.0.0.1:%d/0" % r.port, r.url)


def test_resp_parser_edge_cases(t):
    """Canned replies from a fake server: what a real one rarely sends."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    replies = [
        b"*3\r\n*2\r\n:1\r\n$-1\r\n*-1\r\n*0\r\n",
        b"$12\r\nline1\r\nline2\r\n",
        b"-ERR boom\r\n",
        b"$100000\r\n" + b"x" * 100000 + b"\r\n",
        b"+OK",  # then the server closes: truncated reply
    ]

    def serve():
        conn, _ = lsock.accept()
        with conn:
            for rep in replies:
                conn.recv(65536)
                conn.sendall(rep)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    c = harness.RespClient("127.0.0.1", lsock.getsockname()[1], timeout=5)
    t.check(c.cmd("A") == [[1, None], None, []], "nested arrays with nils")
    t.check(c.cmd("B") == "line1\r\nline2", "CRLF inside a bulk string")
    try:
        c.cmd("C")
        raise AssertionError("no RedisError")
    except harness.RedisError as e:
        t.check(str(e) == "ERR boom", str(e))
    t.check(c.cmd("D") == "x" * 100000, "large bulk")
    try:
        c.cmd("E")
        raise AssertionError("truncated reply accepted")
    except ConnectionError:
        pass
    th.join(5)
    lsock.close()


def test_redis_kill_restart_keeps_aof(t):
    r = t.redis()
    port = r.port
    c = r.client()
    for i in range(50):
        c.cmd("XADD", "s", "*", "i", i, "txt", "메시지 %d" % i)
    c.close()
    old = r.pid
    r.kill()
    t.check(not alive(old), "redis-server still alive after kill")
    r.restart()
    t.check(r.port == port and r.pid != old, "same port, new process")
    c = r.client()
    t.check(c.cmd("XLEN", "s") == 50, "AOF data lost after kill")
    t.check(c.cmd("XRANGE", "s", "-", "+", "COUNT", 1)[0][1] == ["i", "0", "txt", "메시지 0"], "content")
    # Without AOF a kill does lose the data: the flag does something.
    r2 = t.redis(appendonly=False)
    r2.client().cmd("SET", "x", "1")
    r2.kill()
    r2.restart()
    t.check(r2.client().cmd("GET", "x") is None, "appendonly=False kept data?")
    r2.stop()
    t.check(not r2.alive(), "stop")


# --------------------------------------------------------------------------
# PostgreSQL


def test_pg_roundtrip(t):
    pg = t.postgres()
    t.log("initdb/copy %.2fs, start %.2fs" % (pg.init_seconds, pg.start_seconds))
    t.check(pg.url == "postgresql://postgres:%s@127.0.0.1:%d/postgres" % (pg.password, pg.port), pg.url)
    t.check("?" in pg.password and "#" in pg.password, "a password people write: %r" % pg.password)
    url = pg.create_database("bot_test")
    t.check(url.endswith(":%d/bot_test" % pg.port), url)
    rows = pg.psql(
        "CREATE TABLE m (id int PRIMARY KEY, body text, note text);"
        "INSERT INTO m VALUES (1, '한국어 메시지', NULL), (2, E'tab\\there\\nnewline', ''), (3, '|', 'x');"
        "SELECT id, body, note FROM m ORDER BY id;"
        "SELECT count(*) FROM m;",
        db="bot_test",
    )
    want = [("1", "한국어 메시지", None), ("2", "tab\there\nnewline", ""), ("3", "|", "x"), ("3",)]
    t.check(rows == want, "psql rows: %r" % rows)
    t.check(pg.psql("SELECT 1 WHERE false") == [], "empty result")
    t.check(pg.psql("SELECT current_setting('server_encoding')", db=url) == [("UTF8",)], "encoding")
    try:
        pg.psql("SELECT 1; SELECT nope FROM m; SELECT 2", db="bot_test")
        raise AssertionError("no PgError")
    except harness.PgError as e:
        t.check('column "nope" does not exist' in str(e), str(e))
    try:
        pg.create_database("bad; DROP")
        raise AssertionError("bad name accepted")
    except ValueError:
        pass


def test_pg_kill_restart(t):
    pg = t.postgres()
    t.log("initdb/copy %.2fs, start %.2fs" % (pg.init_seconds, pg.start_seconds))
    pg.create_database("d")
    pg.psql("CREATE TABLE k (v text); INSERT INTO k VALUES ('커밋됨')", db="d")
    port, old = pg.port, pg.pid
    backends = harness._children(old)
    t.check(backends, "no postgres child processes seen")
    t0 = time.monotonic()
    pg.kill()
    t.check(not alive(old) and not any(alive(p) for p in backends), "postgres processes survived kill")
    pg.restart()
    t.log("kill + restart (with crash recovery) %.2fs" % (time.monotonic() - t0))
    t.check(pg.port == port, "same port")
    # Acknowledged commits survive a crash (synchronous_commit stays on).
    t.check(pg.psql("SELECT v FROM k", db="d") == [("커밋됨",)], "committed row lost")
    pg.stop()
    t.check(not pg.alive(), "stop")


# --------------------------------------------------------------------------
# Instance and TestContext


def test_instance_with_fake_binary(t):
    binary = fake_bin_dir(t)
    port = t.free_port()
    inst = t.instance("chat", env={"HEALTH_PORT": port, "EXTRA": "1"}, args=["--flag"], binary=binary)
    body = inst.wait_healthy(timeout=20)
    t.check(body == {"status": "ok", "role": "chat"}, "health body %r" % body)
    t.check(inst.health() == (200, body), "health()")
    t.check(inst.get("/nope") == (404, "not found"), "404 returned, not raised")
    rec = inst.wait_record(msg="ready")
    env = set(rec["env"]) - {"PWD", "SHLVL", "_", "LC_CTYPE"}
    allowed = {"PATH", "HEALTH_PORT", "EXTRA", "TMPDIR", harness.TOKEN_VAR,
               "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"}
    t.check(env <= allowed and {"PATH", "HEALTH_PORT", "EXTRA"} <= env, "environment not clean: %r" % env)
    t.check(rec["argv"] == ["--flag"] and rec["cwd"] == t.tmp, "argv/cwd %r" % rec)
    t.check("plain text line" in inst.logs(), "logs() has non-JSON lines")
    t.check(all(isinstance(r, dict) for r in inst.records()), "records() only JSON objects")
    inst.sigterm()
    t.check(inst.wait(10) == 0, "exit code after SIGTERM")
    t.check(inst.find_records(msg="stopping"), "stopping record")
    try:
        inst.wait_healthy(timeout=2)
        raise AssertionError("wait_healthy on a dead instance")
    except AssertionError as e:
        t.check("exited with 0" in str(e), str(e))
    inst.restart()
    inst.wait_healthy(timeout=20)
    t.check(len(inst.find_records(msg="ready")) == 2, "log appended across restarts")


def test_missing_binary_is_a_clear_error(t):
    try:
        t.instance("nosuchrole")
        raise AssertionError("started a missing binary")
    except FileNotFoundError as e:
        t.check("nosuchrole binary not built" in str(e), str(e))


def test_teardown_kills_everything_when_test_raises(t):
    binary = fake_bin_dir(t)
    pids = {}
    try:
        with harness.TestContext("inner") as inner:
            r = inner.redis()
            pg = inner.postgres()
            inst = inner.instance("chat", env={"HEALTH_PORT": t.free_port(), "FAKE_MODE": "ignore_term"},
                                  binary=binary)
            inst.stop_timeout = 1
            inst.wait_healthy(timeout=20)
            pids = {"redis": r.pid, "postgres": pg.pid, "instance": inst.pid}
            pids.update(("pg-child-%d" % p, p) for p in harness._children(pg.pid))
            ran = []
            inner.cleanup(ran.append, "cleanup ran")
            tmp = inner.tmp
            raise RuntimeError("test body fails")
    except RuntimeError as e:
        t.check(str(e) == "test body fails", "the test's own error propagates")
    t.check(ran == ["cleanup ran"], "cleanup callbacks run")
    left = [name for name, pid in pids.items() if alive(pid)]
    t.check(not left, "still running after teardown: %r" % left)
    t.check(not os.path.exists(tmp), "temp dir removed")
    t.check(any("did not exit" in n for n in inner.notes), "SIGTERM-ignoring instance noted: %r" % inner.notes)


def test_sanitizer_report_fails_teardown(t):
    binary = fake_bin_dir(t)
    inner = harness.TestContext("inner")
    inst = inner.instance("chat", env={"HEALTH_PORT": t.free_port(), "FAKE_MODE": "asan"}, binary=binary)
    inst.wait_healthy(timeout=20)
    inst.wait_log("ERROR: AddressSanitizer")
    try:
        inner.close()
        raise AssertionError("teardown passed despite a sanitizer report")
    except AssertionError as e:
        t.check("heap-use-after-free" in str(e) and inst.name in str(e), str(e))
    t.check(not alive(inst.pid), "instance stopped")


def test_wait_until_and_check(t):
    n = []
    t.check(harness.wait_until(lambda: n.append(1) or len(n) >= 3, 5, "three calls"), "returns value")
    try:
        t.wait_until(lambda: False, 0.2, "never")
        raise AssertionError("no timeout")
    except AssertionError as e:
        t.check("timed out after 0.2s waiting for never" in str(e), str(e))
    try:
        t.check(1 == 2, lambda: "lazy message")
    except AssertionError as e:
        t.check(str(e) == "lazy message", str(e))


# --------------------------------------------------------------------------
# the runner, on throwaway tests


FAKE_TESTS = '''
import os, signal, subprocess, time
import harness

def test_pass(t):
    t.check(os.environ["BOT_VARIANT"] == "release", "variant")
    t.check(os.path.isdir(os.environ["BOT_BIN_DIR"]), "bin dir")

def test_fail(t):
    print("some output before failing")
    t.check(1 + 1 == 3, "arithmetic is broken")

def test_leaky(t):
    # passes itself, but a secret in a log under t.tmp and one in its own
    # output fail the runner's final secret check
    with open(t.path("chat-1.log"), "w") as f:
        f.write('{"msg":"starting","token":"%s"}\\n' % harness.canary("DISCORD_TOKEN"))
    print("key is " + harness.canary("OPENAI_API_KEY_1"))
    t.check(harness.scaled(2) == 2 * float(os.environ["BOT_TIMEOUT_SCALE"]), "scaled")

@harness.timeout(2)
def test_hang(t):
    r = t.redis()
    with open(os.path.join(os.environ["PIDS_DIR"], "hang_redis"), "w") as f:
        f.write(str(r.pid))
    time.sleep(600)

@harness.timeout(1)
def test_stubborn(t):
    # Ignores its own timeout and the runner's SIGTERM, and leaves a process
    # outside its process group: only SIGKILL plus the token sweep end it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM})
    p = subprocess.Popen(["sleep", "600"], start_new_session=True)
    with open(os.path.join(os.environ["PIDS_DIR"], "stubborn_sleep"), "w") as f:
        f.write(str(p.pid))
    time.sleep(600)
'''

FAKE_UNIT = r'''
import os, signal, sys, time, urllib.parse, socket
cases = ["test_ok", "test_env", "test_crash", "test_hang", "test_ubsan"]
if sys.argv[1:] == ["--list"]:
    print("\n".join(cases)); sys.exit(0)
case = sys.argv[1]
if case == "test_ok":
    sys.exit(0)
if case == "test_env":
    u = urllib.parse.urlparse(os.environ["TEST_REDIS_URL"])
    s = socket.create_connection((u.hostname, u.port), timeout=5)
    s.sendall(b"PING\r\n")
    assert s.recv(16) == b"+PONG\r\n"
    assert os.environ["TEST_PG_ADMIN_URL"].startswith("postgresql://postgres:Pg?")
    assert float(os.environ["BOT_TIMEOUT_SCALE"]) == 1.0
    assert os.environ["TMPDIR"] == os.environ["BOT_TEST_TMPDIR"]
    sys.exit(0)
if case == "test_crash":
    os.kill(os.getpid(), signal.SIGSEGV)
if case == "test_hang":
    time.sleep(600)
if case == "test_ubsan":
    print("x.c:3:5: runtime error: signed integer overflow", file=sys.stderr)
    sys.exit(0)
'''


def run_runner(t, *args, timeout=110):
    env = dict(os.environ, KEEP_TMP="")
    r = subprocess.run([sys.executable, RUN_PY, "--variant", "release"] + list(args),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=env, timeout=timeout)
    out = r.stdout.decode("utf-8", "replace")
    t.log("runner exit %d, output:\n%s" % (r.returncode, out))
    return r.returncode, out


def line_for(out, tid):
    for line in out.splitlines():
        if line[5:].startswith(tid + "  "):
            return line
    raise AssertionError("no result line for %s" % tid)


@harness.timeout(120)
def test_runner_reports_failures_and_hangs(t):
    d = t.path("it")
    os.makedirs(d)
    with open(os.path.join(d, "test_fake.py"), "w") as f:
        f.write(FAKE_TESTS)
    pids = t.path("pids")
    os.makedirs(pids)
    os.environ["PIDS_DIR"] = pids
    rc, out = run_runner(t, "--integration-dir", d, "-k", "integration/", "--kill-grace", "1")
    t.check(rc == 1, "exit status %d" % rc)
    t.check(out.splitlines()[-1] == "2 passed, 4 failed", "last line: %r" % out.splitlines()[-1])
    t.check(out.splitlines()[-2] == "product: 2 passed, 4 failed; self-tests: 0 passed, 0 failed",
            "counts line: %r" % out.splitlines()[-2])
    t.check(line_for(out, "integration/test_fake:test_pass").startswith("ok   "), "pass line")
    leaky = line_for(out, "integration/test_fake:test_leaky")
    t.check(leaky.startswith("ok   ") and "secret DISCORD_TOKEN in" in leaky and "chat-1.log" in leaky
            and "secret OPENAI_API_KEY_1 in output" in leaky, leaky)
    check = line_for(out, "secrets/no_secret_in_logs")
    t.check(check.startswith("FAIL ") and "2 secret(s)" in check, check)
    t.check("cnry" not in out, "the runner's output shows no secret itself")
    fail = line_for(out, "integration/test_fake:test_fail")
    t.check(fail.startswith("FAIL ") and "(exit 1)" in fail, fail)
    t.check("arithmetic is broken" in out and "some output before failing" in out, "failure tail shown")
    hang = line_for(out, "integration/test_fake:test_hang")
    t.check(hang.startswith("FAIL ") and "timeout after 2s" in hang, hang)
    t.check("test exceeded its 2s timeout" in out and "time.sleep(600)" in out, "timeout traceback")
    stub = line_for(out, "integration/test_fake:test_stubborn")
    t.check(stub.startswith("FAIL ") and "timeout after 1s" in stub and "leftover" in stub, stub)
    for name in ("hang_redis", "stubborn_sleep"):
        with open(os.path.join(pids, name)) as f:
            pid = int(f.read())
        t.check(not alive(pid), "%s (pid %d) survived the runner" % (name, pid))


@harness.timeout(120)
def test_runner_unit_cases_isolated(t):
    build = t.path("build")
    os.makedirs(os.path.join(build, "tests", "unit"))
    fake = os.path.join(build, "tests", "unit", "test_fakeunit")
    write_script(fake, FAKE_UNIT)
    rc, out = run_runner(t, "--build-dir", build, "-k", "unit/test_fakeunit", "--unit-timeout", "3")
    t.check(rc == 1 and out.splitlines()[-1] == "3 passed, 3 failed", "summary: %r" % out[-200:])
    t.check(line_for(out, "secrets/no_secret_in_logs").startswith("ok   "), "secret check")
    t.check(line_for(out, "unit/test_fakeunit:test_ok").startswith("ok   "), "ok case")
    t.check(line_for(out, "unit/test_fakeunit:test_env").startswith("ok   "), "shared servers env")
    t.check("killed by SIGSEGV" in line_for(out, "unit/test_fakeunit:test_crash"), "crash")
    t.check("timeout after 3s" in line_for(out, "unit/test_fakeunit:test_hang"), "hang")
    t.check("sanitizer report" in line_for(out, "unit/test_fakeunit:test_ubsan"), "ubsan marker")
    rc, out = run_runner(t, "--build-dir", build, "-k", "test_fakeunit:test_ok", "--list")
    t.check(rc == 0 and out.strip() == "unit/test_fakeunit:test_ok", "--list: %r" % out)


def test_runner_with_nothing_to_run_fails(t):
    rc, out = run_runner(t, "-k", "no-such-test-anywhere")
    t.check(rc == 1, "exit status %d" % rc)
    t.check(out.splitlines()[-1] == "0 passed, 0 failed", out)
