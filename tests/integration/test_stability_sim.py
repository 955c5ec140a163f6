"""The Stability simulator (tests/sim/stability_sim.py) behaves like the
Stability v2beta stable-image API the bot depends on
(/work/shared/reference/providers.md). Each test starts its own simulator
and plays the bot with stabilityclient's blocking client."""

import base64
import json
import os
import sys
import threading
import time

import harness
from harness import check

import stabilityclient
from stabilityclient import image_info, multipart, png

sys.path.insert(0, os.path.join(harness.ROOT, "tests", "sim"))
import stability_sim  # noqa: E402  (its encoders make JPEG/WebP uploads)

KEY = "sk-stab-good-key-0001"


def start(t, **config):
    return stabilityclient.start(t, keys={KEY: "ok"}, config=config or None)


def no_sim_bugs(st):
    check(st.stats()["sim_errors"] == 0, "the simulator crashed in a handler")


def is_error(r, status, name):
    return (r.status == status and r.headers.get("content-type") == "application/json" and r.name == name
            and isinstance(r.errors, list) and r.errors and len(r.json["id"]) == 32)


@harness.timeout(40)
def test_generate_images_and_json(t):
    st = start(t)
    r = st.generate(KEY, "core", {"prompt": "a lighthouse at dusk"})
    check(r.status == 200 and r.headers["content-type"] == "image/png", r)
    check(r.headers["finish-reason"] == "SUCCESS" and r.headers["seed"].isdigit() and int(r.headers["seed"]) > 0,
          r.headers)
    check(r.body[:8] == b"\x89PNG\r\n\x1a\n" and r.body[12:16] == b"IHDR", r.body[:16])
    fmt, w, h, rgb1 = image_info(r.body)
    check((fmt, w, h) == ("png", 64, 64), (fmt, w, h))

    for ar, size in (("16:9", (114, 64)), ("9:21", (64, 149)), ("21:9", (149, 64)), ("4:5", (64, 80)),
                     ("5:4", (80, 64)), ("2:3", (64, 96)), ("3:2", (96, 64)), ("9:16", (64, 114))):
        r = st.generate(KEY, "core", {"prompt": "ratio", "aspect_ratio": ar})
        check(r.status == 200 and image_info(r.body)[1:3] == size, (ar, r))

    # a fixed seed comes back; each image has its own colour
    r2 = st.generate(KEY, "ultra", {"prompt": "same", "seed": "12345", "negative_prompt": "blur"})
    check(r2.status == 200 and r2.headers["seed"] == "12345", r2.headers)
    check(image_info(r2.body)[3] != rgb1, "colours differ")

    # JSON answers
    r = st.generate(KEY, "sd3", {"prompt": "json please", "model": "sd3.5-large-turbo", "seed": "7"},
                    accept="application/json")
    check(r.status == 200 and r.headers["content-type"] == "application/json", r)
    check(set(r.json) == {"image", "finish_reason", "seed"} and r.json["finish_reason"] == "SUCCESS"
          and r.json["seed"] == 7, r.json)
    check(image_info(base64.b64decode(r.json["image"]))[:3] == ("png", 64, 64), "base64 PNG")

    # JPEG and WebP are real too
    r = st.generate(KEY, "core", {"prompt": "jpeg", "output_format": "jpeg", "aspect_ratio": "16:9",
                                  "style_preset": "anime"})
    check(r.status == 200 and r.headers["content-type"] == "image/jpeg", r)
    check(image_info(r.body)[:3] == ("jpeg", 114, 64), image_info(r.body))
    r = st.generate(KEY, "ultra", {"prompt": "webp", "output_format": "webp"}, accept="image/*")
    check(r.status == 200 and r.headers["content-type"] == "image/webp", r)
    check(image_info(r.body)[:3] == ("webp", 64, 64), image_info(r.body))
    r = st.generate(KEY, "core", {"prompt": "any accept"}, accept=None)
    check(r.status == 200 and r.headers["content-type"] == "image/png", "no Accept: image bytes")

    s = st.stats()
    check(s["images"] == 14 and s["by_endpoint"] == {"core": 11, "ultra": 2, "sd3": 1}, s)
    check(s["credits"] == 11 * 3 + 2 * 8 + 4, s)   # core 3, ultra 8, sd3.5-large-turbo 4
    check(s["finish_reasons"] == {"SUCCESS": 14}, s)
    no_sim_bugs(st)


