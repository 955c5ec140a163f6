"""The Discord simulator (tests/sim/discord_sim.py) behaves like the Discord
the bot depends on (/work/shared/reference/discord.md). Each test starts its
own simulator on a free port and plays the bot from Python (simclient)."""

import http.server
import json
import os
import sys
import threading
import time

import harness
from harness import check, wait_until

import simclient

sys.path.insert(0, os.path.join(harness.ROOT, "tests", "sim"))
import openapi_check  # noqa: E402

GUILD = "400000000000000001"
CHAN = "500000000000000001"
CHAN2 = "500000000000000002"


def start(t, **config):
    sim = simclient.start(t, config=config or None)
    sim.add_guild(GUILD, "test guild", [{"id": CHAN, "name": "general", "type": 0},
                                        {"id": CHAN2, "name": "other", "type": 0},
                                        {"id": "500000000000000003", "name": "a thread", "type": 11,
                                         "parent_id": CHAN}])
    return sim


def no_sim_bugs(sim):
    st = sim.stats()
    check(st["sim_errors"] == 0, "the simulator crashed in a handler")
    check(not st["sim_response_violations"],
          lambda: "simulator answers off-spec: %s" % json.dumps(st["sim_response_violations"][:5]))


@harness.timeout(60)
def test_openapi_checker_self_test(t):
    fails = openapi_check.self_test()
    check(not fails, "\n".join(fails))


@harness.timeout(60)
def test_gateway_identify_ready_guild_create_heartbeat(t):
    sim = start(t, heartbeat_interval_ms=400)
    before = sim.api("GET", "/gateway/bot")[2]
    check(before["url"] == sim.gateway_url and before["shards"] == 1, before)
    gw = sim.connect(compress=True)
    hello = gw.recv()
    check(hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 400, hello)
    gw.send({"op": 2, "d": {"token": sim.token, "intents": 513,
                            "properties": {"os": "linux", "browser": "t", "device": "t"}}})
    ready = gw.recv()
    d = ready["d"]
    check(ready["t"] == "READY" and ready["s"] == 1, ready)
    check(d["v"] == 10 and d["user"]["bot"] is True and d["user"]["id"] == sim.bot_user_id, d)
    check(d["application"]["id"] == sim.app_id and len(d["session_id"]) >= 16, d)
    check(d["resume_gateway_url"].startswith("ws://127.0.0.1:"), d)
    check(d["guilds"] == [{"id": GUILD, "unavailable": True}], d["guilds"])
    gc = gw.recv()
    check(gc["t"] == "GUILD_CREATE" and gc["s"] == 2 and gc["d"]["id"] == GUILD, gc)
    check({c["id"] for c in gc["d"]["channels"]} == {CHAN, CHAN2}, gc["d"]["channels"])
    check([c["type"] for c in gc["d"]["threads"]] == [11], gc["d"]["threads"])
    gw.send({"op": 1, "d": 2})
    check(gw.recv() == {"op": 11, "d": None, "s": None, "t": None}, "heartbeat ACK")
    # A guild added later reaches the live session.
    sim.add_guild("400000000000000009", "late", [{"id": "500000000000000009", "name": "x"}])
    late = gw.recv_until(lambda m: m.get("t") == "GUILD_CREATE")
    check(late["d"]["id"] == "400000000000000009" and late["s"] == 3, late)
    state = sim.gateway()
    s = state["sessions"][0]
    check(s["connected"] and s["seq"] == 3 and s["intents"] == 513, s)
    check(s["identify"]["token_matched"] is True and s["identify"]["token_present"] is True, s)
    check(sim.token not in json.dumps(state), "the token must never be echoed")
    conn = state["connections"][0]
    check(conn["compress"] and conn["heartbeats"] == 1 and conn["heartbeat_acks_sent"] == 1, conn)
    after = sim.api("GET", "/gateway/bot")[2]
    check(after["session_start_limit"]["remaining"] == before["session_start_limit"]["remaining"] - 1, after)
    # Plain JSON without compression works too.
    gw2, ready2 = sim.identify(sim.connect(compress=False))
    check(ready2["session_id"] != d["session_id"], "a fresh session per identify")
    check(sim.stats()["identifies"] == 2, "two identifies counted")
    gw.close()
    gw2.close()
    no_sim_bugs(sim)
    check(sim.stop() == 0, "SIGTERM exits cleanly")


