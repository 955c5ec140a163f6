"""Integration-test harness: real redis-server, real PostgreSQL, real binaries.

An integration test is a top-level function ``test_*(t)`` in
tests/integration/test_*.py. ``t`` is a TestContext: it owns a fresh temp
directory and every server and instance the test starts, and tears all of them
down when the test ends, also when it fails or times out. tests/run.py runs
each test in its own process through this file:

    python3 tests/integration/harness.py --list FILE        (JSON, one per test)
    python3 tests/integration/harness.py --run FILE FUNC

Python 3 standard library only. See tests/README.md for the whole picture.
"""

import contextlib
import ctypes
import fcntl
import glob
import importlib.util
import inspect
import itertools
import json
import os
import pwd
import re
import secrets as _secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# Lines that mean a sanitizer found a bug. An instance whose output holds one
# fails the test at teardown, whatever the test itself asserted.
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "LeakSanitizer has encountered a fatal error",
    "runtime error:",
)

# The runner gives each test a token; every process the harness starts carries
# it in its environment, so the runner can find and kill anything a test left
# behind even when the test process itself had to be SIGKILLed.
TOKEN_VAR = "TESTRUN_TOKEN"

DEFAULT_TIMEOUT = 180

# Where a test leaves what the runner needs after the test's own temp dir is
# gone: the secrets it handed out and where any of them was found (see
# scan_for_secrets). In $BOT_TEST_TMPDIR, beside t.tmp.
SECRET_SCAN_FILE = "secret-scan.json"


class RedisError(Exception):
    """An error reply (-ERR ...) from Redis."""


class TestTimeout(BaseException):
    """Raised inside a test when its time is up or the runner asks it to stop.

    A BaseException so that a test's own ``except Exception`` cannot swallow
    it; teardown still runs."""


# --------------------------------------------------------------------------
# time: every threshold a test puts on time scales with --timeout-scale


def timeout_scale():
    """The runner's --timeout-scale (BOT_TIMEOUT_SCALE), 1.0 when unset."""
    try:
        v = float(os.environ.get("BOT_TIMEOUT_SCALE") or 1.0)
    except ValueError:
        return 1.0
    return v if v > 0 else 1.0


def scaled(seconds):
    """``seconds`` times the runner's --timeout-scale: use it for every
    "within N s" a test asserts (wait_until scales its own timeout)."""
    return seconds * timeout_scale()


# --------------------------------------------------------------------------
# secrets: canaries that must never show up in a log, a reply or an output

_secret_registry = {}  # value -> label


def canary(label):
    """A fresh secret, distinctive enough that finding it anywhere is a
    leak: letters and digits around "cnry" and 16 hex digits. Registered,
    so the teardown scan and every HTTP reply check look for it."""
    value = "%s-cnry%s" % (re.sub(r"[^A-Za-z0-9]", "", label)[:12] or "secret", _secrets.token_hex(8))
    register_secret(value, label)
    return value


def register_secret(value, label):
    """Look for ``value`` (at least 6 characters; shorter ones are not
    distinctive) in every log and reply from now on."""
    if isinstance(value, str) and len(value) >= 6:
        _secret_registry.setdefault(value, label)


def registered_secrets():
    """{value: label} of every secret registered in this process."""
    return dict(_secret_registry)


# Settings whose values are secrets, and the ones holding a URL that may
# carry a password.
_SECRET_ENV = re.compile(r"^(DISCORD_TOKEN|[A-Z]+_API_KEY(_\d+)?|[A-Z_]*(PASSWORD|SECRET)[A-Z_]*)$")
_URL_ENV = re.compile(r"^(REDIS_URL|DATABASE_URL|[A-Z_]+_URL)$")


def url_password(url):
    """The password of a URL's userinfo (up to its last '@' before the
    path), or None."""
    m = re.match(r"^[a-z][a-z0-9+.-]*://([^/]*)@", url)
    if not m or ":" not in m.group(1):
        return None
    return m.group(1).split(":", 1)[1] or None


def register_env_secrets(env):
    """Register the secret values of an instance's environment: tokens,
    API keys (each of a comma-separated list), passwords, and the password
    of any URL setting."""
    for k, v in env.items():
        v = str(v)
        if _SECRET_ENV.match(k) and not k.endswith("_FILE"):
            for part in v.split(","):
                register_secret(part.strip(), k)
        elif _URL_ENV.match(k):
            register_secret(url_password(v), k)


def find_secrets(text, secrets=None):
    """[(label, excerpt)] for each registered secret found in ``text``
    (str or bytes); the excerpt has the secret replaced by <label>."""
    secrets = registered_secrets() if secrets is None else secrets
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    found = []
    for value, label in secrets.items():
        i = text.find(value)
        if i >= 0:
            a, b = max(0, i - 60), min(len(text), i + len(value) + 60)
            excerpt = text[a:b].replace(value, "<%s>" % label).replace("\n", " ")
            for other, olabel in secrets.items():  # never print another one either
                excerpt = excerpt.replace(other, "<%s>" % olabel)
            found.append((label, excerpt))
    return found