@harness.timeout(40)
def test_validation(t):
    st = start(t)
    img = png(128, 64, (1, 2, 3))
    f = {"image": ("in.png", img, "image/png")}
    cases = [
        ("core", {}, None, "prompt"),
        ("core", {"prompt": "   "}, None, "prompt"),
        ("core", {"prompt": "p" * 10001}, None, "prompt"),
        ("core", {"prompt": "x", "negative_prompt": "n" * 10001}, None, "negative_prompt"),
        ("core", {"prompt": "x", "aspect_ratio": "4:3"}, None, "aspect_ratio"),
        ("core", {"prompt": "x", "output_format": "gif"}, None, "output_format"),
        ("core", {"prompt": "x", "seed": "-1"}, None, "seed"),
        ("core", {"prompt": "x", "seed": "abc"}, None, "seed"),
        ("core", {"prompt": "x", "seed": "4294967295"}, None, "seed"),
        ("core", {"prompt": "x", "style_preset": "watercolour"}, None, "style_preset"),
        ("core", {"prompt": "x", "strength": "0.5"}, f, "image"),
        ("ultra", {"prompt": "x"}, f, "strength"),
        ("ultra", {"prompt": "x", "strength": "1.5"}, f, "strength"),
        ("ultra", {"prompt": "x", "strength": "much"}, f, "strength"),
        ("sd3", {"prompt": "x", "strength": "0.5"}, f, "image"),
        ("sd3", {"prompt": "x", "mode": "text-to-image", "strength": "0.5"}, f, "image"),
        ("sd3", {"prompt": "x", "mode": "image-to-image", "strength": "0.5"}, None, "image"),
        ("sd3", {"prompt": "x", "mode": "image-to-image"}, f, "strength"),
        ("sd3", {"prompt": "x", "mode": "inpaint"}, None, "mode"),
        ("sd3", {"prompt": "x", "model": "sd4"}, None, "model"),
        ("ultra", {"prompt": "x", "strength": "0.5"}, {"image": ("a.txt", b"just some text", "text/plain")}, "image"),
        ("ultra", {"prompt": "x", "strength": "0.5"}, {"image": ("a.gif", b"GIF89a\x01\x00\x01\x00", "image/gif")},
         "image"),
        ("ultra", {"prompt": "x", "strength": "0.5"}, {"image": ("s.png", png(32, 32), "image/png")}, "image"),
        ("ultra", {"prompt": "x", "strength": "0.5"}, {"image": ("t.png", png(64, 64)[:20], "image/png")}, "image"),
    ]
    for endpoint, fields, files, word in cases:
        r = st.generate(KEY, endpoint, fields, files)
        check(is_error(r, 400, "bad_request") and any(word in e for e in r.errors), (endpoint, fields, r))
    check(st.stats()["credits"] == 0, "failures are not charged")

    # what is fine
    r = st.generate(KEY, "core", {"prompt": "p" * 10000, "seed": "4294967294"})
    check(r.status == 200 and r.headers["seed"] == "4294967294", r)
    r = st.generate(KEY, "ultra", {"prompt": "img2img", "strength": "0.5"}, f)
    check(r.status == 200 and image_info(r.body)[1:3] == (128, 64), "output follows the input's shape")
    r = st.generate(KEY, "sd3", {"prompt": "img2img", "mode": "image-to-image", "strength": "0",
                                 "model": "sd3.5-medium"},
                    {"image": ("in.jpg", stability_sim.jpeg_bytes(100, 200, (9, 9, 9)), "image/jpeg")})
    check(r.status == 200 and image_info(r.body)[1:3] == (64, 128), r)
    r = st.generate(KEY, "ultra", {"prompt": "webp in", "strength": "1"},
                    {"image": ("in.webp", stability_sim.webp_bytes(64, 64, (1, 1, 1)), "image/webp")})
    check(r.status == 200, r)
    e = st.log()[-1]
    check(e["image"] == {"format": "webp", "width": 64, "height": 64, "bytes": 32}, e)

    # routes, methods, Accept
    r = st.request("POST", "/v2beta/stable-image/generate/sdxl", KEY, b"", {"Content-Type": "text/plain"})
    check(is_error(r, 404, "not_found"), r)
    r = st.request("GET", "/v2beta/stable-image/generate/core", KEY)
    check(is_error(r, 405, "method_not_allowed"), r)
    r = st.generate(KEY, "core", {"prompt": "x"}, accept="text/html")
    check(is_error(r, 400, "bad_request") and "accept" in r.errors[0], r)
    no_sim_bugs(st)


