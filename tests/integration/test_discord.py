"""Discord connectivity, black-box: the real binaries against the Discord
simulator (tests/sim/discord_sim.py) and a real redis-server."""

import json
import threading
import time

import harness
import simclient
from harness import check, wait_until

GUILD = "400000000000000001"
CH_CHAT = "500000000000000001"
CH_IMAGE = "500000000000000002"
CH_GENERAL = "500000000000000003"
USER = {"id": "600000000000000001", "username": "민수"}
NAMES = {"chat": "chat-1", "image": "image-2", "video": "video-3", "admin": "admin-4"}


def setup(t, heartbeat_ms=1000, **sim_cfg):
    redis = t.redis()
    sim = simclient.start(t)
    sim.config(heartbeat_interval_ms=heartbeat_ms, **sim_cfg)
    sim.add_guild(GUILD, name="테스트 서버", channels=[
        {"id": CH_CHAT, "name": "채팅방-1", "type": 0},
        {"id": CH_IMAGE, "name": "이미지생성-1", "type": 0},
        {"id": CH_GENERAL, "name": "일반", "type": 0}])
    return redis, sim


def bot_env(t, redis, sim, **extra):
    env = {"REDIS_URL": redis.url, "HEALTH_PORT": t.free_port(), "DIAG_JOBS": "on",
           "HEARTBEAT_INTERVAL_MS": "200", "JOB_BLOCK_MS": "1000", "GATEWAY_LEASE_MS": "2000",
           "LOG_LEVEL": "debug"}
    env.update(sim.bot_env())
    env.update({k: str(v) for k, v in extra.items()})
    return env


def holder_of(insts):
    for inst in insts:
        if inst.alive():
            st, body = inst.health()
            if body and body.get("gateway", {}).get("holder"):
                return inst
    return None


def stream_entries(r, role):
    out = []
    for _id, f in r.cmd("XRANGE", "discordbot:jobs:%s" % role, "-", "+"):
        out.append(dict(zip(f[::2], f[1::2])))
    return out


def ping(sim, channel=CH_GENERAL, locale="en-US"):
    return sim.interaction(name="핑", guild_id=GUILD, channel_id=channel, user=USER, locale=locale,
                           permissions="0")


@harness.timeout(120)
def test_one_session_identify_heartbeats_and_ping(t):
    redis, sim = setup(t, heartbeat_ms=300)
    admin = t.instance("admin", env=bot_env(t, redis, sim))
    chat = t.instance("chat", env=bot_env(t, redis, sim))
    admin.wait_healthy(15)
    chat.wait_healthy(15)
    sim.wait_session()
    time.sleep(harness.scaled(2.0))
    gw = sim.gateway()
    check(gw["identifies"] == 1, "two candidates, one identify: %r" % gw["identifies"])
    ident = gw["identify_log"][0]
    check(ident["token_matched"] and ident["intents"] == 37377 and ident["shard"] == [0, 1], ident)
    conns = [c for c in gw["connections"] if not c["closed"]]
    check(len(conns) == 1 and conns[0]["compress"], "one zlib-stream connection: %r" % conns)
    check(conns[0]["heartbeats"] >= 4, "heartbeats keep time (300 ms): %r" % conns[0]["heartbeats"])
    holders = [i for i in (admin, chat) if i.health()[1]["gateway"]["holder"]]
    check(len(holders) == 1, "exactly one holder")

    r = ping(sim)
    st = sim.wait_interaction(r["id"], lambda i: i["acked"])
    check(st["acked"]["type"] == 5 and st["acked"]["flags"] & 64, "deferred, ephemeral: %r" % st["acked"])
    check(st["acked"]["at"] - st["created_at"] < harness.scaled(3.0), "acknowledged within the window")
    st = sim.wait_interaction(r["id"], lambda i: i.get("original") and "Pong" in (i["original"].get("content") or ""))
    check("admin-4" in st["original"]["content"], st["original"])
    # the worker is faster than the deferral (a slow Discord): its edit
    # arrives first, gets 404, and is retried until the deferral lands
    sim.fault(method="POST", path_regex=r"^/interactions/\d+/[^/]+/callback$", delay_s=0.8, count=1)
    # Korean locale answers in Korean
    r = ping(sim, locale="ko")
    st = sim.wait_interaction(r["id"], lambda i: i.get("original") and "퐁" in (i["original"].get("content") or ""))
    holder = holders[0]
    st, text = holder.get("/metrics")
    for name in ("discordbot_gateway_holder 1", "discordbot_gateway_connected 1",
                 'discordbot_interactions_total{result="received"}', 'discordbot_discord_requests_total{status="2xx"}'):
        check(name in text, "metrics lack %s" % name)
    stats = sim.stats()
    check(stats["spec_violation_count"] == 0, "no spec violations: %r" % stats["spec_violations"])
    check(stats["exhausted_bucket_hits"] == 0, "no request into an exhausted bucket")