# Files the scan reads: logs and captured output, not data (a PostgreSQL
# cluster, an AOF, downloaded videos).
_SCAN_SKIP_DIRS = {"data", "pg_wal", "base", "videos"}
_SCAN_MAX_BYTES = 64 << 20


def scan_for_secrets(root, secrets=None):
    """[{"label", "file", "excerpt"}] for every registered secret found in
    a log-like file under ``root`` (*.log, *.out, *.txt, *.json, *.jsonl)."""
    secrets = registered_secrets() if secrets is None else secrets
    leaks = []
    if not secrets:
        return leaks
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SCAN_SKIP_DIRS]
        for fn in filenames:
            if fn == SECRET_SCAN_FILE or not fn.endswith((".log", ".out", ".txt", ".json", ".jsonl")):
                continue
            path = os.path.join(dirpath, fn)
            try:
                if os.path.getsize(path) > _SCAN_MAX_BYTES:
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            for label, excerpt in find_secrets(data, secrets):
                leaks.append({"label": label, "file": os.path.relpath(path, root), "excerpt": excerpt})
    return leaks


def _check_reply(what, text):
    """Fail when an HTTP reply of ours holds a registered secret."""
    found = find_secrets(text or "")
    if found:
        raise AssertionError("secret %s in the reply to %s: %s" % (found[0][0], what, found[0][1]))


# --------------------------------------------------------------------------
# small helpers


def timeout(seconds):
    """Decorator: give one test its own timeout in seconds (default 180)."""

    def deco(fn):
        fn.harness_timeout = float(seconds)
        return fn

    return deco


_ports_given = set()


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Never returns the same port twice in one process. Another process can
    still take it before we bind; the server classes retry on that."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("free_port: no fresh port found")


def wait_until(pred, timeout=10.0, msg=None, interval=0.05):
    """Poll ``pred()`` until it returns something truthy and return that.

    ``timeout`` is scaled by the runner's --timeout-scale (a wait for an
    event only gets longer on a slow machine). On timeout raise
    AssertionError carrying ``msg`` (a string, or a callable returning one,
    evaluated only then) and the last value seen. Exceptions raised by
    ``pred`` propagate at once."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            text = msg() if callable(msg) else msg
            raise AssertionError(
                "timed out after %gs waiting for %s (last value: %r)"
                % (timeout, text or getattr(pred, "__name__", "condition"), last)
            )
        time.sleep(interval)


def check(cond, msg="check failed"):
    """Fail the test with ``msg`` unless ``cond`` holds."""
    if not cond:
        raise AssertionError(msg() if callable(msg) else msg)


def _keep_tmp():
    return os.environ.get("KEEP_TMP", "") not in ("", "0")


def _tail(path, n):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _proc_stat(pid):
    """(state, ppid, pgrp) of a live pid from /proc, or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[2])


def _children(pid):
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _proc_stat(int(name))
            if st and st[1] == pid:
                kids.append(int(name))
    return kids


