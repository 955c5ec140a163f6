"""The OpenAI simulator (tests/sim/openai_sim.py) behaves like the OpenAI
chat API the bot depends on (/work/shared/reference/providers.md). Each test
starts its own simulator and plays the bot with openaiclient's raw client."""

import concurrent.futures
import json
import time

import harness
from harness import check

import openaiclient

KEY = "sk-test-good-key-0001"


def start(t, **config):
    return openaiclient.start(t, keys={KEY: "ok"}, config=config or None)


def no_sim_bugs(ai):
    check(ai.stats()["sim_errors"] == 0, "the simulator crashed in a handler")


@harness.timeout(30)
def test_stream_with_usage_and_done(t):
    ai = start(t, chunk_chars=4)
    r = ai.chat(KEY, "hello there", stream=True, include_usage=True, user="u1")
    check(r.status == 200 and r.error is None and r.done, r)
    check(r.headers["content-type"].startswith("text/event-stream"), r.headers)
    for h in ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-requests",
              "x-ratelimit-reset-tokens", "x-request-id"):
        check(h in r.headers, "missing header %s: %s" % (h, r.headers))
    check(r.headers["x-ratelimit-reset-requests"].endswith(("ms", "s")), r.headers)
    check(r.text == "Answer: hello there", r.text)
    ev = r.events
    check(ev[0]["choices"][0]["delta"].get("role") == "assistant", ev[0])
    check(all(e["object"] == "chat.completion.chunk" for e in ev), ev)
    content = [e for e in ev if e["choices"] and e["choices"][0]["delta"].get("content")]
    check(all(len(e["choices"][0]["delta"]["content"]) <= 4 for e in content), content)
    check(content[-1]["choices"][0]["finish_reason"] == "stop", content[-1])
    check(all(e["choices"][0]["finish_reason"] is None for e in content[:-1]), content)
    check(ev[-1]["choices"] == [] and ev[-1]["usage"]["total_tokens"] ==
          ev[-1]["usage"]["prompt_tokens"] + ev[-1]["usage"]["completion_tokens"], ev[-1])
    check(r.body.endswith(b"data: [DONE]\n\n"), r.body[-40:])
    check("obfuscation" in r.unknown_fields, r.unknown_fields)

    # no include_usage: no usage chunk; non-stream: a chat.completion
    r2 = ai.chat(KEY, "again", stream=True)
    check(r2.done and all(e["choices"] for e in r2.events) and r2.usage is None, r2)
    r3 = ai.chat(KEY, [{"role": "system", "content": "be nice"}, {"role": "user", "content": "안녕하세요"}])
    check(r3.status == 200 and r3.json["object"] == "chat.completion", r3)
    check(r3.text == "답변: 안녕하세요" and r3.finish_reason == "stop" and r3.usage["completion_tokens"] > 0, r3)
    check("x-request-id" in r3.headers and "x-ratelimit-remaining-tokens" in r3.headers, r3.headers)

    # memory: more than system + one user message shows the context line
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "one"},
            {"role": "assistant", "content": "Answer: one"}, {"role": "user", "content": "two"}]
    r4 = ai.chat(KEY, msgs, stream=True)
    check(r4.text == "Answer: two\n(context: 4 messages)", r4.text)

    # max tokens cut the answer: finish_reason length
    r5 = ai.chat(KEY, "x" * 100, stream=True, max_completion_tokens=3)
    check(r5.finish_reason == "length" and len(r5.text) == 12, r5)
    r6 = ai.chat(KEY, "y" * 100, max_tokens=2)
    check(r6.finish_reason == "length" and len(r6.text) == 8, r6)

    # separate finish chunk mode (OpenAI's own shape)
    ai.config(separate_finish_chunk=True)
    r7 = ai.chat(KEY, "zz", stream=True)
    last = r7.events[-1]["choices"][0]
    check(last["delta"] == {} and last["finish_reason"] == "stop" and r7.text == "Answer: zz", r7.events)
    no_sim_bugs(ai)


