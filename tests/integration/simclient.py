"""Drive the Discord simulator (tests/sim/discord_sim.py) from a test.

    import simclient
    sim = simclient.start(t)                 # started, stopped at teardown
    sim.add_guild("400000000000000001", channels=[{"id": "500000000000000001", "name": "general"}])
    bot = t.instance("chat", env=dict(env, **sim.bot_env()))
    sim.wait_session()                       # the bot identified
    r = sim.interaction(name="chat", guild_id=..., channel_id=..., options=[...])
    st = sim.wait_interaction(r["id"], lambda i: i["acked"])

Also a small blocking gateway client (GatewayClient) and a REST caller
(sim.api) so the simulator's own tests can play the bot. Python 3 standard
library only; every call has a timeout. The control API is described in
tests/sim/README.md; starting and stopping the process is simproc's.
"""

import base64
import contextlib
import hashlib
import json
import os
import random
import socket
import struct
import time
import urllib.parse
import zlib

import simproc

SIM_PATH = os.path.join(simproc.SIM_DIR, "discord_sim.py")
PYTHON = simproc.PYTHON

DEFAULT_TOKEN = "sim-bot-token.0123456789"
DEFAULT_APP_ID = "223456789012345678"
BOT_UA = "DiscordBot (https://example.invalid, 1.0)"


class SimError(Exception):
    pass


def http(method, url, body=None, headers=None, timeout=10.0):
    """(status, headers dict (lowercase names), body bytes). HTTP errors are
    returned, not raised. body: bytes, str, or a JSON-able object."""
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
    return simproc.send(method, url, data, hdrs, timeout)


def multipart(payload, files):
    """(content_type, body) for Discord's multipart form: payload_json plus
    files[n] parts. files: [(filename, bytes, content_type)]."""
    boundary = "simboundary%016x" % random.getrandbits(64)
    out = []
    out.append(b"--%s\r\nContent-Disposition: form-data; name=\"payload_json\"\r\n"
               b"Content-Type: application/json\r\n\r\n%s\r\n"
               % (boundary.encode(), json.dumps(payload).encode()))
    for i, (name, data, ctype) in enumerate(files):
        out.append(b"--%s\r\nContent-Disposition: form-data; name=\"files[%d]\"; filename=\"%s\"\r\n"
                   b"Content-Type: %s\r\n\r\n" % (boundary.encode(), i, name.encode(), ctype.encode()))
        out.append(data + b"\r\n")
    out.append(b"--%s--\r\n" % boundary.encode())
    return "multipart/form-data; boundary=" + boundary, b"".join(out)


