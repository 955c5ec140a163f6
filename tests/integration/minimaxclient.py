"""Drive the MiniMax simulator (tests/sim/minimax_sim.py) from a test.

    import minimaxclient
    mm = minimaxclient.start(t, keys={"mm-good": "ok", "mm-poor": "1008"})  # stopped at teardown
    mm.keys("mm-flaky", "1002", remaining=1)
    mm.config(video_steps_ms=200, video_bytes=64 * 1024)
    bot = t.instance("media", env=dict(env, MINIMAX_BASE_URL=mm.base_url, ...))
    ...
    mm.submit_count("a prompt", key="mm-good")   # video submits that reached the provider
    mm.tasks()                                   # every video task, its state and counters
    mm.log()                                     # every request (key fingerprints, never keys)

Also a small blocking client acting as the bot (mm.image, mm.video_submit,
mm.video_query, mm.file_retrieve, mm.download, mm.request), used by the
simulator's own tests. Python 3 standard library only; the control API is
in tests/sim/README-minimax.md; starting and stopping the process is
simproc's.
"""

import hashlib
import json
import os
import socket
import struct
import time
import urllib.parse
import zlib

import simproc

SIM_PATH = os.path.join(simproc.SIM_DIR, "minimax_sim.py")
PYTHON = simproc.PYTHON


class SimError(Exception):
    pass


def fingerprint(key):
    """How the simulator names a key in its log, tasks and stats."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def http(method, url, body=None, headers=None, timeout=10.0):
    """(status, headers dict with lowercase names, body bytes); HTTP errors are returned."""
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    return simproc.send(method, url, data, hdrs, timeout)


class Result:
    """One answer: status (None when none came), headers, body, json, and
    error (None, "timeout" or "closed"). base_code / base_msg read
    base_resp."""

    def __init__(self):
        self.status, self.headers, self.body, self.json, self.error = None, {}, b"", None, None

    @property
    def base_code(self):
        try:
            return self.json["base_resp"]["status_code"]
        except (TypeError, KeyError):
            return None

    @property
    def base_msg(self):
        try:
            return self.json["base_resp"]["status_msg"]
        except (TypeError, KeyError):
            return None

    def __repr__(self):
        return "<Result status=%s error=%s json=%s body=%r>" % (
            self.status, self.error, str(self.json)[:300] if self.json is not None else None, self.body[:80])


def request(base, method, path, key=None, body=None, timeout=10.0, headers=None):
    """One request as the bot would send it; returns a Result (never raises
    on HTTP errors, timeouts or a closed connection)."""
    res = Result()
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["Authorization"] = "Bearer %s" % key
    url = path if path.startswith("http") else base + path
    try:
        res.status, res.headers, res.body = http(method, url, body, hdrs, timeout)
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


def png_info(data):
    """(width, height, (r, g, b) of the first pixel) of an 8-bit RGB PNG;
    raises ValueError if the bytes are not a valid PNG (signature, chunk
    CRCs, IHDR first, IEND last)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("no PNG signature")
    pos, chunks = 8, []
    while pos < len(data):
        n, tag = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + n]
        crc = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]
        if zlib.crc32(tag + payload) & 0xffffffff != crc:
            raise ValueError("bad CRC in %r" % tag)
        chunks.append((tag, payload))
        pos += 12 + n
    if chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise ValueError("IHDR not first or IEND not last")
    w, h, depth, ctype = struct.unpack(">IIBB", chunks[0][1][:10])
    raw = zlib.decompress(b"".join(p for t, p in chunks if t == b"IDAT"))
    if depth != 8 or ctype != 2 or len(raw) != h * (1 + 3 * w):
        raise ValueError("not an 8-bit RGB image of %dx%d" % (w, h))
    return w, h, tuple(raw[1:4])