@harness.timeout(30)
def test_split_bytes_korean_reassembly(t):
    ai = start(t, chunk_chars=7, split_bytes=1)
    prompt = "한국어 스트리밍 🙂 바이트 단위 테스트"
    r = ai.chat(KEY, prompt, stream=True, include_usage=True, timeout=20)
    check(r.status == 200 and r.done and r.error is None, r)
    check(all(len(p) == 1 for p in r.pieces), "pieces not 1 byte: %s" % [len(p) for p in r.pieces][:20])
    check(len(r.pieces) == len(r.body) > 200, len(r.pieces))
    check(r.text == "답변: " + prompt, r.text)
    # a piece really cuts UTF-8 sequences apart
    check(any(p[0] & 0xC0 == 0x80 for p in r.pieces), "no continuation byte on its own")

    # split over several bytes, with a connection ended by EOF instead of chunking
    ai.config(split_bytes=7, transfer="close", chunk_chars=5)
    r2 = ai.chat(KEY, prompt, stream=True, timeout=20)
    check("transfer-encoding" not in r2.headers and r2.done and r2.text == "답변: " + prompt, r2)
    check(len(r2.pieces) > 10, len(r2.pieces))

    # scripted long answer with code fences, split mid-event
    long = "".join("줄 %d: 텍스트 ```python\nprint(%d)\n```\n" % (i, i) for i in range(400))[:7000]
    check(len(long) == 7000, len(long))
    ai.config(split_bytes=997, transfer="chunked", chunk_chars=50, split_sleep_ms=0)
    ai.script([long, "second"])
    r3 = ai.chat(KEY, "give me code", stream=True, include_usage=True, timeout=20)
    check(r3.done and r3.text == long and r3.usage["completion_tokens"] == 1750, r3)
    r4 = ai.chat(KEY, "next", timeout=20)
    check(r4.text == "second", r4)
    r5 = ai.chat(KEY, "after the script")
    check(r5.text == "Answer: after the script", r5)
    ai.config(default_answer="fixed")
    check(ai.chat(KEY, "q").text == "fixed", "default_answer ignored")
    no_sim_bugs(ai)