@harness.timeout(90)
def test_ping_burst_measures_rest_once(t):
    """/핑 measured the REST round trip with GET /users/@me on every use;
    that route allows 10 per 5 s, so a burst of 30 queued for 15 s (and
    tied up admin's job slots). Now one probe serves the burst."""
    redis, sim = setup(t)
    admin = t.instance("admin", env=bot_env(t, redis, sim))
    admin.wait_healthy(15)
    sim.wait_session()
    ids = [ping(sim)["id"] for _ in range(30)]
    t0 = time.monotonic()
    for iid in ids:
        sim.wait_interaction(iid, lambda i: i.get("original") and "Pong" in (i["original"].get("content") or ""),
                             timeout=harness.scaled(10))
    took = time.monotonic() - t0
    me = [e for e in sim.log(method="GET") if (e.get("path") or "").endswith("/users/@me")]
    check(len(me) <= 2, "GET /users/@me %d times for 30 pings" % len(me))
    check(took < harness.scaled(5), "30 pings answered in %.1f s" % took)


@harness.timeout(90)
def test_routing_channels_and_replies(t):
    redis, sim = setup(t)
    admin = t.instance("admin", env=bot_env(t, redis, sim))
    admin.wait_healthy(15)
    sim.wait_session()
    r = redis.client()
    wait_until(lambda: r.cmd("HLEN", "discordbot:channels") == 3, 10, "channel names stored in redis")
    # a command outside its role's channels: told where it works, in Korean
    ix = sim.interaction(name="채팅", guild_id=GUILD, channel_id=CH_GENERAL, user=USER, locale="ko",
                         options=[{"name": "질문", "type": 3, "value": "안녕"}])
    st = sim.wait_interaction(ix["id"], lambda i: i["acked"])
    check(st["acked"]["type"] == 4 and "채팅방-*" in st["original"]["content"], st)
    # messages: chat channel routed, others, bots and the bot itself not
    sim.message(channel_id=CH_CHAT, guild_id=GUILD, author=USER, content="채팅방 메시지")
    sim.message(channel_id=CH_GENERAL, guild_id=GUILD, author=USER, content="일반 메시지")
    sim.message(channel_id=CH_CHAT, guild_id=GUILD, author={"id": "700000000000000001", "username": "b", "bot": True},
                content="bot")
    sim.message(channel_id=CH_CHAT, guild_id=GUILD, author={"id": sim.info["bot_user_id"], "username": "me"},
                content="self")
    wait_until(lambda: len(stream_entries(r, "chat")) >= 1, 10, "chat message routed")
    time.sleep(harness.scaled(1.0))
    entries = stream_entries(r, "chat")
    check(len(entries) == 1 and entries[0]["type"] == "discord.message", entries)
    check("채팅방 메시지" in entries[0]["payload"], "raw message forwarded")
    check(admin.alive(), "alive")


