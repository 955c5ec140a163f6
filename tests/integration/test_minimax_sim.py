"""The MiniMax simulator (tests/sim/minimax_sim.py) behaves like MiniMax's
native image and video API the bot depends on
(/work/shared/reference/providers.md). Each test starts its own simulator
and plays the bot with minimaxclient's blocking client."""

import base64
import json
import threading
import time

import harness
from harness import check

import minimaxclient
import mp4check
from minimaxclient import png_info

KEY = "mm-test-good-key-0001"


def start(t, **config):
    return minimaxclient.start(t, keys={KEY: "ok"}, config=config or None)


def no_sim_bugs(mm):
    check(mm.stats()["sim_errors"] == 0, "the simulator crashed in a handler")


def ok(r):
    return r.status == 200 and r.base_code == 0


@harness.timeout(40)
def test_image_urls_and_base64(t):
    mm = start(t)
    r = mm.image(KEY, "a red fox in the snow", aspect_ratio="16:9", n=3)
    check(ok(r) and r.base_msg == "success", r)
    check(r.headers["content-type"].startswith("application/json") and r.headers.get("trace-id"), r.headers)
    check(set(r.json) == {"id", "data", "metadata", "base_resp"}, r.json)
    check(r.json["metadata"] == {"failed_count": "0", "success_count": "3"}, r.json["metadata"])
    urls = r.json["data"]["image_urls"]
    check(len(urls) == 3 and all(u.startswith(mm.base_url + "/_files/") for u in urls), urls)
    colours = set()
    for u in urls:
        d = mm.download(u)
        check(d.status == 200 and d.headers["content-type"] == "image/png", d)
        check(int(d.headers["content-length"]) == len(d.body), d.headers)
        check(d.body[:8] == b"\x89PNG\r\n\x1a\n" and d.body[12:16] == b"IHDR", d.body[:16])
        w, h, rgb = png_info(d.body)
        check((w, h) == (114, 64), (w, h))
        colours.add(rgb)
    check(len(colours) == 3, "every image has its own colour: %s" % colours)

    # base64, portrait; default aspect 1:1
    r = mm.image(KEY, "a tall tower", aspect_ratio="9:16", n=2, response_format="base64")
    check(ok(r) and "image_urls" not in r.json["data"] and len(r.json["data"]["image_base64"]) == 2, r)
    for b in r.json["data"]["image_base64"]:
        check(png_info(base64.b64decode(b))[:2] == (64, 114), "9:16 size")
    r = mm.image(KEY, "square")
    check(png_info(mm.download(r.json["data"]["image_urls"][0]).body)[:2] == (64, 64), "1:1 by default")
    for ar, size in (("4:3", (85, 64)), ("3:2", (96, 64)), ("2:3", (64, 96)), ("3:4", (64, 85)), ("21:9", (149, 64))):
        r = mm.image(KEY, "ratio " + ar, aspect_ratio=ar, response_format="base64")
        check(png_info(base64.b64decode(r.json["data"]["image_base64"][0]))[:2] == size, ar)

    # bigger files, other sizes, numeric counts
    mm.config(image_short_side=100, image_pad_bytes=50000, metadata_counts_as_strings=False)
    r = mm.image(KEY, "padded")
    d = mm.download(r.json["data"]["image_urls"][0])
    check(len(d.body) > 50000 and png_info(d.body)[:2] == (100, 100), len(d.body))
    check(r.json["metadata"] == {"failed_count": 0, "success_count": 1}, r.json["metadata"])

    # partial failure
    r = mm.image(KEY, "PARTIALFAIL please", n=4)
    check(ok(r) and len(r.json["data"]["image_urls"]) == 2 and r.json["metadata"]["failed_count"] == 2, r)

    # unknown file and expired URLs
    check(mm.download(mm.base_url + "/_files/nope.png").status == 404, "unknown file")
    mm.config(url_ttl_s=0)
    r = mm.image(KEY, "short-lived")
    time.sleep(1.05)
    d = mm.download(r.json["data"]["image_urls"][0])
    check(d.status == 403 and b"AccessDenied" in d.body, d)
    st = mm.stats()
    check(st["images_generated"] == 3 + 2 + 1 + 5 + 1 + 2 + 1 and st["images_failed"] == 2, st)
    no_sim_bugs(mm)