@harness.timeout(60)
def test_gateway_resume_replays_exactly_what_was_missed(t):
    sim = start(t)
    gw, ready = sim.identify()
    sid = ready["session_id"]
    gw.recv_until(lambda m: m.get("t") == "GUILD_CREATE")
    sim.message(channel_id=CHAN, guild_id=GUILD, content="seen")
    seen = gw.recv_until(lambda m: m.get("t") == "MESSAGE_CREATE")
    gw.drop()
    wait_until(lambda: not sim.gateway()["sessions"][0]["connected"], 5, "session detached")
    missed = [sim.message(channel_id=CHAN, guild_id=GUILD, content="missed %d" % i)["id"] for i in range(3)]
    s = sim.gateway()["sessions"][0]
    check(s["events_buffered_while_detached"] == 3 and s["state"] == "active", s)
    gw2 = sim.connect()
    check(gw2.recv()["op"] == 10, "hello")
    gw2.send({"op": 6, "d": {"token": sim.token, "session_id": sid, "seq": seen["s"]}})
    got = [gw2.recv() for _ in range(4)]
    check([m["t"] for m in got] == ["MESSAGE_CREATE"] * 3 + ["RESUMED"], got)
    check([m["s"] for m in got] == [seen["s"] + 1, seen["s"] + 2, seen["s"] + 3, seen["s"] + 4], got)
    check([m["d"]["id"] for m in got[:3]] == missed, "exactly the missed events, in order")
    check(gw2.drain(0.2) == [], "nothing else replayed")
    st = sim.gateway()
    check(st["resumes"] == 1 and st["sessions"][0]["connected"], st["sessions"])
    # Live events flow on the resumed connection.
    sim.message(channel_id=CHAN, guild_id=GUILD, content="after")
    check(gw2.recv()["s"] == seen["s"] + 5, "sequence continues")
    # A client close with 1000 ends the session: resuming it fails (op 9 false).
    gw2.close(1000)
    wait_until(lambda: sim.gateway()["sessions"][0]["state"] == "ended", 5, "session ended")
    gw3 = sim.connect()
    gw3.recv()
    gw3.send({"op": 6, "d": {"token": sim.token, "session_id": sid, "seq": seen["s"] + 5}})
    check(gw3.recv() == {"op": 9, "d": False, "s": None, "t": None}, "invalid session")
    gw3.send({"op": 6, "d": {"token": sim.token, "session_id": "nope", "seq": 1}})
    check(gw3.recv()["op"] == 9, "unknown session: op 9")
    # After op 9 the same connection may identify.
    gw3.send({"op": 2, "d": {"token": sim.token, "intents": 1,
                             "properties": {"os": "l", "browser": "b", "device": "d"}}})
    check(gw3.recv()["t"] == "READY", "identify after op 9")
    check(sim.stats()["resume_failures"] == 2, sim.stats()["resume_failures"])
    no_sim_bugs(sim)


@harness.timeout(60)
def test_gateway_close_codes(t):
    sim = start(t)

    def closed_with(gw, send):
        for obj in send:
            if isinstance(obj, str):
                gw.send_text(obj)
            else:
                gw.send(obj)
        try:
            gw.drain(2.0)
        except simclient.GatewayClosed as e:
            return e.code
        return None

    props = {"os": "l", "browser": "b", "device": "d"}
    gw = sim.connect()
    gw.recv()
    code = closed_with(gw, [{"op": 2, "d": {"token": "wrong", "intents": 1, "properties": props}}])
    check(code == 4004, "bad token: %s" % code)
    gw = sim.connect()
    gw.recv()
    check(closed_with(gw, [{"op": 3, "d": {"status": "online"}}]) == 4003, "payload before identify")
    gw = sim.connect()
    gw.recv()
    check(closed_with(gw, ["{not json"]) == 4002, "invalid JSON")
    gw, _ = sim.identify()
    check(closed_with(gw, [{"op": 99, "d": None}]) == 4001, "unknown opcode")
    gw, _ = sim.identify()
    check(closed_with(gw, [{"op": 2, "d": {"token": sim.token, "intents": 1, "properties": props}}]) == 4005,
          "identify twice")
    sim.config(privileged_intents_allowed=0)
    gw = sim.connect()
    gw.recv()
    check(closed_with(gw, [{"op": 2, "d": {"token": sim.token, "intents": 1 << 15, "properties": props}}])
          == 4014, "disallowed intents")
    # Fragmented client frames are reassembled.
    gw = sim.connect()
    gw.recv()
    gw.send_text(json.dumps({"op": 2, "d": {"token": sim.token, "intents": 1, "properties": props}}), fragments=3)
    check(gw.recv()["t"] == "READY", "fragmented identify")
    # 121 sends within 60 s: 4008.
    gw.send({"op": 1, "d": None})
    gw.recv()
    try:
        for i in range(130):
            gw.send({"op": 1, "d": None})
    except OSError:
        pass
    try:
        gw.drain(2.0)
        code = None
    except simclient.GatewayClosed as e:
        code = e.code
    check(code == 4008, "gateway send rate limit: %s" % code)
    st = sim.gateway()
    check(st["by_token"]["other"]["identify_attempts"] == 1, st["by_token"])
    check(sim.stats()["gateway"].get("rate_limit_closes") == 1, sim.stats()["gateway"])
    no_sim_bugs(sim)