class Sim(simproc.SimProcess):
    """A running simulator process plus its control API."""

    error = SimError
    http = staticmethod(http)

    def __init__(self, proc, port, token, app_id, log_path):
        simproc.SimProcess.__init__(self, proc, port, log_path)
        self.token, self.app_id = token, app_id
        self.info = self.get("/_sim/info")
        self.public_key_hex = self.info["public_key_hex"]
        self.api_base = self.info["api_base"]
        self.gateway_url = self.info["gateway_url"]
        self.bot_user_id = self.info["bot_user_id"]

    def bot_env(self):
        """The bot's environment for talking to this simulator."""
        return {"DISCORD_TOKEN": self.token, "DISCORD_APPLICATION_ID": self.app_id,
                "DISCORD_PUBLIC_KEY": self.public_key_hex, "DISCORD_API_BASE": self.api_base}

    # -- control API (call, get, post: simproc.SimProcess)

    def add_guild(self, gid, name=None, channels=()):
        return self.post("/_sim/guilds", {"id": str(gid), "name": name or "guild", "channels": list(channels)})

    def interaction(self, **kw):
        return self.post("/_sim/interactions", kw, timeout=kw.get("timeout_s", 10) + 10)

    def message(self, **kw):
        return self.post("/_sim/messages", kw)

    def dispatch(self, t, d, **kw):
        return self.post("/_sim/dispatch", dict(kw, t=t, d=d))

    def gateway(self):
        return self.get("/_sim/gateway")

    def stats(self):
        return self.get("/_sim/stats")

    def log(self, since=0, **filters):
        q = urllib.parse.urlencode(dict(filters, since=since))
        return self.get("/_sim/log?" + q)["entries"]

    def interaction_state(self, iid):
        return self.get("/_sim/interactions/%s" % iid)

    def channel_messages(self, cid, everyone=False):
        return self.get("/_sim/channels/%s/messages%s" % (cid, "?all=1" if everyone else ""))["messages"]

    def fault(self, **kw):
        return self.post("/_sim/faults", kw)

    def config(self, **kw):
        return self.post("/_sim/config", kw)

    def reset(self, **kw):
        return self.post("/_sim/reset", kw)

    def gw(self, action, **kw):
        """POST /_sim/gateway/<action> (close, reconnect, invalid_session,
        heartbeat_request, withhold_acks, flood, raw)."""
        return self.post("/_sim/gateway/" + action, kw, timeout=120)

    # -- waiting

    def wait_session(self, timeout=20.0, connected=True, count=1):
        """The active sessions once at least `count` are (connected)."""
        timeout = simproc.scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            ss = [s for s in self.gateway()["sessions"]
                  if s["state"] == "active" and (s["connected"] or not connected)]
            if len(ss) >= count:
                return ss
            if time.monotonic() > deadline:
                raise AssertionError("no %d active session(s) after %gs: %s" % (count, timeout, self.gateway()))
            time.sleep(0.05)

    def wait_interaction(self, iid, pred=lambda i: i["acked"], timeout=10.0):
        timeout = simproc.scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            st = self.interaction_state(iid)
            if pred(st):
                return st
            if time.monotonic() > deadline:
                raise AssertionError("interaction %s: condition not met after %gs: %s" % (iid, timeout, st))
            time.sleep(0.05)

    # -- acting as the bot (for the simulator's own tests)

    def api(self, method, path, body=None, auth=True, ua=BOT_UA, headers=None, raw=None,
            content_type=None, timeout=10.0):
        """A REST call to /api/v10 as the bot would make it. Returns
        (status, headers, JSON or bytes)."""
        h = dict(headers or {})
        if auth is True:
            h["Authorization"] = "Bot " + self.token
        elif isinstance(auth, str):
            h["Authorization"] = auth
        if ua:
            h["User-Agent"] = ua
        if raw is not None:
            if content_type:
                h["Content-Type"] = content_type
            payload = raw
        else:
            payload = body
        status, hd, data = http(method, self.api_base + path, payload, h, timeout)
        try:
            obj = json.loads(data) if data else None
        except ValueError:
            obj = data
        return status, hd, obj

    def connect(self, **kw):
        return GatewayClient(self.gateway_url, **kw)

    def identify(self, gw=None, intents=(1 << 0) | (1 << 9) | (1 << 12) | (1 << 15), token=None,
                 shard=None, timeout=5.0):
        """Connect (unless gw is given), Identify and return (gw, READY d)."""
        gw = gw or self.connect()
        hello = gw.recv(timeout)
        assert hello["op"] == 10, hello
        d = {"token": token or self.token, "intents": intents,
             "properties": {"os": "linux", "browser": "simclient", "device": "simclient"}}
        if shard is not None:
            d["shard"] = shard
        gw.send({"op": 2, "d": d})
        ready = gw.recv_until(lambda m: m.get("t") == "READY", timeout)
        return gw, ready["d"]


def start(t=None, token=DEFAULT_TOKEN, application_id=DEFAULT_APP_ID, args=(), timeout=15.0,
          log_path=None, config=None):
    """Start a simulator on a free port and wait for `SIM READY`. With a
    harness TestContext `t` it is stopped at teardown and its stderr goes to
    t.tmp/discord-sim-*.log (its tail is printed at teardown, shown when the
    test fails)."""
    argv = [PYTHON, SIM_PATH, "--port", "0", "--token", token, "--application-id", application_id] + list(args)
    proc, port, log_path = simproc.start(argv, "discord-sim", "simulator", t, timeout, log_path, SimError)
    sim = Sim(proc, port, token, application_id, log_path)
    simproc.stop_at_teardown(t, sim, "discord-sim")
    if config:
        sim.config(**config)
    return sim


# ----------------------------------------------------------------------------
# A blocking gateway client (RFC 6455, client side)


class GatewayClosed(Exception):
    """The server closed the connection: .code and .reason (1006 when the
    TCP connection ended without a close frame)."""

    def __init__(self, code, reason):
        super().__init__("gateway closed: %s %s" % (code, reason))
        self.code, self.reason = code, reason


