"""Admin commands, black-box: /상태 and /인스턴스 through the real binaries,
the Discord simulator, a real redis-server and PostgreSQL."""

import hashlib
import time

import harness
import simclient
from harness import check, wait_until

GUILD = "400000000000000001"
CH_CHAT = "500000000000000001"
CH_GENERAL = "500000000000000003"
ADMIN = {"id": "600000000000000001", "username": "관리자"}
MEMBER = {"id": "600000000000000002", "username": "지민"}
MOD_ROLE = "800000000000000001"
OTHER_ROLE = "800000000000000002"
CHAT_KEY = "sk-admin-test-secret-value-0123456789"
ADMIN_KEY = "sk-admin-instance-secret-value-9876543210"
FAST = {"HEARTBEAT_INTERVAL_MS": "200", "JOB_BLOCK_MS": "1000", "GATEWAY_LEASE_MS": "2000"}


def fp(key):
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:8]


class Cluster:
    """Redis, PostgreSQL (optional), the Discord simulator and the bot's
    environment; OpenAI is pointed at a closed port (no request is made)."""

    def __init__(self, t, pg=True):
        self.t = t
        self.redis = t.redis()
        self.pg = t.postgres() if pg else None
        self.db = self.pg.create_database("bot") if pg else None
        self.sim = simclient.start(t)
        self.sim.add_guild(GUILD, name="테스트 서버", channels=[
            {"id": CH_CHAT, "name": "채팅방-1", "type": 0}, {"id": CH_GENERAL, "name": "일반", "type": 0}])

    def env(self, **extra):
        e = {"REDIS_URL": self.redis.url, "HEALTH_PORT": self.t.free_port(),
             "OPENAI_BASE_URL": "http://127.0.0.1:%d/v1" % self.t.free_port(),
             "OPENAI_API_KEY_1": CHAT_KEY, "OPENAI_API_KEY_4": ADMIN_KEY, "ADMIN_ROLE_IDS": MOD_ROLE}
        e.update(FAST)
        if self.db:
            e["DATABASE_URL"] = self.db
        e.update(self.sim.bot_env())
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def start(self, role, **extra):
        inst = self.t.instance(role, env=self.env(**extra))
        inst.wait_healthy(15)
        if self.db:
            wait_until(lambda: inst.health()[1]["postgres"]["ok"], 30, "postgres up and migrated")
        return inst

    def ask(self, name, user=ADMIN, permissions="8", locale="en-US", **kw):
        kw.setdefault("guild_id", GUILD)
        kw.setdefault("channel_id", CH_GENERAL)
        if not kw["guild_id"]:
            del kw["guild_id"]
        return self.sim.interaction(name=name, user=user, permissions=permissions, locale=locale, **kw)

    def answer(self, ix, timeout=20):
        """The answer's text (content, embed title, description, fields)
        once the deferred response was edited, and the interaction's state."""
        st = self.sim.wait_interaction(ix["id"], lambda i: i.get("original") and i["original"]["edits"],
                                       timeout=timeout)
        return text_of(st["original"]), st

    def ask_until(self, name, pred, timeout=20, **kw):
        """Ask again until an answer satisfies pred (the cluster's picture
        changes between answers, not within one); return that answer."""
        timeout = harness.scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            text, st = self.answer(self.ask(name, **kw), timeout=max(deadline - time.monotonic(), 5))
            if pred(text):
                return text, st
            if time.monotonic() > deadline:
                raise AssertionError("no answer to /%s satisfied the test after %gs; the last:\n%s"
                                     % (name, timeout, text))
            time.sleep(0.3)


def text_of(msg):
    parts = [msg.get("content") or ""]
    for e in msg.get("embeds") or ():
        parts += [e.get("title") or "", e.get("description") or ""]
        for f in e.get("fields") or ():
            parts += [f["name"], f["value"]]
    return "\n".join(parts)


def embed_within_limits(msg):
    """Discord's embed limits (and the answer is one embed)."""
    embeds = msg.get("embeds") or []
    check(len(embeds) == 1, "one embed: %r" % embeds)
    e = embeds[0]
    fields = e.get("fields") or []
    check(len(fields) <= 25, "at most 25 fields: %d" % len(fields))
    total = len(e.get("title") or "") + len(e.get("description") or "")
    for f in fields:
        check(0 < len(f["value"]) <= 1024 and 0 < len(f["name"]) <= 256, "a field over its limit: %r" % f)
        total += len(f["name"]) + len(f["value"])
    check(total <= 6000, "at most 6000 characters in all: %d" % total)
    return e