def _wait_gone(pids, timeout=10.0):
    """Wait until none of ``pids`` is running (zombies count as gone: our
    PID 1 may never reap them, and a zombie holds no resources we need)."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        alive = [p for p in pids if (_proc_stat(p) or ("Z",))[0] not in ("Z", "X")]
        if not alive:
            return True
        time.sleep(0.02)
    return False


_libc = None


def _preexec_pdeathsig():
    # Runs in the child after fork (and after any uid switch): if the process
    # that started us dies, even by SIGKILL, the kernel kills us too.
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _preexec():
    """preexec_fn for long-lived children, or None.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so
    it is only armed from the main thread."""
    global _libc
    if threading.current_thread() is not threading.main_thread():
        return None
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            return None
    return _preexec_pdeathsig


def _spawn(argv, log_path, env, cwd=None, user=None):
    """Start a long-lived child in its own session (so its whole process
    group can be killed), output appended to ``log_path``."""
    kw = {}
    if user is not None:
        kw = {"user": user[0], "group": user[1], "extra_groups": []}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_preexec(),
            **kw,
        )


def _base_env():
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")}
    if os.environ.get(TOKEN_VAR):
        env[TOKEN_VAR] = os.environ[TOKEN_VAR]
    return env


def _mkdtemp(prefix, parent=None):
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    if os.geteuid() == 0:
        # PostgreSQL runs as an unprivileged user and must be able to pass
        # through (not list) every directory above its data directory.
        os.chmod(path, 0o711)
    return path


# --------------------------------------------------------------------------
# RESP2 client


class RespClient:
    """A minimal RESP2 client: ``cmd(*args)`` sends one command, returns the
    reply as Python values.

    Replies map as: simple string -> str; bulk string -> str when valid
    UTF-8, else bytes (always bytes with decode=False); integer -> int;
    nil bulk or nil array -> None; array -> list (nested as deep as Redis
    sends). A top-level error reply raises RedisError; an error nested in an
    array (EXEC) is returned as a RedisError instance. Arguments may be str,
    bytes, int or float. After a socket timeout the connection is unusable:
    open a new client."""

    def __init__(self, host="127.0.0.1", port=6379, timeout=10.0, decode=True):
        self.decode = decode
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._rf = self.sock.makefile("rb")

    def close(self):
        with contextlib.suppress(OSError):
            self._rf.close()
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, (bytes, bytearray, memoryview)):
                b = bytes(a)
            elif isinstance(a, str):
                b = a.encode("utf-8")
            elif isinstance(a, (int, float)) and not isinstance(a, bool):
                b = repr(a).encode()
            else:
                raise TypeError("RESP argument must be str, bytes, int or float: %r" % (a,))
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def cmd(self, *args, timeout=None):
        """Send one command; ``timeout`` overrides the socket timeout for this
        call (use it for BLOCK/BLPOP longer than the default)."""
        if not args:
            raise ValueError("empty command")
        old = self.sock.gettimeout()
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            self.sock.sendall(self.encode(args))
            reply = self._read()
        finally:
            if timeout is not None:
                self.sock.settimeout(old)
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def _line(self):
        line = self._rf.readline(1 << 20)
        if not line.endswith(b"\r\n"):
            raise ConnectionError("redis connection closed or bad reply line: %r" % line[:80])
        return line[:-2]

    def _text(self, b):
        if not self.decode:
            return b
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return b

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace") if self.decode else rest
        if kind == b"-":
            return RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self._rf.read(n + 2)
            if len(data) != n + 2 or data[-2:] != b"\r\n":
                raise ConnectionError("redis connection closed inside a bulk string")
            return self._text(data[:-2])
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise ConnectionError("unknown RESP reply type: %r" % line[:80])


# --------------------------------------------------------------------------
# servers


class _Server:
    """What RedisServer and PgServer share: one child process in its own
    session, output in ``log_path``."""

    name = "server"
    proc = None
    _auto_port = False
    _stopping = False

    def died_unexpectedly(self):
        """True if the server exited without stop() or kill()."""
        return self.proc is not None and not self._stopping and self.proc.poll() is not None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _killgroup(self, sig):
        # Only while the leader is unreaped: then the group id cannot have
        # been reused by an unrelated process.
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def pause(self):
        """SIGSTOP: the server keeps its sockets but answers nothing."""
        self._killgroup(signal.SIGSTOP)

    def resume(self):
        self._killgroup(signal.SIGCONT)

    def kill(self):
        """SIGKILL, no chance to flush: simulates a crash."""
        self._stopping = True
        if self.alive():
            self._killgroup(signal.SIGKILL)
            self.proc.wait()

    def _stop(self, sig, timeout):
        self._stopping = True
        if not self.alive():
            return
        self._killgroup(signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self):
        """Stop (if running) and start again on the same port and directory."""
        self.stop()
        self.start()
        return self

    def log_tail(self, n=30):
        return _tail(self.log_path, n)

    def _start_failed(self, why):
        return RuntimeError("%s %s; log tail:\n%s" % (self.name, why, self.log_tail(25)))

    def _port_clash(self):
        return "Address already in use" in self.log_tail(20) or "could not bind" in self.log_tail(20)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class RedisServer(_Server):
    """A real redis-server on 127.0.0.1, data (AOF) in ``dirpath``.

    ``start()`` returns once it answers PING and has loaded its data;
    ``stop()`` is SIGTERM (Redis flushes the AOF), ``kill()`` SIGKILL;
    ``restart()`` keeps port and directory, so AOF data survives a kill."""

    name = "redis-server"

    def __init__(self, dirpath, port=None, appendonly=True, args=None):
        self.dir = os.path.abspath(dirpath)
        os.makedirs(self.dir, exist_ok=True)
        self._auto_port = port is None
        self.port = port or free_port()
        self.appendonly = appendonly
        self.args = list(args or [])
        self.log_path = os.path.join(self.dir, "redis.log")
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"

    @property
    def url(self):
        self._auto_port = False  # handed out: never move to another port
        return "redis://127.0.0.1:%d/0" % self.port

    def client(self, **kw):
        return RespClient("127.0.0.1", self.port, **kw)

    def start(self, timeout=20.0):
        if self.alive():
            raise RuntimeError("redis-server already running")
        for attempt in range(3):
            argv = [
                self.binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--dir", self.dir,
                "--daemonize", "no",
                "--logfile", "",
            ] + self.args
            self._stopping = False
            self.proc = _spawn(argv, self.log_path, _base_env(), cwd=self.dir)
            try:
                self._wait_ready(timeout)
                return self
            except RuntimeError:
                self.kill()
                if self._auto_port and attempt < 2 and self._port_clash():
                    self.port = free_port()
                    continue
                raise

    def _wait_ready(self, timeout):
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise self._start_failed("exited during startup")
            try:
                with self.client(timeout=2) as c:
                    if c.cmd("PING") == "PONG":
                        info = c.cmd("INFO", "persistence")
                        if "loading:0" in info:
                            return
            except (OSError, RedisError):
                pass
            if time.monotonic() > deadline:
                raise self._start_failed("not ready after %gs" % timeout)
            time.sleep(0.02)

    def stop(self, timeout=30.0):
        self._stop(signal.SIGTERM, timeout)


class PgError(Exception):
    """psql reported an error (the message is its stderr)."""


def _pg_bindir():
    env = os.environ.get("PG_BINDIR")
    if env:
        return env

    def version(path):
        v = path.split("/")[-2]
        return [int(x) for x in re.findall(r"\d+", v)] or [0]

    cands = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(d + "/postgres")]
    if cands:
        return max(cands, key=version)
    found = shutil.which("postgres")
    if found:
        return os.path.dirname(found)
    raise RuntimeError("PostgreSQL server not found under /usr/lib/postgresql/*/bin")


def _pg_user():
    """(uid, gid) to run PostgreSQL as, or None to run as ourselves.
    PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return None
    pw = pwd.getpwnam(os.environ.get("PG_RUN_AS", "nobody"))
    return pw.pw_uid, pw.pw_gid


