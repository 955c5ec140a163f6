#!/usr/bin/python3
"""A Discord simulator for black-box tests: REST, gateway and a control API
on one TCP port of 127.0.0.1, in one asyncio process.

    /usr/bin/python3 tests/sim/discord_sim.py --port 0 --token BOT_TOKEN \\
        --application-id 123456789012345678 [--spec PATH] [--verbose]

prints one line `SIM READY port=NNNN` on stdout once it listens, logs to
stderr and exits on SIGTERM/SIGINT.

  /api/v10/...   REST as Discord answers it (only the routes the bot uses),
                 with Discord's rate-limit headers and buckets, checked
                 against Discord's OpenAPI spec (openapi_check.py).
  /gateway       the gateway WebSocket (RFC 6455 done here, zlib-stream).
  /_sim/...      the control API the tests use (tests/sim/README.md).

Python 3 standard library plus python3-nacl (Ed25519 signatures for
interactions delivered over HTTP). Discord facts it follows:
/work/shared/reference/discord.md.
"""

import asyncio
import base64
import collections
import copy
import datetime
import hashlib
import json
import math
import os
import re
import secrets
import socket
import struct
import sys
import time
import urllib.parse
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree (as tests/run.py)
import openapi_check  # noqa: E402
import simhttp  # noqa: E402
from simhttp import MIB, jdump, log, response  # noqa: E402

try:
    import nacl.signing
except ImportError:  # signing is only needed for deliver=http
    nacl = None

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
simhttp.NAME = "discord-sim"

# Intents the gateway filters on (discord.md).
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_TYPING = 1 << 11
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_DIRECT_MESSAGE_TYPING = 1 << 14
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_VOICE_MESSAGE = 1 << 13

# Server close codes after which a session cannot be resumed (discord.md).
CLOSE_ENDS_SESSION = {4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014}

# Rate limits per bucket name: (limit, window seconds). Several routes may
# share one name (all interaction webhook routes share "webhook").
DEFAULT_RATE_LIMITS = {
    "GET /gateway/bot": (10, 5.0),
    "GET /users/@me": (10, 5.0),
    "GET commands": (10, 5.0),
    "PUT commands": (2, 60.0),
    "interaction_callback": (20, 1.0),
    "webhook": (5, 2.0),
    "POST /channels/{channel_id}/messages": (5, 5.0),
    "PATCH /channels/{channel_id}/messages/{message_id}": (5, 5.0),
    "DELETE /channels/{channel_id}/messages/{message_id}": (5, 1.0),
    "GET /channels/{channel_id}/messages/{message_id}": (10, 5.0),
    "POST /channels/{channel_id}/typing": (5, 5.0),
    "GET /channels/{channel_id}": (10, 5.0),
    "GET /guilds/{guild_id}/channels": (10, 5.0),
}

DEFAULT_CONFIG = {
    "ack_window_s": 3.0,
    "token_ttl_s": 900.0,
    "heartbeat_interval_ms": 41250,
    # The sim closes a connection (4000, session kept) that sent no
    # heartbeat for interval * factor + 1 s. 0 turns this off.
    "heartbeat_timeout_factor": 2.0,
    "session_resume_ttl_s": 180.0,
    "replay_buffer": 1000,
    "gateway_send_limit": 120,
    "gateway_send_window_s": 60.0,
    "gateway_max_payload": 4096,
    "privileged_intents_allowed": PRIVILEGED_INTENTS,
    "enforce_identify_concurrency": False,
    "max_concurrency": 1,
    "session_start_total": 1000,
    "session_start_remaining": None,
    "global_limit": 50,
    "global_window_s": 1.0,
    "rate_limits": {},
    "reject_spec_violations": False,
    "check_responses": True,
    "max_request_bytes": 25 * MIB,
    "max_file_bytes": 10 * MIB,
    "max_content_chars": 2000,
    "attachment_size_limit": 10 * MIB,
    "app_permissions": "2248473465835073",
    "keep_file_bytes": 256 * MIB,
    "log_max_entries": 50000,
}


def iso_now(t=None):
    t = time.time() if t is None else t
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat()


class Snowflakes:
    """Discord-shaped ids: ms since the Discord epoch << 22 | worker | counter."""

    def __init__(self):
        self.last_ms = 0
        self.inc = 0

    def next(self):
        ms = int(time.time() * 1000)
        if ms <= self.last_ms:
            self.inc += 1
            if self.inc >= 4096:  # counter ran out in this millisecond
                self.last_ms += 1
                self.inc = 0
            ms = self.last_ms
        else:
            self.inc = 0
        self.last_ms = ms
        return str(((ms - DISCORD_EPOCH_MS) << 22) | (1 << 17) | (os.getpid() & 0x1F) << 12 | self.inc)


