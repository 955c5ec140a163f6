#!/usr/bin/env python3
"""The one test runner: unit cases and integration tests, each in its own
process with a timeout. `make test` and `make test-asan` call it.

    python3 tests/run.py --variant release|asan [-k SUBSTRING ...] [-j N]
                         [--list] [-v]

Unit tests: every executable build/<variant>/tests/unit/test_*; `BIN --list`
names its cases and each case runs as `BIN CASE`. They share one redis-server
and one PostgreSQL that this runner starts (TEST_REDIS_URL,
TEST_PG_ADMIN_URL). Integration tests: every top-level test_* function in
tests/integration/test_*.py, run through tests/integration/harness.py.

One line per test, the output tail of each failure, then the secret check
(no secret a test handed out shows in any log or output), the counts of
product tests and of self-tests apart, and as the last line
`N passed, N failed`. Exit status 0 only when nothing failed and at least one
test ran. Python 3 standard library only; see tests/README.md.
"""

import argparse
import collections
import contextlib
import ctypes
import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IT_DIR = os.path.join(ROOT, "tests", "integration")
HARNESS = os.path.join(IT_DIR, "harness.py")

sys.dont_write_bytecode = True
sys.path.insert(0, IT_DIR)
import harness  # noqa: E402

# What the Makefile's test-asan target exports; used when run.py is called
# directly for the asan variant without them.
ASAN_DEFAULTS = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}
TAIL_LINES = 80

# Integration files that test the test tools (simulators, harness, runner,
# docs and compose linters), not our binaries: counted apart.
SELF_TEST_FILES = ("test_harness", "test_docs", "test_compose", "test_layers")

SECRET_CHECK_ID = "secrets/no_secret_in_logs"


def is_self_test(tid):
    """Whether test id ``tid`` is a self-test of the tools (simulators,
    harness, linters) rather than a product test of our binaries."""
    if not tid.startswith("integration/"):
        return False
    base = tid.split("/", 1)[1].split(":", 1)[0]
    return base.endswith("_sim") or base in SELF_TEST_FILES


class Test:
    def __init__(self, tid, kind, argv, timeout):
        self.id = tid
        self.kind = kind  # "unit" or "integration"
        self.argv = argv
        self.timeout = timeout
        self.env = {}
        self.proc = None
        self.ok = None
        self.reason = ""
        self.notes = []
        self.output = ""
        self.duration = 0.0
        self.timed_out = False
        self.termed = False
        self.interrupted = False


def broken(tid, why, output=""):
    """A pseudo-test standing for something that could not even be listed or
    set up: it counts as one failure."""
    t = Test(tid, "error", None, 0)
    t.ok, t.reason, t.output = False, why, output
    return t


def matches(tid, patterns):
    return not patterns or any(p in tid for p in patterns)


def matches_file(fid, patterns):
    """For errors found while listing a file: is any pattern about it?"""
    base = fid.split("/", 1)[1]
    return not patterns or any(p in fid or base in p for p in patterns)


# --------------------------------------------------------------------------
# discovery


def discover_unit(build_dir, patterns, timeout):
    tests, errors = [], []
    unit_dir = os.path.join(build_dir, "tests", "unit")
    names = {os.path.basename(p)[:-2] for p in glob.glob(os.path.join(ROOT, "tests/unit/test_*.c"))}
    for p in glob.glob(os.path.join(unit_dir, "test_*")):
        if "." not in os.path.basename(p) and os.path.isfile(p) and os.access(p, os.X_OK):
            names.add(os.path.basename(p))
    for name in sorted(names):
        fid = "unit/" + name
        binary = os.path.join(unit_dir, name)
        if not os.access(binary, os.X_OK):
            if matches_file(fid, patterns):
                errors.append(broken(fid, "not built: " + os.path.relpath(binary, ROOT)))
            continue
        try:
            r = subprocess.run([binary, "--list"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30, cwd=ROOT)
            out, rc = r.stdout.decode("utf-8", "replace"), r.returncode
        except subprocess.TimeoutExpired:
            out, rc = "", "timeout"
        cases = out.split() if rc == 0 else []
        if not cases:
            if matches_file(fid, patterns):
                errors.append(broken(fid, "`%s --list` failed (%s)" % (name, rc or "no cases"), out))
            continue
        for case in cases:
            tid = "%s:%s" % (fid, case)
            if matches(tid, patterns):
                tests.append(Test(tid, "unit", [binary, case], timeout))
    return tests, errors


def discover_integration(it_dir, patterns, env):
    tests, errors = [], []
    for path in sorted(glob.glob(os.path.join(it_dir, "test_*.py"))):
        fid = "integration/" + os.path.basename(path)[:-3]
        try:
            r = subprocess.run([sys.executable, HARNESS, "--list", path], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                               cwd=ROOT, env=env)
            out, rc = r.stdout.decode("utf-8", "replace"), r.returncode
        except subprocess.TimeoutExpired:
            out, rc = "", "timeout"
        if rc != 0:
            if matches_file(fid, patterns):
                errors.append(broken(fid, "could not import (%s)" % rc, out))
            continue
        for line in out.splitlines():
            item = json.loads(line)
            tid = "%s:%s" % (fid, item["name"])
            if matches(tid, patterns):
                argv = [sys.executable, HARNESS, "--run", path, item["name"]]
                tests.append(Test(tid, "integration", argv, float(item["timeout"])))
    return tests, errors


# --------------------------------------------------------------------------
# process hygiene


def become_subreaper():
    """Orphans of our tests (PostgreSQL backends after a kill, say) are
    re-parented to us instead of PID 1, which on our machines never reaps
    them; reap_orphans() collects them."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap_orphans(known):
    """Reap exited children that are not ours to wait for; ``known`` maps
    pid -> Popen for the ones that are (Popen reaps those itself)."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None:
            return
        if info.si_pid in known:
            if known[info.si_pid].poll() is None:
                return
            continue
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, 0)