@harness.timeout(30)
def test_image_validation(t):
    mm = start(t)
    good = {"model": "image-01", "prompt": "x"}
    bad = [
        {"prompt": "no model"},
        {"model": "image-02", "prompt": "x"},
        {"model": "image-01"},
        {"model": "image-01", "prompt": ""},
        {"model": "image-01", "prompt": 5},
        {"model": "image-01", "prompt": "p" * 1501},
        dict(good, aspect_ratio="5:4"),
        dict(good, aspect_ratio="1x1"),
        dict(good, n=0),
        dict(good, n=10),
        dict(good, n="2"),
        dict(good, n=True),
        dict(good, response_format="b64_json"),
        dict(good, seed="12"),
        dict(good, prompt_optimizer="yes"),
        [good],
    ]
    for body in bad:
        r = mm.request("POST", "/v1/image_generation", KEY, body)
        check(r.status == 200 and r.base_code == 2013 and r.base_msg.startswith("invalid params"), (body, r))
        check(r.json["data"] is None, r)
    r = mm.request("POST", "/v1/image_generation", KEY, b"{not json")
    check(r.base_code == 2013, r)
    check(ok(mm.image(KEY, "p" * 1500, n=9, seed=7, prompt_optimizer=True)), "1500 chars and n=9 are fine")
    r = mm.request("POST", "/v1/image_generation", "unknown-key", body={"model": "image-01"})
    check(r.base_code == 1004, "authentication comes before validation: %s" % r)
    r = mm.request("GET", "/v1/image_generation", KEY)
    check(r.status == 404, r)
    r = mm.request("POST", "/v1/nothing", KEY, {})
    check(r.status == 404, r)
    entries = mm.log(path="/v1/image_generation")
    check(entries[0]["prompt"] == "no model" and entries[0]["base_code"] == 2013 and "model" not in entries[0],
          entries[0])
    check(entries[5]["prompt_chars"] == 1501 and len(entries[5]["prompt"]) == 200, entries[5])
    no_sim_bugs(mm)


