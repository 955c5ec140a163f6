"""deploy/deploy-multi.bat, held against deploy/deploy-multi.sh's compose
mode (what it stands in for on Windows) and the compose file. There is no
cmd.exe here, so the batch file is parsed, not run: its subcommands, its
menu, its usage text, the compose calls it makes and the ports it asks must
be the shell script's.
"""

import os
import re

import yaml  # Debian's python3-yaml, installed by deploy/install-deps.sh

from harness import check

ROLES = ("chat", "image", "video", "admin")


def read(t, *parts):
    return open(os.path.join(t.root, *parts), encoding="utf-8").read()


def bat_text(t):
    raw = open(os.path.join(t.root, "deploy", "deploy-multi.bat"), "rb").read()
    # cmd.exe reads a batch file with CRLF line ends; LF alone breaks labels
    check(b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b""), "deploy-multi.bat must use CRLF line ends")
    return raw.decode("utf-8").replace("\r\n", "\n")


def sh_compose_section(t):
    sh = read(t, "deploy", "deploy-multi.sh")
    start = sh.index("# ---- compose mode")
    end = sh.index("# ---- mode, menu, dispatch")
    return sh, sh[start:end]


def sh_compose_subcommands(section):
    body = section[section.index("compose_dispatch() {"):]
    body = body[body.index("case $cmd in"):body.index("esac")]
    return {m.group(1) for m in re.finditer(r"^\s*([a-z]+)\)", body, re.M)}


def bat_subcommands(bat):
    return {m.group(1) for m in re.finditer(r'^if /i "%SUB%"=="([a-z]+)" goto do_\1$', bat, re.M)}


def bat_usage(bat):
    m = re.search(r"^echo usage: deploy\\deploy-multi\.bat \[(.*)\]$", bat, re.M)
    check(m, "deploy-multi.bat has no usage line")
    return {w.split()[0] for w in m.group(1).split("^|")}


def test_bat_subcommands_are_the_scripts_compose_mode(t):
    bat = bat_text(t)
    _, section = sh_compose_section(t)
    subs = bat_subcommands(bat) - {"help"}
    check(subs, "no subcommand found in deploy-multi.bat")
    for name in subs:
        check(re.search(r"^:do_%s$" % name, bat, re.M), "%s dispatches to a missing label" % name)
    sh_subs = sh_compose_subcommands(section)
    check(subs <= sh_subs, "deploy-multi.bat has subcommands the script's compose mode lacks: %s"
          % sorted(subs - sh_subs))
    # every usage line names them all, the menu reaches them all
    for m in re.finditer(r"^echo usage: .*$", bat, re.M):
        names = {w.split()[0] for w in m.group(0).split("[", 1)[1].rstrip("]").split("^|")}
        check(names == subs, "usage %r names %s, the dispatch %s" % (m.group(0), sorted(names), sorted(subs)))
    menu = {m.group(1) for m in re.finditer(r'^if "%CHOICE%"=="\d+" call :run ([a-z]+)$', bat, re.M)}
    check(menu == subs, "the menu reaches %s, the dispatch has %s" % (sorted(menu), sorted(subs)))
    # what only the shell script does is said, by name, in the batch file's help
    m = re.search(r"^echo \^\((.*): deploy/deploy-multi\.sh --compose", bat, re.M)
    check(m, "deploy-multi.bat's help does not say what needs deploy-multi.sh")
    said = set(re.findall(r"[a-z]+", m.group(1))) - {"and"}
    check(said == sh_subs - subs, "the help says %s need deploy-multi.sh; the script alone has %s"
          % (sorted(said), sorted(sh_subs - subs)))


def test_bat_calls_compose_as_the_script_does(t):
    bat = bat_text(t)
    sh, section = sh_compose_section(t)
    m = re.search(r'^set "DC=docker compose (.*)"$', bat, re.M)
    check(m, "deploy-multi.bat sets no DC")
    dc = m.group(1).split()
    check(dc[dc.index("-p") + 1] == re.search(r"^COMPOSE_PROJECT=\$\{COMPOSE_PROJECT_NAME:-(\w+)\}", sh, re.M).group(1),
          "the project names differ: %r" % dc)
    check(dc[dc.index("--env-file") + 1] == ".env.multi" and "$ROOT/.env.multi" in sh, "env files differ: %r" % dc)
    cf = re.search(r'^set "COMPOSE_FILE=(.*)"$', bat, re.M).group(1).replace("\\", "/")
    check("$ROOT/" + cf in sh, "compose files differ: %s" % cf)
    # each compose call of the batch file, verb and options, is one the script makes
    calls = [c.split() for c in re.findall(r"%DC% ([^\n>]*)", bat)]
    check(len(calls) >= 6, "too few compose calls found: %r" % calls)
    sh_calls = [c.split() for c in re.findall(r"\bdc ([^\n]*)", section)]
    sh_calls += [c.split() for c in re.findall(r"args\+?=\(([^)]*)\)", section)]  # compose_logs
    sh_words = {w for c in sh_calls for w in c}
    for c in calls:
        verb, opts = c[0], []
        for w in c[1:]:  # compose's own options come before the service
            if w.startswith("-"):
                opts.append(w)
            elif not w.isdigit():
                break
        check(any(s and s[0] == verb for s in sh_calls), "the script never runs compose %s" % verb)
        for o in opts:
            check(o in sh_words, "compose %s %s: the script never passes %s" % (verb, " ".join(opts), o))
    # the services it names are the compose file's
    doc = yaml.safe_load(read(t, "compose", "docker-compose.multi.yml"))
    services = set(doc["services"])
    named = set()
    for c in calls:
        named |= {w for w in c[1:] if re.fullmatch(r"[a-z]+", w) and w in set(ROLES) | {"postgres", "valkey"}}
    for s in named:
        check(s in services, "deploy-multi.bat names service %s, which the compose file lacks" % s)
    for loop in re.findall(r"^for %%s in \(([a-z ]+)\) do", bat, re.M):
        check(loop.split() == list(ROLES), "the rolling update goes %r, the script by its ROLES" % loop)


def test_bat_health_ports_are_the_scripts(t):
    bat = bat_text(t)
    sh, _ = sh_compose_section(t)
    # the script: <ROLE>_HEALTH_PORT, else 8000 + the role's number
    check('setting_to _p "${2^^}_HEALTH_PORT"' in sh and "$((8000 + _n))" in sh, "the script's port rule moved")
    for n, role in enumerate(ROLES, 1):
        var = role.upper() + "_HEALTH_PORT"
        check(re.search(r'^if not defined %s set "%s=%d"$' % (var, var, 8000 + n), bat, re.M),
              "deploy-multi.bat's default for %s is not %d" % (var, 8000 + n))
        check('if /i "%%~1"=="%s" set "PORT=%%%s%%"' % (role, var) in bat, "wait_healthy ignores %s" % var)
    check(re.search(r'for %%r in \(CHAT IMAGE VIDEO ADMIN\)', bat), "the .env.multi ports are not read")
    check(not re.search(r"\b800[1-4]\b", bat.split('set "PORTS=')[1]), "a health port is still written out")
    check(bat.count("(%PORTS%)") == 2, "status and health must ask the same ports")