@harness.timeout(60)
def test_multipart_edge_cases(t):
    st = start(t)
    # a file holding CRLFs, blank lines and boundary-like lines, and every byte value
    tricky = b"\r\n\r\n--not-the-boundary\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n" + bytes(range(256)) * 4
    img = png(96, 64, (200, 100, 50), extra=tricky)
    check(b"\r\n--" in img and img.count(b"\r\n") >= 4, "the test file has CRLFs")
    body, ctype = multipart({"prompt": "tricky upload", "strength": "0.25"},
                            {"image": ("in.png", img, "image/png")}, boundary="XyZ-boundary-123")
    r = st.generate(KEY, "ultra", body=body, content_type=ctype)
    check(r.status == 200 and image_info(r.body)[1:3] == (96, 64), r)
    e = st.log()[-1]
    check(e["fields"]["image"] == {"size": len(img), "kind": "file", "filename": "in.png",
                                   "content_type": "image/png"}, e["fields"])
    check(e["fields"]["prompt"]["value"] == "tricky upload" and e["fields"]["strength"]["size"] == 4, e["fields"])
    check(e["image"]["bytes"] == len(img) and e["content_type"] == "multipart/form-data", e)

    # a quoted boundary, a preamble, UTF-8 text, a part without Content-Type
    b = "quoted boundary=yes"
    raw = ("preamble to ignore\r\n--%s\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n"
           "한국어 프롬프트 ✓\r\n--%s--\r\nepilogue" % (b, b)).encode()
    r = st.generate(KEY, "core", body=raw, content_type='multipart/form-data; boundary="%s"' % b)
    check(r.status == 200, r)
    check(st.log()[-1]["fields"]["prompt"]["value"] == "한국어 프롬프트 ✓", st.log()[-1])

    def bad_body(raw, ctype, word):
        r = st.generate(KEY, "core", body=raw, content_type=ctype)
        check(is_error(r, 400, "bad_request") and any(word in x for x in r.errors), (ctype, raw[:60], r))

    good, gctype = multipart({"prompt": "x"})
    bad_body(good, "multipart/form-data", "boundary")                        # the boundary is missing
    bad_body(good, "multipart/form-data; charset=utf-8", "boundary")
    bad_body(b'{"prompt": "x"}', "application/json", "multipart")             # not multipart
    bad_body(good, gctype.replace("boundary=", "boundary=other"), "boundary")  # the wrong boundary
    bad_body(good[:good.rfind(b"--")], gctype, "terminated")                  # no closing delimiter
    bad_body(good.rsplit(b"\r\n--", 1)[0], gctype, "terminated")
    bnd = gctype.split("=", 1)[1].encode()
    bad_body(b"--" + bnd + b"\r\nContent-Disposition: form-data\r\n\r\nx\r\n--" + bnd + b"--\r\n", gctype, "name")
    bad_body(b"--" + bnd + b"\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n\xff\xfe\r\n--" + bnd +
             b"--\r\n", gctype, "UTF-8")
    bad_body(b"--" + bnd + b"\r\nContent-Disposition: form-data; name=\"prompt\"", gctype, "headers")

    # bodies over the limit: 413, and the connection can still be used
    st.config(max_body_bytes=100000)
    r = st.generate(KEY, "ultra", {"prompt": "big", "strength": "0.5"},
                    {"image": ("big.png", png(64, 64, extra=b"z" * 150000), "image/png")})
    check(is_error(r, 413, "payload_too_large"), r)
    e = st.log()[-1]
    check(e["status"] == 413 and e["body_bytes"] > 150000 and "fields" not in e, e)
    st.config(max_body_bytes=10 * 1024 * 1024)
    r = st.generate(KEY, "ultra", {"prompt": "just over 10 MiB", "strength": "0.5"},
                    {"image": ("huge.png", png(64, 64, extra=b"\0" * (10 * 1024 * 1024)), "image/png")}, timeout=30)
    check(is_error(r, 413, "payload_too_large"), r)
    r = st.generate(KEY, "ultra", {"prompt": "just under 10 MiB", "strength": "0.5"},
                    {"image": ("big.png", png(64, 64, extra=b"\0" * (10 * 1024 * 1024 - 2000)), "image/png")},
                    timeout=30)
    check(r.status == 200, r)
    s = st.stats()
    check(s["by_status"].get("413") == 2 and s["bytes_in"] > 20 * 1024 * 1024, s)
    no_sim_bugs(st)


