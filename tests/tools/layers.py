#!/usr/bin/env python3
"""Check the layering of the C code: a file includes nothing from above.

common/ (libbotcore.a) is grouped into layer folders, lowest first:

  base     err, mem, buf, utf8, secret, log, glob, idmap, config, clock, jget, jtext
  parse    parsers of outside bytes, no I/O
  io       connections: Redis, HTTP client and server, PostgreSQL, gateway
  service  what the roles build on: the job bus, leases, keys, providers
  discord  Discord's REST, commands, interactions, the gateway's routing
  process  one instance's lifecycle: core, failover, diagnostics

A file in common/<layer>/ may include headers of its own layer and the
layers below, always by their layer path ("io/rds.h"). common/ includes no
role's header. A role's code (<role>-instance/*.c but main.c) may include
any layer and its own folder, never another role's folder; a main.c may
include the role folders its binary links (the Makefile's LINKS_<role>) and
any role's commands.h (every binary carries every role's command rows).

  tests/tools/layers.py [--root DIR]    exit 1 and one line per violation
"""

import argparse
import os
import re
import sys

LAYERS = ["base", "parse", "io", "service", "discord", "process"]
ROLES = ["chat", "image", "video", "admin"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def links(root):
    """{role: [roles it links]} from the Makefile's LINKS_<role> lines."""
    out = {}
    with open(os.path.join(root, "Makefile"), encoding="utf-8") as f:
        for m in re.finditer(r"^LINKS_(\w+)\s*:=\s*(.*)$", f.read(), re.M):
            out[m.group(1)] = m.group(2).split()
    return out


def includes(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for m in INCLUDE.finditer(text):
        yield text.count("\n", 0, m.start()) + 1, m.group(1)


def check_common(root, rel, layer, bad):
    own = LAYERS.index(layer)
    for line, inc in includes(os.path.join(root, rel)):
        head, _, _ = inc.partition("/")
        where = "%s:%d: includes \"%s\"" % (rel, line, inc)
        if "/" not in inc:
            if not os.path.exists(os.path.join(root, "common", layer, inc)):
                bad.append(where + ": name a header of common/ by its layer (\"base/err.h\")")
            else:
                bad.append(where + ": write it with its layer, \"%s/%s\"" % (layer, inc))
        elif head in LAYERS:
            if LAYERS.index(head) > own:
                bad.append(where + ": layer %s is above %s" % (head, layer))
            elif not os.path.exists(os.path.join(root, "common", inc)):
                bad.append(where + ": no such header in common/")
        elif head.endswith("-instance"):
            bad.append(where + ": common/ knows no role")
        else:
            bad.append(where + ": not a header of common/")


def check_role(root, role, rel, linked, bad):
    main = os.path.basename(rel) == "main.c"
    for line, inc in includes(os.path.join(root, rel)):
        head, _, _ = inc.partition("/")
        where = "%s:%d: includes \"%s\"" % (rel, line, inc)
        if "/" not in inc:
            if not os.path.exists(os.path.join(root, role + "-instance", inc)):
                bad.append(where + ": no such header in %s-instance/" % role)
        elif head.endswith("-instance"):
            other = head[: -len("-instance")]
            if other == role:
                bad.append(where + ": include your own folder's header by its name")
            elif not main:
                bad.append(where + ": a role's code uses common/, never another role's")
            elif other not in linked and inc != head + "/commands.h":
                bad.append(where + ": %s-instance does not link lib%s.a (Makefile LINKS_%s)" % (role, other, role))
        elif head not in LAYERS:
            bad.append(where + ": not a header of common/ or of a role")


def check(root):
    bad = []
    common = os.path.join(root, "common")
    for name in sorted(os.listdir(common)):
        path = os.path.join(common, name)
        if name.endswith((".c", ".h")):
            bad.append("common/%s: not in a layer folder (%s)" % (name, ", ".join(LAYERS)))
        elif os.path.isdir(path):
            if name not in LAYERS:
                bad.append("common/%s/: not a layer (%s)" % (name, ", ".join(LAYERS)))
                continue
            for f in sorted(os.listdir(path)):
                if f.endswith((".c", ".h")):
                    check_common(root, "common/%s/%s" % (name, f), name, bad)
    linked = links(root)
    for role in ROLES:
        folder = role + "-instance"
        for f in sorted(os.listdir(os.path.join(root, folder))):
            if f.endswith((".c", ".h")):
                check_role(root, role, "%s/%s" % (folder, f), linked.get(role, []), bad)
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    args = ap.parse_args()
    bad = check(os.path.abspath(args.root))
    for b in bad:
        print(b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
