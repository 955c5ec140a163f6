"""The HTTP/1.1 scaffold the four simulators (discord_sim.py, openai_sim.py,
minimax_sim.py, stability_sim.py) share: logging, request parsing, response
writing, the keep-alive connection loop, start-up (the `SIM READY port=N`
line) and shut-down, the command line, and for the three provider
simulators their API keys and the common half of their /_sim control API.

A simulator is a Server subclass whose answer() serves one request; main()
runs it. Python 3 standard library only.
"""

import argparse
import asyncio
import collections
import datetime
import hashlib
import json
import os
import resource
import signal
import socket
import sys
import time
import urllib.parse

MIB = 1024 * 1024
NAME = "sim"        # the log prefix: each simulator sets its own
VERBOSE = False     # --verbose: debug() logs


def log(level, msg, *args):
    text = msg % args if args else msg
    ts = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
    sys.stderr.write("%s %s %s %s\n" % (ts, NAME, level, text))
    sys.stderr.flush()


def debug(msg, *args):
    if VERBOSE:
        log("debug", msg, *args)


def jdump(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def fingerprint(key):
    """How the provider simulators name an API key in logs and stats."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]


# ----------------------------------------------------------------------------
# HTTP/1.1, server side


class HttpError(Exception):
    """A request that cannot be read: answered with status, then the connection is closed."""

    def __init__(self, status, text):
        super().__init__(text)
        self.status, self.text = status, text


class Request:
    __slots__ = ("method", "path", "query", "query_all", "version", "headers", "body", "body_bytes", "too_large")

    def header(self, name, default=""):
        return self.headers.get(name.lower(), default)


REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 204: "No Content",
           400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 413: "Payload Too Large", 422: "Unprocessable Entity",
           426: "Upgrade Required", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


async def read_request(reader, writer, max_body, drain_max=None, refuse=True):
    """The next request on a keep-alive connection; None at a clean EOF.

    A body of up to max_body bytes is read into req.body (req.body_bytes is
    its size as sent). A larger one up to drain_max (default max_body) is
    read and dropped: req.too_large, req.body b"". Past drain_max, or when
    the client waits for "100 Continue" before sending it, it is not read:
    HttpError 413, or with refuse=False req.too_large and the connection
    cannot be used again."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise HttpError(400, "truncated request head")
        return None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request head too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(400, "bad request line")
    req = Request()
    req.method, target, req.version = parts[0].upper(), parts[1], parts[2]
    req.headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, "bad header line")
        name, value = name.strip().lower(), value.strip()
        req.headers[name] = req.headers[name] + ", " + value if name in req.headers else value
    u = urllib.parse.urlsplit(target)
    req.path = urllib.parse.unquote(u.path) or "/"
    req.query_all = urllib.parse.parse_qs(u.query, keep_blank_values=True)
    req.query = {k: v[-1] for k, v in req.query_all.items()}
    req.body, req.body_bytes, req.too_large = b"", 0, False
    chunked, length = "chunked" in req.header("transfer-encoding").lower(), req.header("content-length")
    if not chunked and not length:
        return req
    n = None    # chunked: the size is known at the end
    if not chunked:
        try:
            n = int(length)
        except ValueError:
            n = -1
        if n < 0:
            raise HttpError(400, "bad Content-Length")
        req.body_bytes = n
    drain_max = max_body if drain_max is None else drain_max
    expect = req.header("expect").lower() == "100-continue"
    if n is not None and n > max_body and (expect or n > drain_max):
        body = None
    else:
        if expect and n != 0:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if n is None:
            body, req.body_bytes = await read_chunked(reader, max_body, drain_max)
        elif n > max_body:
            body = b""
            while n > 0:
                got = await reader.read(min(n, 1 << 20))
                if not got:
                    raise asyncio.IncompleteReadError(b"", n)
                n -= len(got)
        else:
            body = await reader.readexactly(n)
    req.too_large = req.body_bytes > max_body
    if body is None:    # not read
        if refuse:
            raise HttpError(413, "body too large")
        body = b""
    req.body = body
    return req


