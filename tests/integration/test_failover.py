"""Failover, black-box: real chat/image/video/admin binaries, a real
redis-server (and PostgreSQL for videos), the Discord and provider
simulators. Instances beat every 500 ms and are declared down after 2 s of
silence here (FAILOVER_AFTER_MS), so the tests run in seconds."""

import hashlib
import signal
import time

import harness
import minimaxclient
import openaiclient
import simclient
from harness import check, wait_until

GUILD = "400000000000000001"
CH_CHAT = "500000000000000001"
CH_IMG = "500000000000000003"
CH_VID = "500000000000000005"
CHANNELS = [{"id": CH_CHAT, "name": "채팅방-1", "type": 0}, {"id": CH_IMG, "name": "이미지생성-1", "type": 0},
            {"id": CH_VID, "name": "비디오생성-1", "type": 0}]
KEY_CHAT, KEY_ADMIN = "sk-chat-instance-key", "sk-admin-instance-key"
FAST = {"HEARTBEAT_INTERVAL_MS": "500", "FAILOVER_AFTER_MS": "2000", "GATEWAY_LEASE_MS": "2000",
        "EDIT_INTERVAL_MS": "300", "USER_RATE_LIMIT": "0", "USER_DAILY_LIMIT": "0"}


def fp(key):
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def covering(admin, role, on, timeout=20):
    """Wait until admin serves role for a dead instance (on) or has handed it
    back (not on). Admin takes every role over that has no instance yet when
    it starts, so a test must wait for the handback before its jobs go to
    the role's own instance, and a takeover log line found afterwards may be
    that first one: the metric says what holds now."""
    want = 'discordbot_takeover{role="%s"} %d' % (role, 1 if on else 0)
    wait_until(lambda: want in admin.get("/metrics")[1], timeout,
               "admin %s the %s role" % ("took over" if on else "handed back", role))


class Cluster:
    def __init__(self, t, pg=False, ai_delay_ms=20):
        self.t = t
        self.redis = t.redis()
        self.sim = simclient.start(t)
        self.sim.add_guild(GUILD, channels=CHANNELS)
        self.ai = openaiclient.start(t, keys={KEY_CHAT: "ok", KEY_ADMIN: "ok"})
        self.ai.config(chunk_chars=12, delay_ms=ai_delay_ms)
        self.db = t.postgres().create_database("bot") if pg else None
        self.insts = {}

    def env(self, **extra):
        e = {"REDIS_URL": self.redis.url, "HEALTH_PORT": self.t.free_port(), "OPENAI_BASE_URL": self.ai.base_url,
             "OPENAI_API_KEY_1": KEY_CHAT, "OPENAI_API_KEY_4": KEY_ADMIN}
        e.update(FAST)
        e.update(self.sim.bot_env())
        if self.db:
            e["DATABASE_URL"] = self.db
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def start(self, role, name=None, **extra):
        inst = self.t.instance(role, env=self.env(**extra))
        inst.wait_healthy(15)
        self.insts[name or role] = inst
        return inst

    def ask(self, text, user="600000000000000001"):
        return self.sim.interaction(name="chat", guild_id=GUILD, channel_id=CH_CHAT, locale="en-US",
                                    user={"id": user, "username": "u" + user[-3:]},
                                    options=[{"name": "question", "type": 3, "value": text}])

    def answer(self, iid):
        st = self.sim.interaction_state(iid)
        return st, (st.get("original") or {}).get("content") or ""


def answered_once(c, ixs, timeout=90):
    """Wait until every interaction holds its own final answer; check that
    none was answered twice (no follow-ups, no foreign text)."""
    def all_done():
        return all(("Answer: %s" % q) == c.answer(ix["id"])[1] for q, ix in ixs.items())
    wait_until(all_done, timeout, lambda: "all %d answered: missing %r" % (len(ixs), [
        q for q, ix in ixs.items() if c.answer(ix["id"])[1] != "Answer: %s" % q][:5]))
    for q, ix in ixs.items():
        st, text = c.answer(ix["id"])
        check(not st["followups"], "a second answer for %s: %r" % (q, st["followups"]))
        for e in st["original"]["edits"]:
            check(("Answer: " + q).startswith(e["content"] or ""),
                  "an edit of %s shows something else: %r" % (q, e["content"]))


