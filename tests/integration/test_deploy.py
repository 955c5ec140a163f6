"""deploy/deploy-multi.sh, black-box: start, status, health, stop."""

import os
import subprocess

import json

import harness
import simclient
from harness import check, wait_until


def run(t, env, *args, timeout=180):
    full = dict(os.environ)
    full.update(env)
    return subprocess.run([os.path.join(t.root, "deploy", "deploy-multi.sh")] + list(args), env=full,
                          capture_output=True, text=True, timeout=timeout)


@harness.timeout(300)
def test_deploy_start_status_health_stop(t):
    if t.variant != "release":
        return  # the script runs the release binaries; one run of it is enough
    env = {"DEPLOY_STATE_DIR": t.tmp, "ENV_FILE": t.path("none.env"),
           "LOCAL_REDIS_PORT": str(t.free_port()), "LOCAL_PG_PORT": str(t.free_port()),
           "SANDBOX_DISCORD_PORT": str(t.free_port()), "SANDBOX_OPENAI_PORT": str(t.free_port()),
           "SANDBOX_MINIMAX_PORT": str(t.free_port()), "SANDBOX_STABILITY_PORT": str(t.free_port())}
    for role in ("CHAT", "IMAGE", "VIDEO", "ADMIN"):
        env[role + "_HEALTH_PORT"] = str(t.free_port())
    t.cleanup(lambda: run(t, env, "stop", timeout=120))
    r = run(t, env, "start")
    check(r.returncode == 0, "start failed:\n%s\n%s" % (r.stdout, r.stderr))
    check("sandbox: Discord simulator" in r.stdout, "start says the sandbox runs:\n" + r.stdout)
    r = run(t, env, "status")
    rows = [l.split() for l in r.stdout.splitlines()[1:]]
    check(len(rows) == 4 and all(row[4] == "ok" for row in rows), "status:\n" + r.stdout)
    check([row[0] for row in rows] == ["chat-1", "image-2", "video-3", "admin-4"], r.stdout)
    r = run(t, env, "health")
    check(r.returncode == 0 and r.stdout.count("healthy") == 4, r.stdout)
    check(os.path.exists(os.path.join(t.tmp, "data", "redis", "appendonlydir")), "redis runs with AOF")
    # no DISCORD_TOKEN: the sandbox simulator runs and one instance holds its gateway
    ports = [env[r + "_HEALTH_PORT"] for r in ("CHAT", "IMAGE", "VIDEO", "ADMIN")]

    def gateway_states():
        out = []
        for p in ports:
            st, body = simclient.http("GET", "http://127.0.0.1:%s/health" % p)[0::2]
            out.append(json.loads(body).get("gateway", {}).get("state"))
        return out
    wait_until(lambda: "connected" in gateway_states(), 20, "the sandbox gateway connected")
    # /chat answers through the sandbox's model simulator
    sim_api = "http://127.0.0.1:%s" % env["SANDBOX_DISCORD_PORT"]
    st, _h, body = simclient.http("POST", sim_api + "/_sim/interactions", {
        "name": "chat", "guild_id": "400000000000000001", "channel_id": "500000000000000001",
        "user": {"id": "600000000000000001", "username": "you"}, "locale": "en-US",
        "options": [{"name": "question", "type": 3, "value": "sandbox hello"}]})
    iid = json.loads(body)["id"]

    def answered():
        d = json.loads(simclient.http("GET", sim_api + "/_sim/interactions/" + iid)[2])
        return d.get("original") and "sandbox hello" in (d["original"].get("content") or "")
    wait_until(answered, 20, "the sandbox answers /chat")
    # /이미지 draws through the sandbox's MiniMax simulator
    st, _h, body = simclient.http("POST", sim_api + "/_sim/interactions", {
        "name": "이미지", "guild_id": "400000000000000001", "channel_id": "500000000000000003",
        "user": {"id": "600000000000000001", "username": "you"}, "locale": "ko",
        "options": [{"name": "설명", "type": 3, "value": "sandbox cat"}]})
    iid = json.loads(body)["id"]

    def drawn():
        d = json.loads(simclient.http("GET", sim_api + "/_sim/interactions/" + iid)[2])
        return d.get("original") and d["original"].get("attachments")
    wait_until(drawn, 20, "the sandbox answers /이미지 with an image")

    r = run(t, env, "stop", timeout=120)
    check(r.returncode == 0 and r.stdout.count("stopped") == 4, r.stdout + r.stderr)
    r = run(t, env, "health")
    check(r.returncode != 0, "health fails once stopped")
    for role in ("chat", "image", "video", "admin"):
        log = open(os.path.join(t.tmp, "logs", role + ".log")).read()
        check('"msg":"drained: every job taken was finished and acked"' in log, "%s drained on stop" % role)