@harness.timeout(60)
def test_gateway_server_ops_reconnect_invalid_session_heartbeat(t):
    sim = start(t)
    gw, ready = sim.identify()
    gw.drain(0.1)
    sim.gw("heartbeat_request")
    m = gw.recv()
    check(m["op"] == 1, m)
    gw.send({"op": 1, "d": 2})
    check(gw.recv()["op"] == 11, "ack")
    wait_until(lambda: sim.gateway()["connections"][0]["heartbeat_request_latency_ms"] is not None, 5)
    sim.gw("withhold_acks", on=True)
    gw.send({"op": 1, "d": 2})
    check(gw.drain(0.3) == [], "no ACK while withheld")
    check(sim.gateway()["connections"][0]["acks_withheld"] == 1, "counted")
    sim.gw("withhold_acks", on=False)
    sim.gw("reconnect")
    check(gw.recv() == {"op": 7, "d": None, "s": None, "t": None}, "op 7")
    # op 9 resumable: the session survives for a resume on a new connection.
    sim.gw("invalid_session", resumable=True)
    check(gw.recv() == {"op": 9, "d": True, "s": None, "t": None}, "op 9 true")
    gw.close(4000)
    sim.message(channel_id=CHAN, guild_id=GUILD, content="between")
    gw2 = sim.connect()
    gw2.recv()
    gw2.send({"op": 6, "d": {"token": sim.token, "session_id": ready["session_id"], "seq": 2}})
    got = gw2.drain(0.3)
    check([m["t"] for m in got] == ["MESSAGE_CREATE", "RESUMED"], got)
    # op 9 not resumable: the session is gone.
    sim.gw("invalid_session", resumable=False)
    check(gw2.recv()["d"] is False, "op 9 false")
    s = [s for s in sim.gateway()["sessions"] if s["session_id"] == ready["session_id"]][0]
    check(s["state"] == "ended", s)
    # A server close with a resumable code keeps the session.
    gw3, r3 = sim.identify()
    sim.gw("close", code=4000, reason="test")
    try:
        gw3.drain(1.0)
        check(False, "expected a close")
    except simclient.GatewayClosed as e:
        check(e.code == 4000 and e.reason == "test", (e.code, e.reason))
    s = [s for s in sim.gateway()["sessions"] if s["session_id"] == r3["session_id"]][0]
    check(s["state"] == "active" and not s["connected"], s)
    no_sim_bugs(sim)


