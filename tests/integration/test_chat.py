"""Chat, black-box: /채팅 and /chat through the real binaries, the Discord
simulator, the OpenAI-compatible simulator and a real redis-server."""

import time

import harness
import openaiclient
import simclient
from harness import check, wait_until

GUILD = "400000000000000001"
CH_CHAT = "500000000000000001"
USER = {"id": "600000000000000001", "username": "민수"}


def setup(t, keys=None, **chat_env):
    redis = t.redis()
    sim = simclient.start(t)
    sim.add_guild(GUILD, channels=[{"id": CH_CHAT, "name": "채팅방-1", "type": 0}])
    ai = openaiclient.start(t, keys=keys or {"sk-test-one": "ok"})
    env = {"REDIS_URL": redis.url, "HEALTH_PORT": t.free_port(), "GATEWAY_LEASE_MS": "2000",
           "OPENAI_BASE_URL": ai.base_url, "OPENAI_API_KEY_1": ",".join(keys or {"sk-test-one": "ok"}),
           "EDIT_INTERVAL_MS": "400"}
    env.update(sim.bot_env())
    env.update({k: str(v) for k, v in chat_env.items()})
    chat = t.instance("chat", env=env)
    chat.wait_healthy(15)
    sim.wait_session()
    return redis, sim, ai, chat


def ask(sim, text, name="chat", locale="en-US"):
    opt = "question" if name == "chat" else "질문"
    return sim.interaction(name=name, guild_id=GUILD, channel_id=CH_CHAT, user=USER, locale=locale,
                           options=[{"name": opt, "type": 3, "value": text}])


def final(sim, iid, pred, timeout=30):
    return sim.wait_interaction(iid, lambda i: i.get("original") and pred(i), timeout=timeout)


@harness.timeout(120)
def test_streamed_answer_edits_at_most_once_per_interval(t):
    redis, sim, ai, chat = setup(t)
    ai.config(chunk_chars=4, delay_ms=60)
    answer = "스트리밍 답변입니다. " * 12
    ai.script([answer])
    ix = ask(sim, "안녕하세요", name="채팅", locale="ko")
    st = final(sim, ix["id"], lambda i: i["original"]["content"] == answer.strip() or
               i["original"]["content"] == answer)
    edits = st["original"]["edits"]
    check(len(edits) >= 3, "the answer appeared progressively: %d edits" % len(edits))
    gaps = [b["at"] - a["at"] for a, b in zip(edits, edits[1:])]
    check(min(gaps) >= 0.3, "edits at most one per 400 ms (minus transport jitter): %r" % gaps)
    check(st["acked"]["at"] - st["created_at"] < 3.0, "deferred in time")
    log = ai.log()
    check(log and log[-1]["stream"] and log[-1]["messages"][0]["role"] == "system", "streamed with a system prompt")
    check(sim.stats()["spec_violation_count"] == 0, "no spec violations: %r" % sim.stats()["spec_violations"][:2])


@harness.timeout(120)
def test_long_answer_split_into_followups(t):
    redis, sim, ai, chat = setup(t, MAX_TOKENS="4000")
    ai.config(chunk_chars=400, delay_ms=5)
    para = "가나다라마바사 아자차카타파하. " * 20 + "\n\n"
    code = "```python\n" + "\n".join("print(%d)  # 한국어 주석" % n for n in range(120)) + "\n```\n\n"
    answer = para * 8 + code + para * 8
    check(len(answer) >= 7000, "a 7,000-character answer: %d" % len(answer))
    ai.script([answer])
    ix = ask(sim, "길게 설명해 주세요")

    def delivered(i):
        if not i.get("original"):
            return False
        return sum(len(p["content"] or "") for p in [i["original"]] + i["followups"]) >= len(answer.strip()) - 20
    st = sim.wait_interaction(ix["id"], delivered, timeout=40)
    parts = [st["original"]["content"]] + [f["content"] for f in st["followups"]]
    check(len(parts) >= 4, "split into several messages: %d" % len(parts))
    for p in parts:
        check(len(p) <= 2000, "a message over 2000 characters: %d" % len(p))
        check(p.count("```") % 2 == 0, "a code fence left open in a part")
    text = "".join(p.replace("```python\n", "", 1) if i and p.startswith("```python\n") else p
                   for i, p in enumerate(parts))
    check("print(119)" in text and text.count("가나다라마바사") == answer.count("가나다라마바사"),
          "every paragraph and every code line arrived")
    check(sim.stats()["spec_violation_count"] == 0, "well-formed per the spec")