def no_secret(text):
    for key in (CHAT_KEY, ADMIN_KEY):
        check(key not in text and key[3:20] not in text, "a key value appears in an answer")


def line_of(text, start):
    for line in text.splitlines():
        if line.startswith(start):
            return line
    raise AssertionError("no line starting with %r in:\n%s" % (start, text))


@harness.timeout(150)
def test_status_shows_instances_queues_keys_usage_and_dependencies(t):
    c = Cluster(t)
    # the admin instance waits a minute before judging anyone, so the video
    # role (no instance) keeps its backlog instead of being taken over
    admin = c.start("admin", FAILOVER_AFTER_MS="60000")
    chat = c.start("chat")
    c.sim.wait_session()
    r = c.redis.client()
    for n in range(3):
        r.cmd("XADD", "discordbot:jobs:video", "*", "type", "diag.echo", "payload", '{"n":%d}' % n)
    wait_until(lambda: r.cmd("HLEN", "discordbot:keys:openai:chat-1") == 1, 10, "the chat key mirrored to redis")
    c.pg.psql("INSERT INTO usage_daily (day, user_id, kind, model, requests) VALUES "
              "((now() AT TIME ZONE 'UTC')::date, '600000000000000001', 'chat', 'm', 7), "
              "((now() AT TIME ZONE 'UTC')::date, '600000000000000002', 'chat', 'm', 3)", db="bot")

    def both_up(text):
        return "**admin-4** · admin · up" in text and "**chat-1** · chat · up" in text
    text, st = c.ask_until("상태", both_up)
    check(st["acked"]["type"] == 5 and st["acked"]["flags"] & 64, "deferred, ephemeral: %r" % st["acked"])
    embed_within_limits(st["original"])
    check("Cluster status" in text and "Answered by **admin-4**" in text, text)
    check(line_of(text, "Redis: ").startswith("Redis: ok ("), text)
    check(line_of(text, "PostgreSQL: ").startswith("PostgreSQL: ok ("), text)
    check("processed" in line_of(text, "**chat-1**") and "uptime" in line_of(text, "**chat-1**"), text)
    check(line_of(text, "**video** ") == "**video** backlog 3 · pending 0", text)
    check(line_of(text, "**chat** backlog") == "**chat** backlog 0 · pending 0", text)
    check(line_of(text, "**image** ") == "**image** backlog 0 · pending 0", "a missing stream is empty: " + text)
    check(line_of(text, "`" + fp(CHAT_KEY) + "`") == "`%s` openai · chat-1: ok" % fp(CHAT_KEY), text)
    check(line_of(text, "**chat** 10") == "**chat** 10 requests by 2 users · busiest user 7/200", text)
    check(line_of(text, "**video** 0") == "**video** 0 videos by 0 users · busiest user 0/5", text)
    no_secret(text)
    no_secret(admin.logs() + chat.logs())

    # in Korean for a Korean client
    text, st = c.answer(c.ask("상태", locale="ko"))
    check("**chat-1** · chat · 정상" in text and "**video** 대기 3" in text, text)
    no_secret(text)

    # PostgreSQL down: said, and the rest still answers
    c.pg.kill()
    wait_until(lambda: not admin.health()[1]["postgres"]["ok"], 20, "the admin instance sees postgres down")
    text, st = c.ask_until("status", lambda x: "PostgreSQL: down" in x)
    check("Unknown: PostgreSQL is down." in text and line_of(text, "Redis: ").startswith("Redis: ok"), text)
    check("**chat-1** · chat · up" in text, text)
    stats = c.sim.stats()
    check(stats["spec_violation_count"] == 0, "no spec violations: %r" % stats["spec_violations"][:2])
    check(admin.alive() and chat.alive(), "alive")