@harness.timeout(40)
def test_key_behaviours_and_triggers(t):
    mm = start(t)
    r = mm.image("never-registered", "hi")
    check(r.status == 200 and r.base_code == 1004 and "Authorization" in r.base_msg, r)
    r = mm.request("POST", "/v1/image_generation", None, {"model": "image-01", "prompt": "x"})
    check(r.base_code == 1004, "no Authorization header: %s" % r)

    for code in ("1002", "1004", "1008", "2049", "1013", "1033", "1039", "2045"):
        k = "mm-key-" + code
        mm.keys(k, code)
        r = mm.image(k, "hi")
        check(r.status == 200 and r.base_code == int(code) and r.base_msg, (code, r))
        r = mm.video_submit(k, "hi")
        check(r.base_code == int(code) and r.json["task_id"] == "", (code, r))
        r = mm.video_query(k, "123")
        check(r.base_code == int(code), (code, r))
        r = mm.file_retrieve(k, "123")
        check(r.base_code == int(code), (code, r))

    # 1026 / 1027 by key
    mm.keys("k1026", "1026")
    check(mm.image("k1026", "a cat").base_code == 1026, "1026 image")
    check(mm.video_submit("k1026", "a cat").base_code == 1026, "1026 video")
    check(mm.video_query("k1026", "nope").base_code == 2013, "1026 keys still query")
    mm.keys("k1027", "1027")
    check(mm.image("k1027", "a cat").base_code == 1027, "1027 image")
    mm.config(video_steps_ms=30)
    r = mm.video_submit("k1027", "a cat")
    check(ok(r) and r.json["task_id"], "the submit of a 1027 key is accepted: %s" % r)
    last, seen = mm.wait_video("k1027", r.json["task_id"])
    check(last.json["status"] == "Fail" and last.base_code == 1027 and last.json["file_id"] == "", last)

    # per-prompt triggers, whatever the key
    r = mm.image(KEY, "something SENSITIVE here")
    check(r.base_code == 1026 and r.base_msg == "input new_sensitive", r)
    check(mm.video_submit(KEY, "SENSITIVE video").base_code == 1026, "video 1026 trigger")
    check(mm.image(KEY, "BADOUTPUT").base_code == 1027, "image 1027 trigger")
    r = mm.video_submit(KEY, "BADOUTPUT video")
    last, _ = mm.wait_video(KEY, r.json["task_id"])
    check(last.json["status"] == "Fail" and last.base_code == 1027, last)
    mm.config(sensitive_input_trigger="금지어")
    check(mm.image(KEY, "이건 금지어 입니다").base_code == 1026, "configured trigger")
    check(ok(mm.image(KEY, "SENSITIVE no longer")), "old trigger off")
    mm.config(sensitive_input_trigger=None)
    check(ok(mm.image(KEY, "금지어")), "trigger disabled")

    # a real HTTP 500, a hang, remaining
    mm.keys("k500", "500", remaining=1)
    r = mm.image("k500", "x")
    check(r.status == 500 and r.headers["content-type"] == "text/html" and r.json is None, r)
    check(ok(mm.image("k500", "x")), "remaining=1 recovers")
    mm.keys("khang", "hang")
    t0 = time.monotonic()
    r = mm.image("khang", "x", timeout=0.6)
    check(r.error == "timeout" and r.status is None and time.monotonic() - t0 >= 0.5, r)
    r = mm.video_query("khang", "1", timeout=0.4)
    check(r.error == "timeout", r)
    mm.keys("kfail", "video_fail")
    check(ok(mm.image("kfail", "images are fine")), "video_fail keys make images")
    r = mm.video_submit("kfail", "a video")
    last, _ = mm.wait_video("kfail", r.json["task_id"])
    check(last.json["status"] == "Fail" and last.base_code == 0, last)
    mm.keys("k1002", "1002", remaining=2)
    check([mm.image("k1002", "x").base_code for _ in range(3)] == [1002, 1002, 0], "remaining=2")

    st = mm.wait_stats(lambda s: s["hung"] == 2)
    check(st["by_status"].get("500") == 1 and st["by_base_code"].get("1002", 0) >= 6, st)

    # control API errors
    for path, body in (("/_sim/keys", {"key": "x", "behaviour": "weird"}), ("/_sim/config", {"nope": 1}),
                       ("/_sim/keys", {"key": "x", "colour": 1}), ("/_sim/config", {"video_steps_ms": {"Later": 1}}),
                       ("/_sim/config", {"video_fail_state": "Success"}), ("/_sim/tasks", {"task_id": "nope"})):
        try:
            mm.post(path, body)
        except minimaxclient.SimError:
            continue
        raise AssertionError("control %s accepted %s" % (path, body))
    no_sim_bugs(mm)


