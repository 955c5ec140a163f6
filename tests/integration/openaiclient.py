"""Drive the OpenAI simulator (tests/sim/openai_sim.py) from a test.

    import openaiclient
    ai = openaiclient.start(t, keys={"sk-good": "ok"})   # stopped at teardown
    ai.keys("sk-broke", "429_quota")
    ai.config(chunk_chars=3, delay_ms=5)
    ai.script(["a scripted answer"])
    bot = t.instance("chat", env=dict(env, OPENAI_BASE_URL=ai.base_url, ...))
    ...
    entries = ai.log()            # every request (key fingerprints, never keys)
    assert ai.stats()["by_status"].get("200")

Also a tiny blocking client (ai.chat / openaiclient.chat) that reads the raw
HTTP bytes itself, so the simulator's own tests can check framing. Python 3
standard library only; the control API is in tests/sim/README-openai.md;
starting and stopping the process is simproc's.
"""

import hashlib
import json
import os
import socket
import time
import urllib.parse

import simproc

SIM_PATH = os.path.join(simproc.SIM_DIR, "openai_sim.py")
PYTHON = simproc.PYTHON

DEFAULT_KEY = "sk-sim-default-0123456789"
DEFAULT_MODEL = "gpt-4o-mini"


class SimError(Exception):
    pass