@harness.timeout(120)
def test_only_administrators_and_admin_roles(t):
    c = Cluster(t, pg=False)
    c.start("admin")
    c.sim.wait_session()
    # a member without ADMINISTRATOR (and without a listed role) is refused
    for name in ("상태", "인스턴스"):
        text, st = c.answer(c.ask(name, user=MEMBER, permissions="0", roles=[OTHER_ROLE]))
        check(text == "This command is for server administrators only.", text)
        check(not st["original"].get("embeds"), "nothing else is shown: %r" % st["original"])
    text, _ = c.answer(c.ask("상태", user=MEMBER, permissions="0", locale="ko"))
    check(text == "이 명령은 서버 관리자만 쓸 수 있습니다.", text)
    # permissions with many bits but not ADMINISTRATOR (1 << 3)
    text, _ = c.answer(c.ask("상태", user=MEMBER, permissions=str((1 << 40) | 0x7 | 0x10)))
    check("administrators only" in text, text)
    # a role listed in ADMIN_ROLE_IDS is enough
    text, st = c.answer(c.ask("상태", user=MEMBER, permissions="0", roles=[OTHER_ROLE, MOD_ROLE]))
    check("Cluster status" in text and "**admin-4**" in text, text)
    check("PostgreSQL: not configured" in text and "PostgreSQL is not configured" in text, text)
    text, _ = c.answer(c.ask("인스턴스", user=MEMBER, permissions="0", roles=[MOD_ROLE]))
    check("Who serves which role" in text, text)
    # in a DM nobody is an administrator
    text, _ = c.answer(c.ask("상태", guild_id=None, channel_id=None))
    check(text == "This command works only inside a server.", text)
    # /핑 stays open to everyone
    text, _ = c.answer(c.ask("핑", user=MEMBER, permissions="0"))
    check("admin-4" in text, text)


@harness.timeout(120)
def test_instances_and_status_answer_once_without_discord_errors(t):
    """/인스턴스 used to answer with its embed and then a "[discord error] 404
    10008 Unknown Message" (an edit that reached Discord before the
    acknowledgement). Each answer is one edit of the acknowledged message:
    no failed Discord call, no follow-up, nothing later."""
    c = Cluster(t, pg=False)
    # chat holds the gateway and acknowledges; admin, another process, edits
    # the answer: the order of the two is what used to go wrong
    chat = c.start("chat")
    c.sim.wait_session()
    wait_until(lambda: chat.health()[1].get("gateway", {}).get("holder"), 10, "chat holds the gateway")
    admin = c.start("admin")
    asked = []
    for n in range(20):
        name = ("인스턴스", "인스턴스", "상태", "핑")[n % 4]
        ix = c.ask(name, locale=("ko", "en-US")[n % 2])
        text, st = c.answer(ix)
        check(text.strip(), "/%s answered: %r" % (name, st))
        asked.append((name, ix["id"]))
    # the admin instance finished every job (acked): nothing more is coming
    wait_until(lambda: c.redis.client().cmd("XPENDING", "discordbot:jobs:admin", "workers")[0] == 0, 10,
               "every admin job acked")
    time.sleep(harness.scaled(1.0))
    for name, iid in asked:
        st = c.sim.interaction_state(iid)
        check(st["acked"] and st["acked"]["type"] == 5, "/%s deferred: %r" % (name, st["acked"]))
        check(not st["errors"], "/%s: failed Discord calls %r" % (name, st["errors"]))
        check(not st.get("followups"), "/%s: no follow-up message %r" % (name, st.get("followups")))
        check(len(st["original"]["edits"]) == 1, "/%s: one edit of the answer, not %d"
              % (name, len(st["original"]["edits"])))
    check(admin.alive(), "alive")


@harness.timeout(150)
def test_instances_names_who_serves_each_role_and_takeovers(t):
    c = Cluster(t, pg=False)
    admin = c.start("admin", FAILOVER_AFTER_MS="2000")
    chat = c.start("chat", FAILOVER_AFTER_MS="2000")
    c.sim.wait_session()

    def served(role, text):
        """The "Served by" line of role's field."""
        return text.split("\n%s\n" % role, 1)[1].splitlines()[0]

    # image and video have no instance: the admin instance takes them over
    text, st = c.ask_until("인스턴스", lambda x: "**admin-4** (takeover)" in x and "**chat-1**" in x, timeout=30)
    embed_within_limits(st["original"])
    check(served("chat", text) == "Served by: **chat-1**", text)
    check(served("image", text) == "Served by: **admin-4** (takeover)", text)
    check(served("video", text) == "Served by: **admin-4** (takeover)", text)
    check(served("admin", text) == "Served by: **admin-4**", text)
    check("Channels: `채팅방-*`, `ai-지원`" in text and "Channels: `비디오생성-*`" in text, text)
    check("Channels: anywhere" in text, text)

    # the chat instance stops: its role is taken over, and /상태 says so
    chat.stop()
    c.ask_until("인스턴스", lambda x: "Served by: **admin-4** (takeover)\nChannels: `채팅방" in x, timeout=30)
    text, st = c.ask_until("상태", lambda x: "**chat-1** · chat · taken over by admin-4" in x, timeout=30)
    check("serving admin" in line_of(text, "**admin-4**") and "chat" in line_of(text, "**admin-4**"), text)
    embed_within_limits(st["original"])

    # with the admin instance gone too, nobody serves /상태 ... until an
    # instance takes the admin role: the lowest-numbered live one
    admin.stop()
    chat.start()
    chat.wait_healthy(15)
    text, st = c.ask_until("인스턴스", lambda x: "Served by: **chat-1** (takeover)" in x, timeout=40)
    check(served("image", text) == "Served by: nobody", text)
    check("Answered by **chat-1**" in text, text)