@harness.timeout(240)
def test_chat_killed_with_200_jobs_admin_takes_over_and_hands_back(t):
    c = Cluster(t, ai_delay_ms=30)
    admin = c.start("admin")
    c.sim.wait_session()
    chat = c.start("chat", GATEWAY="off", MAX_INFLIGHT="16")
    covering(admin, "chat", False)
    ixs = {}
    for n in range(200):
        q = "question %03d" % n
        ixs[q] = c.ask(q)
    wait_until(lambda: chat.health()[1]["processed"] >= 20, 60, "chat answered some")
    chat.kill()
    t0 = time.monotonic()
    covering(admin, "chat", True, timeout=10)
    took = time.monotonic() - t0
    check(took < harness.scaled(5), "taken over %.1f s after kill -9" % took)
    answered_once(c, ixs, timeout=150)
    keys = {e.get("key_fingerprint") for e in c.ai.log() if e.get("path", "").endswith("/chat/completions")}
    check(fp(KEY_ADMIN) in keys, "admin used its own key: %r" % keys)
    events = c.redis.client().cmd("XRANGE", "discordbot:events", "-", "+")
    check(any("takeover" in e[1] and "chat" in e[1] for e in events), "takeover in the events stream: %r" % events)
    # the chat instance returns: admin hands the role back
    chat.start()
    chat.wait_healthy(15)
    admin.wait_log("routing: handing the role back", timeout=15)
    ix = c.ask("after handback")
    wait_until(lambda: c.answer(ix["id"])[1] == "Answer: after handback", 30, "answered after handback")
    check(admin.alive() and chat.alive(), "both alive")


@harness.timeout(180)
def test_paused_chat_is_taken_over_and_nobody_answers_twice(t):
    c = Cluster(t, ai_delay_ms=250)
    admin = c.start("admin")
    c.sim.wait_session()
    chat = c.start("chat", GATEWAY="off")
    covering(admin, "chat", False)
    ixs = {}
    for n in range(6):
        q = "paused %d" % n
        ixs[q] = c.ask(q)
    wait_until(lambda: chat.health()[1]["inflight"] >= 3, 20, "chat working on them")
    chat.send_signal(signal.SIGSTOP)
    try:
        covering(admin, "chat", True, timeout=10)
        answered_once(c, ixs, timeout=60)
    finally:
        chat.send_signal(signal.SIGCONT)
    time.sleep(harness.scaled(3))  # the woken chat instance must not answer again
    answered_once(c, ixs, timeout=10)
    check(chat.alive(), "chat woke up")
    check(chat.find_records(msg="the process stood still; jobs hold their answers until their leases are confirmed"),
          "chat noticed it stood still")


@harness.timeout(180)
def test_two_chat_replicas_share_and_reclaim(t):
    c = Cluster(t, ai_delay_ms=40)
    one = c.start("chat", name="chat-1")
    c.sim.wait_session()
    two = c.start("chat", name="chat-5", INSTANCE_NUMBER="5", KEY_INDEX="1", GATEWAY="off")
    ixs = {}
    for n in range(40):
        q = "shared %02d" % n
        ixs[q] = c.ask(q)
    wait_until(lambda: two.health()[1]["inflight"] + two.health()[1]["processed"] > 0 and
               one.health()[1]["processed"] > 0, 30, "both replicas took jobs")
    two.kill()
    answered_once(c, ixs, timeout=90)
    check(one.find_records(msg="claimed the jobs of a dead consumer") or one.health()[1]["processed"] >= 20,
          "the live replica took over the dead one's jobs")


@harness.timeout(180)
def test_image_killed_admin_draws_with_its_own_key(t):
    c = Cluster(t)
    mm = minimaxclient.start(t, keys={"mm-image-key": "ok", "mm-admin-key": "ok"})
    extra = {"MINIMAX_BASE_URL": mm.base_url, "MINIMAX_API_KEY_2": "mm-image-key", "MINIMAX_API_KEY_4": "mm-admin-key"}
    admin = c.start("admin", **extra)
    c.sim.wait_session()
    image = c.start("image", GATEWAY="off", **extra)
    covering(admin, "image", False)
    image.kill()
    covering(admin, "image", True, timeout=10)
    ix = c.sim.interaction(name="이미지", guild_id=GUILD, channel_id=CH_IMG, locale="en-US",
                           user={"id": "600000000000000001", "username": "u"},
                           options=[{"name": "설명", "type": 3, "value": "served by admin"}])
    c.sim.wait_interaction(ix["id"], lambda i: i.get("original") and i["original"]["attachments"], timeout=30)
    keys = {e.get("key_fingerprint") for e in mm.log() if e.get("path", "").startswith("/v1/image_generation")}
    check(keys == {fp("mm-admin-key")}, "admin's own MiniMax key: %r" % keys)


