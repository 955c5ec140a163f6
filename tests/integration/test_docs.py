"""The README and .ci/run stay true to the code."""

import os
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