class GatewayClient:
    def __init__(self, url, compress=True, version="10", query=None, timeout=5.0):
        u = urllib.parse.urlsplit(url)
        q = {"v": version, "encoding": "json"}
        if compress:
            q["compress"] = "zlib-stream"
        if query is not None:
            q = query
        self.path = (u.path or "/") + "?" + urllib.parse.urlencode(q)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.compress = compress
        self.inflater = zlib.decompressobj()
        self.zbuf = b""
        self.rbuf = b""
        self.closed = None
        self.frames_received = 0
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (self.path, u.hostname, u.port, key))
        self.sock.sendall(req.encode())
        head = self._read_until(b"\r\n\r\n", timeout)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise SimError("websocket handshake refused: %s" % lines[0])
        hdrs = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        if hdrs.get("sec-websocket-accept") != want:
            raise SimError("bad Sec-WebSocket-Accept %r" % hdrs.get("sec-websocket-accept"))

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("gateway: nothing received in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            raise TimeoutError("gateway: nothing received in time")
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = self.closed or (1006, "connection lost")
            raise GatewayClosed(*self.closed)
        self.rbuf += data

    def _read_until(self, marker, timeout):
        deadline = time.monotonic() + timeout
        while marker not in self.rbuf:
            self._fill(deadline)
        i = self.rbuf.index(marker) + len(marker)
        out, self.rbuf = self.rbuf[:i], self.rbuf[i:]
        return out

    def _read_exact(self, n, deadline):
        while len(self.rbuf) < n:
            self._fill(deadline)
        out, self.rbuf = self.rbuf[:n], self.rbuf[n:]
        return out

    def read_frame(self, timeout=5.0):
        """(fin, opcode, payload) of the next frame."""
        deadline = time.monotonic() + timeout
        b0, b1 = self._read_exact(2, deadline)
        n = b1 & 0x7F
        if b1 & 0x80:
            raise SimError("server frames must not be masked")
        if n == 126:
            n = struct.unpack("!H", self._read_exact(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read_exact(8, deadline))[0]
        self.frames_received += 1
        return bool(b0 & 0x80), b0 & 0x0F, self._read_exact(n, deadline)

    def recv_raw(self, timeout=5.0):
        """The next whole gateway message as text (inflated when compressed)."""
        deadline = time.monotonic() + timeout
        parts, first_op = [], None
        while True:
            fin, op, data = self.read_frame(max(0.001, deadline - time.monotonic()))
            if op == 0x8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                self.closed = (code, data[2:].decode("utf-8", "replace"))
                with contextlib.suppress(OSError):
                    self._send_frame(0x8, data[:2])
                    self.sock.close()
                raise GatewayClosed(*self.closed)
            if op == 0x9:
                self._send_frame(0xA, data)
                continue
            if op == 0xA:
                continue
            if op in (0x1, 0x2):
                first_op = op
            parts.append(data)
            if not fin:
                continue
            payload = b"".join(parts)
            parts = []
            if first_op == 0x2 and self.compress:
                self.zbuf += payload
                if not self.zbuf.endswith(b"\x00\x00\xff\xff"):
                    continue
                text = self.inflater.decompress(self.zbuf)
                self.zbuf = b""
                return text.decode("utf-8")
            return payload.decode("utf-8")

    def recv(self, timeout=5.0):
        return json.loads(self.recv_raw(timeout))

    def recv_until(self, pred, timeout=5.0, keep=None):
        """The first message matching pred; others are appended to keep."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv(max(0.001, deadline - time.monotonic()))
            if pred(m):
                return m
            if keep is not None:
                keep.append(m)

    def drain(self, quiet=0.2):
        """Every message that arrives until none came for `quiet` seconds."""
        out = []
        while True:
            try:
                out.append(self.recv(quiet))
            except TimeoutError:
                return out

    def _send_frame(self, opcode, payload, fin=True):
        mask = os.urandom(4)
        n = len(payload)
        b0 = (0x80 if fin else 0) | opcode
        if n < 126:
            head = struct.pack("!BB", b0, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", b0, 0x80 | 127, n)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send(self, obj):
        self.send_text(json.dumps(obj))

    def send_text(self, text, fragments=1):
        data = text.encode("utf-8")
        if fragments <= 1:
            self._send_frame(0x1, data)
            return
        step = max(1, len(data) // fragments)
        chunks = [data[i:i + step] for i in range(0, len(data), step)]
        for i, c in enumerate(chunks):
            self._send_frame(0x1 if i == 0 else 0x0, c, fin=(i == len(chunks) - 1))

    def ping(self, payload=b"p"):
        self._send_frame(0x9, payload)

    def close(self, code=1000, reason=""):
        with contextlib.suppress(OSError):
            self._send_frame(0x8, struct.pack("!H", code) + reason.encode())
        with contextlib.suppress(OSError):
            self.sock.close()

    def drop(self):
        """Vanish without a close frame (a crashed process)."""
        with contextlib.suppress(OSError):
            self.sock.close()