@harness.timeout(60)
def test_rest_auth_headers_bucket_429(t):
    sim = start(t)
    st, _h, body = sim.api("GET", "/users/@me", auth=False)
    check(st == 401 and body == {"message": "401: Unauthorized", "code": 0}, (st, body))
    st, _h, body = sim.api("GET", "/users/@me", auth="Bot wrong")
    check(st == 401, st)
    st, _h, body = sim.api("GET", "/no/such/route")
    check(st == 404 and body["code"] == 0, (st, body))
    path = "/channels/%s/messages" % CHAN
    remaining, buckets = [], set()
    for i in range(5):
        st, h, body = sim.api("POST", path, {"content": "m%d" % i})
        check(st == 200 and body["content"] == "m%d" % i, (st, body))
        remaining.append(int(h["x-ratelimit-remaining"]))
        buckets.add(h["x-ratelimit-bucket"])
        check(h["x-ratelimit-limit"] == "5" and float(h["x-ratelimit-reset-after"]) > 0, h)
        check(abs(float(h["x-ratelimit-reset"]) - time.time() - float(h["x-ratelimit-reset-after"])) < 1, h)
    check(remaining == [4, 3, 2, 1, 0] and len(buckets) == 1, (remaining, buckets))
    st, h, body = sim.api("POST", path, {"content": "too many"})
    check(st == 429 and h["x-ratelimit-scope"] == "user" and int(h["retry-after"]) >= 1, (st, h))
    check(body["global"] is False and 0 < body["retry_after"] <= 5, body)
    # Another channel is another bucket state (same bucket id).
    st, h, _ = sim.api("POST", "/channels/%s/messages" % CHAN2, {"content": "x"})
    check(st == 200 and h["x-ratelimit-remaining"] == "4" and h["x-ratelimit-bucket"] in buckets, h)
    stats = sim.stats()
    check(stats["exhausted_bucket_hits"] == 1, stats["exhausted_bucket_hits"])
    check(stats["invalid_requests"]["401"] == 2 and stats["invalid_requests"]["429"] == 1, stats["invalid_requests"])
    check(stats["spec_violations"][0]["problem"] == "route is not in the spec", stats["spec_violations"])
    # No User-Agent: a protocol violation, still answered.
    st, _h, _b = sim.api("GET", "/users/@me", ua=None)
    check(st == 200, st)
    check(any(v["kind"] == "user_agent" for v in sim.stats()["protocol_violations"]), "UA violation")
    entries = sim.log(route="POST /channels/{channel_id}/messages")
    check(len(entries) == 7 and entries[0]["has_bot_auth"] and entries[0]["json"] == {"content": "m0"}, entries[0])
    check(entries[5]["status"] == 429 and entries[0]["user_agent"].startswith("DiscordBot ("), entries[5])
    check([m["content"] for m in sim.channel_messages(CHAN)] == ["m0", "m1", "m2", "m3", "m4"], "stored")
    # Limits are configurable.
    sim.config(rate_limits={"POST /channels/{channel_id}/messages": {"limit": 1, "window_s": 0.3}})
    check(sim.api("POST", path, {"content": "a"})[0] == 200, "new limit")
    check(sim.api("POST", path, {"content": "b"})[0] == 429, "limit 1")
    time.sleep(0.35)
    check(sim.api("POST", path, {"content": "c"})[0] == 200, "window reset")
    no_sim_bugs(sim)


@harness.timeout(60)
def test_rest_global_limit_exempts_interactions(t):
    sim = start(t, global_limit=8)
    r = sim.interaction(guild_id=GUILD, channel_id=CHAN, name="chat")
    statuses = []
    for i in range(4):
        for path in ("/users/@me", "/gateway/bot", "/channels/%s" % CHAN):
            st, h, body = sim.api("GET", path)
            statuses.append(st)
            if st == 429:
                check(h.get("x-ratelimit-global") == "true" and h["x-ratelimit-scope"] == "global", h)
                check(body["global"] is True, body)
    check(statuses.count(200) == 8 and statuses.count(429) == 4, statuses)
    st, _h, _b = sim.api("POST", "/interactions/%s/%s/callback" % (r["id"], r["token"]),
                         {"type": 4, "data": {"content": "hi"}}, auth=False)
    check(st == 204, "interaction routes are exempt from the global limit: %s" % st)
    stats = sim.stats()
    check(stats["global_limit_hits"] == 4 and stats["exhausted_bucket_hits"] == 0, stats)
    no_sim_bugs(sim)