def fingerprint(key):
    """How the simulator names a key in its log and stats."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def http(method, url, body=None, headers=None, timeout=10.0):
    """(status, headers dict with lowercase names, body bytes); HTTP errors are returned."""
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    return simproc.send(method, url, data, hdrs, timeout)


class OpenAISim(simproc.SimProcess):
    """A running simulator process plus its control API."""

    error = SimError
    http = staticmethod(http)

    def __init__(self, proc, port, log_path):
        simproc.SimProcess.__init__(self, proc, port, log_path)
        self.info = self.get("/_sim/info")
        self.base_url = self.info["base_url"]

    # -- control API (call, get, post: simproc.SimProcess)

    def keys(self, key, behaviour="ok", **opts):
        """Register a key (or change how it behaves); returns its info."""
        return self.post("/_sim/keys", dict(opts, key=key, behaviour=behaviour))["keys"][0]

    def remove_key(self, key):
        return self.post("/_sim/keys", {"key": key, "remove": True})

    def config(self, **kw):
        return self.post("/_sim/config", kw)["config"]

    def script(self, answers, replace=False):
        return self.post("/_sim/script", {"answers": list(answers), "replace": replace})

    def log(self, since=0, path=None):
        q = {"since": since}
        if path:
            q["path"] = path
        return self.get("/_sim/log?" + urllib.parse.urlencode(q))["entries"]

    def stats(self):
        return self.get("/_sim/stats")

    def reset(self, **kw):
        return self.post("/_sim/reset", kw)

    def wait_stats(self, pred, timeout=10.0):
        timeout = simproc.scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if pred(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError("simulator stats: condition not met after %gs: %s" % (timeout, st))
            time.sleep(0.02)

    # -- acting as the bot

    def chat(self, key, messages, **kw):
        return chat(self.port, key, messages, **kw)

    def request(self, method, path, key=None, body=None, **kw):
        return request(self.port, method, path, key, body, **kw)


def start(t=None, keys=None, config=None, args=(), timeout=15.0, log_path=None):
    """Start a simulator on a free port and wait for `SIM READY`. keys:
    {key: behaviour}. With a harness TestContext `t` it is stopped at
    teardown and its stderr goes to t.tmp/openai-sim-*.log."""
    argv = [PYTHON, SIM_PATH, "--port", "0"] + list(args)
    proc, port, log_path = simproc.start(argv, "openai-sim", "openai simulator", t, timeout, log_path, SimError)
    sim = OpenAISim(proc, port, log_path)
    simproc.stop_at_teardown(t, sim, "openai-sim")
    for k, b in (keys or {}).items():
        sim.keys(k, b)
    if config:
        sim.config(**config)
    return sim


# ----------------------------------------------------------------------------
# A tiny blocking HTTP/1.1 client that keeps the raw body pieces


class Result:
    """One answer. status/headers/body (de-chunked bytes); pieces: the body
    pieces as they arrived (HTTP chunks, or reads without chunking); for
    streams: events (parsed chunk objects), done ([DONE] seen), text,
    finish_reason, usage; json for non-stream answers; error: None,
    "timeout" or "closed" (the connection ended before the body did)."""

    def __init__(self):
        self.status, self.headers, self.body = None, {}, b""
        self.pieces, self.events, self.done = [], [], False
        self.json, self.error = None, None
        self.text, self.finish_reason, self.usage = "", None, None
        self.unknown_fields = set()

    @property
    def error_code(self):
        try:
            return self.json["error"]["code"]
        except (TypeError, KeyError):
            return None

    def __repr__(self):
        return "<Result status=%s error=%s events=%d done=%s text=%r json=%s>" % (
            self.status, self.error, len(self.events), self.done, self.text[:80],
            str(self.json)[:200] if self.json is not None else None)


KNOWN_CHUNK_FIELDS = {"id", "object", "created", "model", "system_fingerprint", "choices", "usage",
                      "service_tier"}


def _parse_sse(res, data):
    """Events from the de-chunked body bytes (split on blank lines, decoded
    per event, so a UTF-8 sequence cut between pieces is joined first)."""
    for raw in data.split(b"\n\n"):
        if not raw.strip():
            continue
        lines = raw.decode("utf-8").split("\n")
        payload = "\n".join(l[5:].lstrip(" ") for l in lines if l.startswith("data:"))
        if payload == "[DONE]":
            res.done = True
            continue
        obj = json.loads(payload)
        res.events.append(obj)
        res.unknown_fields |= set(obj) - KNOWN_CHUNK_FIELDS
        for ch in obj.get("choices") or ():
            res.text += (ch.get("delta") or {}).get("content") or ""
            if ch.get("finish_reason"):
                res.finish_reason = ch["finish_reason"]
        if obj.get("usage"):
            res.usage = obj["usage"]


def request(port, method, path, key=None, body=None, timeout=10.0, headers=None):
    """One request on a fresh connection; returns a Result."""
    res = Result()
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    head = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1:%d" % port, "Accept: */*"]
    if key is not None:
        head.append("Authorization: Bearer %s" % key)
    if body is not None:
        head += ["Content-Type: application/json", "Content-Length: %d" % len(data)]
    head += ["%s: %s" % kv for kv in (headers or {}).items()]
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    deadline = time.monotonic() + timeout
    buf = b""
    body_out = bytearray()

    def fill():
        nonlocal buf
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        sock.settimeout(left)
        try:
            got = sock.recv(1 << 16)
        except ConnectionResetError:
            got = b""
        if not got:
            raise EOFError
        buf += got
        return got

    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        while b"\r\n\r\n" not in buf:
            fill()
        h, buf = buf.split(b"\r\n\r\n", 1)
        lines = h.decode("latin-1").split("\r\n")
        res.status = int(lines[0].split(" ")[1])
        res.headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        if "chunked" in res.headers.get("transfer-encoding", ""):
            while True:
                while b"\r\n" not in buf:
                    fill()
                size_line, buf = buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(buf) < size + 2:
                    fill()
                piece, buf = buf[:size], buf[size + 2:]
                if size == 0:
                    break
                res.pieces.append(piece)
                body_out += piece
        elif "content-length" in res.headers:
            n = int(res.headers["content-length"])
            if buf:
                res.pieces.append(buf)
            while len(buf) < n:
                res.pieces.append(fill())
            body_out += buf[:n]
        else:
            if buf:
                res.pieces.append(buf)
            body_out += buf
            try:
                while True:
                    got = fill()
                    res.pieces.append(got)
                    body_out += got
            except EOFError:
                pass
        res.body = bytes(body_out)
    except socket.timeout:
        res.error = "timeout"
        res.body = bytes(body_out)
    except EOFError:
        res.error = "closed"
        res.body = bytes(body_out)
    finally:
        sock.close()
    ctype = res.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        _parse_sse(res, res.body if res.error is None else res.body[:res.body.rfind(b"\n\n") + 2])
    elif res.body and res.error is None:
        try:
            res.json = json.loads(res.body)
        except ValueError:
            pass
    return res


def chat(port, key, messages, stream=False, include_usage=False, model=DEFAULT_MODEL, timeout=10.0, **extra):
    """POST /v1/chat/completions; messages may be a string (one user message)."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    body = dict(extra, model=model, messages=messages)
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    res = request(port, "POST", "/v1/chat/completions", key, body, timeout=timeout)
    if res.json and res.json.get("choices"):
        res.text = res.json["choices"][0]["message"]["content"]
        res.finish_reason = res.json["choices"][0]["finish_reason"]
        res.usage = res.json.get("usage")
    return res