def _ensure_traversable(path, uid, gid):
    """Let uid/gid pass through every directory above ``path``. Directories
    we own under the system temp dir get o+x (search, not read); anything
    else that blocks is an error with a hint."""
    tmp = os.path.realpath(tempfile.gettempdir())
    path = os.path.realpath(path)
    parts = path.split("/")
    for i in range(2, len(parts) + 1):
        p = "/".join(parts[:i]) or "/"
        st = os.stat(p)
        mode = st.st_mode
        if (st.st_uid == uid and mode & 0o100) or (st.st_gid == gid and mode & 0o010) or mode & 0o001:
            continue
        if p.startswith(tmp + "/") and st.st_uid == os.geteuid():
            os.chmod(p, (mode & 0o7777) | 0o001)
            continue
        raise RuntimeError(
            "PostgreSQL runs as uid %d and cannot enter %s: use a test dir under %s" % (uid, p, tmp)
        )


class PgServer(_Server):
    """A real PostgreSQL (highest version under /usr/lib/postgresql) on
    127.0.0.1, cluster in ``dirpath``/data, superuser ``postgres``, trust auth.
    Its URLs carry a canary password (trust auth never asks for it), with a
    '?' and a '#' in it as people's passwords have: any log line, reply or
    output that shows it is a leak (see scan_for_secrets).

    When root, initdb and postgres run as ``nobody`` (PG_RUN_AS overrides).
    ``start()`` initialises the cluster if needed and returns once it accepts
    connections; ``stop()`` is a fast shutdown (SIGINT), ``kill()`` SIGKILLs
    the postmaster and its children (a crash: the next start recovers from
    WAL); ``restart()`` keeps port and data."""

    name = "postgres"

    def __init__(self, dirpath, port=None, settings=None):
        self.dir = os.path.abspath(dirpath)
        os.makedirs(self.dir, exist_ok=True)
        self._auto_port = port is None
        self.port = port or free_port()
        self.settings = dict(settings or {})
        self.bindir = _pg_bindir()
        self.user = _pg_user()
        self.data = os.path.join(self.dir, "data")
        self.sockdir = os.path.join(self.dir, "sock")
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.init_seconds = None
        self.start_seconds = None
        # the canary inside is what is looked for: it also finds the
        # password percent-encoded
        self.password = "Pg?%s#55" % canary("DATABASE_URL password")

    @property
    def url(self):
        return self.db_url("postgres")

    def db_url(self, name):
        self._auto_port = False  # handed out: never move to another port
        return "postgresql://postgres:%s@127.0.0.1:%d/%s" % (self.password, self.port, name)

    def _own(self, path):
        if self.user:
            os.chown(path, *self.user)

    def _pg_env(self):
        env = _base_env()
        env.update(LC_ALL="C.UTF-8", HOME=self.dir)
        return env

    def _initdb(self, data):
        """Run initdb into ``data`` (which must not exist yet)."""
        os.mkdir(data, 0o700)
        self._own(data)
        argv = [
            self.bindir + "/initdb", "-D", data, "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        ]
        kw = {"user": self.user[0], "group": self.user[1], "extra_groups": []} if self.user else {}
        r = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=self._pg_env(), cwd=os.path.dirname(data), timeout=120, **kw,
        )
        if r.returncode != 0:
            raise RuntimeError("initdb failed:\n" + r.stdout.decode("utf-8", "replace")[-3000:])

    def _init_cluster(self):
        """Make ``self.data``: a copy of the per-run template when the runner
        set BOT_PG_TEMPLATE_DIR (initdb once, cp -a after: ~0.1 s instead of
        ~1.3 s), else a plain initdb. The template is never started."""
        tdir = os.environ.get("BOT_PG_TEMPLATE_DIR")
        if not tdir:
            self._initdb(self.data)
            return
        os.makedirs(tdir, exist_ok=True)
        if self.user:
            _ensure_traversable(tdir, *self.user)
        stamp = "%s\n%s\n" % (self.bindir, self.user)
        with open(os.path.join(tdir, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            ready = os.path.join(tdir, "ready")
            tdata = os.path.join(tdir, "data")
            try:
                with open(ready) as f:
                    ok = f.read() == stamp
            except OSError:
                ok = False
            if not ok:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(ready)
                shutil.rmtree(tdata, ignore_errors=True)
                self._initdb(tdata)
                with open(ready, "w") as f:
                    f.write(stamp)
            r = subprocess.run(["cp", "-a", tdata, self.data], stderr=subprocess.PIPE)
            if r.returncode != 0:
                raise RuntimeError("copying PG template failed: %s" % r.stderr.decode(errors="replace"))

    def start(self, timeout=60.0):
        if self.alive():
            raise RuntimeError("postgres already running")
        if self.user:
            _ensure_traversable(self.dir, *self.user)
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            t0 = time.monotonic()
            self._init_cluster()
            self.init_seconds = time.monotonic() - t0
        if not os.path.isdir(self.sockdir):
            os.mkdir(self.sockdir, 0o700)
            self._own(self.sockdir)
        t0 = time.monotonic()
        for attempt in range(40):
            self._stopping = False
            self.proc = _spawn(self._argv(), self.log_path, self._pg_env(), cwd=self.data, user=self.user)
            try:
                self._wait_ready(timeout)
                self.start_seconds = time.monotonic() - t0
                return self
            except RuntimeError:
                self.kill()
                log = self.log_tail(20)
                if self._auto_port and attempt < 3 and self._port_clash():
                    self.port = free_port()
                    continue
                # After a kill the old backends may still hold shared memory
                # for a moment.
                if "is still in use" in log and attempt < 39:
                    time.sleep(0.25)
                    continue
                raise

    # fsync and full_page_writes only matter when the OS crashes, which a
    # test never does. synchronous_commit stays on: with fsync off it costs
    # nothing measurable, and off would lose acknowledged commits on kill().
    DEFAULT_SETTINGS = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "on"}

    def _argv(self):
        sock = self.sockdir if len(self.sockdir) < 90 else ""
        argv = [
            self.bindir + "/postgres", "-D", self.data,
            "-c", "listen_addresses=127.0.0.1", "-p", str(self.port), "-k", sock,
        ]
        for k, v in dict(self.DEFAULT_SETTINGS, **self.settings).items():
            argv += ["-c", "%s=%s" % (k, v)]
        return argv

    def _wait_ready(self, timeout):
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise self._start_failed("exited during startup")
            r = subprocess.run(
                [self.bindir + "/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", "postgres", "-d", "postgres", "-t", "2"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=self._pg_env(),
            )
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise self._start_failed("not accepting connections after %gs" % timeout)
            time.sleep(0.05)

    def stop(self, timeout=60.0):
        """Fast shutdown: disconnects clients, checkpoints, exits."""
        self._stop(signal.SIGINT, timeout)

    def kill(self):
        self._stopping = True
        if not self.alive():
            return
        kids = _children(self.proc.pid)
        self._killgroup(signal.SIGKILL)
        self.proc.wait()
        # Backends are their own process-group leaders; kill them as well so
        # the next start does not find the old shared memory still attached.
        for k in kids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(k, signal.SIGKILL)
        _wait_gone(kids)

    def psql(self, sql, db="postgres", timeout=60.0):
        """Run ``sql`` (one or more statements) with the real psql client and
        return the rows of every result set, in order, as one list of tuples
        of str (NULL as None). Stops at the first error and raises PgError.
        ``db`` is a database name or a postgresql:// URL."""
        target = db if "://" in db else self.db_url(db)
        env = _base_env()
        env.update(PGCLIENTENCODING="UTF8", PGCONNECT_TIMEOUT="10", HOME=self.dir, LC_ALL="C.UTF-8")
        # Records end in NUL (-0), which PostgreSQL text can never contain;
        # fields are split by US and NULL shown as SUB, so any value survives.
        r = subprocess.run(
            [self.bindir + "/psql", "-X", "-q", "-A", "-t", "-0", "-v", "ON_ERROR_STOP=1",
             "-F", "\x1f", "-P", "null=\x1a", "-d", target, "-f", "-"],
            input=sql.encode("utf-8"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, timeout=timeout,
        )
        if r.returncode != 0:
            raise PgError(r.stderr.decode("utf-8", "replace").strip())
        records = r.stdout.decode("utf-8").split("\0")[:-1]
        return [tuple(None if f == "\x1a" else f for f in rec.split("\x1f")) for rec in records]

    def create_database(self, name):
        """CREATE DATABASE ``name`` (letters, digits, _); return its URL."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
            raise ValueError("bad database name: %r" % name)
        self.psql('CREATE DATABASE "%s"' % name)
        return self.db_url(name)


# --------------------------------------------------------------------------
# role binaries


def bin_dir():
    return os.environ.get("BOT_BIN_DIR") or ROOT


class Instance:
    """One run of a role binary, BOT_BIN_DIR/<role>-instance/<role>-instance.

    The environment is clean: PATH, the sanitizer options, TMPDIR (the test's
    temp dir), the runner's cleanup token, plus ``env``. stdout and stderr go
    to one log file in the test's temp dir (appended across restarts); the
    working directory is the test's temp dir. The test fails at teardown if
    the output holds a sanitizer report."""

    _seq = itertools.count(1)

    def __init__(self, role, t, env=None, args=None, binary=None, cwd=None):
        self.role = role
        self.t = t
        self.env = {k: str(v) for k, v in (env or {}).items()}
        self.args = [str(a) for a in (args or [])]
        self.binary = binary or os.path.join(bin_dir(), "%s-instance" % role, "%s-instance" % role)
        self.cwd = cwd or t.tmp
        self.name = "%s-%d" % (role, next(self._seq))
        self.log_path = os.path.join(t.tmp, self.name + ".log")
        self.proc = None
        self.stop_timeout = 10.0
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self):
        return "<Instance %s pid=%s>" % (self.name, self.pid)

    # process control -------------------------------------------------------

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def full_env(self):
        env = _base_env()
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if os.environ.get(k):
                env[k] = os.environ[k]
        env["TMPDIR"] = self.t.tmp
        env.update(self.env)
        return env

    def start(self):
        if self.alive():
            raise RuntimeError("%s already running" % self.name)
        if not os.access(self.binary, os.X_OK):
            raise FileNotFoundError("%s binary not built: %s (run make)" % (self.role, self.binary))
        with open(self.log_path, "ab") as log:
            log.write(b"")
        register_env_secrets(self.env)
        self.proc = _spawn([self.binary] + self.args, self.log_path, self.full_env(), cwd=self.cwd)
        return self

    def sigterm(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        """SIGKILL the instance and anything in its process group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def wait(self, timeout=10.0):
        """Wait for exit; return the exit code (negative: killed by that
        signal). Raises AssertionError if still running after ``timeout``
        (scaled by --timeout-scale)."""
        timeout = scaled(timeout)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running after %gs" % (self.name, timeout)) from None

    def stop(self, timeout=None):
        """SIGTERM and wait; return the exit code."""
        self.sigterm()
        return self.wait(timeout or self.stop_timeout)

    def restart(self):
        if self.alive():
            self.stop()
        return self.start()

    # output ------------------------------------------------------------------

    def logs(self):
        try:
            with open(self.log_path, "r", encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def records(self):
        """The output lines that are JSON objects, parsed; others skipped."""
        out = []
        for line in self.logs().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    def find_records(self, **match):
        return [r for r in self.records() if all(r.get(k) == v for k, v in match.items())]

    def wait_record(self, timeout=10.0, **match):
        """Wait for a JSON log record whose fields equal ``match``; return it."""
        found = wait_until(
            lambda: self._alive_or_fail() and self.find_records(**match),
            timeout, lambda: "%s log record %r" % (self.name, match),
        )
        return found[0]

    def wait_log(self, text, timeout=10.0):
        """Wait until ``text`` appears in the output."""
        wait_until(lambda: text in self.logs() or (self._alive_or_fail() and False),
                   timeout, lambda: "%r in %s output" % (text, self.name))

    def sanitizer_report(self):
        """The first sanitizer report in the output (an excerpt), or None."""
        lines = self.logs().splitlines()
        for i, line in enumerate(lines):
            if any(m in line for m in SANITIZER_MARKERS):
                return "\n".join(lines[max(0, i - 2) : i + 40])
        return None

    def _alive_or_fail(self):
        if not self.alive():
            raise AssertionError(
                "%s exited with %s; output tail:\n%s"
                % (self.name, self.proc.returncode if self.proc else "?", _tail(self.log_path, 30))
            )
        return True

    # HTTP ----------------------------------------------------------------------

    @property
    def health_port(self):
        port = self.env.get("HEALTH_PORT")
        if not port:
            raise RuntimeError("%s has no HEALTH_PORT in its env" % self.name)
        return int(port)

    def request(self, method, path, body=None, headers=None, port=None, timeout=5.0):
        """One HTTP request to 127.0.0.1 (HEALTH_PORT unless ``port``); return
        (status, body text). HTTP error statuses are returned, not raised;
        connection failures raise OSError. A reply holding a registered
        secret (a token, a key, the database password) fails the test: our
        /health, /metrics and error replies must never show one."""
        url = "http://127.0.0.1:%d%s" % (port or self.health_port, path)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers = dict(headers or {}, **{"Content-Type": "application/json"})
        if isinstance(body, str):
            body = body.encode("utf-8")
        req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
        try:
            with self._opener.open(req, timeout=scaled(timeout)) as resp:
                status, text = resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode("utf-8", "replace")
        except urllib.error.URLError as e:
            raise ConnectionError("%s %s: %s" % (method, url, e.reason)) from None
        _check_reply("%s %s of %s" % (method, path, self.name), text)
        return status, text

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def health(self):
        """(HTTP status, parsed JSON body or None) of GET /health."""
        status, text = self.get("/health")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, None

    def wait_healthy(self, timeout=10.0):
        """Wait for /health to answer 200; return its JSON. Fails at once,
        with the output tail, if the process exits meanwhile."""
        def ready():
            self._alive_or_fail()
            try:
                status, body = self.health()
            except OSError:
                return None
            return (status, body) if status == 200 else None

        return wait_until(ready, timeout, lambda: "%s /health to answer 200" % self.name)[1]

    # teardown ------------------------------------------------------------------

    def _teardown(self):
        if self.alive():
            # SIGTERM first so an ASan build gets to run its leak check.
            self.sigterm()
            try:
                self.proc.wait(scaled(self.stop_timeout))
            except subprocess.TimeoutExpired:
                self.t.notes.append("%s did not exit within %gs of SIGTERM; killed"
                                    % (self.name, scaled(self.stop_timeout)))
                self.kill()
        report = self.sanitizer_report()
        if report:
            raise AssertionError("sanitizer report in %s output:\n%s" % (self.name, report))


# --------------------------------------------------------------------------
# the test context


class TestContext:
    """What a test receives as ``t``. Use ``with TestContext() as t`` outside
    the runner. Everything started through it is torn down by ``close()``
    in reverse order of creation."""

    def __init__(self, name=None):
        self.name = name or os.environ.get("BOT_TEST_ID", "adhoc")
        self.root = os.environ.get("BOT_ROOT", ROOT)
        self.variant = os.environ.get("BOT_VARIANT", "release")
        self.bin_dir = bin_dir()
        self.tmp = _mkdtemp("t", os.environ.get("BOT_TEST_TMPDIR") or None)
        self._cleanups = []
        self._instances = []
        self._servers = []
        self._n = itertools.count(1)
        self.notes = []
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, etype, exc, tb):
        self.close(failed=etype is not None)

    def log(self, *args):
        print("[%s] %s" % (time.strftime("%H:%M:%S"), " ".join(str(a) for a in args)), flush=True)

    def cleanup(self, fn, *args):
        """Run ``fn(*args)`` at teardown (last registered runs first)."""
        self._cleanups.append((fn, args))

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    free_port = staticmethod(free_port)
    wait_until = staticmethod(wait_until)
    check = staticmethod(check)

    def redis(self, start=True, **kw):
        srv = RedisServer(self.path("redis-%d" % next(self._n)), **kw)
        self._servers.append(srv)
        self.cleanup(srv.stop)
        return srv.start() if start else srv

    def postgres(self, start=True, **kw):
        srv = PgServer(self.path("pg-%d" % next(self._n)), **kw)
        self._servers.append(srv)
        self.cleanup(srv.stop)
        return srv.start() if start else srv

    def instance(self, role, env=None, args=None, start=True, **kw):
        inst = Instance(role, self, env=env, args=args, **kw)
        self._instances.append(inst)
        self.cleanup(inst._teardown)
        return inst.start() if start else inst

    def close(self, failed=False, raise_errors=True):
        """Tear everything down; return the list of teardown errors (raised
        as one AssertionError when ``raise_errors``)."""
        if self.closed:
            return []
        self.closed = True
        errors = []
        died = [s for s in self._servers if s.died_unexpectedly()]
        while self._cleanups:
            fn, args = self._cleanups.pop()
            try:
                fn(*args)
            except BaseException as e:  # noqa: B902 - teardown must go on
                errors.append("".join(traceback.format_exception_only(type(e), e)).strip())
        for srv in self._servers:  # in case a cleanup above failed midway
            with contextlib.suppress(BaseException):
                srv.kill()
        for inst in self._instances:
            with contextlib.suppress(BaseException):
                inst.kill()
        if failed or errors:
            self._dump_logs(died)
        self._scan_secrets()
        for n in self.notes:
            print("note: " + n, flush=True)
        if _keep_tmp():
            print("KEEP_TMP: kept %s" % self.tmp, flush=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if errors and raise_errors:
            raise AssertionError("teardown: " + "\n".join(errors))
        return errors

    def _scan_secrets(self):
        """Look for every registered secret in the logs under t.tmp (its
        instances', simulators' and servers'), before t.tmp is removed, and
        leave the secrets and what was found for the runner, which also
        scans the test's own output and fails a final check on any find."""
        leaks = scan_for_secrets(self.tmp)
        for leak in leaks:
            self.notes.append("secret %s found in %s: %s" % (leak["label"], leak["file"], leak["excerpt"]))
        out_dir = os.environ.get("BOT_TEST_TMPDIR")
        if not out_dir or not os.path.isdir(out_dir):
            return
        with contextlib.suppress(OSError):
            with open(os.path.join(out_dir, SECRET_SCAN_FILE), "w") as f:
                json.dump({"secrets": registered_secrets(), "leaks": leaks}, f)

    def _dump_logs(self, died):
        for srv in self._servers:
            if srv in died:
                print("--- %s %s died during the test; %s ---" % (srv.name, srv.port, srv.log_path))
                print(srv.log_tail(15))
        for inst in self._instances:
            if inst.proc is None:
                continue
            print("--- %s: last lines of %s ---" % (inst.name, inst.log_path))
            print(_tail(inst.log_path, 25))
        sys.stdout.flush()


# --------------------------------------------------------------------------
# running one test in this process (called by tests/run.py)


def load_module(path):
    path = os.path.abspath(path)
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def list_tests(path):
    """[(name, timeout seconds)] of the top-level test_* functions, in
    definition order."""
    mod = load_module(path)
    out = []
    for name, obj in vars(mod).items():
        if name.startswith("test_") and inspect.isfunction(obj):
            out.append((name, getattr(obj, "harness_timeout", DEFAULT_TIMEOUT)))
    return out


def _raise_timeout(signum, frame):
    if signum == signal.SIGALRM:
        raise TestTimeout("test exceeded its %ss timeout" % os.environ.get("BOT_TEST_TIMEOUT", "?"))
    raise TestTimeout("stopped by signal %s" % signal.Signals(signum).name)


def run_test(path, func):
    """Run one test with teardown; return the process exit code:
    0 passed, 1 failed, 3 timed out."""
    mod = load_module(path)
    fn = getattr(mod, func, None)
    if not inspect.isfunction(fn):
        print("no test function %s in %s" % (func, path))
        return 1
    limit = float(os.environ.get("BOT_TEST_TIMEOUT") or getattr(fn, "harness_timeout", DEFAULT_TIMEOUT))
    os.environ["BOT_TEST_TIMEOUT"] = "%g" % limit
    signal.signal(signal.SIGALRM, _raise_timeout)
    signal.signal(signal.SIGTERM, _raise_timeout)
    signal.signal(signal.SIGINT, _raise_timeout)
    signal.signal(signal.SIGHUP, _raise_timeout)
    t = None
    outcome, tb = 0, None
    try:
        t = TestContext()
        signal.setitimer(signal.ITIMER_REAL, limit)
        if inspect.signature(fn).parameters:
            fn(t)
        else:
            fn()
    except TestTimeout:
        outcome, tb = 3, traceback.format_exc()
    except BaseException:
        outcome, tb = 1, traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        # Teardown must not be cut short by the runner's SIGTERM; if it hangs,
        # the runner's SIGKILL and token sweep still clean up.
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
    errors = t.close(failed=outcome != 0, raise_errors=False) if t else []
    if errors:
        print("teardown failed:\n" + "\n".join(errors))
        outcome = outcome or 1
    if tb:
        print(tb, end="")
    sys.stdout.flush()
    return outcome


def _cli(argv):
    if len(argv) == 2 and argv[0] == "--list":
        for name, tmo in list_tests(argv[1]):
            print(json.dumps({"name": name, "timeout": tmo}))
        return 0
    if len(argv) == 3 and argv[0] == "--run":
        sys.stdout.reconfigure(line_buffering=True)
        return run_test(argv[1], argv[2])
    print("usage: harness.py --list FILE | --run FILE FUNC", file=sys.stderr)
    return 2


if __name__ == "__main__":
    # Re-import under our real name so that tests doing `import harness`
    # share this module's state instead of getting a second copy.
    sys.dont_write_bytecode = True
    sys.path.insert(0, HERE)
    import harness as _self

    sys.exit(_self._cli(sys.argv[1:]))
