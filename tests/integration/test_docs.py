"""The README and .ci/run stay true to the code."""

import os
import re
import subprocess
import sys

import harness
from harness import check


def test_readme_config_table_matches_binary(t):
    tool = os.path.join(t.root, "tests", "tools", "docs_config.py")
    r = subprocess.run([sys.executable, tool, "--check"], capture_output=True, text=True)
    check(r.returncode == 0, "README table stale:\n%s%s" % (r.stdout, r.stderr))


def test_ci_runs_the_readme_test_command(t):
    lines = [l.strip() for l in open(os.path.join(t.root, ".ci", "run")) if l.strip()]
    cmd = [l for l in lines if not l.startswith(("#", "set ", "cd ", "export "))][-1]
    cmd = cmd[5:] if cmd.startswith("exec ") else cmd
    readme = open(os.path.join(t.root, "README.md"), encoding="utf-8").read()
    check(cmd in readme, "the README does not show .ci/run's command %r" % cmd)


def test_every_role_binary_has_help_and_version(t):
    for role in ("chat", "image", "video", "admin"):
        inst = t.instance(role, args=["--version"])
        check(inst.wait(10) == 0 and inst.logs().startswith("%s-instance " % role), inst.logs())


def tracked_files(root):
    r = subprocess.run(["git", "-C", root, "ls-files", "-z"], capture_output=True)
    if r.returncode == 0 and r.stdout:
        return [f for f in r.stdout.decode().split("\0") if f and os.path.isfile(os.path.join(root, f))]
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in (".git", "build")]
        out += [os.path.relpath(os.path.join(d, f), root) for f in files]
    return out


# compose_start (deploy-multi.sh's compose mode, being reworked under issue
# 14's compose part) still falls back to the old file when the root one is
# missing; it never is. Drop this once that function loses the fallback.
def test_one_env_example_and_every_mention_agrees(t):
    """A new operator was told to copy deploy/env.multi.example by start and
    .env.multi.example by the README: two different files. One file, one
    command, the same everywhere."""
    files = tracked_files(t.root)
    examples = sorted(f for f in files if re.search(r"env[^/]*\.example$", os.path.basename(f)))
    check(examples == [".env.multi.example"], "one example settings file, at the root: %r" % examples)
    me = os.path.relpath(__file__, t.root)
    wrong = re.compile(r"(?<!\.)env\.multi\.example|deploy[/\\]\.env\.multi\.example")
    bad = []
    for f in files:
        if f == me:
            continue
        try:
            text = open(os.path.join(t.root, f), encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        hits = [m.group(0) for m in wrong.finditer(text)]
        if hits:
            bad.append((f, hits))
    check(not bad, "mentions of another example file than .env.multi.example: %r" % bad)
    cmd = "cp .env.multi.example .env.multi && chmod 600 .env.multi"
    for f in ("README.md", "README.ko.md", "docs/compose.md", "deploy/deploy-multi.sh", ".env.multi.example"):
        check(cmd in open(os.path.join(t.root, f), encoding="utf-8").read(), "%s shows %r" % (f, cmd))


def test_readmes_name_every_port_the_sandbox_uses(t):
    """The sandbox tour listed the simulators' ports but not PostgreSQL's:
    every default port of deploy-multi.sh (local Redis and PostgreSQL, the
    four simulators, the health ports) is in both READMEs' tour."""
    script = open(os.path.join(t.root, "deploy", "deploy-multi.sh"), encoding="utf-8").read()
    ports = dict(re.findall(r"\$\{((?:LOCAL|SANDBOX)_[A-Z]+_PORT):-(\d+)\}", script))
    check({"LOCAL_REDIS_PORT", "LOCAL_PG_PORT", "SANDBOX_DISCORD_PORT", "SANDBOX_OPENAI_PORT",
           "SANDBOX_MINIMAX_PORT", "SANDBOX_STABILITY_PORT"} <= set(ports), "the script's port defaults: %r" % ports)
    for readme, start, end in (("README.md", "## The sandbox tour", "\n## "),
                               ("README.ko.md", "## 샌드박스 둘러보기", "\n## ")):
        text = open(os.path.join(t.root, readme), encoding="utf-8").read()
        tour = text[text.index(start):]
        tour = tour[:tour.index(end, len(start))]
        missing = [name for name, port in ports.items() if port not in tour]
        check(not missing, "%s's sandbox tour does not name the ports of %r" % (readme, missing))
        check("8001-8004" in tour, "%s's sandbox tour names the health ports" % readme)