@harness.timeout(60)
def test_interaction_ack_window_double_ack_token_expiry(t):
    sim = start(t, ack_window_s=0.3, token_ttl_s=1.0, rate_limits={"webhook": {"limit": 50, "window_s": 2}})
    gw, _ = sim.identify()
    late = sim.interaction(guild_id=GUILD, channel_id=CHAN, name="chat", permissions="8", locale="ko",
                           user={"id": "300000000000000001", "username": "kim"},
                           options=[{"name": "prompt", "type": 3, "value": "안녕"}])
    ev = gw.recv_until(lambda m: m.get("t") == "INTERACTION_CREATE")["d"]
    check(ev["id"] == late["id"] and ev["token"] == late["token"] and ev["type"] == 2, ev)
    check(ev["data"]["name"] == "chat" and ev["data"]["options"][0]["value"] == "안녕", ev["data"])
    check(ev["member"]["user"]["id"] == "300000000000000001" and ev["member"]["permissions"] == "8", ev["member"])
    check(ev["locale"] == "ko" and ev["application_id"] == sim.app_id and ev["version"] == 1, ev)
    check(ev["channel"]["id"] == CHAN and ev["attachment_size_limit"] == 10485760 and ev["context"] == 0, ev)
    time.sleep(0.4)
    st, _h, body = sim.api("POST", "/interactions/%s/%s/callback" % (late["id"], late["token"]),
                           {"type": 5}, auth=False)
    check(st == 404 and body["code"] == 10062, (st, body))
    ok = sim.interaction(guild_id=GUILD, channel_id=CHAN, name="chat")
    cb = "/interactions/%s/%s/callback" % (ok["id"], ok["token"])
    st, _h, body = sim.api("POST", cb + "?with_response=true", {"type": 5, "data": {"flags": 64}}, auth=False)
    check(st == 200 and body["interaction"]["response_message_loading"] is True, (st, body))
    check(body["interaction"]["response_message_ephemeral"] is True, body)
    st, _h, body = sim.api("POST", cb, {"type": 4, "data": {"content": "again"}}, auth=False)
    check(st == 400 and body["code"] == 40060, (st, body))
    wh = "/webhooks/%s/%s" % (sim.app_id, ok["token"])
    st, _h, body = sim.api("PATCH", wh + "/messages/@original", {"content": "x" * 2001}, auth=False)
    check(st == 400 and body["code"] == 50035 and "content" in body["errors"], (st, body))
    check(body["errors"]["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH", body)
    st, _h, body = sim.api("PATCH", wh + "/messages/@original", {"content": "step 1"}, auth=False)
    check(st == 200 and body["content"] == "step 1", (st, body))
    st, _h, body = sim.api("PATCH", wh + "/messages/@original", {"content": "step 2"}, auth=False)
    st, _h, fu = sim.api("POST", wh, {"content": "followup"}, auth=False)
    check(st == 200 and fu["content"] == "followup", (st, fu))
    st, _h, body = sim.api("PATCH", "%s/messages/%s" % (wh, fu["id"]), {"content": "followup 2"}, auth=False)
    check(st == 200, st)
    wait_until(lambda: sim.interaction_state(ok["id"])["age_s"] > 1.0, 5, "token expired")
    st, _h, body = sim.api("PATCH", wh + "/messages/@original", {"content": "late"}, auth=False)
    check(st == 401 and body["code"] == 50027, (st, body))
    st, _h, body = sim.api("POST", wh, {"content": "late"}, auth=False)
    check(st == 401 and body["code"] == 50027, (st, body))
    info = sim.interaction_state(ok["id"])
    check(info["acked"]["type"] == 5 and info["acked"]["flags"] == 64 and info["acked"]["via"] == "callback", info)
    orig = info["original"]
    check(orig["content"] == "step 2" and [e["content"] for e in orig["edits"]] == ["step 1", "step 2"], orig)
    check(orig["ephemeral"] and not orig["loading"], orig)
    check([f["content"] for f in info["followups"]] == ["followup 2"], info["followups"])
    check([e["code"] for e in info["errors"]] == [40060, 50035, 50027, 50027], info["errors"])
    check(sim.interaction_state(late["id"])["errors"][0]["code"] == 10062, "late error recorded")
    stats = sim.stats()["interactions"]
    check(stats["late_acks"] == 1 and stats["double_acks"] == 1 and stats["expired_token_uses"] == 2, stats)
    no_sim_bugs(sim)


@harness.timeout(60)
def test_multipart_messages_and_size_limits(t):
    sim = start(t)
    gw, _ = sim.identify()
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10
    ctype, body = simclient.multipart(
        {"content": "two files", "attachments": [{"id": 0, "filename": "a.png", "description": "pic"},
                                                 {"id": 1, "filename": "b.txt"}]},
        [("a.png", png, "image/png"), ("b.txt", b"hello", "text/plain")])
    st, _h, msg = sim.api("POST", "/channels/%s/messages" % CHAN, raw=body, content_type=ctype)
    check(st == 200 and msg["content"] == "two files", (st, msg))
    check([(a["filename"], a["size"]) for a in msg["attachments"]] == [("a.png", len(png)), ("b.txt", 5)], msg)
    check(msg["attachments"][0]["description"] == "pic", msg["attachments"])
    st, h, data = simclient.http("GET", msg["attachments"][0]["url"])
    check(st == 200 and data == png and h["content-type"] == "image/png", "file served back")
    entry = sim.log(method="POST")[-1]
    check(entry["json"]["content"] == "two files", entry)
    check([(f["field"], f["filename"], f["size"]) for f in entry["files"]] ==
          [("files[0]", "a.png", len(png)), ("files[1]", "b.txt", 5)], entry["files"])
    echo = gw.recv_until(lambda m: m.get("t") == "MESSAGE_CREATE")
    check(echo["d"]["id"] == msg["id"], "the bot sees its own message")
    stored = sim.channel_messages(CHAN)[-1]
    import hashlib
    check(stored["attachments"][0]["sha256"] == hashlib.sha256(png).hexdigest(), stored)
    st, _h, body = sim.api("POST", "/channels/%s/messages" % CHAN, {"content": "é" * 2001})
    check(st == 400 and body["code"] == 50035, body)
    check(body["errors"] == {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                                                      "message": "Must be 2000 or fewer in length."}]}}, body)
    st, _h, body = sim.api("POST", "/channels/%s/messages" % CHAN, {"content": ""})
    check(st == 400 and body["code"] == 50006, body)
    st, _h, body = sim.api("POST", "/channels/%s/messages" % CHAN, raw=b"{oops", content_type="application/json")
    check(st == 400 and body["code"] == 50109, body)
    st, _h, body = sim.api("POST", "/channels/999/messages", {"content": "x"})
    check(st == 404 and body["code"] == 10003, body)
    sim.config(max_file_bytes=1000)
    st, _h, body = sim.api("POST", "/channels/%s/messages" % CHAN2, raw=body_of(png), content_type=ctype_of())
    check(st == 413 and body["code"] == 40005, (st, body))
    sim.config(max_request_bytes=2000, max_file_bytes=10 << 20)
    st, _h, body = sim.api("POST", "/channels/%s/messages" % CHAN2, raw=body_of(png), content_type=ctype_of())
    check(st == 413 and body["code"] == 40005, (st, body))
    # Edits keep a history; another user's message cannot be edited.
    sim.config(max_request_bytes=25 << 20)
    st, _h, e = sim.api("PATCH", "/channels/%s/messages/%s" % (CHAN, msg["id"]), {"content": "edited"})
    check(st == 200 and e["content"] == "edited" and e["edited_timestamp"], e)
    theirs = sim.message(channel_id=CHAN, guild_id=GUILD, content="mine")
    st, _h, body = sim.api("PATCH", "/channels/%s/messages/%s" % (CHAN, theirs["id"]), {"content": "x"})
    check(st == 403 and body["code"] == 50005, body)
    stored = [m for m in sim.channel_messages(CHAN) if m["id"] == msg["id"]][0]
    check([x["content"] for x in stored["edits"]] == ["edited"], stored)
    check(sim.stats()["spec_violations"] != [], "the 2001-char message is a docs violation")
    no_sim_bugs(sim)