@harness.timeout(120)
def test_status_stays_within_discord_limits_with_many_instances_and_keys(t):
    c = Cluster(t, pg=False)
    r = c.redis.client()
    # forty more instances beat (before admin starts, so its first read of
    # the heartbeats sees them all), and ten pools of four keys each
    for n in range(10, 50):
        r.cmd("XADD", "discordbot:heartbeats", "*", "name", "chat-%d" % n, "role", "chat", "pid", "1",
              "version", "0.1.0", "uptime_s", "3600", "inflight", "1", "processed", "123456", "failed", "7",
              "state", "running", "serving", "chat", "health_port", "9000")
    admin = c.start("admin", FAILOVER_AFTER_MS="60000")
    c.sim.wait_session()
    fps = []
    for p in range(10):
        for k in range(4):
            f = fp("fake-%d-%d" % (p, k))
            fps.append(f)
            r.cmd("HSET", "discordbot:keys:minimax:image-%d" % (10 + p), f,
                  '{"state":"cooling","until_ms":%d,"reason":"rate_limited","uses":1,"failures":0}'
                  % ((time.time() + 60) * 1000))
    r.cmd("HSET", "discordbot:keys:minimax:image-99", "not-a-fingerprint-" + CHAT_KEY, '{"state":"ok"}')
    text, st = c.ask_until("상태", lambda x: "**chat-10**" in x)
    e = embed_within_limits(st["original"])
    names = [f["name"] for f in e["fields"]]
    check("Instances (cont.)" in names, "the instances continue in a second field: %r" % names)
    check("… and" in text and "more" in text, "what does not fit is counted: " + text)
    shown = [f for f in fps if f in text]
    check(0 < len(shown) <= 20, "at most 20 keys shown: %d" % len(shown))
    check("cooling until <t:" in text and "(rate_limited)" in text, text)
    check("not-a-fingerprint" not in text, "only fingerprints are shown")
    no_secret(text)
    # the same in Korean, where every character counts the same
    text, st = c.answer(c.ask("상태", locale="ko"))
    check("클러스터 상태" in text, text)
    embed_within_limits(st["original"])
    check(c.sim.stats()["spec_violation_count"] == 0, "no spec violations: %r" % c.sim.stats()["spec_violations"][:2])
    check(admin.alive(), "alive")


def test_metrics_whole_with_the_most_peers_an_instance_tracks(t):
    """/metrics is served whole or not at all (500 and a log line); with as
    many peers as failover keeps (64), each with the longest name it keeps
    (31 characters), it is whole and well under its 64 KiB cap."""
    c = Cluster(t, pg=False)
    r = c.redis.client()
    for n in range(70):  # more than failover keeps
        name = ("video-%d" % n).ljust(31, "x")
        r.cmd("XADD", "discordbot:heartbeats", "*", "name", name, "role", "video", "pid", "1",
              "version", "0.1.0", "uptime_s", "864000", "inflight", "99", "processed", "123456789",
              "failed", "1234567", "state", "draining", "serving", "admin,chat,image,video", "health_port", "9000")
    admin = c.start("admin", FAILOVER_AFTER_MS="60000")

    def full():
        status, text = admin.get("/metrics")
        check(status == 200, "GET /metrics: %d %s" % (status, text[:200]))
        return text if text.count("discordbot_peer_up{") == 64 else None

    text = wait_until(full, 20, "64 peers on /metrics")
    check(text.endswith("\n") and text.splitlines()[-1].startswith('discordbot_takeover{role="admin"} '),
          "the last family is there, complete: %r" % text[-200:])
    size = len(text.encode())
    t.log("/metrics with 64 peers: %d bytes" % size)
    check(size < 48 << 10, "/metrics %d bytes: too close to its 64 KiB cap" % size)
    check(not admin.find_records(msg="metrics too large, not served"), "served whole")