@harness.timeout(120)
def test_key_rotation_and_exhaustion(t):
    keys = {"sk-rate-limited": "429_rate", "sk-good": "ok"}
    redis, sim, ai, chat = setup(t, keys=keys)
    ix = ask(sim, "rotate please")
    st = final(sim, ix["id"], lambda i: "rotate please" in (i["original"]["content"] or ""))
    check(len(ai.log()) >= 2, "the first key's 429 made it try the next: %r" % [e.get("status") for e in ai.log()])
    # now every key is out of quota or refused
    ai.keys("sk-rate-limited", "429_quota")
    ai.keys("sk-good", "401")
    ix = ask(sim, "anyone there?")
    st = final(sim, ix["id"], lambda i: "try again" in (i["original"]["content"] or ""))
    ix = ask(sim, "and now?")
    st = final(sim, ix["id"], lambda i: "try again" in (i["original"]["content"] or "") or
               "operators" in (i["original"]["content"] or ""))
    check(chat.alive(), "alive")
    for secret in keys:
        check(secret not in chat.logs(), "a key value reached the log")


@harness.timeout(120)
def test_provider_errors_give_clear_replies(t):
    redis, sim, ai, chat = setup(t, keys={"sk-broken": "500"}, LLM_TIMEOUT_SEC="5")
    ix = ask(sim, "hello?", locale="ko")
    final(sim, ix["id"], lambda i: "AI 서비스" in (i["original"]["content"] or ""))
    ai.keys("sk-broken", "hang")
    ix = ask(sim, "slow?")
    final(sim, ix["id"], lambda i: "too long" in (i["original"]["content"] or ""), timeout=30)
    check(chat.alive(), "alive")


@harness.timeout(90)
def test_shutdown_with_answer_in_flight(t):
    redis, sim, ai, chat = setup(t, keys={"sk-hangs": "hang"}, DRAIN_TIMEOUT_SEC="1")
    ix = ask(sim, "this will hang")
    wait_until(lambda: chat.health()[1]["inflight"] == 1, 10, "answer in flight")
    chat.sigterm()
    check(chat.wait(20) == 0, "exits 0 after the drain timeout")
    check(chat.find_records(msg="drain timeout: jobs still running stay pending in redis for a later reclaim"),
          "the unfinished job stays pending")
    r = redis.client()
    check(r.cmd("XPENDING", "discordbot:jobs:chat", "workers")[0] == 1, "and is still pending in redis")


@harness.timeout(90)
def test_user_rate_limit_and_daily_quota(t):
    redis, sim, ai, chat = setup(t, USER_RATE_LIMIT="2", USER_RATE_WINDOW_SEC="60", USER_DAILY_LIMIT="0")
    for n in range(2):
        ix = ask(sim, "question %d" % n)
        final(sim, ix["id"], lambda i, n=n: "question %d" % n in (i["original"]["content"] or ""))
    ix = ask(sim, "one too many", locale="ko")
    st = final(sim, ix["id"], lambda i: "요청이 너무 많습니다" in (i["original"]["content"] or ""))
    check("초 후" in st["original"]["content"], "the wait is given: %r" % st["original"]["content"])
    check(len([e for e in ai.log() if e.get("path", "").endswith("/chat/completions")]) == 2,
          "the limited request never reached the model")
    # the limit is per user: someone else is still served
    other = {"id": "600000000000000002", "username": "지민"}
    ix = sim.interaction(name="chat", guild_id=GUILD, channel_id=CH_CHAT, user=other, locale="en-US",
                         options=[{"name": "question", "type": 3, "value": "another user"}])
    final(sim, ix["id"], lambda i: "another user" in (i["original"]["content"] or ""))
    # a daily quota, shared by every instance through redis
    r = redis.client()
    for k in r.cmd("KEYS", "discordbot:ulimit:*"):
        r.cmd("DEL", k)
    chat.sigterm()
    chat.wait(20)
    chat.env.update({"USER_RATE_LIMIT": "0", "USER_DAILY_LIMIT": "1"})
    chat.start()
    chat.wait_healthy(15)
    sim.wait_session()
    ix = ask(sim, "first today")
    final(sim, ix["id"], lambda i: "first today" in (i["original"]["content"] or ""))
    ix = ask(sim, "second today")
    final(sim, ix["id"], lambda i: "today's requests" in (i["original"]["content"] or ""))