_BOUNDARY = "simtestboundary"


def ctype_of():
    return "multipart/form-data; boundary=" + _BOUNDARY


def body_of(data):
    return (b"--%s\r\nContent-Disposition: form-data; name=\"payload_json\"\r\n\r\n{\"content\":\"big\"}\r\n"
            b"--%s\r\nContent-Disposition: form-data; name=\"files[0]\"; filename=\"x.bin\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n%s\r\n--%s--\r\n"
            % (_BOUNDARY.encode(), _BOUNDARY.encode(), data, _BOUNDARY.encode()))


@harness.timeout(60)
def test_spec_violations_on_command_put(t):
    sim = start(t)
    good = [{"name": "chat", "description": "Talk", "default_member_permissions": None,
             "options": [{"type": 3, "name": "prompt", "description": "what", "required": True},
                         {"type": 11, "name": "image", "description": "a file"}]},
            {"name": "상태", "description": "status", "name_localizations": {"en-US": "status"}}]
    st, _h, body = sim.api("PUT", "/applications/%s/guilds/%s/commands" % (sim.app_id, GUILD), good)
    check(st == 200 and [c["name"] for c in body] == ["chat", "상태"] and all(c["id"] for c in body), body)
    check(sim.stats()["spec_violation_count"] == 0, sim.stats()["spec_violations"])
    bad = [{"name": "c" * 33, "description": "x"},
           {"name": "img", "description": "x", "options": [{"type": 3, "name": "p"}]}]
    st, _h, body = sim.api("PUT", "/applications/%s/guilds/%s/commands" % (sim.app_id, GUILD), bad)
    check(st == 400 and body["code"] == 50035 and "0" in body["errors"], (st, body))
    vs = sim.stats()["spec_violations"]
    check({(v["pointer"], v["kind"]) for v in vs} >= {("/0/name", "schema"), ("/1/options/0/description", "schema")},
          vs)
    check(all(v["route"] == "/applications/{application_id}/guilds/{guild_id}/commands" for v in vs), vs)
    st, _h, body = sim.api("PUT", "/applications/%s/guilds/%s/commands" % (sim.app_id, GUILD), good)
    check(st == 429, "commands PUT: 2 per 60 s (%s)" % st)
    cmds = sim.get("/_sim/commands")
    check(cmds["puts"] == {"guild:" + GUILD: 1} and len(cmds["guilds"][GUILD]) == 2, cmds)
    # A command id reaches interactions created for it.
    r = sim.interaction(guild_id=GUILD, channel_id=CHAN, name="chat")
    check(r["payload"]["data"]["id"] == cmds["guilds"][GUILD][0]["id"], r["payload"]["data"])
    no_sim_bugs(sim)