class ApiError(Exception):
    """A Discord JSON error answer."""

    def __init__(self, status, code, message, errors=None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.errors, self.headers = errors, headers or []

    def body(self):
        b = {"message": self.message, "code": self.code}
        if self.errors:
            b["errors"] = self.errors
        return b


def form_errors(items):
    """Discord's nested error object from [(pointer, error_code, message)]."""
    root = {}
    for ptr, code, message in items:
        node = root
        for part in [p for p in ptr.split("/") if p]:
            node = node.setdefault(part, {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
    return root


def invalid_form(items):
    return ApiError(400, 50035, "Invalid Form Body", form_errors(items))


# ----------------------------------------------------------------------------
# multipart/form-data


def parse_content_type(value):
    """('multipart/form-data', {'boundary': ...}) from a Content-Type value."""
    if not value:
        return None, {}
    parts = value.split(";")
    params = {}
    for p in parts[1:]:
        k, _, v = p.strip().partition("=")
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1]
        params[k.strip().lower()] = v
    return parts[0].strip().lower(), params


def parse_multipart(body, boundary):
    """[{name, filename, content_type, data}] of a multipart/form-data body.
    Raises ValueError when it is malformed."""
    if not boundary:
        raise ValueError("no boundary in Content-Type")
    delim = b"--" + boundary.encode("latin-1")
    if not body.startswith(delim):
        # A preamble is allowed; the first delimiter must then follow a CRLF.
        i = body.find(b"\r\n" + delim)
        if i < 0:
            raise ValueError("no opening boundary")
        body = body[i + 2:]
    parts = []
    pos = len(delim)
    while True:
        if body[pos:pos + 2] == b"--":
            return parts
        if body[pos:pos + 2] != b"\r\n":
            raise ValueError("junk after a boundary")
        pos += 2
        end_head = body.find(b"\r\n\r\n", pos)
        if end_head < 0:
            raise ValueError("part without a header end")
        headers = {}
        for line in body[pos:end_head].decode("utf-8", "replace").split("\r\n"):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        nxt = body.find(b"\r\n" + delim, end_head + 4)
        if nxt < 0:
            raise ValueError("part without a closing boundary")
        data = body[end_head + 4:nxt]
        disp, dparams = parse_content_type(headers.get("content-disposition", ""))
        if disp != "form-data" or "name" not in dparams:
            raise ValueError("part without Content-Disposition: form-data; name=...")
        parts.append({"name": dparams["name"], "filename": dparams.get("filename"),
                      "content_type": headers.get("content-type"), "data": data})
        pos = nxt + 2 + len(delim)


# ----------------------------------------------------------------------------
# WebSocket framing (RFC 6455), server side


class WsClosed(Exception):
    pass


def ws_frame(opcode, payload, fin=True):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + payload


def ws_unmask(data, key):
    n = len(data)
    if not n:
        return data
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


async def ws_read_frame(reader, max_len):
    """(fin, opcode, payload, masked). Raises WsClosed(code, reason) on a
    protocol error the connection must be closed for."""
    b0, b1 = await reader.readexactly(2)
    fin, rsv, opcode = b0 & 0x80, b0 & 0x70, b0 & 0x0F
    masked, n = b1 & 0x80, b1 & 0x7F
    if rsv:
        raise WsClosed(1002, "reserved bits set")
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    if opcode >= 8 and (n > 125 or not fin):
        raise WsClosed(1002, "bad control frame")
    if n > max_len:
        raise WsClosed(1009, "frame too large")
    key = await reader.readexactly(4) if masked else None
    data = await reader.readexactly(n) if n else b""
    if key:
        data = ws_unmask(data, key)
    return bool(fin), opcode, data, bool(masked)


# ----------------------------------------------------------------------------
# Gateway


class Session:
    """One gateway session: a sequence, a replay buffer and at most one
    attached connection. Lives on while detached until it expires."""

    def __init__(self, sim, identify, intents, shard):
        self.id = secrets.token_hex(16)
        self.seq = 0
        self.buffer = collections.deque(maxlen=max(1, int(sim.cfg["replay_buffer"])))
        self.conn = None
        self.identify = identify
        self.intents = intents
        self.shard = shard
        self.state = "active"
        self.end_reason = None
        self.created_at = time.time()
        self.detached_mono = None
        self.detached_at = None
        self.resumes = 0
        self.dispatched = 0
        self.buffered_while_detached = 0
        self.replayed = 0

    def end_session(self, reason, state="ended"):
        """No more events, no resume. An attached connection stays open but
        loses the session (it may identify again)."""
        if self.state != "active":
            return
        self.state, self.end_reason = state, reason
        if self.conn is not None:
            self.conn.session = None
            self.conn = None
        self.buffer.clear()

    def info(self):
        return {
            "session_id": self.id, "seq": self.seq, "connected": self.conn is not None,
            "conn_id": self.conn.id if self.conn else None, "state": self.state,
            "end_reason": self.end_reason, "identify": self.identify, "intents": self.intents,
            "shard": self.shard, "created_at": self.created_at, "detached_at": self.detached_at,
            "resumes": self.resumes, "events_dispatched": self.dispatched,
            "events_buffered_while_detached": self.buffered_while_detached,
            "events_replayed": self.replayed, "buffered": len(self.buffer),
            "oldest_buffered_seq": self.buffer[0][0] if self.buffer else None,
        }


class GwConn:
    """One gateway WebSocket connection."""

    def __init__(self, sim, cid, reader, writer, query):
        self.sim = sim
        self.id = cid
        self.reader, self.writer = reader, writer
        self.query = query
        self.compress = self.query.get("compress") == "zlib-stream"
        self.zobj = zlib.compressobj() if self.compress else None
        self.session = None
        self.opened_at = time.time()
        self.opened_mono = time.monotonic()
        self.closed = False
        self.close_info = None
        self.recv_times = collections.deque()
        self.messages_received = 0
        self.messages_sent = 0
        self.bytes_sent = 0
        self.heartbeats = 0
        self.last_heartbeat_at = None
        self.last_heartbeat_mono = None
        self.last_heartbeat_d = None
        self.acks_sent = 0
        self.acks_withheld = 0
        self.withhold_acks = False
        self.heartbeat_requests = 0
        self.heartbeat_request_mono = None
        self.heartbeat_request_latency_ms = None
        self.hello_mono = None
        self.ops = collections.Counter()
        self.presence_updates = []
        self.violations = []
        self.hold = False
        self.held = []
        peer = writer.get_extra_info("peername")
        self.remote = "%s:%s" % peer[:2] if peer else "?"

    def info(self):
        return {
            "id": self.id, "remote": self.remote, "opened_at": self.opened_at,
            "query": self.query, "compress": self.compress, "closed": self.closed,
            "close": self.close_info, "session_id": self.session.id if self.session else None,
            "identified": self.session is not None, "messages_received": self.messages_received,
            "messages_sent": self.messages_sent, "bytes_sent": self.bytes_sent,
            "sends_in_window": len(self.recv_times), "heartbeats": self.heartbeats,
            "last_heartbeat_at": self.last_heartbeat_at, "last_heartbeat_d": self.last_heartbeat_d,
            "heartbeat_acks_sent": self.acks_sent, "acks_withheld": self.acks_withheld,
            "withhold_acks": self.withhold_acks or self.sim.withhold_acks,
            "heartbeat_requests": self.heartbeat_requests,
            "heartbeat_request_latency_ms": self.heartbeat_request_latency_ms,
            "ops": {str(k): v for k, v in self.ops.items()},
            "presence_updates": self.presence_updates[-10:], "violations": self.violations[-20:],
        }

    # -- output

    def frame_for(self, text_or_bytes):
        data = text_or_bytes.encode("utf-8") if isinstance(text_or_bytes, str) else text_or_bytes
        if self.compress:
            data = self.zobj.compress(data) + self.zobj.flush(zlib.Z_SYNC_FLUSH)
            return ws_frame(0x2, data)
        return ws_frame(0x1, data)

    def send(self, text):
        """Send one gateway message (JSON text) now, or after a running flood."""
        if self.closed:
            return
        if self.hold:
            self.held.append(text)
            return
        frame = self.frame_for(text)
        self.messages_sent += 1
        self.bytes_sent += len(frame)
        self.writer.write(frame)

    def send_json(self, obj):
        self.send(jdump(obj))

    def write_raw(self, data):
        if not self.closed:
            self.writer.write(data)

    def release(self):
        self.hold = False
        held, self.held = self.held, []
        for text in held:
            self.send(text)

    def close(self, code, reason, by="server", abrupt=False):
        """Close from our side: a close frame (unless abrupt), then the TCP
        connection. The session detaches (or ends, for codes that end it)."""
        if self.closed:
            return
        if self.hold:
            self.release()
        self.closed = True
        self.close_info = {"code": code, "reason": reason, "by": by, "at": time.time(),
                           "abrupt": abrupt}
        self.sim.gw_closed(self, code, reason, by)
        try:
            if abrupt:
                sock = self.writer.get_extra_info("socket")
                if sock is not None:
                    # RST instead of FIN: the peer sees a dead connection.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.writer.transport.abort()
                return
            payload = struct.pack("!H", code) + reason.encode("utf-8")[:123] if code else b""
            self.writer.write(ws_frame(0x8, payload))
            # The client answers with its own close frame (read_loop then
            # drops the TCP connection); give it a second, then drop anyway.
            asyncio.get_running_loop().call_later(1.0, self.drop_tcp)
        except (ConnectionError, RuntimeError, OSError):
            pass

    def drop_tcp(self):
        try:
            self.writer.close()
        except (ConnectionError, RuntimeError, OSError):
            pass


class Gateway:
    """The gateway half of the simulator."""

    def __init__(self, sim):
        self.sim = sim

    async def serve(self, req, reader, writer):
        sim = self.sim
        key = req.header("sec-websocket-key")
        if (req.header("upgrade", "").lower() != "websocket" or not key
                or "upgrade" not in req.header("connection", "").lower()):
            writer.write(response(400, [("Content-Type", "text/plain")], b"websocket upgrade expected", True))
            return
        if req.header("sec-websocket-version") != "13":
            writer.write(response(426, [("Sec-WebSocket-Version", "13")], b"", True))
            return
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        writer.write(response(101, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                    ("Sec-WebSocket-Accept", accept)], b""))
        sim.conn_seq += 1
        conn = GwConn(sim, sim.conn_seq, reader, writer, req.query)
        sim.conns[conn.id] = conn
        sim.stats_gw["connections"] += 1
        log("info", "gateway: connection %d from %s %s", conn.id, conn.remote, conn.query)
        if conn.query.get("v") is None:
            conn.violations.append("no v= query parameter")
        elif conn.query.get("v") != "10":
            conn.close(4012, "Invalid API version.")
            return
        if conn.query.get("encoding", "json") != "json":
            conn.close(4002, "Error while decoding payload.")  # only json is spoken here
            return
        if "compress" in conn.query and not conn.compress:
            conn.violations.append("unsupported compress=%s; sending plain text" % conn.query["compress"])
        conn.hello_mono = time.monotonic()
        conn.send_json({"op": 10, "d": {"heartbeat_interval": int(sim.cfg["heartbeat_interval_ms"]),
                                        "_trace": ["[\"discord-sim\",{}]"]}, "s": None, "t": None})
        try:
            await self.read_loop(conn)
        except WsClosed as e:
            conn.close(e.args[0], e.args[1] if len(e.args) > 1 else "")
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            if not conn.closed:
                conn.closed = True
                conn.close_info = {"code": 1006, "reason": "connection lost", "by": "client",
                                   "at": time.time(), "abrupt": True}
                sim.gw_closed(conn, 1006, "connection lost", "client")
            log("info", "gateway: connection %d closed %s", conn.id, conn.close_info)

    async def read_loop(self, conn):
        cfg = self.sim.cfg
        frag_op, frags = None, []
        while True:
            fin, op, data, masked = await ws_read_frame(conn.reader, 16 * MIB)
            if conn.closed:
                # We sent a close frame: wait for the client's, ignore the rest.
                if op == 0x8:
                    conn.drop_tcp()
                    return
                continue
            if not masked:
                raise WsClosed(1002, "client frames must be masked")
            if op == 0x8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                reason = data[2:].decode("utf-8", "replace")
                self.client_closed(conn, code, reason)
                return
            if op == 0x9:
                conn.write_raw(ws_frame(0xA, data))
                continue
            if op == 0xA:
                continue
            if op == 0x0:
                if frag_op is None:
                    raise WsClosed(1002, "continuation without a start")
                frags.append(data)
            elif op in (0x1, 0x2):
                if frag_op is not None:
                    raise WsClosed(1002, "new message inside a fragmented one")
                frag_op, frags = op, [data]
            else:
                raise WsClosed(1002, "unknown opcode %d" % op)
            if sum(len(f) for f in frags) > 16 * MIB:
                raise WsClosed(1009, "message too large")
            if not fin:
                continue
            msg, mop = b"".join(frags), frag_op
            frag_op, frags = None, []
            self.on_message(conn, mop, msg, cfg)

    def client_closed(self, conn, code, reason):
        if conn.closed:
            return
        try:
            conn.writer.write(ws_frame(0x8, struct.pack("!H", code) if code != 1005 else b""))
            conn.writer.close()
        except (ConnectionError, RuntimeError, OSError):
            pass
        conn.closed = True
        conn.close_info = {"code": code, "reason": reason, "by": "client", "at": time.time(),
                           "abrupt": False}
        self.sim.gw_closed(conn, code, reason, "client")

    def on_message(self, conn, mop, msg, cfg):
        sim = self.sim
        now = time.monotonic()
        conn.messages_received += 1
        conn.recv_times.append(now)
        window = float(cfg["gateway_send_window_s"])
        while conn.recv_times and conn.recv_times[0] <= now - window:
            conn.recv_times.popleft()
        if len(conn.recv_times) > int(cfg["gateway_send_limit"]):
            sim.stats_gw["rate_limit_closes"] += 1
            conn.close(4008, "Rate limited.")
            return
        if len(msg) > int(cfg["gateway_max_payload"]):
            conn.violations.append("payload of %d bytes is over %d" % (len(msg), cfg["gateway_max_payload"]))
            conn.close(4002, "Error while decoding payload.")
            return
        try:
            if mop != 0x1:
                raise ValueError("binary frame")
            obj = json.loads(msg.decode("utf-8"))
            if not isinstance(obj, dict) or not isinstance(obj.get("op"), int) or isinstance(obj.get("op"), bool):
                raise ValueError("no op")
        except (ValueError, UnicodeDecodeError) as e:
            conn.violations.append("undecodable payload: %s" % e)
            conn.close(4002, "Error while decoding payload.")
            return
        op, d = obj["op"], obj.get("d")
        conn.ops[op] += 1
        if op == 1:
            self.on_heartbeat(conn, d)
        elif op == 2:
            self.on_identify(conn, d)
        elif op == 6:
            self.on_resume(conn, d)
        elif op in (3, 4, 8, 31, 36, 37):
            if conn.session is None:
                conn.close(4003, "Not authenticated.")
                return
            if op == 3:
                conn.presence_updates.append(d)
        else:
            conn.close(4001, "Unknown opcode.")

    def on_heartbeat(self, conn, d):
        sim = self.sim
        conn.heartbeats += 1
        conn.last_heartbeat_at = time.time()
        conn.last_heartbeat_mono = time.monotonic()
        conn.last_heartbeat_d = d
        if d is not None and not isinstance(d, int):
            conn.violations.append("heartbeat d is %r, not a sequence or null" % (d,))
        if conn.session is not None and isinstance(d, int) and d > conn.session.seq:
            conn.violations.append("heartbeat d=%d is ahead of the session seq %d" % (d, conn.session.seq))
        if conn.heartbeat_request_mono is not None:
            conn.heartbeat_request_latency_ms = round((time.monotonic() - conn.heartbeat_request_mono) * 1000, 1)
            conn.heartbeat_request_mono = None
        sim.stats_gw["heartbeats"] += 1
        if conn.withhold_acks or sim.withhold_acks:
            conn.acks_withheld += 1
            return
        conn.acks_sent += 1
        conn.send_json({"op": 11, "d": None, "s": None, "t": None})

    def on_identify(self, conn, d):
        sim, cfg = self.sim, self.sim.cfg
        sim.stats["identify_attempts"] += 1
        if conn.session is not None:
            conn.close(4005, "Already authenticated.")
            return
        if not isinstance(d, dict):
            conn.close(4002, "Error while decoding payload.")
            return
        token = d.get("token")
        matched = isinstance(token, str) and sim.token_matches(token)
        props = d.get("properties")
        summary = {
            "token_present": isinstance(token, str) and bool(token), "token_matched": matched,
            "intents": d.get("intents"), "shard": d.get("shard"), "properties": props,
            "large_threshold": d.get("large_threshold"), "compress": d.get("compress"),
            "presence": d.get("presence"), "at": time.time(), "conn_id": conn.id,
        }
        sim.identify_log.append(summary)
        del sim.identify_log[:-200]
        who = "configured" if matched else "other"
        sim.by_token[who]["identify_attempts"] += 1
        if not matched:
            conn.close(4004, "Authentication failed.")
            return
        if not isinstance(props, dict) or not all(isinstance(props.get(k), str) for k in ("os", "browser", "device")):
            conn.violations.append("identify properties must hold os, browser and device strings")
        if d.get("compress") is True:
            conn.violations.append("identify asks for per-payload compression; the sim does not do it")
        intents = d.get("intents")
        if not isinstance(intents, int) or isinstance(intents, bool) or intents < 0 or intents >= 1 << 26:
            conn.close(4013, "Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS & ~int(cfg["privileged_intents_allowed"]):
            conn.close(4014, "Disallowed intent(s).")
            return
        shard = d.get("shard", [0, 1])
        if (not isinstance(shard, list) or len(shard) != 2 or not all(isinstance(x, int) for x in shard)
                or shard[1] < 1 or not 0 <= shard[0] < shard[1]):
            conn.close(4010, "Invalid shard.")
            return
        if sim.session_start_remaining() <= 0:
            # Discord resets the token of a bot past its identify budget.
            conn.close(4004, "Authentication failed.")
            return
        now = time.monotonic()
        bucket = shard[0] % max(1, int(cfg["max_concurrency"]))
        last = sim.identify_mono.get(bucket)
        sim.identify_mono[bucket] = now
        if last is not None and now - last < 5.0:
            sim.stats["identify_concurrency_violations"] += 1
            if cfg["enforce_identify_concurrency"]:
                conn.send_json({"op": 9, "d": False, "s": None, "t": None})
                return
        sim.identifies_used += 1
        sim.stats["identifies"] += 1
        sim.by_token[who]["identifies"] += 1
        s = Session(sim, summary, intents, shard)
        sim.sessions[s.id] = s
        self.attach(conn, s)
        ready = {
            "v": 10, "user": sim.bot_user(), "guilds": [
                {"id": g["id"], "unavailable": True} for g in sim.guilds.values() if sim.in_shard(s, g["id"])],
            "session_id": s.id, "resume_gateway_url": sim.gateway_url(),
            "session_type": "normal",
            "application": {"id": sim.app_id, "flags": sim.app_flags},
            "user_settings": {}, "private_channels": [], "relationships": [], "presences": [],
            "geo_ordered_rtc_regions": ["sim"], "auth": {}, "_trace": ["[\"discord-sim\",{}]"],
        }
        if "shard" in d:
            ready["shard"] = shard
        sim.dispatch_to(s, "READY", ready)
        for g in list(sim.guilds.values()):
            if sim.in_shard(s, g["id"]):
                sim.dispatch_to(s, "GUILD_CREATE", sim.guild_create_payload(g))
        log("info", "gateway: connection %d identified, session %s, intents %d, shard %s",
            conn.id, s.id, intents, shard)

    def on_resume(self, conn, d):
        sim = self.sim
        sim.stats["resume_attempts"] += 1
        if conn.session is not None:
            conn.close(4005, "Already authenticated.")
            return
        if not isinstance(d, dict):
            conn.close(4002, "Error while decoding payload.")
            return
        token = d.get("token")
        matched = isinstance(token, str) and sim.token_matches(token)
        if not matched:
            sim.by_token["other"]["resume_attempts"] += 1
            conn.close(4004, "Authentication failed.")
            return
        s = sim.sessions.get(d.get("session_id")) if isinstance(d.get("session_id"), str) else None
        seq = d.get("seq")
        why = None
        if s is None:
            why = "unknown session"
        elif s.state != "active":
            why = "session %s (%s)" % (s.state, s.end_reason)
        elif seq is not None and (not isinstance(seq, int) or seq < 0):
            why = "bad seq %r" % (seq,)
        if why is None and isinstance(seq, int) and seq > s.seq:
            sim.stats["resume_failures"] += 1
            conn.violations.append("resume seq %d is ahead of the session (%d)" % (seq, s.seq))
            s.end_session("resumed with a seq from the future")
            conn.close(4007, "Invalid seq.")
            return
        last = seq if isinstance(seq, int) else 0
        if why is None and s.buffer and last < s.buffer[0][0] - 1:
            why = "events after seq %d are no longer buffered" % last
            s.end_session(why)
        if why is not None:
            sim.stats["resume_failures"] += 1
            conn.violations.append("resume refused: " + why)
            log("info", "gateway: connection %d resume refused: %s", conn.id, why)
            conn.send_json({"op": 9, "d": False, "s": None, "t": None})
            return
        old = s.conn
        if old is not None and old is not conn:
            # The session is taken over; the old connection loses it.
            old.session = None
            s.conn = None
            old.close(4009, "Session timed out.")
        sim.stats["resumes"] += 1
        sim.by_token["configured"]["resumes"] += 1
        s.resumes += 1
        self.attach(conn, s)
        replay = [text for n, text in s.buffer if n > last]
        s.replayed += len(replay)
        for text in replay:
            conn.send(text)
        sim.dispatch_to(s, "RESUMED", {"_trace": ["[\"discord-sim\",{}]"]})
        log("info", "gateway: connection %d resumed session %s from seq %s, replayed %d",
            conn.id, s.id, seq, len(replay))

    def attach(self, conn, s):
        conn.session = s
        s.conn = conn
        s.detached_mono = None
        s.detached_at = None


# ----------------------------------------------------------------------------
# REST routes


class Route:
    def __init__(self, method, template, handler, auth="bot", major=(), bucket=None,
                 global_exempt=False):
        self.method, self.template, self.handler = method, template, handler
        self.key = method + " " + template
        self.auth = auth
        self.major = major
        self.bucket_name = bucket or self.key
        self.bucket_hash = hashlib.md5(("discord-sim " + self.bucket_name).encode()).hexdigest()
        self.global_exempt = global_exempt
        rx = re.sub(r"\\\{([a-z_]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        self.regex = re.compile("^" + rx + "$")


WEBHOOK = ("webhook_id", "webhook_token")


def build_routes():
    R = Route
    return [
        R("GET", "/gateway/bot", "gateway_bot"),
        R("GET", "/gateway", "gateway", auth="none", global_exempt=True, bucket="GET /gateway/bot"),
        R("GET", "/users/@me", "users_me"),
        R("GET", "/applications/{application_id}/commands", "get_commands", major=("application_id",),
          bucket="GET commands"),
        R("PUT", "/applications/{application_id}/commands", "put_commands", major=("application_id",),
          bucket="PUT commands"),
        R("GET", "/applications/{application_id}/guilds/{guild_id}/commands", "get_commands",
          major=("guild_id",), bucket="GET commands"),
        R("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", "put_commands",
          major=("application_id",), bucket="PUT commands"),
        R("POST", "/interactions/{interaction_id}/{interaction_token}/callback", "callback", auth="none",
          major=("interaction_id", "interaction_token"), bucket="interaction_callback", global_exempt=True),
        R("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", "wh_get", auth="none",
          major=WEBHOOK, bucket="webhook", global_exempt=True),
        R("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", "wh_patch", auth="none",
          major=WEBHOOK, bucket="webhook", global_exempt=True),
        R("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/@original", "wh_delete", auth="none",
          major=WEBHOOK, bucket="webhook", global_exempt=True),
        R("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", "wh_get", auth="none",
          major=WEBHOOK, bucket="webhook", global_exempt=True),
        R("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", "wh_patch", auth="none",
          major=WEBHOOK, bucket="webhook", global_exempt=True),
        R("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}", "wh_delete", auth="none",
          major=WEBHOOK, bucket="webhook", global_exempt=True),
        R("POST", "/webhooks/{webhook_id}/{webhook_token}", "wh_followup", auth="none", major=WEBHOOK,
          bucket="webhook", global_exempt=True),
        R("POST", "/channels/{channel_id}/messages", "create_message", major=("channel_id",)),
        R("GET", "/channels/{channel_id}/messages/{message_id}", "get_message", major=("channel_id",)),
        R("PATCH", "/channels/{channel_id}/messages/{message_id}", "edit_message", major=("channel_id",)),
        R("DELETE", "/channels/{channel_id}/messages/{message_id}", "delete_message", major=("channel_id",)),
        R("POST", "/channels/{channel_id}/typing", "typing", major=("channel_id",)),
        R("GET", "/channels/{channel_id}", "get_channel", major=("channel_id",)),
        R("GET", "/guilds/{guild_id}/channels", "guild_channels", major=("guild_id",)),
    ]


class Bucket:
    __slots__ = ("limit", "remaining", "reset_mono", "window")

    def __init__(self, limit, window, now):
        self.limit, self.window = limit, window
        self.remaining = limit
        self.reset_mono = now + window


class RestCtx:
    """What a REST handler sees of one request."""

    def __init__(self, req, route, params, body, files, entry):
        self.req, self.route, self.params = req, route, params
        self.body, self.files, self.entry = body, files, entry

    def q(self, name):
        return self.req.query.get(name)


class Interaction:
    def __init__(self, sim, kind, payload, deliver):
        self.id = payload["id"]
        self.token = payload["token"]
        self.type = kind
        self.payload = payload
        self.deliver = deliver
        self.created_at = time.time()
        self.created_mono = time.monotonic()
        self.acked = None
        self.original = None
        self.followups = []
        self.errors = []
        self.requests = []
        self.http = None
        self.component_message = None

    def age(self):
        return time.monotonic() - self.created_mono


class MsgRec:
    """A message the sim knows: its current object and its history."""

    def __init__(self, obj, by_bot, source, interaction_id=None):
        self.obj = obj
        self.by_bot = by_bot
        self.source = source
        self.interaction_id = interaction_id
        self.created_at = time.time()
        self.edits = []
        self.deleted = False
        self.deleted_at = None

    def snapshot(self):
        o = self.obj
        return {"content": o.get("content"), "embeds": o.get("embeds"),
                "attachments": [_att_brief(a) for a in o.get("attachments", ())],
                "components": o.get("components"), "flags": o.get("flags")}

    def info(self):
        d = {"id": self.obj["id"], "channel_id": self.obj.get("channel_id"), "by_bot": self.by_bot,
             "source": self.source, "interaction_id": self.interaction_id,
             "created_at": self.created_at, "deleted": self.deleted, "deleted_at": self.deleted_at,
             "author": self.obj.get("author", {}).get("id"),
             "ephemeral": bool(self.obj.get("flags", 0) & FLAG_EPHEMERAL),
             "loading": bool(self.obj.get("flags", 0) & FLAG_LOADING),
             "edits": self.edits, "message": self.obj}
        d.update(self.snapshot())
        return d


# sha256 of every attachment the bot uploaded, by attachment id: tests see
# it in /_sim views; Discord's own objects do not carry it.
FILE_SHA256 = {}


def _att_brief(a):
    d = {k: a.get(k) for k in ("id", "filename", "size", "content_type", "description",
                               "duration_secs", "waveform", "url") if k in a}
    if a.get("id") in FILE_SHA256:
        d["sha256"] = FILE_SHA256[a["id"]]
    return d


# ----------------------------------------------------------------------------
# The simulator


class Sim(simhttp.Server):
    backlog = 512
    refuse_large = False    # too large bodies get Discord's 413

    def __init__(self, args):
        super().__init__()
        self.token = args.token
        self.app_id = args.application_id
        self.bot_user_id = args.bot_user_id or args.application_id
        self.bot_name = args.bot_name
        self.app_flags = 0
        self.snow = Snowflakes()
        seed = bytes.fromhex(args.key_seed) if args.key_seed else None
        if nacl is not None:
            self.signing_key = nacl.signing.SigningKey(seed) if seed else nacl.signing.SigningKey.generate()
            self.public_key_hex = self.signing_key.verify_key.encode().hex()
        else:
            self.signing_key = None
            self.public_key_hex = None
        self.checker = None
        self.spec_error = None
        try:
            self.checker = openapi_check.SpecChecker(args.spec)
        except (OSError, ValueError) as e:
            self.spec_error = str(e)
            log("warn", "no OpenAPI checking: %s", e)
        self.routes = build_routes()
        self.gateway = Gateway(self)
        self.rest = Rest(self)
        self.control = Control(self)
        self.started_mono = time.monotonic()
        self.guilds = {}
        self.channels = {}
        self.conns = {}
        self.sessions = {}
        self.conn_seq = 0
        self.withhold_acks = False
        self.reset_state(full=True)

    # -- the server

    def body_limits(self):
        n = int(self.cfg["max_request_bytes"])
        return n, 4 * n     # past 4 * the limit a body is not even read

    async def answer(self, req, reader, writer):
        if req.path in ("/gateway", "/gateway/") and "upgrade" in req.header("connection").lower():
            await self.gateway.serve(req, reader, writer)
            return False
        if req.path.startswith(API_PREFIX + "/"):
            status, headers, body = await self.rest.handle(req)
        elif req.path.startswith("/_sim/"):
            status, headers, body = await self.control.handle(req)
        else:
            status, headers, body = 404, [("Content-Type", "application/json")], \
                b'{"message": "404: Not Found", "code": 0}'
        close = req.too_large and not req.body or req.header("connection").lower() == "close" \
            or req.version == "HTTP/1.0"
        await simhttp.send(writer, status, headers, body, close)
        return not close

    def started(self):
        self.housekeeper = asyncio.get_running_loop().create_task(self.housekeeping())
        log("info", "listening on 127.0.0.1:%d, application %s, spec %s", self.port, self.app_id,
            self.checker.path if self.checker else "not loaded")

    def stopping(self):
        log("info", "stopping")
        self.housekeeper.cancel()

    def close_connections(self):
        for c in list(self.conns.values()):
            c.close(1001, "simulator stopping")

    # -- state

    def reset_state(self, full=False, config=True):
        if config or full:
            self.cfg = copy.deepcopy(DEFAULT_CONFIG)
        self.log_entries = collections.deque()
        self.log_seq = 0
        self.stats = collections.Counter()
        self.by_status = collections.Counter()
        self.by_route = collections.Counter()
        self.invalid = collections.Counter()
        self.spec_violations = []
        self.protocol_violations = []
        self.response_violations = []
        self.exhausted = []
        self.stats_gw = collections.Counter()
        self.closes = []
        self.by_token = collections.defaultdict(collections.Counter)
        self.identify_log = []
        self.identify_mono = {}
        self.identifies_used = 0
        self.remaining_base = 0
        self.buckets = {}
        self.global_window = [0.0, 0]
        self.faults = []
        self.fault_seq = 0
        self.interactions = {}
        self.tokens = {}
        self.messages = {}
        self.channel_msgs = collections.defaultdict(list)
        self.commands = {}
        self.command_puts = collections.Counter()
        self.files = collections.OrderedDict()
        self.files_bytes = 0
        FILE_SHA256.clear()
        self.withhold_acks = False

    def rate_limit(self, name):
        over = self.cfg["rate_limits"].get(name)
        lim, win = DEFAULT_RATE_LIMITS.get(name, (10, 1.0))
        if over:
            lim, win = over.get("limit", lim), over.get("window_s", win)
        return int(lim), float(win)

    def token_matches(self, token):
        return secrets.compare_digest(token.encode(), self.token.encode())

    def session_start_remaining(self):
        if self.cfg["session_start_remaining"] is not None:
            used = self.identifies_used - self.remaining_base
            return max(0, int(self.cfg["session_start_remaining"]) - used)
        return max(0, int(self.cfg["session_start_total"]) - self.identifies_used)

    def gateway_url(self):
        return "ws://127.0.0.1:%d/gateway" % self.port

    def api_base(self):
        return "http://127.0.0.1:%d%s" % (self.port, API_PREFIX)

    def bot_user(self):
        return {"id": self.bot_user_id, "username": self.bot_name, "discriminator": "0",
                "global_name": None, "avatar": None, "bot": True, "public_flags": 0, "flags": 0,
                "primary_guild": None}

    def bot_user_full(self):
        u = self.bot_user()
        u.update({"verified": True, "mfa_enabled": False, "locale": "en-US", "email": None,
                  "premium_type": 0, "banner": None, "accent_color": None})
        return u

    # -- guilds and channels

    def add_guild(self, g):
        gid = str(g["id"])
        guild = self.guilds.get(gid) or {"id": gid, "channels": []}
        guild["name"] = g.get("name", guild.get("name", "guild " + gid))
        guild["joined_at"] = guild.get("joined_at") or iso_now()
        self.guilds[gid] = guild
        for ch in g.get("channels", ()):
            self.add_channel(gid, ch, dispatch=False)
        return guild

    def add_channel(self, guild_id, ch, dispatch=True):
        cid = str(ch["id"])
        ctype = int(ch.get("type", 0))
        chan = {"id": cid, "type": ctype, "name": ch.get("name", "channel-" + cid[-4:]),
                "guild_id": guild_id, "position": int(ch.get("position", len(self.channels))),
                "flags": 0, "parent_id": ch.get("parent_id"), "permission_overwrites": [],
                "nsfw": bool(ch.get("nsfw", False)), "rate_limit_per_user": 0,
                "last_message_id": None, "topic": ch.get("topic")}
        if ctype in (10, 11, 12):
            chan.update({"owner_id": ch.get("owner_id", self.bot_user_id), "message_count": 0,
                         "member_count": 1, "total_message_sent": 0,
                         "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                             "archive_timestamp": iso_now(), "locked": False}})
            chan.pop("permission_overwrites")
            chan.pop("topic")
        new = cid not in self.channels
        self.channels[cid] = chan
        if guild_id is not None:
            g = self.guilds.get(guild_id) or self.add_guild({"id": guild_id})
            g["channels"] = [c for c in g["channels"] if c != cid] + [cid]
        if dispatch and guild_id is not None:
            t = ("THREAD_CREATE" if ctype in (10, 11, 12) else "CHANNEL_CREATE") if new else \
                ("THREAD_UPDATE" if ctype in (10, 11, 12) else "CHANNEL_UPDATE")
            self.dispatch(t, dict(chan), guild_id=guild_id)
        return chan

    def ensure_channel(self, channel_id, guild_id):
        """Channels named by a test but never registered get a stub, so the
        bot's answers to them do not fail with Unknown Channel."""
        if channel_id is None:
            return None
        cid = str(channel_id)
        if cid in self.channels:
            return self.channels[cid]
        if guild_id is not None and str(guild_id) not in self.guilds:
            self.add_guild({"id": str(guild_id)})
        if guild_id is None:
            chan = {"id": cid, "type": 1, "last_message_id": None, "flags": 0,
                    "recipients": [], "name": None}
            self.channels[cid] = chan
            return chan
        return self.add_channel(str(guild_id), {"id": cid, "type": 0}, dispatch=False)

    def guild_create_payload(self, g):
        chans, threads = [], []
        for cid in g["channels"]:
            c = dict(self.channels[cid])
            c.pop("guild_id", None)
            (threads if c["type"] in (10, 11, 12) else chans).append(c)
        return {
            "id": g["id"], "name": g["name"], "icon": None, "owner_id": "1", "unavailable": False,
            "joined_at": g["joined_at"], "large": False, "member_count": 2, "channels": chans,
            "threads": threads, "members": [], "roles": [{"id": g["id"], "name": "@everyone",
                                                          "permissions": "1071698660929", "position": 0,
                                                          "color": 0, "hoist": False, "managed": False,
                                                          "mentionable": False, "flags": 0}],
            "emojis": [], "stickers": [], "features": [], "voice_states": [], "presences": [],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
            "preferred_locale": "en-US", "premium_tier": 0, "system_channel_id": None,
            "application_id": None, "afk_channel_id": None, "afk_timeout": 300, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0,
            "nsfw_level": 0, "description": None, "banner": None, "splash": None,
            "discovery_splash": None, "vanity_url_code": None, "premium_subscription_count": 0,
            "max_members": 500000, "rules_channel_id": None, "public_updates_channel_id": None,
            "safety_alerts_channel_id": None, "nsfw": False, "lazy": True,
        }

    # -- dispatching

    def in_shard(self, s, guild_id):
        sid, num = s.shard
        if guild_id is None:
            return sid == 0
        return (int(guild_id) >> 22) % num == sid

    def active_sessions(self):
        return [s for s in self.sessions.values() if s.state == "active"]

    def dispatch(self, t, d, guild_id=None, filter_intents=True):
        """Send (or buffer) an event to every live session it is meant for.
        Returns the session ids that got it."""
        got = []
        for s in self.active_sessions():
            if not self.in_shard(s, guild_id):
                continue
            payload = self.intent_view(s, t, d, guild_id) if filter_intents else d
            if payload is None:
                continue
            self.dispatch_to(s, t, payload)
            got.append(s.id)
        return got

    def intent_view(self, s, t, d, guild_id):
        """What a session with its intents sees of an event, or None."""
        it = s.intents
        if t.startswith("MESSAGE_"):
            need = INTENT_GUILD_MESSAGES if guild_id else INTENT_DIRECT_MESSAGES
            if not it & need:
                return None
            if t in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and guild_id and not it & INTENT_MESSAGE_CONTENT:
                author = (d.get("author") or {}).get("id")
                mentioned = any(m.get("id") == self.bot_user_id for m in d.get("mentions") or ())
                if author != self.bot_user_id and not mentioned:
                    d = dict(d, content="", embeds=[], attachments=[], components=[])
                    d.pop("poll", None)
            return d
        if t == "TYPING_START":
            need = INTENT_GUILD_MESSAGE_TYPING if guild_id else INTENT_DIRECT_MESSAGE_TYPING
            return d if it & need else None
        if t.startswith(("CHANNEL_", "THREAD_", "GUILD_ROLE_")) or t in ("GUILD_UPDATE", "GUILD_DELETE"):
            return d if it & INTENT_GUILDS else None
        return d

    def dispatch_to(self, s, t, d):
        s.seq += 1
        text = jdump({"op": 0, "t": t, "s": s.seq, "d": d})
        s.buffer.append((s.seq, text))
        s.dispatched += 1
        if s.conn is not None and not s.conn.closed:
            s.conn.send(text)
        else:
            s.buffered_while_detached += 1
        return s.seq

    def gw_closed(self, conn, code, reason, by):
        self.closes.append({"conn_id": conn.id, "code": code, "reason": reason, "by": by,
                            "at": time.time(), "session_id": conn.session.id if conn.session else None})
        del self.closes[:-500]
        self.stats_gw["closes_%s_%s" % (by, code)] += 1
        s = conn.session
        conn.session = None
        if s is None:
            return
        if s.conn is conn:
            s.conn = None
            s.detached_mono = time.monotonic()
            s.detached_at = time.time()
        if by == "client" and code in (1000, 1001):
            s.end_session("client closed with %d" % code)
        elif by == "server" and code in CLOSE_ENDS_SESSION:
            s.end_session("server closed with %d" % code)

    async def housekeeping(self):
        """Expire detached sessions; close connections that stopped beating."""
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            ttl = float(self.cfg["session_resume_ttl_s"])
            for s in list(self.sessions.values()):
                if s.state == "active" and s.conn is None and s.detached_mono is not None \
                        and now - s.detached_mono > ttl:
                    s.end_session("expired", state="expired")
            ended = [s for s in self.sessions.values() if s.state != "active"]
            for s in ended[:-200]:
                del self.sessions[s.id]
            factor = float(self.cfg["heartbeat_timeout_factor"])
            if factor > 0:
                limit = self.cfg["heartbeat_interval_ms"] / 1000.0 * factor + 1.0
                for c in list(self.conns.values()):
                    if c.closed or c.hello_mono is None:
                        continue
                    last = c.last_heartbeat_mono or c.hello_mono
                    if now - last > limit:
                        c.violations.append("no heartbeat for %.1f s" % (now - last))
                        self.stats_gw["heartbeat_timeouts"] += 1
                        # The connection is dead, the session is not: a
                        # zombie's successor resumes it.
                        c.close(4000, "Heartbeat timed out.")
            closed = [cid for cid, c in self.conns.items() if c.closed]
            for cid in closed[:-500]:
                del self.conns[cid]

    # -- files

    def store_file(self, filename, data, content_type=None):
        fid = self.snow.next()
        cap = int(self.cfg["keep_file_bytes"])
        self.files[fid] = (filename, data, content_type)
        self.files_bytes += len(data)
        while self.files_bytes > cap and self.files:
            _k, (_f, d, _c) = self.files.popitem(last=False)
            self.files_bytes -= len(d)
        url = "http://127.0.0.1:%d/_sim/files/%s/%s" % (self.port, fid, urllib.parse.quote(filename))
        return fid, url

    # ---------------------------------------------------------------- messages

    def new_message(self, channel_id, author, body, files, msg_type=0, extra=None):
        chan = self.channels.get(channel_id, {})
        mid = self.snow.next()
        obj = {
            "id": mid, "type": msg_type, "channel_id": channel_id, "author": author,
            "content": body.get("content") or "", "embeds": self.embeds_out(body.get("embeds")),
            "attachments": self.attachments_out(body.get("attachments"), files, []),
            "mentions": [], "mention_roles": [], "mention_everyone": False, "pinned": False,
            "tts": bool(body.get("tts")), "timestamp": iso_now(), "edited_timestamp": None,
            "flags": int(body.get("flags") or 0) & ~FLAG_LOADING, "components": body.get("components") or [],
        }
        if chan.get("guild_id"):
            obj["guild_id"] = chan["guild_id"]
        if isinstance(body.get("message_reference"), dict):
            ref = dict(body["message_reference"])
            ref.setdefault("channel_id", channel_id)
            ref.setdefault("type", 0)
            obj["message_reference"] = ref
            obj["type"] = 19 if msg_type == 0 else msg_type
        if body.get("nonce") is not None:
            obj["nonce"] = body["nonce"]
        if body.get("poll"):
            obj["poll"] = body["poll"]
        if extra:
            obj.update(extra)
        if chan:
            chan["last_message_id"] = mid
        return obj

    @staticmethod
    def embeds_out(embeds):
        out = []
        for e in embeds or ():
            if isinstance(e, dict):
                # What Discord stores: a type, and every field with its inline flag.
                e = {k: v for k, v in e.items() if v is not None}
                e.setdefault("type", "rich")
                if isinstance(e.get("fields"), list):
                    e["fields"] = [dict({"inline": False}, **f) if isinstance(f, dict) else f
                                   for f in e["fields"]]
                out.append(e)
        return out

    def attachments_out(self, spec, files, existing):
        """Attachment objects for a message: uploaded files (matched to the
        payload's attachments entries by id = n of files[n]) plus the
        existing attachments the payload keeps by id."""
        spec = spec if isinstance(spec, list) else None
        by_n = {}
        for f in files:
            m = re.match(r"^files\[(\d+)\]$", f["name"])
            if m:
                by_n[m.group(1)] = f
        out = []
        kept = {str(a.get("id")) for a in spec or () if isinstance(a, dict)}
        for a in existing:
            if spec is None or a["id"] in kept:
                out.append(a)
        used = set()
        for entry in spec or ():
            if not isinstance(entry, dict):
                continue
            f = by_n.get(str(entry.get("id")))
            if f is None:
                continue
            used.add(str(entry.get("id")))
            out.append(self.attachment_obj(f, entry))
        for n, f in sorted(by_n.items(), key=lambda kv: int(kv[0])):
            if n not in used:
                out.append(self.attachment_obj(f, {}))
        return out

    def attachment_obj(self, f, entry):
        filename = entry.get("filename") or f.get("filename") or "file"
        fid, url = self.store_file(filename, f["data"], f.get("content_type"))
        a = {"id": fid, "filename": filename, "size": len(f["data"]), "url": url, "proxy_url": url}
        FILE_SHA256[fid] = hashlib.sha256(f["data"]).hexdigest()
        if f.get("content_type"):
            a["content_type"] = f["content_type"]
        for k in ("description", "duration_secs", "waveform", "title"):
            if entry.get(k) is not None:
                a[k] = entry[k]
        return a

    def check_message_body(self, body, creating, files, prefix=""):
        """Discord's own answers to bad message bodies."""
        errs = []
        content = body.get("content")
        maxc = int(self.cfg["max_content_chars"])
        if isinstance(content, str) and len(content) > maxc:
            errs.append((prefix + "/content", "BASE_TYPE_MAX_LENGTH", "Must be %d or fewer in length." % maxc))
        embeds = body.get("embeds")
        if isinstance(embeds, list):
            if len(embeds) > 10:
                errs.append((prefix + "/embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."))
            for i, e in enumerate(embeds):
                if isinstance(e, dict) and isinstance(e.get("description"), str) and len(e["description"]) > 4096:
                    errs.append((prefix + "/embeds/%d/description" % i, "BASE_TYPE_MAX_LENGTH",
                                 "Must be 4096 or fewer in length."))
            if any("embeds hold" in prob for _ptr, prob in openapi_check.docs_rules(
                    "POST", "/channels/{channel_id}/messages", {"embeds": embeds})):
                errs.append((prefix + "/embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"))
        if errs:
            raise invalid_form(errs)
        if creating and not (content or embeds or files or body.get("sticker_ids")
                             or body.get("components") or body.get("poll")):
            raise ApiError(400, 50006, "Cannot send an empty message")

    def record_message(self, obj, by_bot, source, interaction_id=None):
        rec = MsgRec(obj, by_bot, source, interaction_id)
        self.messages[obj["id"]] = rec
        self.channel_msgs[obj["channel_id"]].append(obj["id"])
        return rec

    def edit_message(self, rec, body, files):
        if rec.obj.get("flags", 0) & FLAG_VOICE_MESSAGE:
            raise invalid_form([("/content", "VOICE_MESSAGES_CANNOT_BE_EDITED", "Voice messages cannot be edited.")])
        self.check_message_body(body, False, files)
        o = rec.obj
        if "content" in body:
            o["content"] = body["content"] or ""
        if "embeds" in body:
            o["embeds"] = self.embeds_out(body["embeds"])
        if "components" in body:
            o["components"] = body["components"] or []
        if "flags" in body and body["flags"] is not None:
            o["flags"] = (o.get("flags", 0) & FLAG_EPHEMERAL) | int(body["flags"])
        if "attachments" in body or files:
            o["attachments"] = self.attachments_out(body.get("attachments"), files, o.get("attachments", []))
        o["flags"] = o.get("flags", 0) & ~FLAG_LOADING
        o["edited_timestamp"] = iso_now()
        edit = {"at": time.time()}
        edit.update(rec.snapshot())
        rec.edits.append(edit)
        return o

    # ----------------------------------------------------------- interactions

    def create_interaction(self, p):
        kind = int(p.get("type", 2))
        guild_id = str(p["guild_id"]) if p.get("guild_id") else None
        chan = None
        channel_id = p.get("channel_id")
        if channel_id is None and guild_id and self.guilds.get(guild_id, {}).get("channels"):
            channel_id = self.guilds[guild_id]["channels"][0]
        if channel_id is None:
            channel_id = self.snow.next()
        chan = self.ensure_channel(str(channel_id), guild_id)
        user = {"id": "100000000000000001", "username": "tester", "discriminator": "0",
                "global_name": None, "avatar": None, "public_flags": 0, "flags": 0, "primary_guild": None}
        user.update(p.get("user") or {})
        user["id"] = str(user["id"])
        iid = self.snow.next()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        payload = {
            "id": iid, "application_id": self.app_id, "type": kind, "token": token, "version": 1,
            "channel_id": chan["id"], "channel": {k: v for k, v in chan.items() if k != "recipients"},
            "locale": p.get("locale", "en-US"), "app_permissions": str(p.get("app_permissions",
                                                                              self.cfg["app_permissions"])),
            "entitlements": [], "attachment_size_limit": int(self.cfg["attachment_size_limit"]),
            "authorizing_integration_owners": {"0": guild_id} if guild_id else {"1": user["id"]},
            "context": int(p.get("context", 0 if guild_id else 1)),
        }
        if guild_id:
            payload["guild_id"] = guild_id
            payload["guild_locale"] = p.get("guild_locale", "en-US")
            payload["guild"] = {"id": guild_id, "locale": payload["guild_locale"], "features": []}
            payload["member"] = {"user": user, "roles": [str(r) for r in p.get("roles", ())],
                                 "permissions": str(p.get("permissions", "1071698660929")),
                                 "joined_at": iso_now(self.started_at), "nick": None, "avatar": None,
                                 "deaf": False, "mute": False, "flags": 0, "pending": False,
                                 "premium_since": None, "communication_disabled_until": None}
        else:
            payload["user"] = user
        if kind in (2, 4):
            payload["data"] = self.command_data(p, guild_id)
        elif kind == 3:
            payload["data"] = dict({"custom_id": p.get("custom_id", "button"),
                                    "component_type": int(p.get("component_type", 2))}, **(p.get("data") or {}))
        elif kind == 5:
            payload["data"] = dict({"custom_id": p.get("custom_id", "modal"), "components": []},
                                   **(p.get("data") or {}))
        if kind in (3, 5):
            mid = p.get("message_id")
            rec = self.messages.get(str(mid)) if mid else None
            if rec:
                payload["message"] = rec.obj
            elif p.get("message"):
                payload["message"] = p["message"]
        it = Interaction(self, kind, payload, p.get("deliver", "gateway"))
        if kind in (3, 5) and payload.get("message"):
            it.component_message = str(payload["message"].get("id"))
        self.interactions[iid] = it
        self.tokens[token] = it
        self.stats["interactions_created"] += 1
        return it

    def command_data(self, p, guild_id):
        name = p.get("name", "ping")
        ctype = int(p.get("command_type", 1))
        cmd_id = None
        for scope in (guild_id, None):
            for c in self.commands.get(scope, ()):
                if c["name"] == name and c["type"] == ctype:
                    cmd_id = c["id"]
                    break
            if cmd_id:
                break
        data = {"id": cmd_id or self.snow.next(), "name": name, "type": ctype}
        options = [dict(o) for o in p.get("options") or ()]
        resolved = copy.deepcopy(p.get("resolved") or {})
        for a in p.get("attachments") or ():
            raw = base64.b64decode(a["data_b64"]) if a.get("data_b64") else \
                bytes(i & 0xFF for i in range(int(a.get("size", 16))))
            filename = a.get("filename", "file.bin")
            fid, url = self.store_file(filename, raw, a.get("content_type"))
            att = {"id": fid, "filename": filename, "size": len(raw), "url": url, "proxy_url": url,
                   "ephemeral": True}
            if a.get("content_type"):
                att["content_type"] = a["content_type"]
            for k in ("width", "height", "duration_secs", "waveform"):
                if k in a:
                    att[k] = a[k]
            resolved.setdefault("attachments", {})[fid] = att
            if a.get("name") and not any(o.get("name") == a["name"] for o in options):
                options.append({"name": a["name"], "type": 11, "value": fid})
        if options:
            data["options"] = options
        if resolved:
            data["resolved"] = resolved
        if guild_id:
            data["guild_id"] = guild_id
        for k, v in (p.get("data") or {}).items():
            data[k] = v
        return data

    def sign(self, body_bytes, timestamp):
        return self.signing_key.sign(timestamp.encode() + body_bytes).signature.hex()

    def ack(self, it, cb_type, data, files, via):
        """Apply a first interaction answer (callback route or HTTP reply)."""
        data = data if isinstance(data, dict) else {}
        flags = int(data.get("flags") or 0)
        it.acked = {"type": cb_type, "flags": flags, "at": time.time(),
                    "after_ms": round(it.age() * 1000, 1), "via": via}
        self.stats["interactions_acked"] += 1
        author = self.bot_user()
        extra = {"webhook_id": self.app_id, "application_id": self.app_id}
        chan = it.payload["channel_id"]
        if cb_type == 4:
            obj = self.new_message(chan, author, data, files, 20 if it.type == 2 else 0, extra)
            obj["flags"] = flags & (FLAG_EPHEMERAL | 4 | 4096)
            rec = self.record_message(obj, True, "interaction_original", it.id)
            it.original = rec.obj["id"]
            return rec.obj
        if cb_type == 5:
            obj = self.new_message(chan, author, {}, [], 20 if it.type == 2 else 0, extra)
            obj["flags"] = (flags & FLAG_EPHEMERAL) | FLAG_LOADING
            rec = self.record_message(obj, True, "interaction_original", it.id)
            it.original = rec.obj["id"]
            return rec.obj
        if cb_type == 7 and it.component_message in self.messages:
            rec = self.messages[it.component_message]
            self.edit_message(rec, data, files)
            it.original = rec.obj["id"]
            return rec.obj
        if cb_type == 6 and it.component_message in self.messages:
            it.original = it.component_message
        return None

    def interaction_info(self, it, full=True):
        d = {"id": it.id, "token": it.token, "type": it.type, "deliver": it.deliver,
             "name": (it.payload.get("data") or {}).get("name"),
             "guild_id": it.payload.get("guild_id"), "channel_id": it.payload.get("channel_id"),
             "created_at": it.created_at, "age_s": round(it.age(), 3), "acked": it.acked,
             "original": self.messages[it.original].info() if it.original in self.messages else None,
             "followups": [self.messages[m].info() for m in it.followups if m in self.messages],
             "errors": it.errors, "requests": it.requests}
        if it.http is not None:
            d["http"] = it.http
        if full:
            d["payload"] = it.payload
        return d


# ----------------------------------------------------------------------------
# REST


RATE_LIMITED = "You are being rate limited."


class Rest:
    def __init__(self, sim):
        self.sim = sim

    def match(self, method, path):
        other_method = False
        for r in self.sim.routes:
            m = r.regex.match(path)
            if m:
                if r.method == method:
                    return r, m.groupdict(), False
                other_method = True
        return None, None, other_method

    async def handle(self, req):
        """(status, headers, body bytes) for one /api/v10 request."""
        sim, cfg = self.sim, self.sim.cfg
        t0 = time.monotonic()
        sub = req.path[len(API_PREFIX):] or "/"
        sim.log_seq += 1
        auth = req.header("authorization")
        entry = {
            "seq": sim.log_seq, "time": time.time(), "method": req.method, "path": sub,
            "query": req.query, "route": None, "bucket": None,
            "major": None, "has_bot_auth": bool(auth and auth.startswith("Bot ")),
            "auth_ok": bool(auth) and secrets.compare_digest(auth.encode(), ("Bot " + sim.token).encode()),
            "user_agent": req.header("user-agent", None), "content_type": req.header("content-type", None),
            "json": None, "files": [], "body_size": len(req.body), "status": None, "code": None,
            "violations": [],
        }
        sim.log_entries.append(entry)
        while len(sim.log_entries) > int(cfg["log_max_entries"]):
            sim.log_entries.popleft()
        sim.stats["requests"] += 1
        route, params, other = self.match(req.method, sub)
        if route:
            entry["route"] = route.key
            entry["bucket"] = route.bucket_hash
            entry["major"] = "/".join(params[k][:12] if k.endswith("token") else params[k]
                                      for k in route.major) or None
            sim.by_route[route.key] += 1
        ctx = RestCtx(req, route, params or {}, None, [], entry)
        ctx.interaction = None
        headers = []
        try:
            status, body, headers = await self.process(ctx, sub, other)
        except ApiError as e:
            status, body, headers = e.status, e.body(), (e.headers or headers)
            if ctx.interaction is not None:
                ctx.interaction.errors.append({"at": time.time(), "route": entry["route"], "status": e.status,
                                               "code": e.code, "message": e.message, "seq": entry["seq"]})
        except Exception:
            import traceback
            log("error", "REST handler crashed:\n%s", traceback.format_exc())
            sim.stats["sim_errors"] += 1
            status, body, headers = 500, {"message": "500: Internal Server Error", "code": 0}, []
        entry["status"] = status
        entry["code"] = body.get("code") if isinstance(body, dict) else None
        entry["duration_ms"] = round((time.monotonic() - t0) * 1000, 2)
        sim.by_status[str(status)] += 1
        if status in (401, 403) or (status == 429 and ("X-RateLimit-Scope", "shared") not in headers):
            sim.invalid[str(status)] += 1
        if cfg["check_responses"] and sim.checker is not None and route is not None and not entry.get("fault"):
            for v in sim.checker.check_response(req.method, sub, status,
                                                body if body is not None else openapi_check._MISSING):
                v["seq"] = entry["seq"]
                if len(sim.response_violations) < 1000:
                    sim.response_violations.append(v)
        if isinstance(body, (bytes, str)):
            raw = body.encode() if isinstance(body, str) else body
            ctype = "text/html" if isinstance(body, str) else "application/octet-stream"
        else:
            raw = jdump(body).encode() if body is not None else b""
            ctype = "application/json"
        out = list(headers)
        if status != 204:
            out.append(("Content-Type", ctype))
        return status, out, raw

    def violation(self, entry, kind, problem, pointer=""):
        v = {"kind": kind, "method": entry["method"], "path": entry["path"], "route": entry["route"],
             "pointer": pointer, "problem": problem, "seq": entry["seq"]}
        entry["violations"].append(v)
        self.sim.stats["protocol_violations"] += 1
        if len(self.sim.protocol_violations) < 2000:
            self.sim.protocol_violations.append(v)

    def parse_body(self, ctx):
        """Fill ctx.body / ctx.files from the request body."""
        req, entry, cfg = ctx.req, ctx.entry, self.sim.cfg
        ctype, cparams = parse_content_type(req.header("content-type"))
        ctx.ctype = ctype
        ctx.parts = None
        if not req.body:
            return openapi_check._MISSING
        if ctype is None:
            self.violation(entry, "content_type", "a body without a Content-Type")
        if ctype == "multipart/form-data":
            try:
                parts = parse_multipart(req.body, cparams.get("boundary"))
            except ValueError as e:
                raise ApiError(400, 50035, "Invalid Form Body",
                               {"_errors": [{"code": "MULTIPART_INVALID", "message": str(e)}]})
            ctx.parts = [{"name": p["name"], "filename": p["filename"], "size": len(p["data"])} for p in parts]
            payload = openapi_check._MISSING
            for p in parts:
                if p["name"] == "payload_json":
                    try:
                        payload = json.loads(p["data"].decode("utf-8"))
                    except (ValueError, UnicodeDecodeError):
                        raise ApiError(400, 50109, "The request body contains invalid JSON.")
                elif p["filename"] is not None or p["name"].startswith("files["):
                    ctx.files.append(p)
                    entry["files"].append({"field": p["name"], "filename": p["filename"], "size": len(p["data"]),
                                           "content_type": p["content_type"],
                                           "sha256": hashlib.sha256(p["data"]).hexdigest()})
            if payload is openapi_check._MISSING:
                payload = {}  # files alone are a valid message
            entry["json"] = payload
            for f in ctx.files:
                if len(f["data"]) > int(cfg["max_file_bytes"]):
                    raise ApiError(413, 40005, "Request entity too large")
            return payload
        try:
            body = json.loads(req.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, 50109, "The request body contains invalid JSON.")
        entry["json"] = body
        return body

    async def process(self, ctx, sub, other_method):
        sim, cfg, req, entry, route = self.sim, self.sim.cfg, ctx.req, ctx.entry, ctx.route
        if req.too_large:
            raise ApiError(413, 40005, "Request entity too large")
        ua = req.header("user-agent") or ""
        if not ua.startswith("DiscordBot ("):
            self.violation(entry, "user_agent", "User-Agent %r does not start with 'DiscordBot ('" % ua[:80])
        body = self.parse_body(ctx)
        ctx.body = None if body is openapi_check._MISSING else body
        if sim.checker is not None:
            vs = sim.checker.check_request(req.method, sub, req.query_all, ctx.ctype, body, ctx.parts)
            for v in vs:
                v["seq"] = entry["seq"]
                entry["violations"].append(v)
                sim.stats["spec_violations"] += 1
                if len(sim.spec_violations) < 2000:
                    sim.spec_violations.append(v)
        if route is None:
            if other_method:
                raise ApiError(405, 0, "405: Method Not Allowed")
            raise ApiError(404, 0, "404: Not Found")
        fault = self.take_fault(req.method, sub)
        if fault is not None:
            entry["fault"] = fault["id"]
            sim.stats["faults_served"] += 1
            if fault.get("delay_s"):
                await asyncio.sleep(float(fault["delay_s"]))
            if fault.get("status"):
                return self.fault_answer(fault, route)
        if route.auth == "bot" and not entry["auth_ok"]:
            raise ApiError(401, 0, "401: Unauthorized")
        now = time.monotonic()
        if not route.global_exempt:
            self.check_global(now, entry)
        headers = self.take_bucket(route, ctx.params, now, entry)
        try:
            if cfg["reject_spec_violations"]:
                bad = [v for v in entry["violations"] if v["kind"] in ("schema", "docs")]
                if bad:
                    raise invalid_form([(v["pointer"], "SPEC_VIOLATION", v["problem"]) for v in bad])
            res = getattr(self, "h_" + route.handler)(ctx)
        except ApiError as e:
            e.headers = headers + e.headers
            raise
        status, rbody = res[0], res[1]
        return status, rbody, headers + (res[2] if len(res) > 2 else [])

    # -- rate limits

    def check_global(self, now, entry):
        sim, cfg = self.sim, self.sim.cfg
        gw = sim.global_window
        win, limit = float(cfg["global_window_s"]), int(cfg["global_limit"])
        if now >= gw[0] + win:
            gw[0], gw[1] = now, 0
        if gw[1] >= limit:
            sim.stats["global_limit_hits"] += 1
            retry = max(0.001, gw[0] + win - now)
            entry["rate_limited"] = "global"
            raise ApiError(429, 0, RATE_LIMITED, headers=[
                ("Retry-After", str(max(1, math.ceil(retry)))), ("X-RateLimit-Global", "true"),
                ("X-RateLimit-Scope", "global")]).with_body(retry_after=round(retry, 3), is_global=True)
        gw[1] += 1

    def bucket_headers(self, route, b, now):
        after = max(0.0, b.reset_mono - now)
        return [("X-RateLimit-Limit", str(b.limit)), ("X-RateLimit-Remaining", str(b.remaining)),
                ("X-RateLimit-Reset", "%.3f" % (time.time() + after)),
                ("X-RateLimit-Reset-After", "%.3f" % after), ("X-RateLimit-Bucket", route.bucket_hash)]

    def take_bucket(self, route, params, now, entry):
        sim = self.sim
        limit, window = sim.rate_limit(route.bucket_name)
        key = (route.bucket_hash, tuple(params[k] for k in route.major))
        b = sim.buckets.get(key)
        if b is None or now >= b.reset_mono:
            b = Bucket(limit, window, now)
            sim.buckets[key] = b
        if b.remaining <= 0:
            sim.stats["exhausted_bucket_hits"] += 1
            retry = max(0.001, b.reset_mono - now)
            entry["rate_limited"] = "bucket"
            if len(sim.exhausted) < 1000:
                sim.exhausted.append({"seq": entry["seq"], "route": route.key, "bucket": route.bucket_hash,
                                      "major": entry["major"], "at": time.time(),
                                      "retry_after": round(retry, 3)})
            raise ApiError(429, 0, RATE_LIMITED, headers=self.bucket_headers(route, b, now) + [
                ("Retry-After", str(max(1, math.ceil(retry)))), ("X-RateLimit-Scope", "user")]
            ).with_body(retry_after=round(retry, 3), is_global=False)
        b.remaining -= 1
        return self.bucket_headers(route, b, now)

    # -- faults

    def take_fault(self, method, path):
        for f in self.sim.faults:
            if f["method"] not in ("*", method):
                continue
            if not f["rx"].search(path):
                continue
            f["remaining"] -= 1
            f["served"] += 1
            if f["remaining"] <= 0:
                self.sim.faults.remove(f)
            return f
        return None

    def fault_answer(self, f, route):
        status = int(f["status"])
        headers = []
        if status == 429:
            retry = float(f.get("retry_after", 1.0))
            is_global = bool(f.get("global"))
            scope = f.get("scope") or ("global" if is_global else "user")
            headers = [("Retry-After", str(max(1, math.ceil(retry)))), ("X-RateLimit-Scope", scope)]
            if is_global:
                headers.append(("X-RateLimit-Global", "true"))
            elif route is not None:
                headers += [("X-RateLimit-Limit", "1"), ("X-RateLimit-Remaining", "0"),
                            ("X-RateLimit-Reset", "%.3f" % (time.time() + retry)),
                            ("X-RateLimit-Reset-After", "%.3f" % retry),
                            ("X-RateLimit-Bucket", route.bucket_hash)]
            body = f.get("body") or {"message": RATE_LIMITED, "retry_after": retry, "global": is_global, "code": 0}
        else:
            body = f.get("body") or {"message": "%d: %s" % (status, simhttp.REASONS.get(status, "Error")), "code": 0}
        for k, v in (f.get("headers") or {}).items():
            headers.append((k, str(v)))
        return status, body, headers

    # -- handlers: meta

    def h_gateway_bot(self, ctx):
        sim = self.sim
        reset = max(0, int((sim.started_mono + 86400 - time.monotonic()) * 1000))
        return 200, {"url": sim.gateway_url(), "shards": 1, "session_start_limit": {
            "total": int(sim.cfg["session_start_total"]), "remaining": sim.session_start_remaining(),
            "reset_after": reset, "max_concurrency": int(sim.cfg["max_concurrency"])}}

    def h_gateway(self, ctx):
        return 200, {"url": self.sim.gateway_url()}

    def h_users_me(self, ctx):
        return 200, self.sim.bot_user_full()

    # -- commands

    def command_scope(self, ctx):
        sim = self.sim
        if ctx.params["application_id"] != sim.app_id:
            raise ApiError(403, 50001, "Missing Access")
        gid = ctx.params.get("guild_id")
        if gid is not None and gid not in sim.guilds:
            raise ApiError(403, 50001, "Missing Access")
        return gid

    def h_get_commands(self, ctx):
        return 200, self.sim.commands.get(self.command_scope(ctx), [])

    def h_put_commands(self, ctx):
        sim = self.sim
        scope = self.command_scope(ctx)
        body = ctx.body
        if body is None:
            body = []
        if not isinstance(body, list):
            raise invalid_form([("", "BASE_TYPE_ARRAY", "Must be an array.")])
        errs = []
        for i, c in enumerate(body):
            if not isinstance(c, dict) or not isinstance(c.get("name"), str):
                errs.append(("/%d/name" % i, "BASE_TYPE_REQUIRED", "This field is required"))
        # Discord checks command bodies strictly: schema problems are errors.
        for v in ctx.entry["violations"]:
            if v["kind"] == "schema":
                errs.append((v["pointer"], "BASE_TYPE_INVALID", v["problem"]))
        for ptr, prob in openapi_check.docs_rules("PUT", "/applications/{application_id}/commands", body):
            code = "APPLICATION_COMMAND_INVALID_NAME" if ptr.endswith("/name") else "APPLICATION_COMMAND_INVALID"
            errs.append((ptr, code, prob))
        if len(body) > 100:
            errs.append(("", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length."))
        if errs:
            raise invalid_form(errs)
        old = {(c["type"], c["name"]): c for c in sim.commands.get(scope, [])}
        out = []
        for c in body:
            ctype = int(c.get("type") or 1)
            prev = old.get((ctype, c["name"]))
            dmp = c.get("default_member_permissions")
            obj = {"id": prev["id"] if prev else sim.snow.next(), "application_id": sim.app_id,
                   "version": None, "default_member_permissions": None if dmp is None else str(dmp),
                   "type": ctype, "name": c["name"], "description": c.get("description") or "",
                   "dm_permission": c.get("dm_permission", True) if scope is None else None,
                   "contexts": c.get("contexts"), "integration_types": c.get("integration_types") or [0],
                   "nsfw": bool(c.get("nsfw", False))}
            for k in ("name_localizations", "description_localizations", "options"):
                if c.get(k) is not None:
                    obj[k] = c[k]
            if obj["dm_permission"] is None:
                del obj["dm_permission"]
            if scope is not None:
                obj["guild_id"] = scope
            same = prev is not None and {k: v for k, v in prev.items() if k != "version"} == \
                {k: v for k, v in obj.items() if k != "version"}
            obj["version"] = prev["version"] if same else sim.snow.next()
            if prev is None:
                sim.stats["command_creates"] += 1
            out.append(obj)
        sim.commands[scope] = out
        sim.command_puts["global" if scope is None else "guild:" + scope] += 1
        sim.stats["command_puts"] += 1
        return 200, out

    # -- interactions

    def h_callback(self, ctx):
        sim, cfg = self.sim, self.sim.cfg
        it = sim.interactions.get(ctx.params["interaction_id"])
        if it is None or not secrets.compare_digest(it.token.encode(),
                                                    ctx.params["interaction_token"].encode()):
            raise ApiError(404, 10062, "Unknown interaction")
        ctx.interaction = it
        ctx.entry["interaction_id"] = it.id
        it.requests.append(ctx.entry["seq"])
        if it.acked is not None:
            sim.stats["double_acks"] += 1
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if it.age() > float(cfg["ack_window_s"]):
            sim.stats["late_acks"] += 1
            raise ApiError(404, 10062, "Unknown interaction")
        body = ctx.body
        if not isinstance(body, dict):
            raise invalid_form([("/type", "BASE_TYPE_REQUIRED", "This field is required")])
        cb = body.get("type")
        allowed = {1: (1,), 2: (4, 5, 9), 3: (4, 5, 6, 7, 9), 4: (8,), 5: (4, 5, 6, 7)}.get(it.type, ())
        if cb not in allowed:
            raise invalid_form([("/type", "BASE_TYPE_CHOICES",
                                 "Value must be one of %s." % ", ".join(map(str, allowed)))])
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        if cb in (4, 7):
            sim.check_message_body(data, cb == 4, ctx.files, "/data")
        msg = sim.ack(it, cb, data, ctx.files, "callback")
        wr = (ctx.q("with_response") or "").lower() in ("true", "1")
        if not wr:
            return 204, None
        inter = {"id": it.id, "type": it.type, "channel_id": it.payload["channel_id"]}
        if it.payload.get("guild_id"):
            inter["guild_id"] = it.payload["guild_id"]
        if msg is not None:
            inter.update({"response_message_id": msg["id"], "response_message_loading": cb == 5,
                          "response_message_ephemeral": bool(msg.get("flags", 0) & FLAG_EPHEMERAL)})
        out = {"interaction": inter}
        # Only a message that exists now is a resource (not a deferred one).
        if msg is not None and cb in (4, 7):
            out["resource"] = {"type": cb, "message": msg}
        return 200, out

    def wh_interaction(self, ctx):
        sim = self.sim
        if ctx.params["webhook_id"] != sim.app_id:
            raise ApiError(404, 10015, "Unknown Webhook")
        it = sim.tokens.get(ctx.params["webhook_token"])
        if it is None:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        ctx.interaction = it
        ctx.entry["interaction_id"] = it.id
        it.requests.append(ctx.entry["seq"])
        if it.age() > float(sim.cfg["token_ttl_s"]):
            sim.stats["expired_token_uses"] += 1
            raise ApiError(401, 50027, "Invalid Webhook Token")
        return it

    def wh_message(self, ctx, it):
        mid = ctx.params.get("message_id")
        if mid is None:
            mid = it.original
        elif mid != it.original and mid not in it.followups:
            mid = None
        rec = self.sim.messages.get(mid) if mid else None
        if rec is None or rec.deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return rec

    def h_wh_get(self, ctx):
        return 200, self.wh_message(ctx, self.wh_interaction(ctx)).obj

    def h_wh_patch(self, ctx):
        it = self.wh_interaction(ctx)
        rec = self.wh_message(ctx, it)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        return 200, self.sim.edit_message(rec, body, ctx.files)

    def h_wh_delete(self, ctx):
        rec = self.wh_message(ctx, self.wh_interaction(ctx))
        rec.deleted, rec.deleted_at = True, time.time()
        return 204, None

    def h_wh_followup(self, ctx):
        sim = self.sim
        it = self.wh_interaction(ctx)
        if it.acked is None:
            raise ApiError(404, 10015, "Unknown Webhook")
        body = ctx.body if isinstance(ctx.body, dict) else {}
        sim.check_message_body(body, True, ctx.files)
        obj = sim.new_message(it.payload["channel_id"], sim.bot_user(), body, ctx.files, 0,
                              {"webhook_id": sim.app_id, "application_id": sim.app_id})
        obj["flags"] = int(body.get("flags") or 0) & (FLAG_EPHEMERAL | 4 | 4096 | FLAG_VOICE_MESSAGE)
        rec = sim.record_message(obj, True, "followup", it.id)
        it.followups.append(obj["id"])
        return 200, rec.obj

    # -- channels

    def channel(self, ctx):
        ch = self.sim.channels.get(ctx.params["channel_id"])
        if ch is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return ch

    def channel_message(self, ctx):
        ch = self.channel(ctx)
        rec = self.sim.messages.get(ctx.params["message_id"])
        if rec is None or rec.deleted or rec.obj["channel_id"] != ch["id"]:
            raise ApiError(404, 10008, "Unknown Message")
        return ch, rec

    def h_create_message(self, ctx):
        sim = self.sim
        ch = self.channel(ctx)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        sim.check_message_body(body, True, ctx.files)
        flags = int(body.get("flags") or 0) if isinstance(body.get("flags"), int) else 0
        if flags & FLAG_VOICE_MESSAGE:
            errs = []
            if body.get("content"):
                errs.append(("/content", "VOICE_MESSAGE_CONTENT", "Voice messages cannot have content."))
            if len(ctx.files) != 1:
                errs.append(("/attachments", "VOICE_MESSAGE_ATTACHMENTS",
                             "Voice messages must have exactly one audio attachment."))
            if errs:
                raise invalid_form(errs)
        obj = sim.new_message(ch["id"], sim.bot_user(), body, ctx.files)
        obj["flags"] = flags & (4 | 4096 | FLAG_VOICE_MESSAGE)
        sim.record_message(obj, True, "channel")
        sim.dispatch("MESSAGE_CREATE", obj, guild_id=ch.get("guild_id"))
        return 200, obj

    def h_get_message(self, ctx):
        return 200, self.channel_message(ctx)[1].obj

    def h_edit_message(self, ctx):
        sim = self.sim
        ch, rec = self.channel_message(ctx)
        if rec.obj["author"]["id"] != sim.bot_user_id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        body = ctx.body if isinstance(ctx.body, dict) else {}
        obj = sim.edit_message(rec, body, ctx.files)
        sim.dispatch("MESSAGE_UPDATE", obj, guild_id=ch.get("guild_id"))
        return 200, obj

    def h_delete_message(self, ctx):
        sim = self.sim
        ch, rec = self.channel_message(ctx)
        rec.deleted, rec.deleted_at = True, time.time()
        d = {"id": rec.obj["id"], "channel_id": ch["id"]}
        if ch.get("guild_id"):
            d["guild_id"] = ch["guild_id"]
        sim.dispatch("MESSAGE_DELETE", d, guild_id=ch.get("guild_id"))
        return 204, None

    def h_typing(self, ctx):
        self.channel(ctx)
        self.sim.stats["typing"] += 1
        return 204, None

    def h_get_channel(self, ctx):
        return 200, self.channel(ctx)

    def h_guild_channels(self, ctx):
        g = self.sim.guilds.get(ctx.params["guild_id"])
        if g is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return 200, [self.sim.channels[c] for c in g["channels"]]


def _with_body(self, retry_after, is_global):
    """A 429 ApiError carries Discord's rate-limit body."""
    self.retry_after, self.is_global = retry_after, is_global
    self.body = lambda: {"message": RATE_LIMITED, "retry_after": retry_after, "global": is_global, "code": 0}
    return self


ApiError.with_body = _with_body


# ----------------------------------------------------------------------------
# HTTP client (interactions delivered over HTTP)


async def http_request(method, url, headers, body, timeout):
    """(status, [(name, value)], body bytes). Raises asyncio.TimeoutError or
    OSError."""
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = (u.path or "/") + ("?" + u.query if u.query else "")

    async def go():
        reader, writer = await asyncio.open_connection(host, port)
        try:
            head = ["%s %s HTTP/1.1" % (method, path), "Host: %s:%d" % (host, port),
                    "Connection: close", "Content-Length: %d" % len(body)]
            head += ["%s: %s" % kv for kv in headers]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                lines = raw.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ")[1])
                if status != 100:
                    break
            rh = []
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(":")
                    rh.append((k.strip(), v.strip()))
            hd = {k.lower(): v for k, v in rh}
            if "chunked" in hd.get("transfer-encoding", "").lower():
                data = (await simhttp.read_chunked(reader, 16 * MIB, 1 << 62))[0]
            elif "content-length" in hd:
                data = await reader.readexactly(int(hd["content-length"]))
            else:
                data = b""
                while len(data) < 16 * MIB:
                    more = await reader.read(1 << 16)
                    if not more:
                        break
                    data += more
            return status, rh, data
        finally:
            writer.close()

    return await asyncio.wait_for(go(), timeout)


# ----------------------------------------------------------------------------
# Control API


class BadControl(Exception):
    pass


def need(body, key, kind=None):
    if key not in body:
        raise BadControl("%s is required" % key)
    v = body[key]
    if kind is not None and not isinstance(v, kind):
        raise BadControl("%s has the wrong type" % key)
    return v


class Control:
    ROUTES = [
        ("GET", r"/_sim/info", "info"),
        ("POST", r"/_sim/guilds", "add_guild"),
        ("GET", r"/_sim/guilds", "list_guilds"),
        ("POST", r"/_sim/channels", "add_channel"),
        ("POST", r"/_sim/interactions", "interaction"),
        ("GET", r"/_sim/interactions", "list_interactions"),
        ("GET", r"/_sim/interactions/(?P<id>\d+)", "get_interaction"),
        ("POST", r"/_sim/http_ping", "http_ping"),
        ("POST", r"/_sim/messages", "user_message"),
        ("GET", r"/_sim/messages/(?P<id>\d+)", "get_message"),
        ("POST", r"/_sim/dispatch", "raw_dispatch"),
        ("GET", r"/_sim/gateway", "gw_state"),
        ("POST", r"/_sim/gateway/raw", "gw_raw"),
        ("POST", r"/_sim/gateway/close", "gw_close"),
        ("POST", r"/_sim/gateway/reconnect", "gw_reconnect"),
        ("POST", r"/_sim/gateway/invalid_session", "gw_invalid_session"),
        ("POST", r"/_sim/gateway/heartbeat_request", "gw_heartbeat_request"),
        ("POST", r"/_sim/gateway/withhold_acks", "gw_withhold_acks"),
        ("POST", r"/_sim/gateway/flood", "gw_flood"),
        ("GET", r"/_sim/log", "get_log"),
        ("GET", r"/_sim/stats", "get_stats"),
        ("GET", r"/_sim/channels/(?P<id>\d+)/messages", "channel_messages"),
        ("GET", r"/_sim/commands", "get_commands"),
        ("POST", r"/_sim/faults", "add_fault"),
        ("GET", r"/_sim/faults", "list_faults"),
        ("DELETE", r"/_sim/faults", "clear_faults"),
        ("POST", r"/_sim/config", "set_config"),
        ("GET", r"/_sim/config", "get_config"),
        ("POST", r"/_sim/reset", "reset"),
        ("GET", r"/_sim/files/(?P<id>\d+)(?:/.*)?", "get_file"),
    ]

    def __init__(self, sim):
        self.sim = sim
        self.routes = [(m, re.compile("^" + rx + "/?$"), h) for m, rx, h in self.ROUTES]

    async def handle(self, req):
        methods = set()
        for m, rx, h in self.routes:
            hit = rx.match(req.path)
            if not hit:
                continue
            if m != req.method:
                methods.add(m)
                continue
            try:
                body = json.loads(req.body) if req.body and req.method in ("POST", "PUT", "PATCH") else {}
            except (ValueError, UnicodeDecodeError) as e:
                return 400, [("Content-Type", "application/json")], jdump({"error": "invalid JSON: %s" % e}).encode()
            try:
                if not isinstance(body, dict):
                    raise BadControl("the body must be a JSON object")
                res = getattr(self, "c_" + h)(req, body, **hit.groupdict())
                if asyncio.iscoroutine(res):
                    res = await res
            except BadControl as e:
                return 400, [("Content-Type", "application/json")], jdump({"error": str(e)}).encode()
            except Exception:
                import traceback
                log("error", "control %s %s crashed:\n%s", req.method, req.path, traceback.format_exc())
                return 500, [("Content-Type", "application/json")], jdump({"error": "simulator bug"}).encode()
            if isinstance(res, tuple) and len(res) == 3:
                return res
            status, obj = res if isinstance(res, tuple) else (200, res)
            return status, [("Content-Type", "application/json")], jdump(obj).encode()
        status = 405 if methods else 404
        return status, [("Content-Type", "application/json")], jdump(
            {"error": "no such control endpoint" if status == 404 else "method not allowed"}).encode()

    # -- basics

    def c_info(self, req, body):
        sim = self.sim
        return {"port": sim.port, "application_id": sim.app_id, "bot_user_id": sim.bot_user_id,
                "bot_username": sim.bot_name, "public_key_hex": sim.public_key_hex,
                "api_base": sim.api_base(), "gateway_url": sim.gateway_url(), "pid": os.getpid(),
                "spec_loaded": sim.checker is not None, "spec_path": sim.checker.path if sim.checker else None,
                "spec_error": sim.spec_error, "started_at": sim.started_at}

    def c_add_guild(self, req, body):
        sim = self.sim
        gid = str(need(body, "id"))
        if not gid.isdigit():
            raise BadControl("id must be a snowflake")
        new = gid not in sim.guilds
        g = sim.add_guild(dict(body, id=gid))
        got = sim.dispatch("GUILD_CREATE" if new else "GUILD_UPDATE",
                           sim.guild_create_payload(g), guild_id=gid, filter_intents=not new)
        return {"id": gid, "channels": [sim.channels[c] for c in g["channels"]], "sessions": got}

    def c_list_guilds(self, req, body):
        sim = self.sim
        return {"guilds": [dict(g, channels=[sim.channels[c] for c in g["channels"]])
                           for g in sim.guilds.values()]}

    def c_add_channel(self, req, body):
        gid = str(need(body, "guild_id"))
        need(body, "id")
        return self.sim.add_channel(gid, body)

    # -- interactions

    async def c_interaction(self, req, body):
        sim = self.sim
        deliver = body.get("deliver", "gateway")
        if deliver not in ("gateway", "http"):
            raise BadControl("deliver is gateway or http")
        if deliver == "http" and not body.get("http_url"):
            raise BadControl("deliver=http needs http_url")
        it = sim.create_interaction(body)
        out = {"id": it.id, "token": it.token, "application_id": sim.app_id,
               "channel_id": it.payload["channel_id"], "payload": it.payload}
        if deliver == "gateway" and body.get("session_id"):
            s = sim.sessions.get(str(body["session_id"]))
            if s is None or s.state != "active":
                raise BadControl("no active session %s" % body["session_id"])
            sim.dispatch_to(s, "INTERACTION_CREATE", it.payload)
            out["sessions"] = [s.id]
        elif deliver == "gateway":
            out["sessions"] = sim.dispatch("INTERACTION_CREATE", it.payload, guild_id=it.payload.get("guild_id"))
        else:
            out["http"] = await self.deliver_http(it, body["http_url"], body.get("forge", "none"),
                                                  body.get("timeout_s"))
        return out

    async def deliver_http(self, it, url, forge, timeout_s=None):
        sim = self.sim
        if sim.signing_key is None:
            raise BadControl("python3-nacl is not installed: no signatures")
        raw = jdump(it.payload).encode("utf-8")
        ts = str(int(time.time()))
        headers = [("Content-Type", "application/json"),
                   ("User-Agent", "Discord-Interactions/1.0 (+https://discord.com)")]
        if forge == "none":
            headers += [("X-Signature-Ed25519", sim.sign(raw, ts)), ("X-Signature-Timestamp", ts)]
        elif forge == "bad_signature":
            other = nacl.signing.SigningKey.generate()
            headers += [("X-Signature-Ed25519", other.sign(ts.encode() + raw).signature.hex()),
                        ("X-Signature-Timestamp", ts)]
        elif forge == "bad_timestamp":
            headers += [("X-Signature-Ed25519", sim.sign(raw, ts)), ("X-Signature-Timestamp", str(int(ts) - 7))]
        elif forge != "no_headers":
            raise BadControl("forge is none, bad_signature, no_headers or bad_timestamp")
        timeout = float(timeout_s) if timeout_s else float(sim.cfg["ack_window_s"]) + 2.0
        t0 = time.monotonic()
        result = {"url": url, "forge": forge}
        try:
            status, rh, data = await http_request("POST", url, headers, raw, timeout)
        except asyncio.TimeoutError:
            result.update({"error": "no answer within %.1f s" % timeout})
            it.errors.append({"at": time.time(), "route": "http delivery", "message": result["error"]})
            it.http = result
            return result
        except OSError as e:
            result.update({"error": "connect failed: %s" % e})
            it.errors.append({"at": time.time(), "route": "http delivery", "message": result["error"]})
            it.http = result
            return result
        elapsed = time.monotonic() - t0
        result.update({"status": status, "headers": {k: v for k, v in rh},
                       "body": data[:65536].decode("utf-8", "replace"), "elapsed_ms": round(elapsed * 1000, 1)})
        ctype, cparams = parse_content_type({k.lower(): v for k, v in rh}.get("content-type"))
        reply, files = None, []
        try:
            if ctype == "multipart/form-data":
                for p in parse_multipart(data, cparams.get("boundary")):
                    if p["name"] == "payload_json":
                        reply = json.loads(p["data"])
                    else:
                        files.append(p)
            elif data:
                reply = json.loads(data)
        except ValueError:
            reply = None
        result["json"] = reply
        it.http = result
        if forge != "none" or status != 200 or not isinstance(reply, dict) or "type" not in reply:
            return result
        if sim.checker is not None:
            path = "/interactions/%s/%s/callback" % (it.id, it.token)
            for v in sim.checker.check_request("POST", path, {}, ctype or "application/json", reply,
                                               None if not files else [{"name": p["name"]} for p in files]):
                v.update({"seq": None, "via": "http reply"})
                sim.stats["spec_violations"] += 1
                if len(sim.spec_violations) < 2000:
                    sim.spec_violations.append(v)
        if it.acked is not None:
            it.errors.append({"at": time.time(), "route": "http reply", "status": 400, "code": 40060,
                              "message": "Interaction has already been acknowledged."})
        elif it.age() > float(sim.cfg["ack_window_s"]):
            it.errors.append({"at": time.time(), "route": "http reply", "status": 404, "code": 10062,
                              "message": "Unknown interaction"})
        elif it.type == 1:
            if reply.get("type") == 1:
                it.acked = {"type": 1, "flags": 0, "at": time.time(), "after_ms": round(it.age() * 1000, 1),
                            "via": "http_response"}
        else:
            try:
                data_obj = reply.get("data") if isinstance(reply.get("data"), dict) else {}
                if reply.get("type") in (4, 7):
                    sim.check_message_body(data_obj, reply["type"] == 4, files, "/data")
                sim.ack(it, reply.get("type"), data_obj, files, "http_response")
            except ApiError as e:
                it.errors.append({"at": time.time(), "route": "http reply", "status": e.status,
                                  "code": e.code, "message": e.message})
        return result

    async def c_http_ping(self, req, body):
        sim = self.sim
        url = need(body, "http_url", str)
        iid = sim.snow.next()
        payload = {"id": iid, "application_id": sim.app_id, "type": 1,
                   "token": "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96), "version": 1,
                   "user": {"id": "100000000000000001", "username": "discord", "discriminator": "0",
                            "global_name": None, "avatar": None, "public_flags": 0}}
        it = Interaction(sim, 1, payload, "http")
        sim.interactions[iid] = it
        sim.tokens[payload["token"]] = it
        res = await self.deliver_http(it, url, body.get("forge", "none"), body.get("timeout_s"))
        res["id"] = iid
        return res

    def c_list_interactions(self, req, body):
        return {"interactions": [self.sim.interaction_info(i, full=False) for i in self.sim.interactions.values()]}

    def c_get_interaction(self, req, body, id):
        it = self.sim.interactions.get(id)
        if it is None:
            return 404, {"error": "no such interaction"}
        return self.sim.interaction_info(it)

    # -- messages and raw events

    def c_user_message(self, req, body):
        sim = self.sim
        cid = str(need(body, "channel_id"))
        gid = str(body["guild_id"]) if body.get("guild_id") else None
        chan = sim.ensure_channel(cid, gid)
        gid = chan.get("guild_id") or gid
        author = {"id": "100000000000000001", "username": "tester", "discriminator": "0",
                  "global_name": None, "avatar": None, "public_flags": 0, "flags": 0, "primary_guild": None}
        author.update(body.get("author") or {})
        author["id"] = str(author["id"])
        content = body.get("content", "")
        mention_ids = [str(m.get("id") if isinstance(m, dict) else m) for m in body.get("mentions") or ()]
        for m in re.finditer(r"<@!?(\d+)>", content):
            if m.group(1) not in mention_ids:
                mention_ids.append(m.group(1))
        mentions = []
        for uid in mention_ids:
            u = sim.bot_user() if uid == sim.bot_user_id else {
                "id": uid, "username": "user" + uid[-4:], "discriminator": "0", "global_name": None,
                "avatar": None, "public_flags": 0}
            mentions.append(u)
        files = []
        for i, a in enumerate(body.get("attachments") or ()):
            raw = base64.b64decode(a["data_b64"]) if a.get("data_b64") else bytes(int(a.get("size", 16)))
            files.append({"name": "files[%d]" % i, "filename": a.get("filename", "file.bin"),
                          "content_type": a.get("content_type"), "data": raw})
        obj = sim.new_message(cid, author, {"content": content, "embeds": body.get("embeds"),
                                            "message_reference": body.get("message_reference")},
                              files, int(body.get("type", 0)))
        obj["mentions"] = mentions
        if gid:
            obj["guild_id"] = gid
            obj["member"] = {"roles": [str(r) for r in body.get("roles", ())], "joined_at": iso_now(sim.started_at),
                             "nick": None, "deaf": False, "mute": False, "flags": 0, "pending": False}
        sim.record_message(obj, author["id"] == sim.bot_user_id, "user")
        got = sim.dispatch("MESSAGE_CREATE", obj, guild_id=gid)
        return {"id": obj["id"], "sessions": got, "message": obj}

    def c_get_message(self, req, body, id):
        rec = self.sim.messages.get(id)
        if rec is None:
            return 404, {"error": "no such message"}
        return rec.info()

    def c_raw_dispatch(self, req, body):
        sim = self.sim
        t = need(body, "t", str)
        d = body.get("d")
        sid = body.get("session_id")
        if sid:
            s = sim.sessions.get(sid)
            if s is None or s.state != "active":
                raise BadControl("no active session %s" % sid)
            return {"sessions": [sid], "seq": sim.dispatch_to(s, t, d)}
        gid = body.get("guild_id") or (d.get("guild_id") if isinstance(d, dict) else None)
        return {"sessions": sim.dispatch(t, d, guild_id=str(gid) if gid else None,
                                         filter_intents=bool(body.get("filter_intents", False)))}

    # -- gateway control

    def targets(self, body):
        conns = [c for c in self.sim.conns.values() if not c.closed]
        if body.get("conn_id") is not None:
            conns = [c for c in conns if c.id == int(body["conn_id"])]
        if body.get("session_id"):
            conns = [c for c in conns if c.session and c.session.id == body["session_id"]]
        return conns

    def c_gw_state(self, req, body):
        sim = self.sim
        return {
            "connections": [c.info() for c in sim.conns.values()],
            "sessions": [s.info() for s in sim.sessions.values()],
            "identifies": sim.stats["identifies"], "identify_attempts": sim.stats["identify_attempts"],
            "resumes": sim.stats["resumes"], "resume_attempts": sim.stats["resume_attempts"],
            "resume_failures": sim.stats["resume_failures"],
            "by_token": {k: dict(v) for k, v in sim.by_token.items()},
            "session_start_limit": {"total": int(sim.cfg["session_start_total"]),
                                    "remaining": sim.session_start_remaining()},
            "withhold_acks": sim.withhold_acks, "closes": sim.closes[-100:],
            "identify_log": sim.identify_log[-20:],
        }

    def c_gw_raw(self, req, body):
        data = need(body, "data", str)
        raw = base64.b64decode(data) if body.get("base64") else data.encode("utf-8")
        sent = []
        for c in self.targets(body):
            if body.get("wire"):
                c.write_raw(raw)
            elif body.get("compress", True) and c.compress:
                c.send(raw)
            else:
                c.write_raw(ws_frame(int(body.get("opcode", 1)), raw))
            sent.append(c.id)
        return {"sent": sent, "bytes": len(raw)}

    def c_gw_close(self, req, body):
        code = int(body.get("code", 4000))
        reason = str(body.get("reason", ""))
        closed = []
        for c in self.targets(body):
            c.close(code, reason, abrupt=bool(body.get("abrupt")))
            closed.append(c.id)
        return {"closed": closed}

    def c_gw_reconnect(self, req, body):
        sent = []
        for c in self.targets(body):
            c.send_json({"op": 7, "d": None, "s": None, "t": None})
            sent.append(c.id)
        self.sim.stats_gw["reconnects_sent"] += len(sent)
        return {"sent": sent}

    def c_gw_invalid_session(self, req, body):
        resumable = bool(body.get("resumable", False))
        sent = []
        for c in self.targets(body):
            s = c.session
            c.send_json({"op": 9, "d": resumable, "s": None, "t": None})
            if s is not None:
                if resumable:
                    c.session = None
                    s.conn = None
                    s.detached_mono, s.detached_at = time.monotonic(), time.time()
                else:
                    s.end_session("invalid_session sent")
            sent.append(c.id)
        return {"sent": sent}

    def c_gw_heartbeat_request(self, req, body):
        sent = []
        for c in self.targets(body):
            c.heartbeat_requests += 1
            c.heartbeat_request_mono = time.monotonic()
            c.send_json({"op": 1, "d": c.session.seq if c.session else None, "s": None, "t": None})
            sent.append(c.id)
        return {"sent": sent}

    def c_gw_withhold_acks(self, req, body):
        on = bool(body.get("on", True))
        if body.get("conn_id") is not None or body.get("session_id"):
            conns = self.targets(body)
            for c in conns:
                c.withhold_acks = on
            return {"on": on, "conns": [c.id for c in conns]}
        self.sim.withhold_acks = on
        if not on:
            for c in self.sim.conns.values():
                c.withhold_acks = False
        return {"on": on, "conns": "all"}

    async def c_gw_flood(self, req, body):
        sim = self.sim
        count = int(need(body, "count"))
        cid = str(need(body, "channel_id"))
        gid = str(body["guild_id"]) if body.get("guild_id") else None
        sim.ensure_channel(cid, gid)
        author = {"id": "100000000000000001", "username": "tester", "discriminator": "0",
                  "global_name": None, "avatar": None, "public_flags": 0, "flags": 0, "primary_guild": None}
        author.update(body.get("author") or {})
        content = body.get("content", "flood message")
        chunk = int(body.get("chunk_bytes", 256 * 1024))
        t0 = time.perf_counter()
        base_ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        ids = [str((base_ms << 22) | (3 << 17) | i) for i in range(count)] if count <= 4096 else \
            [str(((base_ms + i // 4096) << 22) | (3 << 17) | (i % 4096)) for i in range(count)]
        template = {"type": 0, "channel_id": cid, "author": author, "content": content, "mentions": [],
                    "mention_roles": [], "mention_everyone": False, "attachments": [], "embeds": [],
                    "components": [], "pinned": False, "tts": False, "timestamp": iso_now(),
                    "edited_timestamp": None, "flags": 0, "id": "@@SIMID@@"}
        if gid:
            template["guild_id"] = gid
            template["member"] = {"roles": [], "joined_at": iso_now(sim.started_at), "deaf": False,
                                  "mute": False, "flags": 0, "pending": False}
        only = str(body["session_id"]) if body.get("session_id") else None
        plans = []
        for s in sim.active_sessions():
            c = s.conn
            if c is None or c.closed or not sim.in_shard(s, gid) or (only and s.id != only):
                continue
            view = sim.intent_view(s, "MESSAGE_CREATE", template, gid)
            if view is None:
                continue
            pre, post = jdump(view).split("@@SIMID@@")
            c.hold = True
            out, buf, total = [], [], 0
            for mid in ids:
                s.seq += 1
                text = '{"op":0,"t":"MESSAGE_CREATE","s":%d,"d":%s%s%s}' % (s.seq, pre, mid, post)
                s.buffer.append((s.seq, text))
                s.dispatched += 1
                frame = c.frame_for(text)
                buf.append(frame)
                total += len(frame)
                if total >= chunk:
                    out.append(b"".join(buf))
                    buf, total = [], 0
            if buf:
                out.append(b"".join(buf))
            c.messages_sent += len(ids)
            plans.append((s, c, out))
        t1 = time.perf_counter()
        write_started_at = time.time()
        nbytes, waited = 0, 0.0
        try:
            for s, c, out in plans:
                for piece in out:
                    if c.closed:
                        break
                    c.writer.write(piece)
                    c.bytes_sent += len(piece)
                    nbytes += len(piece)
                    tw = time.perf_counter()
                    await c.writer.drain()
                    waited += time.perf_counter() - tw
        except (ConnectionError, OSError):
            pass
        finally:
            for s, c, out in plans:
                c.release()
        t2 = time.perf_counter()
        sim.stats_gw["flood_events"] += count * len(plans)
        return {"count": count, "sessions": [s.id for s, _c, _o in plans], "bytes": nbytes,
                "build_s": round(t1 - t0, 4), "write_s": round(t2 - t1, 4), "drain_wait_s": round(waited, 4),
                "write_started_at": write_started_at, "first_id": ids[0] if ids else None,
                "last_id": ids[-1] if ids else None}

    # -- observation

    def c_get_log(self, req, body):
        sim = self.sim
        q = req.query
        since = int(q.get("since", 0))
        limit = int(q.get("limit", 100000))
        out = []
        for e in sim.log_entries:
            if e["seq"] <= since:
                continue
            if q.get("route") and e["route"] != q["route"]:
                continue
            if q.get("method") and e["method"] != q["method"].upper():
                continue
            out.append(e)
            if len(out) >= limit:
                break
        return {"entries": out, "last_seq": sim.log_seq}

    def c_get_stats(self, req, body):
        sim = self.sim
        inv = dict(sim.invalid)
        inv["total"] = sum(sim.invalid.values())
        return {
            "requests": sim.stats["requests"], "by_status": dict(sim.by_status), "by_route": dict(sim.by_route),
            "spec_violations": sim.spec_violations, "spec_violation_count": sim.stats["spec_violations"],
            "protocol_violations": sim.protocol_violations,
            "protocol_violation_count": sim.stats["protocol_violations"],
            "sim_response_violations": sim.response_violations,
            "exhausted_bucket_hits": sim.stats["exhausted_bucket_hits"], "exhausted_bucket_details": sim.exhausted,
            "global_limit_hits": sim.stats["global_limit_hits"], "invalid_requests": inv,
            "faults_served": sim.stats["faults_served"], "identifies": sim.stats["identifies"],
            "identify_attempts": sim.stats["identify_attempts"], "resumes": sim.stats["resumes"],
            "resume_attempts": sim.stats["resume_attempts"], "resume_failures": sim.stats["resume_failures"],
            "identify_concurrency_violations": sim.stats["identify_concurrency_violations"],
            "command_puts": dict(sim.command_puts), "command_creates": sim.stats["command_creates"],
            "interactions": {k: sim.stats[k] for k in ("interactions_created", "interactions_acked",
                                                       "late_acks", "double_acks", "expired_token_uses")},
            "typing": sim.stats["typing"], "gateway": dict(sim.stats_gw), "sim_errors": sim.stats["sim_errors"],
        }

    def c_channel_messages(self, req, body, id):
        sim = self.sim
        everyone = req.query.get("all", "0") in ("1", "true")
        recs = [sim.messages[m] for m in sim.channel_msgs.get(id, ()) if m in sim.messages]
        return {"channel_id": id, "messages": [r.info() for r in recs if everyone or r.by_bot]}

    def c_get_commands(self, req, body):
        sim = self.sim
        return {"global": sim.commands.get(None, []),
                "guilds": {k: v for k, v in sim.commands.items() if k is not None},
                "puts": dict(sim.command_puts)}

    # -- faults, config, reset

    def c_add_fault(self, req, body):
        sim = self.sim
        rx = body.get("path_regex", ".*")
        try:
            compiled = re.compile(rx)
        except re.error as e:
            raise BadControl("path_regex: %s" % e)
        status = body.get("status")
        if status is None and not body.get("delay_s"):
            raise BadControl("a fault needs a status or a delay_s")
        sim.fault_seq += 1
        f = {"id": sim.fault_seq, "method": (body.get("method") or "*").upper(), "path_regex": rx,
             "rx": compiled, "status": status, "count": int(body.get("count", 1)),
             "remaining": int(body.get("count", 1)), "served": 0, "body": body.get("body"),
             "retry_after": body.get("retry_after", 1.0), "global": bool(body.get("global", False)),
             "scope": body.get("scope"), "delay_s": body.get("delay_s"), "headers": body.get("headers")}
        sim.faults.append(f)
        return {"id": f["id"]}

    def c_list_faults(self, req, body):
        return {"faults": [{k: v for k, v in f.items() if k != "rx"} for f in self.sim.faults]}

    def c_clear_faults(self, req, body):
        n = len(self.sim.faults)
        self.sim.faults.clear()
        return {"cleared": n}

    def c_set_config(self, req, body):
        sim = self.sim
        unknown = [k for k in body if k not in DEFAULT_CONFIG]
        if unknown:
            raise BadControl("unknown config key(s): %s" % ", ".join(sorted(unknown)))
        rl = body.get("rate_limits")
        if rl is not None:
            if not isinstance(rl, dict):
                raise BadControl("rate_limits is an object")
            bad = [k for k in rl if k not in DEFAULT_RATE_LIMITS]
            if bad:
                raise BadControl("unknown rate limit bucket(s): %s (known: %s)"
                                 % (", ".join(bad), ", ".join(DEFAULT_RATE_LIMITS)))
            for k, v in rl.items():
                if not isinstance(v, dict) or not set(v) <= {"limit", "window_s"}:
                    raise BadControl("rate_limits.%s is {limit, window_s}" % k)
                sim.cfg["rate_limits"].setdefault(k, {}).update(v)
            sim.buckets.clear()
        for k, v in body.items():
            if k == "rate_limits":
                continue
            default = DEFAULT_CONFIG[k]
            if isinstance(default, bool) and not isinstance(v, bool):
                raise BadControl("%s is a boolean" % k)
            if isinstance(default, (int, float)) and not isinstance(default, bool) and \
                    (not isinstance(v, (int, float)) or isinstance(v, bool)):
                raise BadControl("%s is a number" % k)
            sim.cfg[k] = v
        if "session_start_remaining" in body:
            sim.remaining_base = sim.identifies_used
        if "global_limit" in body or "global_window_s" in body:
            sim.global_window = [0.0, 0]
        return self.c_get_config(req, {})

    def c_get_config(self, req, body):
        sim = self.sim
        eff = {}
        for name in DEFAULT_RATE_LIMITS:
            lim, win = sim.rate_limit(name)
            eff[name] = {"limit": lim, "window_s": win}
        return {"config": sim.cfg, "rate_limits_effective": eff}

    def c_reset(self, req, body):
        sim = self.sim
        keep_config = bool(body.get("keep_config", False))
        if body.get("close_gateway"):
            for c in list(sim.conns.values()):
                c.close(4000, "simulator reset")
            sim.sessions.clear()
            sim.conns.clear()
        if not body.get("keep_guilds", True):
            sim.guilds.clear()
            sim.channels.clear()
        sim.reset_state(config=not keep_config)
        return {"ok": True}

    def c_get_file(self, req, body, id):
        f = self.sim.files.get(id)
        if f is None:
            return 404, [("Content-Type", "application/json")], b'{"error":"no such file"}'
        return 200, [("Content-Type", f[2] or "application/octet-stream")], f[1]


# ----------------------------------------------------------------------------
# Server


def check_args(ap, args):
    if not args.application_id.isdigit():
        ap.error("--application-id must be a snowflake")


def main(argv=None):
    ap = simhttp.arg_parser("Discord simulator for integration tests", keys=False)
    ap.add_argument("--token", required=True, help="the bot token the simulator accepts")
    ap.add_argument("--application-id", required=True, help="application id (a snowflake)")
    ap.add_argument("--bot-user-id", default=None, help="bot user id (default: the application id)")
    ap.add_argument("--bot-name", default="simbot", help="bot username")
    ap.add_argument("--spec", default=None, help="OpenAPI spec path (default: %s)" % openapi_check.DEFAULT_SPEC)
    ap.add_argument("--key-seed", default=None, help="64 hex digits: a fixed Ed25519 key (default: random)")
    return simhttp.main(Sim, ap, argv, check_args)


if __name__ == "__main__":
    sys.exit(main())