async def read_chunked(reader, max_body, drain_max):
    """(body, size) of a chunked body; the body is b"" when it is over
    max_body, None when reading stopped past drain_max."""
    out, total = bytearray(), 0
    while True:
        try:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
        except ValueError:
            raise HttpError(400, "bad chunk size")
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return (b"" if total > max_body else bytes(out)), total
        total += size
        if total > drain_max:
            return None, total
        piece = (await reader.readexactly(size + 2))[:-2]
        if total <= max_body:
            out += piece


def response_head(status, headers, length=None, close=False, chunked=False):
    out = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status"))]
    if not any(k.lower() == "date" for k, _v in headers):
        out.append("Date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()))
    out += ["%s: %s" % kv for kv in headers]
    if length is not None:
        out.append("Content-Length: %d" % length)
    if chunked:
        out.append("Transfer-Encoding: chunked")
    if close:
        out.append("Connection: close")
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")


def response(status, headers, body, close=False):
    """A whole answer: head and body (none for 101, 204 and 304)."""
    bodiless = status in (101, 204, 304)
    return response_head(status, headers, None if bodiless else len(body), close) + (b"" if bodiless else body)


async def send(writer, status, headers, body, close=False):
    """Write an answer and wait for it to drain; True (the connection goes on)."""
    writer.write(response(status, headers, body, close))
    await writer.drain()
    return True


async def send_json(writer, status, body):
    return await send(writer, status, [("Content-Type", "application/json")], body)


async def hang(reader):
    """Answer nothing until the client leaves; False (the connection is done)."""
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass
    return False


# ----------------------------------------------------------------------------
# The server


class Server:
    """One simulator on 127.0.0.1. Subclasses set name (the log prefix) and
    answer one request in answer(); the rest has defaults for the provider
    simulators."""

    backlog = 1024
    max_body = 32 * MIB
    refuse_large = True     # read_request(refuse=...)

    def __init__(self):
        self.port = 0
        self.started_at = time.time()
        self.writers = set()
        self.sim_errors = 0

    def body_limits(self):
        """(max_body, drain_max) for read_request."""
        return self.max_body, None

    def refusal(self, e):
        """(headers, body) of the answer to a request that could not be read (HttpError e)."""
        return [("Content-Type", "text/plain")], e.text.encode()

    async def answer(self, req, reader, writer):
        """Serve req; False when the connection must end."""
        raise NotImplementedError

    async def serve_conn(self, reader, writer):
        self.writers.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        try:
            while True:
                try:
                    req = await read_request(reader, writer, *self.body_limits(), refuse=self.refuse_large)
                except HttpError as e:
                    await send(writer, e.status, *self.refusal(e), close=True)
                    break
                if req is None:
                    break
                keep = await self.answer(req, reader, writer)
                if not keep or req.header("connection").lower() == "close" or req.version == "HTTP/1.0":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        except Exception:
            import traceback
            self.sim_errors += 1
            log("error", "connection handler crashed:\n%s", traceback.format_exc())
        finally:
            self.writers.discard(writer)
            try:
                writer.close()
            except (ConnectionError, RuntimeError, OSError):
                pass

    def started(self):
        """Just before the READY line."""

    def stopping(self):
        """On SIGTERM/SIGINT, before the listener and the connections close."""

    def close_connections(self):
        for w in list(self.writers):
            try:
                w.transport.abort()
            except (RuntimeError, OSError, AttributeError):
                pass


def raise_fd_limit():
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass


async def serve(make, args):
    raise_fd_limit()
    sim = make(args)
    server = await asyncio.start_server(sim.serve_conn, "127.0.0.1", args.port, limit=1 << 20, backlog=sim.backlog)
    sim.port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sim.started()
    sys.stdout.write("SIM READY port=%d\n" % sim.port)
    sys.stdout.flush()
    await stop.wait()
    sim.stopping()
    server.close()
    sim.close_connections()
    await asyncio.sleep(0.05)


def arg_parser(description, keys=True):
    """--port, and --key for the provider simulators; main() adds --verbose."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: pick a free one)")
    if keys:
        ap.add_argument("--key", action="append", help="an API key that answers normally (repeatable)")
    return ap


def main(make, ap, argv=None, check=None):
    """Parse the command line, run make(args) until SIGTERM/SIGINT; 0."""
    global VERBOSE
    ap.add_argument("--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if check is not None:
        check(ap, args)
    VERBOSE = args.verbose
    try:
        asyncio.run(serve(make, args))
    except KeyboardInterrupt:
        pass
    return 0


# ----------------------------------------------------------------------------
# The provider simulators: API keys and the common control API


class KeyState:
    """An API key's behaviour ("ok" or a misbehaviour) and options."""
    __slots__ = ("fp", "behaviour", "opts", "served")
    OPTIONS = {}    # the options a key may carry, with their defaults

    def __init__(self, key, behaviour="ok", opts=None):
        self.fp = fingerprint(key)
        self.behaviour = behaviour
        self.opts = dict(self.OPTIONS)
        self.opts.update(opts or {})
        self.served = 0     # misbehaviours served (for "remaining")

    def active(self):
        """The behaviour in force now ("ok" once `remaining` is used up)."""
        rem = self.opts.get("remaining")
        if self.behaviour != "ok" and rem is not None and self.served >= int(rem):
            return "ok"
        return self.behaviour

    def info(self):
        return {"key_fingerprint": self.fp, "behaviour": self.behaviour, "options": self.opts,
                "misbehaviours_served": self.served}


class ProviderSim(Server):
    """A provider simulator's state: keys (from --key and POST /_sim/keys),
    config (DEFAULTS), the request log; reset() starts it afresh."""

    DEFAULTS = {}
    Key = KeyState
    Api = Control = None    # the classes of its /v1 (or /v2beta) API and of its control API

    def __init__(self, args):
        super().__init__()
        self.cli_keys = list(args.key or [])
        self.reset()
        self.api, self.control = self.Api(self), self.Control(self)

    def reset(self, keep_keys=False, keep_config=False):
        if not keep_config:
            self.cfg = json.loads(json.dumps(self.DEFAULTS))
        if not keep_keys:
            self.keys = {k: self.Key(k) for k in self.cli_keys}
        self.log_entries = collections.deque(maxlen=int(self.cfg["log_max_entries"]))
        self.log_seq = 0
        self.requests = 0
        self.sim_errors = 0
        self.by_status = collections.Counter()
        self.by_key = collections.Counter()
        self.by_path = collections.Counter()

    def new_entry(self, req, fp, **more):
        """A request (with the key of fingerprint fp) counted and in the log: its entry."""
        self.log_seq += 1
        self.requests += 1
        self.by_path[req.path] += 1
        if fp:
            self.by_key[fp] += 1
        e = {"seq": self.log_seq, "time": round(time.time(), 3), "method": req.method, "path": req.path,
             "key_fingerprint": fp, "status": None, **more}
        self.log_entries.append(e)
        return e

    async def answer(self, req, reader, writer):
        if req.path.startswith("/_sim/"):
            return await send_json(writer, *await self.control.handle(req))
        return await self.route(req, reader, writer)

    def started(self):
        log("info", "listening on 127.0.0.1:%d (%d key(s) from the command line)", self.port, len(self.cli_keys))

    def stopping(self):
        log("info", "stopping (%d open connection(s), %d request(s) served)", len(self.writers), self.requests)


class BadControl(Exception):
    pass


class Control:
    """/_sim/info, config, keys, log, stats and reset of a provider simulator;
    subclasses add routes (ROUTES: (method, path) -> method name) and hooks."""

    ROUTES = {("GET", "/_sim/info"): "info", ("GET", "/_sim/config"): "get_config",
              ("POST", "/_sim/config"): "set_config", ("GET", "/_sim/keys"): "get_keys",
              ("POST", "/_sim/keys"): "set_keys", ("GET", "/_sim/log"): "get_log",
              ("GET", "/_sim/stats"): "stats", ("POST", "/_sim/reset"): "reset"}
    BEHAVIOURS = ("ok",)
    KEY_FIELDS = ("key", "behaviour", "remove")     # POST /_sim/keys fields that are not key options
    BASE_PATH = ""      # what base_url in /_sim/info ends with

    def __init__(self, sim):
        self.sim = sim

    async def handle(self, req):
        """(status, JSON body bytes)."""
        name = self.ROUTES.get((req.method, req.path.rstrip("/")))
        if name is None:
            paths = {p for _m, p in self.ROUTES}
            status = 405 if req.path.rstrip("/") in paths else 404
            return status, jdump({"error": "no such control endpoint: %s %s" % (req.method, req.path)}).encode()
        try:
            body = json.loads(req.body) if req.body else {}
            if not isinstance(body, dict):
                raise BadControl("the body is a JSON object")
            return 200, jdump(getattr(self, name)(req, body)).encode()
        except (ValueError, UnicodeDecodeError) as e:
            return 400, jdump({"error": "invalid JSON or value: %s" % e}).encode()
        except BadControl as e:
            return 400, jdump({"error": str(e)}).encode()

    def info(self, req, body):
        sim = self.sim
        return {"port": sim.port, "base_url": "http://127.0.0.1:%d%s" % (sim.port, self.BASE_PATH), "pid": os.getpid(),
                "started_at": sim.started_at, **self.about()}

    def about(self):
        """What /_sim/info tells besides where the simulator is."""
        return {"behaviours": list(self.BEHAVIOURS)}

    def get_config(self, req, body):
        return {"config": self.sim.cfg}

    def check_config(self, k, v):
        """Checks of one config value past its type (which set_config checks)."""

    def set_config(self, req, body):
        sim = self.sim
        defaults = sim.DEFAULTS
        unknown = sorted(k for k in body if k not in defaults)
        if unknown:
            raise BadControl("unknown config key(s): %s" % ", ".join(unknown))
        for k, v in body.items():
            d = defaults[k]
            if isinstance(d, bool):
                if not isinstance(v, bool):
                    raise BadControl("%s is a boolean" % k)
            elif isinstance(d, (int, float)):
                if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                    raise BadControl("%s is a number >= 0" % k)
            elif (d is None or isinstance(d, str)) and v is not None and not isinstance(v, str):
                raise BadControl("%s is a string or null" % k)
            self.check_config(k, v)
        sim.cfg.update(body)
        if "log_max_entries" in body:
            sim.log_entries = collections.deque(sim.log_entries, maxlen=int(body["log_max_entries"]))
        return {"config": sim.cfg}

    def check_key_option(self, k, v):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise BadControl("%s is a number >= 0 or null" % k)

    def keep_key_state(self, old, ks, item):
        """What a key set again keeps of its old state."""

    def set_keys(self, req, body):
        sim = self.sim
        items = body.get("keys") if "keys" in body else [body]
        if not isinstance(items, list):
            raise BadControl("keys is a list of {key, behaviour, ...}")
        out = []
        for it in items:
            if not isinstance(it, dict) or not isinstance(it.get("key"), str) or not it["key"]:
                raise BadControl("each entry needs a key (a string)")
            key = it["key"]
            if it.get("remove"):
                sim.keys.pop(key, None)
                out.append({"key_fingerprint": fingerprint(key), "removed": True})
                continue
            b = str(it.get("behaviour", "ok"))
            if b not in self.BEHAVIOURS:
                raise BadControl("behaviour is one of %s" % ", ".join(self.BEHAVIOURS))
            opts = {k: v for k, v in it.items() if k not in self.KEY_FIELDS}
            known = sim.Key.OPTIONS
            bad = sorted(k for k in opts if k not in known)
            if bad:
                raise BadControl("unknown key option(s): %s (known: %s)" % (", ".join(bad), ", ".join(known)))
            for k, v in opts.items():
                if v is not None:
                    self.check_key_option(k, v)
            old = sim.keys.get(key)
            ks = sim.Key(key, b, opts)
            if old is not None:
                self.keep_key_state(old, ks, it)
            sim.keys[key] = ks
            out.append(ks.info())
        return {"keys": out}

    def get_keys(self, req, body):
        return {"keys": [k.info() for k in self.sim.keys.values()]}

    def get_log(self, req, body):
        q = req.query
        since = int(q.get("since", 0))
        limit = int(q.get("limit", 1000000))
        path = q.get("path")
        out = []
        for e in self.sim.log_entries:
            if e["seq"] > since and (not path or e["path"] == path):
                out.append(e)
                if len(out) >= limit:
                    break
        return {"entries": out, "last_seq": self.sim.log_seq}

    def reset(self, req, body):
        self.sim.reset(keep_keys=bool(body.get("keep_keys")), keep_config=bool(body.get("keep_config")))
        return {"ok": True}