class _BotEndpoint(http.server.BaseHTTPRequestHandler):
    """A stand-in for the bot's POST /interactions: verifies signatures."""

    public_key = None

    def log_message(self, *a):
        pass

    def do_POST(self):
        import nacl.exceptions
        import nacl.signing
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        sig, ts = self.headers.get("X-Signature-Ed25519"), self.headers.get("X-Signature-Timestamp")
        try:
            nacl.signing.VerifyKey(bytes.fromhex(self.public_key)).verify(ts.encode() + body, bytes.fromhex(sig))
        except (nacl.exceptions.BadSignatureError, AttributeError, TypeError, ValueError):
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        d = json.loads(body)
        reply = {"type": 1} if d["type"] == 1 else {"type": 4, "data": {"content": "pong " + d["data"]["name"]}}
        out = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@harness.timeout(60)
def test_http_delivery_is_signed_like_discord(t):
    sim = start(t)
    handler = type("H", (_BotEndpoint,), {"public_key": sim.public_key_hex})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    t.cleanup(srv.shutdown)
    url = "http://127.0.0.1:%d/interactions" % srv.server_address[1]
    r = sim.post("/_sim/http_ping", {"http_url": url})
    check(r["status"] == 200 and r["json"] == {"type": 1}, r)
    for forge in ("bad_signature", "no_headers", "bad_timestamp"):
        r = sim.post("/_sim/http_ping", {"http_url": url, "forge": forge})
        check(r["status"] == 401, "%s must be refused: %s" % (forge, r))
    r = sim.interaction(guild_id=GUILD, channel_id=CHAN, name="ping", deliver="http", http_url=url)
    check(r["http"]["status"] == 200, r["http"])
    info = sim.interaction_state(r["id"])
    check(info["acked"]["via"] == "http_response" and info["acked"]["type"] == 4, info["acked"])
    check(info["original"]["content"] == "pong ping", info["original"])
    no_sim_bugs(sim)


@harness.timeout(60)
def test_faults_raw_frames_and_flood(t):
    sim = start(t)
    sim.fault(method="GET", path_regex=r"^/users/@me$", status=502, count=1)
    sim.fault(method="GET", path_regex=r"^/users/@me$", status=429, retry_after=0.5, **{"global": True})
    st, _h, _b = sim.api("GET", "/users/@me")
    check(st == 502, st)
    st, h, body = sim.api("GET", "/users/@me")
    check(st == 429 and h["x-ratelimit-global"] == "true" and body["retry_after"] == 0.5, (st, h, body))
    check(sim.api("GET", "/users/@me")[0] == 200, "faults are used up")
    check(sim.stats()["faults_served"] == 2, "faults counted")
    gw, _ = sim.identify()
    gw.drain(0.1)
    sim.gw("raw", data="{\"op\": 0, \"t\": \"BROKEN")
    check(gw.recv_raw() == "{\"op\": 0, \"t\": \"BROKEN", "raw text through the zlib stream")
    n = 2000
    res = sim.gw("flood", count=n, channel_id=CHAN, guild_id=GUILD, content="flood")
    check(res["count"] == n and len(res["sessions"]) == 1 and res["bytes"] > 0, res)
    got = [gw.recv(10) for _ in range(n)]
    seqs = [m["s"] for m in got]
    check(seqs == list(range(seqs[0], seqs[0] + n)), "contiguous sequence numbers")
    check(all(m["t"] == "MESSAGE_CREATE" and m["d"]["content"] == "flood" for m in got), got[0])
    check(len({m["d"]["id"] for m in got}) == n, "unique ids")
    gw.send({"op": 1, "d": seqs[-1]})
    check(gw.recv()["op"] == 11, "the zlib stream is still intact after the flood")
    t.log("flood of %d: build %.3fs write %.3fs" % (n, res["build_s"], res["write_s"]))
    no_sim_bugs(sim)