@harness.timeout(40)
def test_video_lifecycle(t):
    mm = start(t, video_steps_ms=300)
    t0 = time.monotonic()
    r = mm.video_submit(KEY, "a dog surfing", duration=6, resolution="768P", prompt_optimizer=True)
    check(ok(r) and r.json["task_id"].isdigit() and set(r.json) == {"task_id", "base_resp"}, r)
    tid = r.json["task_id"]
    first = mm.video_query(KEY, tid)
    check(ok(first) and first.json["status"] == "Preparing" and first.json["file_id"] == "", first)
    check("video_width" not in first.json, first)
    last, seen = mm.wait_video(KEY, tid, interval=0.03)
    took = time.monotonic() - t0
    check(seen == ["Preparing", "Queueing", "Processing", "Success"], seen)
    check(0.85 <= took < harness.scaled(3.0), "3 x 300 ms: took %.2fs" % took)
    js = last.json
    check(ok(last) and js["file_id"].isdigit() and js["video_width"] == 1366 and js["video_height"] == 768, js)
    again = mm.video_query(KEY, tid)
    check(again.json["file_id"] == js["file_id"], "the file id stays")

    f = mm.file_retrieve(KEY, js["file_id"])
    check(ok(f) and f.json["file"]["file_id"] == int(js["file_id"]), f)
    fi = f.json["file"]
    check(fi["bytes"] == 200 * 1024 and fi["filename"].endswith(".mp4") and fi["purpose"] == "video_generation", fi)
    d = mm.download(fi["download_url"])
    check(d.status == 200 and d.headers["content-type"] == "video/mp4", d)
    check(int(d.headers["content-length"]) == len(d.body) == 200 * 1024, len(d.body))
    # a real video (the sample, padded to video_bytes with a free box): our
    # box reader and a real demuxer and decoder both open it
    try:
        info = mp4check.parse(d.body)
    except ValueError as e:
        raise AssertionError("the video is not a valid MP4: %s" % e)
    check(info["brand"] == "isom" and info["boxes"][:2] == ["ftyp", "moov"] and info["boxes"][-1] == "free"
          and info["tracks"][0]["codec"] == "avc1" and info["tracks"][0]["samples"] == 20, info)
    with open(t.path("video.mp4"), "wb") as f:
        f.write(d.body)
    probe = mp4check.ffprobe(t.path("video.mp4"))
    check(probe["codec_name"] == "h264" and probe["nb_read_frames"] == "20" and float(probe["duration"]) == 2.0,
          probe)
    check(mm.file_retrieve(KEY, "999").base_code == 2013 and mm.file_retrieve(KEY, "abc").base_code == 2013,
          "unknown file ids")

    info = mm.tasks(task_id=tid)[0]
    check(info["status"] == "Success" and info["queries"] >= 5 and info["retrieves"] == 1 and info["downloads"] == 1
          and info["statuses_seen"] == seen and info["submits"] == 1 and info["file_id"] == js["file_id"], info)
    check(info["key_fingerprint"] == minimaxclient.fingerprint(KEY) and info["prompt"] == "a dog surfing", info)

    # models and resolutions; per-state timing; a sized, throttled download
    mm.config(video_steps_ms={"Preparing": 50, "Queueing": 400, "Processing": 50}, video_bytes=50000,
              download_bps=100000)
    for model, kw, size in (("T2V-01", {}, (1280, 720)), ("T2V-01-Director", {"duration": 6}, (1280, 720)),
                            ("MiniMax-Hailuo-2.3", {"resolution": "1080P", "duration": 6}, (1920, 1080)),
                            ("MiniMax-Hailuo-02", {"duration": 10}, (1366, 768))):
        r = mm.video_submit(KEY, "model " + model, model=model, **kw)
        check(ok(r), (model, r))
        time.sleep(0.15)
        check(mm.video_query(KEY, r.json["task_id"]).json["status"] == "Queueing", "long Queueing state")
        last, _ = mm.wait_video(KEY, r.json["task_id"])
        check((last.json["video_width"], last.json["video_height"]) == size, (model, last))
    t1 = time.monotonic()
    d = mm.download(mm.file_retrieve(KEY, last.json["file_id"]).json["file"]["download_url"])
    check(len(d.body) == 50000 and d.body[4:12] == b"ftypisom" and time.monotonic() - t1 >= 0.4,
          "throttled download")

    # failures: a trigger, an earlier failing state, forced states
    mm.config(video_steps_ms=100, download_bps=0)
    r = mm.video_submit(KEY, "please VIDEOFAIL")
    last, seen = mm.wait_video(KEY, r.json["task_id"])
    check(seen[-1] == "Fail" and "Success" not in seen and last.base_code == 0 and last.json["file_id"] == "", seen)
    mm.config(video_fail_state="Queueing")
    r = mm.video_submit(KEY, "VIDEOFAIL early")
    last, seen = mm.wait_video(KEY, r.json["task_id"])
    check("Processing" not in seen and seen[-1] == "Fail", seen)
    mm.config(video_steps_ms=60000)
    r = mm.video_submit(KEY, "forced")
    tid = r.json["task_id"]
    check(mm.video_query(KEY, tid).json["status"] == "Preparing", "slow task")
    mm.force_task(tid, "Fail", 1027)
    q = mm.video_query(KEY, tid)
    check(q.json["status"] == "Fail" and q.base_code == 1027, q)
    mm.force_task(tid, "Success")
    q = mm.video_query(KEY, tid)
    check(q.json["status"] == "Success" and q.json["file_id"], q)
    mm.release_task(tid)
    check(mm.tasks(task_id=tid)[0]["forced"] is False, "released")
    st = mm.stats()
    check(st["tasks_by_status"].get("Success", 0) >= 5 and st["tasks_by_status"].get("Fail", 0) == 2, st)
    no_sim_bugs(mm)