@harness.timeout(40)
def test_triggers_and_key_behaviours(t):
    st = start(t)
    r = st.generate(KEY, "core", {"prompt": "please MODERATEME now"})
    check(is_error(r, 403, "content_moderation"), r)
    r = st.generate(KEY, "core", {"prompt": "REJECTME"})
    check(is_error(r, 422, "invalid_language"), r)
    r = st.generate(KEY, "core", {"prompt": "a FILTERME picture"})
    check(r.status == 200 and r.headers["finish-reason"] == "CONTENT_FILTERED", r)
    check(image_info(r.body)[3] == (128, 128, 128), "a blank grey image")
    r = st.generate(KEY, "ultra", {"prompt": "FILTERME"}, accept="application/json")
    check(r.json["finish_reason"] == "CONTENT_FILTERED" and r.headers["finish-reason"] == "CONTENT_FILTERED", r)
    st.config(moderation_trigger="나쁜말", filter_trigger=None)
    check(is_error(st.generate(KEY, "core", {"prompt": "이건 나쁜말"}), 403, "content_moderation"), "configured")
    check(st.generate(KEY, "core", {"prompt": "FILTERME"}).headers["finish-reason"] == "SUCCESS", "trigger off")

    r = st.generate("sk-never-registered", "core", {"prompt": "x"})
    check(is_error(r, 401, "unauthorized"), r)
    r = st.generate(None, "core", {"prompt": "x"})
    check(is_error(r, 401, "unauthorized"), r)
    r = st.generate("sk-never-registered", "core", {})
    check(r.status == 401, "authentication comes before validation")
    for b, status, name in (("401", 401, "unauthorized"), ("403", 403, "content_moderation"),
                            ("429", 429, "rate_limit_exceeded"), ("500", 500, "internal_error")):
        st.keys("k" + b, b)
        r = st.generate("k" + b, "core", {"prompt": "hello"})
        check(is_error(r, status, name), (b, r))
    st.keys("kflaky", "500", remaining=1)
    check(st.generate("kflaky", "core", {"prompt": "x"}).status == 500, "first 500")
    check(st.generate("kflaky", "core", {"prompt": "x"}).status == 200, "remaining=1 recovers")
    st.keys("khang", "hang")
    t0 = time.monotonic()
    r = st.generate("khang", "core", {"prompt": "x"}, timeout=0.6)
    check(r.error == "timeout" and r.status is None and time.monotonic() - t0 >= 0.5, r)
    st.keys("kslow", "ok", delay_ms=300)
    t0 = time.monotonic()
    check(st.generate("kslow", "core", {"prompt": "x"}).status == 200 and time.monotonic() - t0 >= 0.3, "delay")
    s = st.wait_stats(lambda s: s["hung"] == 1)
    check(s["by_error_name"].get("content_moderation") == 3 and s["by_status"].get("hang") == 1, s)
    for path, body in (("/_sim/keys", {"key": "x", "behaviour": "weird"}), ("/_sim/config", {"nope": 1}),
                       ("/_sim/keys", {"key": "x", "colour": 1}), ("/_sim/config", {"max_body_bytes": -1})):
        try:
            st.post(path, body)
        except stabilityclient.SimError:
            continue
        raise AssertionError("control %s accepted %s" % (path, body))
    no_sim_bugs(st)


