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

The provider simulators (minimax_sim.py, stability_sim.py, openai_sim.py)
share more: ProviderSim is their common control API (/_sim/info, keys,
config, log, stats, reset), start_provider() starts one of them with keys
and config, fingerprint() names a key as they do, json_http() sends a JSON
body, Answer with ask() is one request made as the bot would make it, and
png_rgb() reads back the PNGs the image simulators draw.
"""

import contextlib
import hashlib
import json
import os
import random
import select
import socket
import subprocess
import sys
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib


def scaled(seconds):
    """``seconds`` times the runner's --timeout-scale (BOT_TIMEOUT_SCALE,
    1.0 when unset), as harness.scaled: every wait here scales with it."""
    try:
        v = float(os.environ.get("BOT_TIMEOUT_SCALE") or 1.0)
    except ValueError:
        v = 1.0
    return seconds * (v if v > 0 else 1.0)

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
    timeout = scaled(timeout)
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


# ----------------------------------------------------------------------------
# What the provider simulators' clients share


def fingerprint(key):
    """How the provider simulators name a key in their logs, tasks and
    stats: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def json_http(method, url, body=None, headers=None, timeout=10.0):
    """send() with body as JSON (bytes are sent as they are, with whatever
    Content-Type headers name): (status, headers dict with lowercase names,
    body bytes); HTTP errors are returned."""
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    return send(method, url, data, hdrs, timeout)


class Answer:
    """One answer to a request made as the bot (ask): status (None when
    none came), headers (lowercase names), body bytes, json (for JSON
    answers) and error (None, "timeout" or "closed"). Clients subclass it
    to read their provider's error bodies."""

    def __init__(self):
        self.status, self.headers, self.body, self.json, self.error = None, {}, b"", None, None


def ask(res, method, url, key=None, body=None, headers=None, timeout=10.0):
    """Send one request as the bot would (key as a Bearer token, body as for
    json_http) and fill res, an Answer, which is returned. Never raises on
    an HTTP error, a timeout or a closed connection: res.error says which."""
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["Authorization"] = "Bearer %s" % key
    try:
        res.status, res.headers, res.body = json_http(method, url, body, hdrs, timeout)
    except (socket.timeout, TimeoutError):
        res.error = "timeout"
        return res
    except OSError as e:
        res.error = "timeout" if "timed out" in str(e) else "closed"
        return res
    if res.headers.get("content-type", "").startswith("application/json"):
        try:
            res.json = json.loads(res.body)
        except ValueError:
            pass
    return res


class ProviderSim(SimProcess):
    """A provider simulator's process plus the control API they all have
    (tests/sim/README-*.md). base_url is where the bot points its client;
    a subclass sets error and adds what its provider has besides."""

    http = staticmethod(json_http)

    def __init__(self, proc, port, log_path):
        SimProcess.__init__(self, proc, port, log_path)
        self.info = self.get("/_sim/info")
        self.base_url = self.info["base_url"]

    def keys(self, key, behaviour="ok", **opts):
        """Register a key (or change how it behaves; opts as the simulator's
        README says); returns its info."""
        return self.post("/_sim/keys", dict(opts, key=key, behaviour=behaviour))["keys"][0]

    def remove_key(self, key):
        return self.post("/_sim/keys", {"key": key, "remove": True})

    def config(self, **kw):
        return self.post("/_sim/config", kw)["config"]

    def log(self, since=0, path=None):
        """Every request since entry `since` (only those to `path`, if
        given), with key fingerprints, never keys."""
        q = {"since": since}
        if path:
            q["path"] = path
        return self.get("/_sim/log?" + urllib.parse.urlencode(q))["entries"]

    def stats(self):
        return self.get("/_sim/stats")

    def reset(self, **kw):
        return self.post("/_sim/reset", kw)

    def wait_stats(self, pred, timeout=10.0):
        """Poll stats() until pred(stats) holds; AssertionError after timeout
        (scaled by --timeout-scale)."""
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if pred(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError("simulator stats: condition not met after %gs: %s" % (timeout, st))
            time.sleep(0.02)


def start_provider(cls, sim_path, name, what, t=None, keys=None, config=None, args=(), timeout=15.0,
                   log_path=None):
    """Start the simulator at sim_path on a free port as a cls (a
    ProviderSim) and wait for `SIM READY` (start(): name and what name its
    log and its errors, which are cls.error). With a harness TestContext t
    it is stopped at teardown. Then keys ({key: behaviour}) are registered
    and config applied."""
    argv = [PYTHON, sim_path, "--port", "0"] + list(args)
    proc, port, log_path = start(argv, name, what, t, timeout, log_path, cls.error)
    sim = cls(proc, port, log_path)
    stop_at_teardown(t, sim, name)
    for k, b in (keys or {}).items():
        sim.keys(k, b)
    if config:
        sim.config(**config)
    return sim


def png_rgb(data):
    """(width, height, (r, g, b) of the first pixel) of an 8-bit RGB PNG;
    raises ValueError if the bytes are not a valid one (signature, chunk
    CRCs, IHDR first, IEND last, the inflated IDAT's size)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("PNG: no signature")
    pos, chunks = 8, []
    while pos < len(data):
        n, tag = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + n]
        if zlib.crc32(tag + payload) & 0xffffffff != struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]:
            raise ValueError("PNG: bad CRC in %r" % tag)
        chunks.append((tag, payload))
        pos += 12 + n
    if chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise ValueError("PNG: IHDR not first or IEND not last")
    w, h, depth, ctype = struct.unpack(">IIBB", chunks[0][1][:10])
    raw = zlib.decompress(b"".join(p for t, p in chunks if t == b"IDAT"))
    if depth != 8 or ctype != 2 or len(raw) != h * (1 + 3 * w):
        raise ValueError("PNG: not 8-bit RGB %dx%d" % (w, h))
    return w, h, tuple(raw[1:4])
