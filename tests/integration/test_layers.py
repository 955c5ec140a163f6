"""The layering of the C code holds: tests/tools/layers.py finds nothing,
and finds what it should in a tree made to break each rule."""

import os
import shutil
import subprocess
import sys
import tempfile

from harness import check

TOOL_REL = os.path.join("tests", "tools", "layers.py")


def run_check(root, tool):
    return subprocess.run([sys.executable, tool, "--root", root], capture_output=True, text=True)


def test_no_file_includes_a_layer_above_its_own(t):
    r = run_check(t.root, os.path.join(t.root, TOOL_REL))
    check(r.returncode == 0 and not r.stdout, "layering broken:\n%s%s" % (r.stdout, r.stderr))


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def test_the_check_finds_each_kind_of_break(t):
    root = tempfile.mkdtemp(prefix="layers-")
    try:
        write(root, "Makefile", "LINKS_chat := chat admin\nLINKS_image := image admin\n"
              "LINKS_video := video admin\nLINKS_admin := admin chat image video\n")
        write(root, "common/base/err.h", "")
        write(root, "common/io/rds.h", '#include "base/err.h"\n')
        write(root, "common/base/mem.c", '#include "base/err.h"\n#include "io/rds.h"\n')
        write(root, "common/io/rds.c", '#include "rds.h"\n#include "chat-instance/chatjob.h"\n')
        write(root, "common/stray.c", "")
        write(root, "chat-instance/chatjob.h", '#include "io/rds.h"\n')
        write(root, "chat-instance/chatjob.c", '#include "chatjob.h"\n#include "image-instance/imgjob.h"\n')
        write(root, "chat-instance/main.c", '#include "admin-instance/admincmd.h"\n#include "chatjob.h"\n')
        write(root, "image-instance/main.c", '#include "chat-instance/chatjob.h"\n')
        write(root, "video-instance/main.c", "")
        write(root, "admin-instance/admincmd.h", "")
        write(root, "admin-instance/main.c", '#include "chat-instance/chatjob.h"\n#include "admincmd.h"\n')
        r = run_check(root, os.path.join(t.root, TOOL_REL))
        want = [
            'common/base/mem.c:2: includes "io/rds.h": layer io is above base',
            'common/io/rds.c:1: includes "rds.h": write it with its layer, "io/rds.h"',
            'common/io/rds.c:2: includes "chat-instance/chatjob.h": common/ knows no role',
            "common/stray.c: not in a layer folder",
            'chat-instance/chatjob.c:2: includes "image-instance/imgjob.h": a role\'s code uses common/, never another role\'s',
            'image-instance/main.c:1: includes "chat-instance/chatjob.h": image-instance does not link libchat.a',
        ]
        for w in want:
            check(w in r.stdout, "the check did not say %r:\n%s%s" % (w, r.stdout, r.stderr))
        check(r.returncode == 1 and len(r.stdout.splitlines()) == len(want),
              "expected exactly %d findings:\n%s%s" % (len(want), r.stdout, r.stderr))
    finally:
        shutil.rmtree(root)


def test_architecture_doc_lists_every_module(t):
    """docs/architecture.md's layout names each module of common/ in its
    layer, and nothing that is not there."""
    text = open(os.path.join(t.root, "docs", "architecture.md"), encoding="utf-8").read()
    block = text.split("## Where the code lives", 1)[1].split("```", 2)[1]
    doc = {}
    for line in block.splitlines():
        parts = line.split("(", 1)[0].split()
        if parts and parts[0].endswith("/") and parts[0][:-1] in ("base", "parse", "io", "service", "discord",
                                                                  "process"):
            doc[parts[0][:-1]] = set(parts[1:])
    for layer in ("base", "parse", "io", "service", "discord", "process"):
        folder = os.path.join(t.root, "common", layer)
        have = {f[:-2] for f in os.listdir(folder) if f.endswith(".c")}
        check(doc.get(layer) == have, "docs/architecture.md lists %s/ as %s; the folder holds %s"
              % (layer, sorted(doc.get(layer, ())), sorted(have)))