@harness.timeout(40)
def test_key_behaviours(t):
    ai = start(t)
    # unknown key and missing auth
    r = ai.chat("sk-never-registered", "hi")
    check(r.status == 401 and r.error_code == "invalid_api_key", r)
    r = ai.request("POST", "/v1/chat/completions", None, {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    check(r.status == 401 and "error" in r.json, r)

    ai.keys("k401", "401")
    r = ai.chat("k401", "hi", stream=True)
    check(r.status == 401 and r.json["error"] == {"message": r.json["error"]["message"], "type": "invalid_request_error",
                                                  "param": None, "code": "invalid_api_key"}, r)
    check(r.json["error"]["message"].startswith("Incorrect API key provided"), r)

    ai.keys("krate", "429_rate", retry_after_ms=2500)
    r = ai.chat("krate", "hi")
    check(r.status == 429 and r.json["error"]["type"] == "requests" and r.error_code == "rate_limit_exceeded", r)
    check(r.headers.get("retry-after-ms") == "2500" and r.headers.get("retry-after") == "3", r.headers)
    check("x-ratelimit-remaining-requests" in r.headers and "x-request-id" in r.headers, r.headers)

    ai.keys("kquota", "429_quota")
    r = ai.chat("kquota", "hi", stream=True)
    check(r.status == 429 and r.json["error"]["type"] == "insufficient_quota" and r.error_code == "insufficient_quota", r)
    check("retry-after" not in r.headers, r.headers)

    ai.keys("k500", "500", remaining=1)
    r = ai.chat("k500", "hi")
    check(r.status == 500 and r.json["error"]["type"] == "server_error", r)
    r = ai.chat("k500", "hi")
    check(r.status == 200 and r.text == "Answer: hi", "remaining=1 should recover: %s" % r)

    ai.keys("khang", "hang")
    t0 = time.monotonic()
    r = ai.chat("khang", "hi", timeout=0.6)
    check(r.error == "timeout" and r.status is None and time.monotonic() - t0 >= 0.5, r)
    r = ai.chat("khang", "hi", stream=True, timeout=0.6)
    check(r.error == "timeout" and r.status is None, r)

    ai.keys("khang2", "hang", hang_after_chunks=3)
    ai.config(chunk_chars=2)
    r = ai.chat("khang2", "a longer question", stream=True, include_usage=True, timeout=0.8)
    check(r.status == 200 and r.error == "timeout" and len(r.events) == 3 and not r.done, r)

    ai.keys("kbreak", "break", break_after_chunks=4)
    r = ai.chat("kbreak", "a longer question", stream=True, include_usage=True, timeout=5)
    check(r.status == 200 and r.error == "closed" and len(r.events) == 4 and not r.done and r.usage is None, r)
    r = ai.chat("kbreak", "non-stream", timeout=5)
    check(r.error == "closed" and r.json is None, r)

    # hung connections are counted and released when clients leave
    st = ai.wait_stats(lambda s: s["active_streams"] == 0, timeout=5)
    check(st["by_status"].get("401", 0) >= 3 and st["by_status"].get("429", 0) == 2, st)
    check(st["stream_outcomes"].get("break") == 1 and st["stream_outcomes"].get("hang") == 1, st)
    check(st["by_status"].get("hang") == 2, st)

    # a key set back to ok answers again
    ai.keys("kquota", "ok")
    check(ai.chat("kquota", "hi").status == 200, "kquota back to ok")
    no_sim_bugs(ai)


@harness.timeout(30)
def test_validation_and_routes(t):
    ai = start(t)
    bad = [
        {"model": "m"},
        {"model": "m", "messages": []},
        {"model": "m", "messages": "hi"},
        {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
        {"model": "m", "messages": [{"role": "user", "content": 5}]},
        {"model": "m", "messages": [{"role": "user"}]},
        {"model": "m", "messages": ["x"]},
        {"messages": [{"role": "user", "content": "x"}]},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}},
        [1, 2],
    ]
    for body in bad:
        r = ai.request("POST", "/v1/chat/completions", KEY, body)
        check(r.status == 400 and r.json["error"]["type"] == "invalid_request_error"
              and "message" in r.json["error"] and "param" in r.json["error"], (body, r))
    r = ai.request("POST", "/v1/chat/completions", KEY, b"{not json")
    check(r.status == 400, r)
    r = ai.request("POST", "/v1/chat/completions", "sk-unknown", {"model": "m"})
    check(r.status == 401 and r.error_code == "invalid_api_key", "auth is checked before the body: %s" % r)
    r = ai.request("POST", "/v1/nothing", KEY, {})
    check(r.status == 404 and "error" in r.json, r)
    r = ai.request("GET", "/v1/models", KEY)
    check(r.status == 200 and [m["id"] for m in r.json["data"]] == ["gpt-4o-mini"], r)
    check(ai.request("GET", "/v1/models", "nope").status == 401, "models needs a key")

    ai.config(strict_model=True, max_context_chars=50)
    r = ai.chat(KEY, "hi", model="gpt-unknown")
    check(r.status == 404 and r.error_code == "model_not_found", r)
    r = ai.chat(KEY, "z" * 60)
    check(r.status == 400 and r.error_code == "context_length_exceeded", r)

    # control API errors
    for path, body in (("/_sim/keys", {"key": "x", "behaviour": "weird"}), ("/_sim/config", {"nope": 1}),
                       ("/_sim/keys", {"key": "x", "colour": 1}), ("/_sim/script", {"answers": "x"})):
        try:
            ai.post(path, body)
        except openaiclient.SimError:
            continue
        raise AssertionError("control %s accepted %s" % (path, body))
    no_sim_bugs(ai)


@harness.timeout(30)
def test_moderation(t):
    ai = start(t)
    r = ai.request("POST", "/v1/moderations", KEY, {"input": "a friendly text", "model": "omni-moderation-latest"})
    check(r.status == 200 and r.json["results"][0]["flagged"] is False, r)
    check(not any(r.json["results"][0]["categories"].values()), r)
    r = ai.request("POST", "/v1/moderations", KEY, {"input": ["ok", "please FLAGME now"]})
    res = r.json["results"]
    check([x["flagged"] for x in res] == [False, True] and res[1]["categories"]["harassment"] is True, r)
    check("x-ratelimit-remaining-requests" in r.headers, r.headers)
    ai.config(moderation_trigger="금지어", moderation_category="violence")
    r = ai.request("POST", "/v1/moderations", KEY, {"input": "이건 금지어 입니다"})
    check(r.json["results"][0]["flagged"] and r.json["results"][0]["categories"]["violence"], r)
    check(ai.request("POST", "/v1/moderations", KEY, {"model": "x"}).status == 400, "input required")
    check(ai.request("POST", "/v1/moderations", "bad", {"input": "x"}).status == 401, "moderation needs a key")
    check(ai.stats()["moderation_flagged"] == 2, ai.stats())
    no_sim_bugs(ai)


@harness.timeout(40)
def test_200_concurrent_streams(t):
    ai = start(t, chunk_chars=4, delay_ms=40)
    n = 200

    def one(i):
        return ai.chat(KEY, "question number %d" % i, stream=True, include_usage=True, timeout=20)

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    took = time.monotonic() - t0
    bad = [r for r in results if not (r.status == 200 and r.done and r.usage)]
    check(not bad, lambda: "%d streams failed, e.g. %s" % (len(bad), bad[:3]))
    check(all(r.text == "Answer: question number %d" % i for i, r in enumerate(results)), "texts mixed up")
    st = ai.stats()
    check(st["max_concurrent_streams"] >= n // 2 and st["active_streams"] == 0, st)
    check(st["stream_outcomes"].get("completed") == n, st)
    t.log("200 streams in %.2fs, max concurrent %d" % (took, st["max_concurrent_streams"]))
    no_sim_bugs(ai)


@harness.timeout(30)
def test_log_and_stats_never_hold_keys(t):
    ai = start(t)
    keys = {"sk-secret-AAAA-1111": "ok", "sk-secret-BBBB-2222": "429_quota", "sk-secret-CCCC-3333": "401"}
    for k, b in keys.items():
        ai.keys(k, b)
    for k in keys:
        ai.chat(k, "hi", stream=True, include_usage=True, temperature=0.5, user="user-7")
        ai.request("POST", "/v1/moderations", k, {"input": "x"})
    ai.chat("sk-secret-unknown-4444", "hi")
    entries = ai.log()
    dump = json.dumps(entries) + json.dumps(ai.stats()) + json.dumps(ai.get("/_sim/keys"))
    for k in list(keys) + ["sk-secret-unknown-4444"]:
        check(k not in dump and k[3:] not in dump, "key %s leaked" % k[:12])
    fps = {e["key_fingerprint"] for e in entries}
    check(fps == {openaiclient.fingerprint(k) for k in list(keys) + ["sk-secret-unknown-4444"]}, fps)
    first = entries[0]
    check(first["path"] == "/v1/chat/completions" and first["model"] == "gpt-4o-mini" and first["stream"] is True
          and first["include_usage"] is True and first["status"] == 200 and first["chunks"] >= 3
          and first["messages"] == [{"role": "user", "content": "hi"}] and first["temperature"] == 0.5
          and first["user"] == "user-7" and isinstance(first["time"], float), first)
    st = ai.stats()
    check(st["requests"] == 7 and st["by_key_fingerprint"][openaiclient.fingerprint("sk-secret-BBBB-2222")] == 2, st)
    since = ai.log()[-1]["seq"]
    ai.chat("sk-secret-AAAA-1111", "later")
    check(len(ai.log(since=since)) == 1, "log?since")
    ai.reset(keep_keys=True)
    check(ai.stats()["requests"] == 0 and ai.log() == [], "reset")
    check(ai.chat("sk-secret-AAAA-1111", "still known").status == 200, "keep_keys")
    ai.reset()
    check(ai.chat("sk-secret-AAAA-1111", "forgotten").status == 401, "reset forgets keys")

    # SIGTERM with a hung connection open: a clean exit 0
    ai.keys("hanger", "hang")
    import threading
    th = threading.Thread(target=ai.chat, args=("hanger", "x"), kwargs={"timeout": 5}, daemon=True)
    th.start()
    ai.wait_stats(lambda s: s["by_status"].get("hang") == 1, timeout=5)
    t0 = time.monotonic()
    check(ai.stop() == 0 and time.monotonic() - t0 < harness.scaled(3), "exit code on SIGTERM")
    th.join(5)
