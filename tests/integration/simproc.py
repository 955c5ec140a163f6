"""Simulator processes for the integration tests.

The simulators under tests/sim/ (discord_sim.py, openai_sim.py) are Python
programs that listen on the port given with --port (0: a free one), print
`SIM READY port=N` as their first line on stdout and log to stderr. start()
runs one, waits for that line, keeps its stderr in a log file and, with a
harness TestContext, stops it at teardown and prints the tail of its log
(the runner shows a test's output only when it fails, or with -v).
SimProcess is the part of a client object that is about the process and
the plumbing of its control API, send() the HTTP request underneath;
simclient.Sim and openaiclient.OpenAISim build on them. Python 3 standard library only; every wait has a timeout.
"""

import contextlib
import json
import os
import random
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIM_DIR = os.path.join(ROOT, "tests", "sim")

# Straight to 127.0.0.1, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def send(method, url, data=None, headers=None, timeout=10.0):
    """One HTTP request with body bytes data (or None): (status, headers
    dict with lowercase names, body bytes). HTTP errors are returned, not
    raised; a connection error or timeout raises OSError."""
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


class SimProcess:
    """A running simulator process plus its control API's plumbing.

    A subclass sets `error` (the exception class raised for an HTTP status
    >= 400) and `http` (a staticmethod: (method, url, body, timeout=) ->
    (status, headers, body bytes), HTTP errors returned, not raised)."""

    error = RuntimeError
    http = None

    def __init__(self, proc, port, log_path):
        self.proc, self.port, self.log_path = proc, port, log_path
        self.base = "http://127.0.0.1:%d" % port

    # -- process

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=10.0):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            self.proc.stdout.close()
        return self.proc.returncode

    def log_tail(self, n=40):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "\n".join(f.read().splitlines()[-n:])
        except OSError:
            return ""

    # -- control API

    def call(self, method, path, body=None, timeout=30.0):
        status, _h, data = self.http(method, self.base + path, body, timeout=timeout)
        try:
            obj = json.loads(data) if data else None
        except ValueError:
            obj = data
        if status >= 400:
            raise self.error("%s %s -> %d %s" % (method, path, status, obj))
        return obj

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, {} if body is None else body, **kw)


def start(argv, name, what, t=None, timeout=15.0, log_path=None, error=RuntimeError):
    """Run argv, a simulator, and wait up to timeout seconds for its first
    line `SIM READY port=N`. name: the log file's stem (t.tmp/<name>-*.log,
    or $TMPDIR without t) unless log_path is given; what: how error
    messages name it. Returns (proc, port, log_path). On failure the process
    is killed and error is raised with the tail of its log. The process gets
    only PATH (and TESTRUN_TOKEN) from the environment, runs in a session of
    its own and, under the harness, dies with the test process."""
    if log_path is None:
        log_path = os.path.join(t.tmp if t is not None else os.environ.get("TMPDIR", "/tmp"),
                                "%s-%d.log" % (name, random.getrandbits(24)))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if os.environ.get("TESTRUN_TOKEN"):
        env["TESTRUN_TOKEN"] = os.environ["TESTRUN_TOKEN"]
    preexec = None
    try:
        import harness  # kill the simulator with the test process, like the harness' servers
        preexec = harness._preexec()
    except (ImportError, AttributeError):
        pass
    logf = open(log_path, "ab")
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf,
                                env=env, start_new_session=True, preexec_fn=preexec)
    finally:
        logf.close()
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            proc.kill()
            with open(log_path, errors="replace") as f:
                raise error("%s did not start: %r\n%s" % (what, line, f.read()[-3000:]))
        r, _, _ = select.select([proc.stdout], [], [], left)
        if r:
            b = os.read(proc.stdout.fileno(), 1)
            if b:
                line += b
    text = line.decode().strip()
    if not text.startswith("SIM READY port="):
        proc.kill()
        raise error("unexpected first line from the %s: %r" % (what, text))
    return proc, int(text.split("=", 1)[1]), log_path


def stop_at_teardown(t, sim, label):
    """With a harness TestContext t: at teardown, print the tail of sim's log
    (under label), then stop it. Without t: nothing (the caller stops it)."""
    if t is not None:
        t.cleanup(sim.stop)
        t.cleanup(print_tail, sim, label)


def print_tail(sim, label):
    state = "running" if sim.alive() else "exited with %s" % sim.proc.returncode
    sys.stdout.write("--- %s (%s): last lines of %s ---\n%s\n" % (label, state, sim.log_path, sim.log_tail(12)))
    sys.stdout.flush()