@harness.timeout(30)
def test_video_validation(t):
    mm = start(t)
    good = {"model": "MiniMax-Hailuo-02", "prompt": "x"}
    bad = [
        {"prompt": "no model"},
        {"model": "Hailuo-3", "prompt": "x"},
        {"model": "MiniMax-Hailuo-02"},
        dict(good, duration=8),
        dict(good, duration="6"),
        dict(good, resolution="720P"),
        dict(good, resolution="1080P", duration=10),
        dict(good, model="MiniMax-Hailuo-2.3", resolution="1080P", duration=10),
        dict(good, model="T2V-01", resolution="768P"),
        dict(good, model="T2V-01", duration=10),
        dict(good, model="T2V-01-Director", first_frame_image="https://example.com/a.png"),
        dict(good, first_frame_image="not a url"),
        dict(good, prompt="p" * 2001),
        dict(good, prompt_optimizer=1),
        "a string",
    ]
    for body in bad:
        r = mm.request("POST", "/v1/video_generation", KEY, body)
        check(r.status == 200 and r.base_code == 2013 and r.json["task_id"] == "", (body, r))
    for body in (dict(good, prompt="p" * 2000), dict(good, resolution="1080P", duration=6),
                 {"model": "MiniMax-Hailuo-2.3", "first_frame_image": "data:image/png;base64,iVBORw0KGgo="},
                 dict(good, model="T2V-01", resolution="720P", duration=6)):
        r = mm.request("POST", "/v1/video_generation", KEY, body)
        check(ok(r), (body, r))
    check(mm.video_query(KEY, "").base_code == 2013, "task_id required")
    check(mm.video_query(KEY, "4242").base_code == 2013, "unknown task")
    check(mm.stats()["tasks_created"] == 4, mm.stats())
    no_sim_bugs(mm)


@harness.timeout(40)
def test_submit_counting_and_resume_after_restart(t):
    mm = start(t, video_steps_ms=200)
    other = "mm-test-other-key-0002"
    mm.keys(other, "ok")
    prompt = "고양이가 피아노를 치는 영상"
    r = mm.video_submit(KEY, prompt)
    tid = r.json["task_id"]
    check(mm.submit_count(prompt, KEY) == 1 and mm.submit_count(prompt) == 1, mm.submits())
    check(mm.submit_count(prompt, other) == 0 and mm.submit_count("another prompt") == 0, "per key and prompt")

    # only the key that made the task sees it (MiniMax: tasks of the current account)
    check(mm.video_query(other, tid).base_code == 2013, "another key cannot query")
    # the "bot" dies here; the task goes on by the wall clock without anybody polling
    time.sleep(0.7)
    info = mm.tasks(task_id=tid)[0]
    check(info["queries"] == 0 and info["status"] == "Success", info)
    q = mm.video_query(KEY, tid)   # the restarted bot resumes with the recorded task id
    check(q.json["status"] == "Success" and q.json["file_id"], q)
    check(mm.tasks(task_id=tid)[0]["statuses_seen"] == ["Success"], "the first poll already sees Success")
    check(mm.submit_count(prompt, KEY) == 1, "no second submit")

    # every submit that reached the simulator counts, even refused ones
    mm.keys("mm-limited", "1002")
    check(mm.video_submit("mm-limited", prompt).base_code == 1002, "rate limited")
    subs = mm.submits(prompt, "mm-limited")
    check(len(subs) == 1 and subs[0]["count"] == 1 and subs[0]["accepted"] == 0 and subs[0]["task_ids"] == [], subs)
    check(mm.submit_count(prompt) == 2, mm.submits(prompt))
    r2 = mm.video_submit(KEY, prompt)
    s = mm.submits(prompt, KEY)[0]
    check(s["count"] == 2 and s["accepted"] == 2 and s["task_ids"] == [tid, r2.json["task_id"]], s)
    check(mm.tasks(task_id=tid)[0]["submits"] == 2, "task view shows the submits of its prompt")
    bad = mm.video_submit(KEY, prompt, duration=7)
    check(bad.base_code == 2013 and mm.submits(prompt, KEY)[0]["count"] == 3
          and mm.submits(prompt, KEY)[0]["accepted"] == 2, mm.submits(prompt, KEY))

    # strictness off: any key sees any task
    mm.config(task_key_strict=False)
    check(ok(mm.video_query(other, tid)), "non-strict")
    # reset forgets tasks
    mm.reset(keep_keys=True, keep_config=True)
    check(mm.tasks() == [] and mm.video_query(KEY, tid).base_code == 2013 and mm.submit_count(prompt) == 0, "reset")
    no_sim_bugs(mm)