class MiniMaxSim(simproc.SimProcess):
    """A running simulator process plus its control API."""

    error = SimError
    http = staticmethod(http)

    def __init__(self, proc, port, log_path):
        simproc.SimProcess.__init__(self, proc, port, log_path)
        self.info = self.get("/_sim/info")
        self.base_url = self.info["base_url"]   # no /v1: the bot adds the paths

    # -- control API (call, get, post: simproc.SimProcess)

    def keys(self, key, behaviour="ok", **opts):
        """Register a key (or change how it behaves); returns its info."""
        return self.post("/_sim/keys", dict(opts, key=key, behaviour=behaviour))["keys"][0]

    def remove_key(self, key):
        return self.post("/_sim/keys", {"key": key, "remove": True})

    def config(self, **kw):
        return self.post("/_sim/config", kw)["config"]

    def log(self, since=0, path=None):
        q = {"since": since}
        if path:
            q["path"] = path
        return self.get("/_sim/log?" + urllib.parse.urlencode(q))["entries"]

    def tasks(self, prompt=None, key=None, task_id=None):
        """Every video task (optionally only those of one prompt / key / id)."""
        return self.get("/_sim/tasks?" + self._q(prompt, key, task_id))["tasks"]

    def submits(self, prompt=None, key=None):
        """Video submits per (key, prompt): {key_fingerprint, prompt, count, accepted, task_ids}."""
        return self.get("/_sim/tasks?" + self._q(prompt, key, None))["submits"]

    def submit_count(self, prompt, key=None):
        """How many POST /v1/video_generation with exactly this prompt (and key) reached the simulator."""
        return sum(s["count"] for s in self.submits(prompt, key))

    def force_task(self, task_id, status, code=0):
        """Put a task in a state now (status Success/Fail/...; code: base_resp on Fail)."""
        return self.post("/_sim/tasks", {"task_id": task_id, "status": status, "code": code})["task"]

    def release_task(self, task_id):
        return self.post("/_sim/tasks", {"task_id": task_id, "release": True})["task"]

    @staticmethod
    def _q(prompt, key, task_id):
        q = {}
        if prompt is not None:
            q["prompt"] = prompt
        if key is not None:
            q["key_fingerprint"] = fingerprint(key)
        if task_id is not None:
            q["task_id"] = task_id
        return urllib.parse.urlencode(q)

    def stats(self):
        return self.get("/_sim/stats")

    def reset(self, **kw):
        return self.post("/_sim/reset", kw)

    def wait_stats(self, pred, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if pred(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError("simulator stats: condition not met after %gs: %s" % (timeout, st))
            time.sleep(0.02)

    # -- acting as the bot

    def request(self, method, path, key=None, body=None, **kw):
        return request(self.base_url, method, path, key, body, **kw)

    def image(self, key, prompt, model="image-01", timeout=10.0, **fields):
        body = dict(fields, model=model, prompt=prompt)
        return self.request("POST", "/v1/image_generation", key, body, timeout=timeout)

    def video_submit(self, key, prompt, model="MiniMax-Hailuo-02", timeout=10.0, **fields):
        body = dict(fields, model=model)
        if prompt is not None:
            body["prompt"] = prompt
        return self.request("POST", "/v1/video_generation", key, body, timeout=timeout)

    def video_query(self, key, task_id, timeout=10.0):
        return self.request("GET", "/v1/query/video_generation?" + urllib.parse.urlencode({"task_id": task_id}),
                            key, timeout=timeout)

    def file_retrieve(self, key, file_id, timeout=10.0):
        return self.request("GET", "/v1/files/retrieve?" + urllib.parse.urlencode({"file_id": file_id}), key,
                            timeout=timeout)

    def download(self, url, timeout=30.0):
        return request(self.base_url, "GET", url, timeout=timeout)

    def wait_video(self, key, task_id, timeout=20.0, interval=0.05):
        """Poll until Success or Fail; returns (last Result, statuses seen in order)."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            r = self.video_query(key, task_id)
            st = (r.json or {}).get("status")
            if not seen or seen[-1] != st:
                seen.append(st)
            if st in ("Success", "Fail") or r.base_code not in (0, None) and st is None:
                return r, seen
            if time.monotonic() > deadline:
                raise AssertionError("video task %s still %s after %gs" % (task_id, st, timeout))
            time.sleep(interval)


def start(t=None, keys=None, config=None, args=(), timeout=15.0, log_path=None):
    """Start a simulator on a free port and wait for `SIM READY`. keys:
    {key: behaviour}. With a harness TestContext `t` it is stopped at
    teardown and its stderr goes to t.tmp/minimax-sim-*.log."""
    argv = [PYTHON, SIM_PATH, "--port", "0"] + list(args)
    proc, port, log_path = simproc.start(argv, "minimax-sim", "minimax simulator", t, timeout, log_path, SimError)
    sim = MiniMaxSim(proc, port, log_path)
    simproc.stop_at_teardown(t, sim, "minimax-sim")
    for k, b in (keys or {}).items():
        sim.keys(k, b)
    if config:
        sim.config(**config)
    return sim