@harness.timeout(240)
def test_video_killed_in_flight_admin_finishes_it(t):
    c = Cluster(t, pg=True)
    mm = minimaxclient.start(t, keys={"mm-shared-account": "ok"})
    mm.config(video_steps_ms={"Preparing": 500, "Queueing": 500, "Processing": 6000})
    extra = {"MINIMAX_BASE_URL": mm.base_url, "MINIMAX_API_KEY_3": "mm-shared-account",
             "MINIMAX_API_KEY_4": "mm-shared-account", "VIDEO_POLL_SEC": "1", "VIDEO_DIR": t.path("videos")}
    admin = c.start("admin", **extra)
    c.sim.wait_session()
    video = c.start("video", GATEWAY="off", **extra)
    wait_until(lambda: video.health()[1]["postgres"]["ok"], 20, "video has postgres")
    # admin serves the video role while no video instance runs, and hands
    # it back after a few beats: the job must go to video-3, not to admin
    covering(admin, "video", False)
    ix = c.sim.interaction(name="비디오", guild_id=GUILD, channel_id=CH_VID, locale="en-US",
                           user={"id": "600000000000000001", "username": "u"},
                           options=[{"name": "설명", "type": 3, "value": "finished by admin"}])
    wait_until(lambda: [x for x in mm.tasks() if x["status"] == "Processing"], 20, "processing")
    video.kill()
    admin.wait_log("routing: taking over the role", timeout=10)
    st = c.sim.wait_interaction(ix["id"], lambda i: i.get("original") and i["original"]["attachments"], timeout=60)
    check(len([e for e in mm.log() if e.get("path", "").startswith("/v1/video_generation")]) == 1, "one submit")
    check(admin.find_records(msg="video resumed"), "admin resumed the row")
    check(len(st["original"]["attachments"]) == 1, "one video")


@harness.timeout(180)
def test_admin_killed_others_keep_serving_and_answer_status(t):
    c = Cluster(t)
    admin = c.start("admin")
    c.sim.wait_session()
    chat = c.start("chat")
    time.sleep(harness.scaled(1.5))
    admin.kill()  # it held the gateway: another instance resumes the session
    chat.wait_log("routing: taking over the role", timeout=15)
    ix = c.ask("still here?")
    wait_until(lambda: c.answer(ix["id"])[1] == "Answer: still here?", 30, "chat keeps answering")
    ix = c.sim.interaction(name="상태", guild_id=GUILD, channel_id=CH_CHAT, locale="en-US", permissions="8",
                           user={"id": "600000000000000001", "username": "boss"})
    st = c.sim.wait_interaction(ix["id"], lambda i: i.get("original") and i["original"].get("embeds"), timeout=30)
    text = str(st["original"]["embeds"])
    check("chat-1" in text and "admin-4" in text, "the status lists both: %s" % text[:500])
    check(chat.find_records(msg="routing: taking over the role", for_role="admin"), "chat-1 took the admin role")


@harness.timeout(120)
def test_instances_started_one_after_another_take_nothing_over(t):
    """Issue 17: the four instances started one after another, 1 s apart,
    with the production timings (beats every 1000 ms, down after 3000 ms).
    chat-1 once took the admin role over before admin-4 had beaten at all:
    an instance that has not beaten yet is starting, not dead. Nobody may
    take anything over, and every role is served by its own instance."""
    c = Cluster(t, pg=True)
    slow = {"HEARTBEAT_INTERVAL_MS": "1000", "FAILOVER_AFTER_MS": "3000"}
    first = True
    for role in ("chat", "image", "video", "admin"):
        c.start(role, **slow, **({} if first else {"GATEWAY": "off"}))
        first = False
        time.sleep(1.0)  # the idle second between starts
    # past a full failover window after the last start, plus handback time
    time.sleep(4.5)
    for role, inst in c.insts.items():
        took = inst.find_records(msg="routing: taking over the role")
        check(not took, "%s took a role over at start: %r" % (role, took))
    events = c.redis.client().cmd("XRANGE", "discordbot:events", "-", "+")
    check(not events, "no takeover events: %r" % events)