@harness.timeout(180)
def test_holder_killed_another_resumes_every_event_once(t):
    redis, sim = setup(t)
    insts = [t.instance(role, env=bot_env(t, redis, sim)) for role in ("image", "video")]
    for inst in insts:
        inst.wait_healthy(15)
    sim.wait_session()
    wait_until(lambda: holder_of(insts), 10, "a holder")
    total = 300
    sent = []

    def produce():
        for n in range(total):
            sim.message(channel_id=CH_CHAT, guild_id=GUILD, author=USER, content="msg-%04d" % n)
            sent.append(n)
            time.sleep(0.01)

    th = threading.Thread(target=produce)
    th.start()
    wait_until(lambda: len(sent) >= total // 3, 30, "a third sent")
    victim = holder_of(insts)
    victim.kill()
    th.join(120)
    survivor = [i for i in insts if i is not victim][0]
    r = redis.client()

    def all_routed():
        return len(stream_entries(r, "chat")) >= total
    wait_until(all_routed, 30, "all %d messages routed" % total)
    time.sleep(harness.scaled(1.5))
    contents = [json.loads(e["payload"])["d"]["content"] for e in stream_entries(r, "chat")]
    check(len(contents) == total, "exactly %d routed, got %d" % (total, len(contents)))
    check(sorted(contents) == ["msg-%04d" % n for n in range(total)], "each message once")
    gw = sim.gateway()
    check(gw["identifies"] == 1 and gw["resumes"] >= 1, "resumed, not identified again: %r" % (
        {k: gw[k] for k in ("identifies", "resumes", "resume_failures")}))
    check(survivor.health()[1]["gateway"]["holder"], "the survivor holds the session")


@harness.timeout(90)
def test_reconnect_and_invalid_session(t):
    redis, sim = setup(t)
    inst = t.instance("chat", env=bot_env(t, redis, sim))
    inst.wait_healthy(15)
    sim.wait_session()
    sim.gw("reconnect")
    wait_until(lambda: sim.gateway()["resumes"] >= 1, 15, "op 7: resumed")
    check(sim.gateway()["identifies"] == 1, "no new identify after op 7")
    sim.gw("invalid_session", resumable=False)
    wait_until(lambda: sim.gateway()["identifies"] >= 2, 20, "op 9 false: identified again")
    sim.wait_session()
    r = redis.client()
    sim.message(channel_id=CH_CHAT, guild_id=GUILD, author=USER, content="after new session")
    wait_until(lambda: any("after new session" in e["payload"] for e in stream_entries(r, "chat")), 10,
               "routing goes on in the new session")
    sim.gw("close", code=4000, reason="test")
    wait_until(lambda: sim.gateway()["resumes"] >= 2, 15, "4000: resumed")


@harness.timeout(60)
def test_bad_token_stops_without_loop(t):
    redis, sim = setup(t)
    env = bot_env(t, redis, sim, DISCORD_TOKEN="wrong-token.abcdefghij")
    a = t.instance("chat", env=env)
    b = t.instance("image", env=dict(env, HEALTH_PORT=t.free_port()))
    a.wait_healthy(15)
    b.wait_healthy(15)

    def stopped():
        for i in (a, b):
            g = i.health()[1].get("gateway", {})
            if g.get("state") == "stopped":
                return g
        return None
    g = wait_until(stopped, 15, "gateway stopped")
    check("DISCORD_TOKEN" in g.get("error", ""), "the reason names the token: %r" % g)
    before = sim.stats()["requests"]
    time.sleep(harness.scaled(3.0))
    check(sim.stats()["requests"] - before <= 2, "no retry loop against Discord")
    check(sim.gateway()["identifies"] == 0, "never identified")
    for i in (a, b):
        check("wrong-token" not in i.logs(), "token never logged")


@harness.timeout(60)
def test_diag_post_never_sends_a_channel_id_that_is_not_one(t):
    """A diag.post job's channel_id goes into the request's path: one that is
    not a snowflake ("../users/@me" fits the old 20-character check) is
    refused, never sent to where its dot segments lead."""
    redis, sim = setup(t)
    inst = t.instance("video", env=bot_env(t, redis, sim))
    inst.wait_healthy(15)
    r = redis.client()
    for ch in ("../users/@me", CH_CHAT):
        r.cmd("XADD", "discordbot:jobs:video", "*", "type", "diag.post",
              "payload", json.dumps({"channel_id": ch, "content": "to %s" % ch}))
    wait_until(lambda: len(sim.channel_messages(CH_CHAT)) >= 1, 20, "the good one posted")
    wait_until(lambda: inst.health()[1]["processed"] + inst.health()[1]["failed"] >= 2, 10, "both handled")
    posts = [e.get("path") for e in sim.log(method="POST")]
    check(posts and all(p.endswith("/channels/%s/messages" % CH_CHAT) for p in posts),
          "only the good one reached Discord: %r" % posts)


@harness.timeout(120)
def test_burst_into_one_channel_respects_rate_limits(t):
    redis, sim = setup(t)
    sim.config(rate_limits={"POST /channels/{channel_id}/messages": {"limit": 10, "window_s": 0.5}})
    inst = t.instance("video", env=bot_env(t, redis, sim, MAX_INFLIGHT="256"))
    inst.wait_healthy(15)
    r = redis.client()
    for n in range(200):
        r.cmd("XADD", "discordbot:jobs:video", "*", "type", "diag.post",
              "payload", json.dumps({"channel_id": CH_CHAT, "content": "burst %03d" % n}))
    wait_until(lambda: len(sim.channel_messages(CH_CHAT)) >= 200, 60, "200 messages posted")
    stats = sim.stats()
    check(stats["exhausted_bucket_hits"] == 0, "zero requests into an exhausted bucket: %r" %
          stats["exhausted_bucket_details"][:3])
    check(stats["spec_violation_count"] == 0, "zero spec violations: %r" % stats["spec_violations"][:3])
    check(stats["global_limit_hits"] == 0, "global limit respected")
    wait_until(lambda: inst.health()[1]["processed"] >= 200, 10, "all acked as done")


@harness.timeout(90)
def test_http_interactions_signature_and_routing(t):
    redis, sim = setup(t)
    admin = t.instance("admin", env=bot_env(t, redis, sim, GATEWAY="off"))
    admin.wait_healthy(15)
    url = "http://127.0.0.1:%s/interactions" % admin.env["HEALTH_PORT"]
    for forge in ("bad_signature", "no_headers", "bad_timestamp"):
        res = sim.post("/_sim/http_ping", {"http_url": url, "forge": forge})
        check(res["status"] == 401, "%s -> 401: %r" % (forge, res))
    res = sim.post("/_sim/http_ping", {"http_url": url, "forge": "none"})
    check(res["status"] == 200 and json.loads(res["body"]) == {"type": 1}, "PING answered: %r" % res)
    st, _ = admin.request("POST", "/interactions", body=b"{" * 2000000)
    check(st in (401, 413), "huge body refused: %r" % st)
    ix = sim.interaction(name="핑", guild_id=GUILD, channel_id=CH_GENERAL, user=USER, locale="en-US",
                         permissions="0", deliver="http", http_url=url)
    check(ix["http"].get("status") == 200 and json.loads(ix["http"]["body"])["type"] == 5,
          "deferred over HTTP: %r" % ix["http"])
    sim.wait_interaction(ix["id"], lambda i: i.get("original") and "Pong" in (i["original"].get("content") or ""))
    check(admin.alive(), "alive")


@harness.timeout(90)
def test_redis_down_interaction_deferred_then_answered(t):
    """Redis away for seconds: the interaction is still acknowledged within
    Discord's 3 s (the deferral needs no Redis), its job is held by the
    holder and stored when Redis is back, and the user gets the answer. It
    used to get an error reply, and under load 107 of 1,200 got nothing."""
    redis, sim = setup(t)
    inst = t.instance("admin", env=bot_env(t, redis, sim))
    inst.wait_healthy(15)
    sim.wait_session()
    wait_until(lambda: inst.health()[1]["gateway"]["state"] == "connected", 10, "connected")
    redis.kill()
    ix = ping(sim)
    st = sim.wait_interaction(ix["id"], lambda i: i["acked"], timeout=5)
    check(st["acked"]["type"] == 5, st)
    time.sleep(2)
    check(inst.alive(), "alive")
    redis.restart()
    st = sim.wait_interaction(ix["id"], lambda i: i.get("original") and i["original"].get("content"), timeout=20)
    check("Temporary problem" not in st["original"]["content"], st)
    check(inst.find_records(msg="redis back: held gateway events stored"), "held events stored")


@harness.timeout(90)
def test_malformed_gateway_input_never_crashes(t):
    redis, sim = setup(t)
    inst = t.instance("chat", env=bot_env(t, redis, sim))
    inst.wait_healthy(15)
    sim.wait_session()
    sim.dispatch("TOTALLY_UNKNOWN_EVENT", {"x": [1, 2, {"y": None}]})
    sim.dispatch("MESSAGE_CREATE", {"id": "1", "channel_id": None, "author": 5, "content": ["no"]})
    sim.dispatch("INTERACTION_CREATE", {"id": 12, "token": None, "type": "x", "data": 7})
    sim.dispatch("GUILD_CREATE", {"id": GUILD, "channels": [{"id": None, "name": 3}, "junk", {"id": "9"}]})
    sim.gw("raw", data="{this is not json")
    sim.gw("raw", data=json.dumps({"op": 0, "t": "MESSAGE_CREATE", "s": "NaN", "d": "str"}))
    sim.gw("raw", data="[" * 10000 + "]" * 10000)
    sim.gw("raw", data=json.dumps({"op": 0, "t": "X", "s": 999999, "d": {"big": "z" * 3000000}}))
    time.sleep(harness.scaled(1.0))
    check(inst.alive(), "alive after malformed input")
    sim.wait_session(timeout=30)
    r = redis.client()
    sim.message(channel_id=CH_CHAT, guild_id=GUILD, author=USER, content="still routing")
    wait_until(lambda: any("still routing" in e["payload"] for e in stream_entries(r, "chat")), 20,
               "routing still works")


@harness.timeout(90)
def test_commands_registered_once(t):
    redis, sim = setup(t)
    env = bot_env(t, redis, sim, DISCORD_GUILD_ID=GUILD)
    admin = t.instance("admin", env=env)
    admin.wait_healthy(15)
    wait_until(lambda: sim.stats()["command_puts"].get("guild:" + GUILD) == 1, 15, "commands registered")
    cmds = sim.get("/_sim/commands")
    names = {c["name"] for c in cmds["guilds"].get(GUILD, [])}
    check({"채팅", "chat", "이미지", "img", "비디오", "핑", "상태", "인스턴스"} <= names, "all registered: %r" % names)
    admin.sigterm()
    admin.wait(20)
    admin.start()
    admin.wait_healthy(15)
    wait_until(lambda: admin.find_records(msg="slash commands unchanged; not registering again"), 15,
               "unchanged set recognised")
    check(sim.stats()["command_puts"].get("guild:" + GUILD) == 1, "not registered again")
    check(sim.stats()["spec_violation_count"] == 0, "command JSON valid per spec: %r" % sim.stats()["spec_violations"])
    one = t.instance("chat", env=dict(env, HEALTH_PORT=t.free_port()), args=["--register-commands"])
    check(one.wait(20) == 0, "--register-commands exits 0")


@harness.timeout(90)
def test_messages_to_the_bot_routed_as_mentions(t):
    redis, sim = setup(t)
    admin = t.instance("admin", env=bot_env(t, redis, sim))
    admin.wait_healthy(15)
    sim.wait_session()
    r = redis.client()
    wait_until(lambda: r.cmd("HLEN", "discordbot:channels") == 3, 10, "channel names stored in redis")
    bot = sim.info["bot_user_id"]
    dm_channel = "500000000000000099"
    # in order: plain, mentions the bot, mentions someone else, a DM; the
    # mention outside the chat channels is not the chat role's
    sim.message(channel_id=CH_CHAT, guild_id=GUILD, author=USER, content="그냥 대화")
    sim.message(channel_id=CH_GENERAL, guild_id=GUILD, author=USER, content="<@%s> 일반 채널" % bot)
    sim.message(channel_id=CH_CHAT, guild_id=GUILD, author=USER, content="<@%s> 안녕" % bot)
    sim.message(channel_id=CH_CHAT, guild_id=GUILD, author=USER, content="<@600000000000000002> 너 말고")
    sim.message(channel_id=dm_channel, author=USER, content="DM 질문")
    wait_until(lambda: len(stream_entries(r, "chat")) >= 4, 10, "chat messages routed")
    time.sleep(harness.scaled(1.0))
    entries = stream_entries(r, "chat")
    got = [(e["type"], json.loads(e["payload"])["d"]["content"]) for e in entries]
    check(got == [("discord.message", "그냥 대화"), ("discord.mention", "<@%s> 안녕" % bot),
                  ("discord.message", "<@600000000000000002> 너 말고"), ("discord.mention", "DM 질문")], got)
    # the raw gateway message is forwarded as it came, mentions included
    mention = json.loads(entries[1]["payload"])["d"]
    check([m["id"] for m in mention["mentions"]] == [bot], mention.get("mentions"))
    check(admin.alive(), "alive")