@harness.timeout(60)
def test_flood_and_interaction_to_one_session(t):
    """What make bench needs: two bots on one simulator, each flooded and
    sent interactions on its own; the flood says how long it waited on the
    reader and when it began writing."""
    sim = start(t)
    a, da = sim.identify()
    b, db = sim.identify()
    a.drain(0.1)
    b.drain(0.1)
    before = time.time()
    res = sim.gw("flood", count=50, channel_id=CHAN, guild_id=GUILD, session_id=db["session_id"])
    check(res["sessions"] == [db["session_id"]], res)
    check(res["drain_wait_s"] >= 0 and res["drain_wait_s"] <= res["write_s"] + 0.001, res)
    check(before - 1 <= res["write_started_at"] <= time.time() + 1, res)
    got = [b.recv(10) for _ in range(50)]
    check(all(m["t"] == "MESSAGE_CREATE" for m in got), got[0])
    check(a.drain(0.3) == [], "the other session got none of the flood")
    r = sim.interaction(guild_id=GUILD, channel_id=CHAN, name="ping", session_id=da["session_id"])
    check(r["sessions"] == [da["session_id"]], r)
    check(a.recv_until(lambda m: m.get("t") == "INTERACTION_CREATE")["d"]["id"] == r["id"], "a got it")
    check(b.drain(0.3) == [], "b got no interaction")
    try:
        sim.interaction(guild_id=GUILD, channel_id=CHAN, name="ping", session_id="no-such-session")
        check(False, "an unknown session_id is refused")
    except simclient.SimError as e:
        check("no active session" in str(e), str(e))
    no_sim_bugs(sim)


@harness.timeout(60)
def test_message_content_intent_and_control_errors(t):
    sim = start(t)
    gw, _ = sim.identify(intents=(1 << 0) | (1 << 9))
    gw.drain(0.1)
    sim.message(channel_id=CHAN, guild_id=GUILD, content="secret")
    m = gw.recv()
    check(m["t"] == "MESSAGE_CREATE" and m["d"]["content"] == "", "no MESSAGE_CONTENT intent: empty content")
    sim.message(channel_id=CHAN, guild_id=GUILD, content="<@%s> hi" % sim.bot_user_id)
    m = gw.recv()
    check(m["d"]["content"].endswith("hi") and m["d"]["mentions"][0]["id"] == sim.bot_user_id, m["d"])
    try:
        sim.config(no_such_key=1)
        check(False, "unknown config keys are refused")
    except simclient.SimError as e:
        check("no_such_key" in str(e), e)
    sim.reset()
    check(sim.stats()["requests"] == 0 and sim.get("/_sim/guilds")["guilds"], "reset keeps guilds")
    no_sim_bugs(sim)


@harness.timeout(60)
def test_gateway_zombie_takeover_and_session_expiry(t):
    sim = start(t, heartbeat_interval_ms=200, heartbeat_timeout_factor=1.0)
    gw, ready = sim.identify()
    gw.drain(0.1)
    # No heartbeats at all: closed after 0.2 s x 1 + 1 s, session kept.
    t0 = time.monotonic()
    try:
        gw.drain(3.0)
        check(False, "expected the sim to close a silent connection")
    except simclient.GatewayClosed as e:
        check(e.code == 4000, e.code)
    check(1.0 < time.monotonic() - t0 < harness.scaled(2.5), "closed after about 1.2 s")
    s = sim.gateway()["sessions"][0]
    check(s["state"] == "active" and not s["connected"], s)
    check(sim.stats()["gateway"]["heartbeat_timeouts"] == 1, sim.stats()["gateway"])
    sim.config(heartbeat_timeout_factor=0)
    # A second connection resumes the session while the first is still open:
    # the first one loses it (4009), the second one gets it.
    a = sim.connect()
    a.recv()
    a.send({"op": 6, "d": {"token": sim.token, "session_id": ready["session_id"], "seq": 2}})
    check(a.recv()["t"] == "RESUMED", "resumed after the zombie close")
    b = sim.connect()
    b.recv()
    b.send({"op": 6, "d": {"token": sim.token, "session_id": ready["session_id"], "seq": 3}})
    check(b.recv()["t"] == "RESUMED", "taken over")
    try:
        a.drain(1.0)
        check(False, "the old connection must be closed")
    except simclient.GatewayClosed as e:
        check(e.code == 4009, e.code)
    s = sim.gateway()["sessions"][0]
    check(s["connected"] and s["resumes"] == 2 and s["state"] == "active", s)
    # A detached session expires after session_resume_ttl_s.
    sim.config(session_resume_ttl_s=0.3)
    b.drop()
    wait_until(lambda: sim.gateway()["sessions"][0]["state"] == "expired", 5, "session expired")
    c = sim.connect()
    c.recv()
    c.send({"op": 6, "d": {"token": sim.token, "session_id": ready["session_id"], "seq": 4}})
    check(c.recv()["d"] is False, "expired session: op 9 false")
    no_sim_bugs(sim)
