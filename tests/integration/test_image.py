"""Images, black-box: /이미지 (MiniMax) and /img (Stability) through the real
image-instance, the Discord, MiniMax and Stability simulators, a real
redis-server and PostgreSQL."""

import base64
import struct
import zlib

import harness
import minimaxclient
import simclient
import stabilityclient
from harness import check, wait_until

GUILD = "400000000000000001"
CH_IMG = "500000000000000003"
CH_GALLERY = "500000000000000004"
USER = {"id": "600000000000000001", "username": "민수"}


def png(w, h, rgb=(200, 80, 40)):
    raw = b"".join(b"\x00" + bytes(rgb) * w for _ in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def setup(t, mm_keys=None, st_keys=None, pg=True, **env_extra):
    redis = t.redis()
    sim = simclient.start(t)
    sim.add_guild(GUILD, channels=[{"id": CH_IMG, "name": "이미지생성-1", "type": 0},
                                   {"id": CH_GALLERY, "name": "갤러리", "type": 0}])
    mm = minimaxclient.start(t, keys=mm_keys or {"mm-key-one": "ok"})
    st = stabilityclient.start(t, keys=st_keys or {"sk-stab-one": "ok"})
    env = {"REDIS_URL": redis.url, "HEALTH_PORT": t.free_port(), "GATEWAY_LEASE_MS": "2000",
           "MINIMAX_BASE_URL": mm.base_url, "MINIMAX_API_KEY_2": ",".join(mm_keys or {"mm-key-one": "ok"}),
           "STABILITY_BASE_URL": st.base_url, "STABILITY_API_KEY_2": ",".join(st_keys or {"sk-stab-one": "ok"}),
           "GALLERY_CHANNEL": CH_GALLERY}
    db = None
    if pg:
        db = t.postgres()
        env["DATABASE_URL"] = db.create_database("bot")
    env.update(sim.bot_env())
    env.update({k: str(v) for k, v in env_extra.items()})
    inst = t.instance("image", env=env)
    inst.pg = db
    inst.wait_healthy(15)
    if pg:
        wait_until(lambda: inst.health()[1]["postgres"]["ok"], 30, "postgres up")
    sim.wait_session()
    return redis, sim, mm, st, inst


def draw(sim, name, options, attachments=None, locale="en-US"):
    kw = {}
    if attachments:
        kw["attachments"] = attachments
    return sim.interaction(name=name, guild_id=GUILD, channel_id=CH_IMG, user=USER, locale=locale,
                           options=options, **kw)


def opt(name, value, type_=3):
    return {"name": name, "type": type_, "value": value}


def result(sim, ix, pred, timeout=30):
    return sim.wait_interaction(ix["id"], lambda i: i.get("original") and pred(i["original"]), timeout=timeout)


def content(o):
    return o.get("content") or ""


def calls(client, path):
    return [e for e in client.log() if e.get("path", "").startswith(path)]


@harness.timeout(120)
def test_minimax_images_ratio_count_gallery_and_usage(t):
    redis, sim, mm, st, inst = setup(t)
    ix = draw(sim, "이미지", [opt("설명", "a red fox in snow"), opt("비율", "16:9"), opt("개수", 3, 4)], locale="ko")
    st_ = result(sim, ix, lambda o: len(o["attachments"]) == 3)
    o = st_["original"]
    check([a["filename"] for a in o["attachments"]] == ["image-1.png", "image-2.png", "image-3.png"], o["attachments"])
    check(all(a["size"] > 50 for a in o["attachments"]), "real bytes attached")
    check(o["embeds"] and o["embeds"][0]["description"] == "a red fox in snow", o["embeds"])
    check(o["embeds"][0]["image"]["url"] == "attachment://image-1.png", o["embeds"][0])
    gen = calls(mm, "/v1/image_generation")
    check(len(gen) == 1, "one request: %r" % gen)
    body = gen[0].get("body") or gen[0]
    check(body.get("aspect_ratio") == "16:9" and body.get("n") == 3, "ratio and count honoured: %r" % gen[0])
    gallery = wait_until(lambda: [m for m in sim.channel_messages(CH_GALLERY) if m["attachments"]], 10,
                         "posted to the gallery")
    check(len(gallery[0]["attachments"]) == 3 and USER["id"] in gallery[0]["content"], gallery[0])
    rows = wait_until(lambda: inst.pg.psql("SELECT units, model FROM usage_daily WHERE kind = 'image'", db="bot"),
                      10, "usage recorded")
    check(rows == [("3", "image-01")], rows)
    check(sim.stats()["spec_violation_count"] == 0, "well-formed: %r" % sim.stats()["spec_violations"][:2])


@harness.timeout(120)
def test_stability_text_and_image_to_image(t):
    redis, sim, mm, st, inst = setup(t, STABILITY_IMG2IMG="sd3")
    ix = draw(sim, "img", [opt("설명", "a castle on a hill")])
    o = result(sim, ix, lambda o: len(o["attachments"]) == 1)["original"]
    check(o["attachments"][0]["filename"] == "image-1.png", o)
    req = calls(st, "/v2beta/stable-image/generate")
    check(req and req[-1]["path"].endswith("/core"), "text only uses core: %r" % req[-1:])
    # with an image and a strength
    src = base64.b64encode(png(64, 64)).decode()
    ix = draw(sim, "img", [opt("설명", "make it night"), opt("강도", 0.35, 10)],
              attachments=[{"name": "이미지", "filename": "in.png", "content_type": "image/png", "data_b64": src}])
    result(sim, ix, lambda o: len(o["attachments"]) == 1)
    req = calls(st, "/v2beta/stable-image/generate")[-1]
    check(req["path"].endswith("/sd3"), "image-to-image on sd3: %r" % req)
    fields = {k: v.get("value") for k, v in (req.get("fields") or {}).items()}
    check(fields.get("strength") in ("0.35", "0.350000") and fields.get("mode") == "image-to-image", req)
    # an image without a strength gets the default
    ix = draw(sim, "img", [opt("설명", "again")],
              attachments=[{"name": "이미지", "filename": "in.png", "content_type": "image/png", "data_b64": src}])
    result(sim, ix, lambda o: len(o["attachments"]) == 1)
    fields = calls(st, "/v2beta/stable-image/generate")[-1].get("fields") or {}
    check(str(fields["strength"]["value"]).startswith("0.6"), "IMG2IMG_STRENGTH default: %r" % fields)


@harness.timeout(120)
def test_bad_attachments_refused_before_any_provider_call(t):
    redis, sim, mm, st, inst = setup(t)
    ix = draw(sim, "img", [opt("설명", "x")],
              attachments=[{"name": "이미지", "filename": "notes.txt", "content_type": "text/plain",
                            "data_b64": base64.b64encode(b"hello").decode()}])
    result(sim, ix, lambda o: "PNG, JPEG or WEBP" in content(o))
    ix = draw(sim, "img", [opt("설명", "x")],
              attachments=[{"name": "이미지", "filename": "huge.png", "content_type": "image/png",
                            "size": 11 * 1024 * 1024}])
    result(sim, ix, lambda o: "too big" in content(o))
    # declared a PNG, but the bytes are not an image
    ix = draw(sim, "img", [opt("설명", "x")],
              attachments=[{"name": "이미지", "filename": "fake.png", "content_type": "image/png",
                            "data_b64": base64.b64encode(b"not really a png" * 10).decode()}])
    result(sim, ix, lambda o: "not a PNG" in content(o))
    check(not calls(st, "/v2beta"), "no Stability request was spent: %r" % calls(st, "/v2beta"))
    check(inst.alive(), "alive")


@harness.timeout(120)
def test_refusals_and_filtered_output_told_plainly(t):
    redis, sim, mm, st, inst = setup(t)
    ix = draw(sim, "이미지", [opt("설명", "SENSITIVE thing")])
    result(sim, ix, lambda o: "safety policy" in content(o))
    ix = draw(sim, "이미지", [opt("설명", "BADOUTPUT thing")])
    result(sim, ix, lambda o: "safety filter" in content(o))
    cfg = st.config()
    ix = draw(sim, "img", [opt("설명", "%s please" % cfg["moderation_trigger"])])
    result(sim, ix, lambda o: "safety policy" in content(o))
    ix = draw(sim, "img", [opt("설명", "%s please" % cfg["filter_trigger"])])
    result(sim, ix, lambda o: "safety filter" in content(o))


@harness.timeout(120)
def test_key_rotation_minimax_and_stability(t):
    redis, sim, mm, st, inst = setup(t, mm_keys={"mm-rate": "1002", "mm-broke": "1008", "mm-good": "ok"},
                                     st_keys={"sk-limited": "429", "sk-fine": "ok"})
    ix = draw(sim, "이미지", [opt("설명", "rotate")])
    result(sim, ix, lambda o: len(o["attachments"]) == 1)
    codes = sorted(str(e.get("base_code")) for e in calls(mm, "/v1/image_generation"))
    check(codes == ["0", "1002", "1008"], "each MiniMax key tried: %r" % codes)
    ix = draw(sim, "img", [opt("설명", "rotate too")])
    result(sim, ix, lambda o: len(o["attachments"]) == 1)
    statuses = sorted(e.get("status") for e in calls(st, "/v2beta"))
    check(statuses == [200, 429], "the rate-limited Stability key made way: %r" % statuses)
    pools = {p["provider"]: p for p in inst.health()[1]["keys"]}
    check({k["state"] for k in pools["minimax"]["keys"]} == {"ok", "cooling", "out"}, pools["minimax"])
    for k in ("mm-rate", "mm-broke", "mm-good", "sk-limited", "sk-fine"):
        check(k not in inst.logs(), "a key value in the log")


@harness.timeout(90)
def test_daily_image_quota_counts_images(t):
    redis, sim, mm, st, inst = setup(t, USER_DAILY_IMAGES="3")
    ix = draw(sim, "이미지", [opt("설명", "two"), opt("개수", 2, 4)])
    result(sim, ix, lambda o: len(o["attachments"]) == 2)
    ix = draw(sim, "이미지", [opt("설명", "two more"), opt("개수", 2, 4)])
    result(sim, ix, lambda o: "today's images" in content(o))
    ix = draw(sim, "이미지", [opt("설명", "one more")])
    result(sim, ix, lambda o: len(o["attachments"]) == 1)
    # a failed request gives its units back
    r = redis.client()
    for k in r.cmd("KEYS", "discordbot:ulimit:*"):
        r.cmd("DEL", k)
    mm.keys("mm-key-one", "1013")
    ix = draw(sim, "이미지", [opt("설명", "fails"), opt("개수", 3, 4)])
    result(sim, ix, lambda o: "having trouble" in content(o))
    mm.keys("mm-key-one", "ok")
    ix = draw(sim, "이미지", [opt("설명", "three now"), opt("개수", 3, 4)])
    result(sim, ix, lambda o: len(o["attachments"]) == 3, timeout=40)