def sweep(token):
    """SIGKILL every process whose environment carries this test's token;
    return how many there were."""
    needle = ("%s=%s" % (harness.TOKEN_VAR, token)).encode() + b"\0"
    me = os.getpid()
    killed = 0
    for _ in range(3):
        found = 0
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open("/proc/%s/environ" % name, "rb") as f:
                    env = b"\0" + f.read()
            except OSError:
                continue
            if b"\0" + needle in env:
                with contextlib.suppress(OSError):
                    os.kill(int(name), signal.SIGKILL)
                    found += 1
        killed += found
        if not found:
            break
        time.sleep(0.05)
    return killed


# --------------------------------------------------------------------------
# running


class Runner:
    def __init__(self, args):
        self.args = args
        self.tmp = harness._mkdtemp("botcore-tests-")
        self.seq = 0
        self.known = {}
        self.results = []
        self.base_env = self.make_env()
        self.servers = []
        self.leaks = []  # (test id, label, file, excerpt)

    def make_env(self):
        a = self.args
        env = dict(os.environ)
        for k in ("TEST_REDIS_URL", "TEST_PG_ADMIN_URL", "BOT_TEST_TIMEOUT", "BOT_TEST_ID"):
            env.pop(k, None)
        env.update(
            BOT_VARIANT=a.variant,
            BOT_TIMEOUT_SCALE="%g" % a.timeout_scale,
            BOT_ROOT=ROOT,
            BOT_BIN_DIR=a.bin_dir,
            BOT_PG_TEMPLATE_DIR=os.path.join(self.tmp, "pg-template"),
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONUNBUFFERED="1",
        )
        if a.variant == "asan":
            for k, v in ASAN_DEFAULTS.items():
                env.setdefault(k, v)
        return env

    def log(self, msg):
        if self.args.verbose:
            print("# " + msg, flush=True)

    # shared servers for the unit tests ---------------------------------------

    def start_servers(self):
        t0 = time.monotonic()
        try:
            redis = harness.RedisServer(os.path.join(self.tmp, "redis"), appendonly=False)
            self.servers.append(redis)
            redis.start()
            pg = harness.PgServer(os.path.join(self.tmp, "pg"))
            self.servers.append(pg)
            pg.start()
        except Exception as e:  # reported as one failure; unit tests still run
            self.stop_servers()
            return broken("unit/shared-servers", "could not start", str(e))
        for s in self.servers:
            self.known[s.pid] = s.proc
        self.base_env.update(TEST_REDIS_URL=redis.url, TEST_PG_ADMIN_URL=pg.url)
        self.log("shared redis %s, postgres %s up in %.2fs (initdb %.2fs, start %.2fs)"
                 % (redis.url, pg.url, time.monotonic() - t0, pg.init_seconds or 0, pg.start_seconds))
        return None

    def stop_servers(self):
        for s in reversed(self.servers):
            with contextlib.suppress(Exception):
                s.stop()
        self.servers = []
        self.base_env.pop("TEST_REDIS_URL", None)
        self.base_env.pop("TEST_PG_ADMIN_URL", None)

    # one test --------------------------------------------------------------------

    def start(self, t):
        self.seq += 1
        t.dir = os.path.join(self.tmp, "t%d" % self.seq)
        os.mkdir(t.dir)
        if os.geteuid() == 0:
            os.chmod(t.dir, 0o711)
        t.out_path = t.dir + ".out"
        t.token = "%d-%d-%s" % (os.getpid(), self.seq, secrets.token_hex(4))
        scale = self.args.timeout_scale
        env = dict(self.base_env, BOT_TEST_ID=t.id, BOT_TEST_TMPDIR=t.dir, TMPDIR=t.dir)
        env[harness.TOKEN_VAR] = t.token
        if t.kind == "integration":
            env["BOT_TEST_TIMEOUT"] = "%g" % (t.timeout * scale)
        t.deadline = t.timeout * scale
        with open(t.out_path, "wb") as out:
            t.proc = subprocess.Popen(t.argv, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                      start_new_session=True)
        self.known[t.proc.pid] = t.proc
        t.t0 = time.monotonic()

    def check_deadline(self, t):
        """Enforce the timeout. A unit case is SIGKILLed at its deadline. An
        integration test times itself out at its deadline (and tears down);
        if still running one grace period later it gets SIGTERM (teardown
        again), and one more grace period later its process group is
        SIGKILLed. Leftovers are swept by token afterwards either way."""
        elapsed = time.monotonic() - t.t0
        grace = self.args.kill_grace
        if t.kind == "unit":
            if elapsed > t.deadline:
                t.timed_out = True
                self.killgroup(t)
            return
        if elapsed > t.deadline + grace and not t.termed:
            t.timed_out = t.termed = True
            with contextlib.suppress(ProcessLookupError):
                t.proc.send_signal(signal.SIGTERM)
        elif elapsed > t.deadline + 2 * grace:
            self.killgroup(t)

    @staticmethod
    def killgroup(t):
        # Only called before the leader is reaped, so the group id is ours.
        if t.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(t.proc.pid, signal.SIGKILL)

    def finish(self, t):
        t.duration = time.monotonic() - t.t0
        self.known.pop(t.proc.pid, None)
        rc = t.proc.returncode
        leftovers = sweep(t.token)
        if leftovers:
            t.notes.append("killed %d leftover process%s" % (leftovers, "es" if leftovers > 1 else ""))
        with open(t.out_path, "rb") as f:
            t.output = f.read().decode("utf-8", "replace")
        self.scan_secrets(t)
        # Integration tests check their instances' output in the harness; a
        # unit case's own output is checked here.
        marker = t.kind == "unit" and next((m for m in harness.SANITIZER_MARKERS if m in t.output), None)
        t.ok = rc == 0 and not t.timed_out and not t.interrupted and not marker
        if t.interrupted:
            t.reason = "interrupted"
        elif t.timed_out or (t.kind == "integration" and rc == 3):
            t.reason = "timeout after %gs" % t.deadline
        elif rc and rc < 0:
            t.reason = "killed by " + signal.Signals(-rc).name
        elif rc:
            t.reason = "exit %d" % rc
        elif marker:
            t.reason = "sanitizer report"
        if not self.args.keep_tmp:
            shutil.rmtree(t.dir, ignore_errors=True)
            os.unlink(t.out_path)
        self.report(t)

    def scan_secrets(self, t):
        """Before t.dir goes: look for every secret handed out (ours, like
        the shared PostgreSQL's password, and the test's, which the harness
        leaves in SECRET_SCAN_FILE with what it found in the test's logs) in
        the test's output and in the logs left in t.dir."""
        secrets = harness.registered_secrets()
        leaks = []
        try:
            with open(os.path.join(t.dir, harness.SECRET_SCAN_FILE)) as f:
                scan = json.load(f)
            secrets.update(scan.get("secrets") or {})
            leaks += [(x["label"], x["file"], x["excerpt"]) for x in scan.get("leaks") or []]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        leaks += [(label, "output", excerpt) for label, excerpt in harness.find_secrets(t.output, secrets)]
        seen = {(label, f) for label, f, _ in leaks}
        for x in harness.scan_for_secrets(t.dir, secrets):
            if (x["label"], x["file"]) not in seen and not any(x["file"].endswith("/" + f) for _, f, _ in leaks):
                leaks.append((x["label"], x["file"], x["excerpt"]))
        for label, where, excerpt in leaks:
            t.notes.append("secret %s in %s" % (label, where))
            self.leaks.append((t.id, label, where, excerpt))

    def secret_check(self):
        """The final check: one result line, failed when any test's logs or
        output showed a secret."""
        t = Test(SECRET_CHECK_ID, "check", None, 0)
        t.ok = not self.leaks
        if self.leaks:
            t.reason = "%d secret(s) found in logs or output" % len(self.leaks)
            t.output = "\n".join("%s: %s in %s: ...%s..." % x for x in self.leaks)
        self.report(t)

    def report(self, t):
        line = "%s %s  %.2fs" % ("ok  " if t.ok else "FAIL", t.id, t.duration)
        if t.reason:
            line += "  (%s)" % t.reason
        if t.notes:
            line += "  [%s]" % "; ".join(t.notes)
        print(line)
        if (not t.ok or self.args.verbose) and t.output.strip():
            lines = t.output.rstrip("\n").splitlines()
            if len(lines) > TAIL_LINES:
                print("    ... (%d earlier lines)" % (len(lines) - TAIL_LINES))
            for ln in lines[-TAIL_LINES:]:
                print("    " + ln[:1000])
        sys.stdout.flush()
        self.results.append(t)

    def run_phase(self, tests, jobs):
        pending = collections.deque(tests)
        running = []
        try:
            while pending or running:
                while pending and len(running) < jobs:
                    t = pending.popleft()
                    self.start(t)
                    running.append(t)
                for t in list(running):
                    if t.proc.poll() is None:
                        self.check_deadline(t)
                    else:
                        running.remove(t)
                        self.finish(t)
                reap_orphans(self.known)
                time.sleep(0.02)
        finally:
            if running:  # interrupted: stop what still runs, then count it
                for t in running:
                    with contextlib.suppress(ProcessLookupError):
                        t.proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + min(self.args.kill_grace, 5)
                while time.monotonic() < deadline and any(t.proc.poll() is None for t in running):
                    time.sleep(0.05)
                for t in running:
                    self.killgroup(t)
                    t.proc.wait()
                    t.interrupted = True
                    self.finish(t)

    def cleanup(self):
        self.stop_servers()
        reap_orphans(self.known)
        if self.args.keep_tmp:
            print("# KEEP_TMP: test files kept under %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def on_signal(signum, frame):
    raise KeyboardInterrupt


def parse_args(argv):
    p = argparse.ArgumentParser(description="Run the unit and integration tests.")
    p.add_argument("--variant", choices=("release", "asan"), default="release")
    p.add_argument("-k", dest="patterns", action="extend", nargs="+", default=[], metavar="SUBSTRING",
                   help="run only tests whose id contains one of these substrings")
    p.add_argument("-j", dest="jobs", type=int, default=None,
                   help="tests at once (default: 2 for unit cases, 1 for integration tests)")
    p.add_argument("--list", action="store_true", help="print the selected test ids and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="show the output of passing tests too")
    p.add_argument("--unit-timeout", type=float, default=60.0, help="seconds per unit case (60)")
    p.add_argument("--timeout-scale", type=float, default=1.0,
                   help="multiply every timeout by this (slow machines)")
    p.add_argument("--kill-grace", type=float, default=10.0,
                   help="seconds between an integration test's timeout, SIGTERM and SIGKILL (10)")
    p.add_argument("--build-dir", help="where tests/unit/test_* binaries are (default build/VARIANT)")
    p.add_argument("--bin-dir", help="where the role binaries are (default: repo root for "
                   "release, the build dir otherwise)")
    p.add_argument("--integration-dir", default=IT_DIR, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    default_build = os.path.join(ROOT, "build", a.variant)
    a.build_dir = os.path.abspath(a.build_dir or default_build)
    if not a.bin_dir:
        a.bin_dir = ROOT if (a.variant == "release" and a.build_dir == default_build) else a.build_dir
    a.bin_dir = os.path.abspath(a.bin_dir)
    a.keep_tmp = harness._keep_tmp()
    if a.jobs is not None and a.jobs < 1:
        p.error("-j must be at least 1")
    return a


def main(argv):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    become_subreaper()
    runner = Runner(args)
    interrupted = False
    try:
        units, errors = discover_unit(args.build_dir, args.patterns, args.unit_timeout)
        its, it_errors = discover_integration(args.integration_dir, args.patterns, runner.base_env)
        errors += it_errors
        if args.list:
            for t in units + its:
                print(t.id)
            for e in errors:
                print("error: %s: %s" % (e.id, e.reason), file=sys.stderr)
            return 1 if errors else 0
        print("# %d unit cases, %d integration tests (variant %s, -j %s/%s)"
              % (len(units), len(its), args.variant, args.jobs or 2, args.jobs or 1), flush=True)
        for e in errors:
            runner.report(e)
        if units:
            err = runner.start_servers()
            if err:
                runner.report(err)
            try:
                runner.run_phase(units, args.jobs or 2)
            finally:
                runner.stop_servers()
        if its:
            runner.run_phase(its, args.jobs or 1)
        if units or its:
            runner.secret_check()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        runner.cleanup()
    passed = sum(1 for t in runner.results if t.ok)
    failed = len(runner.results) - passed
    product = [t for t in runner.results if not is_self_test(t.id)]
    selftest = [t for t in runner.results if is_self_test(t.id)]
    if interrupted:
        print("interrupted")
    if failed:
        print("failed:")
        for t in runner.results:
            if not t.ok:
                print("  " + t.id)
    if passed + failed == 0:
        print("no tests ran")
    print("product: %d passed, %d failed; self-tests: %d passed, %d failed"
          % (sum(t.ok for t in product), sum(not t.ok for t in product),
             sum(t.ok for t in selftest), sum(not t.ok for t in selftest)))
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 0 if (failed == 0 and passed > 0 and not interrupted) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