@harness.timeout(40)
def test_rate_limit(t):
    st = start(t, rate_limit_requests=5, rate_limit_window_s=3, rate_limit_timeout_s=1)
    other = "sk-stab-other-key-0002"
    st.keys(other, "ok")
    codes = [st.generate(KEY, "core", {"prompt": "n %d" % i}).status for i in range(5)]
    check(codes == [200] * 5, codes)
    r = st.generate(KEY, "core", {"prompt": "one too many"})
    check(is_error(r, 429, "rate_limit_exceeded") and "5 requests within a 3 second" in r.errors[0], r)
    check("retry-after" not in r.headers, r.headers)
    check(st.generate(KEY, "core", {}).status == 429, "timed out, even for invalid requests")
    check(st.generate(other, "core", {"prompt": "x"}).status == 200, "per key")
    time.sleep(1.1)
    check(st.generate(KEY, "core", {"prompt": "after the timeout"}).status == 200, "the timeout ends")

    # Retry-After when asked for; unblock through /_sim/keys
    st.config(retry_after_header=True, rate_limit_requests=1, rate_limit_timeout_s=30)
    st.generate(other, "core", {"prompt": "a"})
    st.generate(other, "core", {"prompt": "b"})
    r = st.generate(other, "core", {"prompt": "c"})
    check(r.status == 429 and r.headers.get("retry-after") in ("29", "30"), r.headers)
    check(st.get("/_sim/keys")["keys"][1]["rate_limited_for_s"] > 25, st.get("/_sim/keys"))
    st.keys(other, "ok", unblock=True)
    check(st.generate(other, "core", {"prompt": "d"}).status == 200, "unblocked")
    check(st.stats()["rate_limited"] >= 4, st.stats())
    no_sim_bugs(st)


@harness.timeout(30)
def test_log_never_holds_keys(t):
    st = start(t)
    keys = {"sk-secret-AAAA-1111": "ok", "sk-secret-BBBB-2222": "429", "sk-secret-CCCC-3333": "401"}
    for k, b in keys.items():
        st.keys(k, b)
    for k in keys:
        st.generate(k, "ultra", {"prompt": "hi", "strength": "0.4", "seed": "3"},
                    {"image": ("in.png", png(64, 64), "image/png")})
    st.generate("sk-secret-unknown-4444", "core", {"prompt": "hi"})
    entries = st.log()
    dump = json.dumps(entries) + json.dumps(st.stats()) + json.dumps(st.get("/_sim/keys"))
    for k in list(keys) + ["sk-secret-unknown-4444"]:
        check(k not in dump and k[3:] not in dump, "key %s leaked" % k[:12])
    check({e["key_fingerprint"] for e in entries} ==
          {stabilityclient.fingerprint(k) for k in list(keys) + ["sk-secret-unknown-4444"]}, entries)
    first = entries[0]
    check(first["status"] == 200 and first["endpoint"] == "ultra" and first["finish_reason"] == "SUCCESS"
          and first["seed"] == 3 and first["accept"] == "image/*" and first["credits"] == 8
          and first["fields"]["seed"]["value"] == "3" and first["fields"]["image"]["size"] == len(png(64, 64))
          and first["image"]["format"] == "png" and first["response_bytes"] > 0, first)
    check(entries[1]["status"] == 429 and entries[1]["behaviour"] == "429" and entries[2]["status"] == 401, entries)
    st.config(log_max_entries=2)
    for _ in range(4):
        st.generate("sk-secret-AAAA-1111", "core", {"prompt": "x"})
    check(len(st.log()) == 2, "the log is capped")
    st.reset(keep_keys=True)
    check(st.stats()["requests"] == 0 and st.log() == [], "reset")
    check(st.generate("sk-secret-AAAA-1111", "core", {"prompt": "known"}).status == 200, "keep_keys")
    st.reset()
    check(st.generate("sk-secret-AAAA-1111", "core", {"prompt": "gone"}).status == 401, "reset forgets keys")

    st.keys("hanger", "hang")
    th = threading.Thread(target=st.generate, args=("hanger", "core", {"prompt": "x"}), kwargs={"timeout": 5},
                          daemon=True)
    th.start()
    st.wait_stats(lambda s: s["hung"] == 1, timeout=5)
    t0 = time.monotonic()
    check(st.stop() == 0 and time.monotonic() - t0 < harness.scaled(3), "exit code on SIGTERM")
    th.join(5)