@harness.timeout(30)
def test_log_never_holds_keys(t):
    mm = start(t)
    keys = {"mm-secret-AAAA-1111": "ok", "mm-secret-BBBB-2222": "1008", "mm-secret-CCCC-3333": "2049"}
    for k, b in keys.items():
        mm.keys(k, b)
    for k in keys:
        mm.image(k, "hi", n=2)
        mm.video_submit(k, "video hi")
    mm.image("mm-secret-unknown-4444", "hi")
    entries = mm.log()
    dump = json.dumps(entries) + json.dumps(mm.stats()) + json.dumps(mm.get("/_sim/keys")) + \
        json.dumps(mm.get("/_sim/tasks"))
    for k in list(keys) + ["mm-secret-unknown-4444"]:
        check(k not in dump and k[3:] not in dump, "key %s leaked" % k[:12])
    fps = {e["key_fingerprint"] for e in entries}
    check(fps == {minimaxclient.fingerprint(k) for k in list(keys) + ["mm-secret-unknown-4444"]}, fps)
    first = entries[0]
    check(first["path"] == "/v1/image_generation" and first["method"] == "POST" and first["status"] == 200
          and first["base_code"] == 0 and first["model"] == "image-01" and first["n"] == 2
          and first["prompt"] == "hi" and first["images"] == 2 and first["body_bytes"] > 0, first)
    check(entries[3]["base_code"] == 1008 and entries[3]["status_msg"] == "insufficient balance", entries[3])
    check(entries[1]["path"] == "/v1/video_generation" and entries[1]["task_id"]
          and entries[1]["model"] == "MiniMax-Hailuo-02" and entries[1]["prompt"] == "video hi", entries[1])
    st = mm.stats()
    check(st["requests"] == 7 and st["by_key_fingerprint"][minimaxclient.fingerprint("mm-secret-BBBB-2222")] == 2, st)
    since = entries[-1]["seq"]
    mm.image("mm-secret-AAAA-1111", "later")
    check(len(mm.log(since=since)) == 1, "log?since")
    mm.config(log_max_entries=3)
    for _ in range(5):
        mm.image("mm-secret-AAAA-1111", "x")
    check(len(mm.log()) == 3, "the log is capped")
    mm.reset(keep_keys=True)
    check(mm.stats()["requests"] == 0 and mm.log() == [], "reset")
    check(ok(mm.image("mm-secret-AAAA-1111", "still known")), "keep_keys")
    mm.reset()
    check(mm.image("mm-secret-AAAA-1111", "forgotten").base_code == 1004, "reset forgets keys")

    # SIGTERM with a hung connection open: a clean exit 0
    mm.keys("hanger", "hang")
    th = threading.Thread(target=mm.image, args=("hanger", "x"), kwargs={"timeout": 5}, daemon=True)
    th.start()
    mm.wait_stats(lambda s: s["hung"] == 1, timeout=5)
    t0 = time.monotonic()
    check(mm.stop() == 0 and time.monotonic() - t0 < harness.scaled(3), "exit code on SIGTERM")
    th.join(5)
