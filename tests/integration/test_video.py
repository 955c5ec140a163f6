"""Videos, black-box: /비디오 through the real video-instance, the Discord and
MiniMax simulators, a real redis-server and PostgreSQL. The simulator's task
clock is wall time, so a restarted instance finds its task further along."""

import os

import harness
import minimaxclient
import mp4check
import simclient
from harness import check, wait_until

GUILD = "400000000000000001"
CH_VID = "500000000000000005"
USER = {"id": "600000000000000001", "username": "민수"}
OTHER = {"id": "600000000000000002", "username": "지민"}
SCALE = float(os.environ.get("BOT_TIMEOUT_SCALE") or 1.0)  # the runner's --timeout-scale, when given


def setup(t, keys=None, steps=(300, 300, 300), **env_extra):
    redis = t.redis()
    sim = simclient.start(t)
    sim.add_guild(GUILD, channels=[{"id": CH_VID, "name": "비디오생성-1", "type": 0}])
    mm = minimaxclient.start(t, keys=keys or {"mm-video-key": "ok"})
    mm.config(video_steps_ms={"Preparing": steps[0], "Queueing": steps[1], "Processing": steps[2]})
    db = t.postgres()
    env = {"REDIS_URL": redis.url, "HEALTH_PORT": t.free_port(), "GATEWAY_LEASE_MS": "2000",
           "MINIMAX_BASE_URL": mm.base_url, "MINIMAX_API_KEY_3": ",".join(keys or {"mm-video-key": "ok"}),
           "DATABASE_URL": db.create_database("bot"), "VIDEO_POLL_SEC": "1", "VIDEO_DIR": t.path("videos")}
    env.update(sim.bot_env())
    env.update({k: str(v) for k, v in env_extra.items()})
    inst = t.instance("video", env=env)
    inst.pg = db
    inst.wait_healthy(15)
    wait_until(lambda: inst.health()[1]["postgres"]["ok"], 30, "postgres up")
    sim.wait_session()
    return redis, sim, mm, inst


def video(sim, prompt, user=USER, locale="en-US", length=None, resolution=None):
    opts = [{"name": "설명", "type": 3, "value": prompt}]
    if length:
        opts.append({"name": "길이", "type": 3, "value": length})
    if resolution:
        opts.append({"name": "해상도", "type": 3, "value": resolution})
    return sim.interaction(name="비디오", guild_id=GUILD, channel_id=CH_VID, user=user, locale=locale, options=opts)


def content(o):
    return (o or {}).get("content") or ""


def jobs(inst):
    return inst.pg.psql("SELECT idempotency_key, state, provider_task_id, error FROM jobs ORDER BY id", db="bot")


def submits(mm):
    return [e for e in mm.log() if e.get("path", "").startswith("/v1/video_generation")]


@harness.timeout(120)
def test_video_progress_then_attached(t):
    redis, sim, mm, inst = setup(t, steps=(1200, 1200, 1500))
    ix = video(sim, "a cat surfing a wave", length="6", resolution="1080P")
    st = sim.wait_interaction(ix["id"], lambda i: i.get("original") and i["original"]["attachments"], timeout=60)
    o = st["original"]
    check(o["attachments"][0]["filename"] == "video.mp4" and o["attachments"][0]["size"] == 200 * 1024,
          o["attachments"])
    # what reaches Discord plays: the sandbox's video.mp4 used to be an ftyp
    # box and filler that no player opened
    st_, _h, data = simclient.http("GET", o["attachments"][0]["url"])
    check(st_ == 200 and len(data) == 200 * 1024, "the attachment downloads: %s, %d bytes" % (st_, len(data)))
    try:
        info = mp4check.parse(data)
    except ValueError as e:
        raise AssertionError("video.mp4 is not a valid MP4: %s" % e)
    check(info["tracks"][0]["handler"] == "vide" and info["tracks"][0]["samples"] > 0, info)
    with open(t.path("video.mp4"), "wb") as f:
        f.write(data)
    probe = mp4check.ffprobe(t.path("video.mp4"))
    check(probe["codec_name"] == "h264" and int(probe["nb_read_frames"]) == info["tracks"][0]["samples"], probe)
    texts = [e["content"] or "" for e in o["edits"]]
    check(any("Making your video" in x and "elapsed" in x for x in texts), "progress was shown: %r" % texts)
    check(any("[■■□□]" in x or "[■■■□]" in x for x in texts), "with a progress bar: %r" % texts)
    rows = wait_until(lambda: [r for r in jobs(inst) if r[1] == "done"], 10, "the row is done")
    check(rows[0][0] == ix["id"] and rows[0][2], rows)
    check(len(submits(mm)) == 1, "one submit")
    body = submits(mm)[0].get("body") or submits(mm)[0]
    check(body.get("duration") == 6 and body.get("resolution") == "1080P", "options honoured: %r" % body)
    token = inst.pg.psql("SELECT interaction_token FROM jobs", db="bot")
    check(token == [(None,)], "the token is cleared when done")
    check(sim.stats()["spec_violation_count"] == 0, "well-formed: %r" % sim.stats()["spec_violations"][:2])


@harness.timeout(180)
def test_kill9_while_processing_resumes_the_same_task(t):
    redis, sim, mm, inst = setup(t, steps=(500, 500, 9000))
    ix = video(sim, "a slow sunset timelapse")
    task = wait_until(lambda: [x for x in mm.tasks() if x["status"] == "Processing"], 20, "task processing")[0]
    wait_until(lambda: jobs(inst) and jobs(inst)[0][1] in ("submitted", "polling"), 10, "task id recorded")
    inst.kill()
    inst.start()
    inst.wait_healthy(15)
    st = sim.wait_interaction(ix["id"], lambda i: i.get("original") and i["original"]["attachments"], timeout=60)
    check(len(submits(mm)) == 1, "exactly one submit reached MiniMax: %r" % submits(mm))
    tasks = mm.tasks()
    check(len(tasks) == 1 and tasks[0]["task_id"] == task["task_id"], "the same task: %r" % tasks)
    check(inst.find_records(msg="video resumed"), "resumed from PostgreSQL")
    check(len(st["original"]["attachments"]) == 1 and not st["followups"], "one video, once")
    check(not [m for m in sim.channel_messages(CH_VID) if m["attachments"] and m["source"] != "interaction_original"],
          "and not again in the channel")
    rows = jobs(inst)
    check(len(rows) == 1 and rows[0][1] == "done", rows)


@harness.timeout(120)
def test_oversized_video_is_linked(t):
    redis, sim, mm, inst = setup(t)
    mm.config(video_bytes=3 * 1024 * 1024)
    sim.config(attachment_size_limit=1024 * 1024)
    ix = video(sim, "too big to attach")
    st = sim.wait_interaction(ix["id"], lambda i: "too big to attach, so here is a link" in content(i.get("original")),
                              timeout=60)
    check("http://" in content(st["original"]) and not st["original"]["attachments"], st["original"])
    check(not [e for e in mm.log() if e.get("path", "").startswith("/_files")], "not downloaded at all")


@harness.timeout(150)
def test_expired_token_moves_to_a_channel_message(t):
    redis, sim, mm, inst = setup(t, steps=(2500, 2500, 2500))
    sim.config(token_ttl_s=3)
    ix = video(sim, "after the token died")
    msgs = wait_until(lambda: [m for m in sim.channel_messages(CH_VID)
                               if m["attachments"] and m["source"] != "interaction_original"], 60,
                      "the video in the channel")
    m = msgs[0]
    check(("<@%s>" % USER["id"]) in content(m), "mentions the user: %r" % content(m))
    check(m["message"].get("allowed_mentions", {}).get("users", [USER["id"]]) == [USER["id"]]
          if "allowed_mentions" in m["message"] else True, "pings only the user")
    rows = wait_until(lambda: [r for r in jobs(inst) if r[1] == "done"], 10, "done")
    check(inst.find_records(msg="interaction token no longer usable; video continues in the channel"), "logged")


@harness.timeout(120)
def test_one_video_per_user_and_refusals(t):
    redis, sim, mm, inst = setup(t, steps=(3000, 3000, 3000))
    first = video(sim, "the first one")
    wait_until(lambda: submits(mm), 10, "first submitted")
    second = video(sim, "the second one")
    sim.wait_interaction(second["id"], lambda i: "already have a video in progress" in content(i.get("original")))
    other = video(sim, "someone else's", user=OTHER)
    wait_until(lambda: len(submits(mm)) == 2, 10, "another user is not blocked")
    bad = video(sim, "x", length="10", resolution="1080P", user={"id": "600000000000000003", "username": "c"})
    sim.wait_interaction(bad["id"], lambda i: "6-second videos only" in content(i.get("original")))
    refused = video(sim, "SENSITIVE scene", user={"id": "600000000000000004", "username": "d"})
    sim.wait_interaction(refused["id"], lambda i: "safety policy" in content(i.get("original")))
    rows = {r[0]: r for r in jobs(inst)}
    check(rows[refused["id"]][1] == "failed" and rows[refused["id"]][3] == "sensitive input", rows)
    check(second["id"] not in rows, "the refused second video left no row")
    del first, other


@harness.timeout(120)
def test_row_stuck_in_submitting_is_reconciled_not_resubmitted(t):
    redis, sim, mm, inst = setup(t)
    inst.stop()
    ix = video(sim, "never reached the bot")  # only to get a real interaction token and id
    inst.pg.psql("DELETE FROM jobs", db="bot")
    inst.pg.psql("INSERT INTO jobs (idempotency_key, kind, state, owner, user_id, guild_id, channel_id, "
                 "application_id, interaction_token, token_expires_at, provider, request) VALUES "
                 "('%s', 'video', 'submitting', 'video-3', '%s', '%s', '%s', '%s', '%s', now() + interval '10 minutes', "
                 "'minimax', '{\"prompt\": \"crashed\", \"model\": \"MiniMax-Hailuo-02\", \"duration\": 6, "
                 "\"resolution\": \"768P\", \"locale\": \"en\"}')"
                 % (ix["id"], USER["id"], GUILD, CH_VID, sim.get("/_sim/info")["application_id"], ix["token"]),
                 db="bot")
    redis.client().cmd("DEL", "discordbot:jobs:video")
    inst.start()
    inst.wait_healthy(15)
    rows = wait_until(lambda: [r for r in jobs(inst) if r[1] == "failed"], 40, "reconciled")
    check(rows[0][3] == "interrupted while submitting", rows)
    # the interaction was never acknowledged (nobody ran), so the user hears it in the channel
    wait_until(lambda: [m for m in sim.channel_messages(CH_VID) if "not sent again" in content(m)] or
               "not sent again" in content(sim.interaction_state(ix["id"]).get("original")), 20, "the user is told")
    check(not submits(mm), "never resubmitted")


@harness.timeout(120)
def test_video_key_rotation_on_rate_limit_and_balance(t):
    redis, sim, mm, inst = setup(t, keys={"mm-v-rate": "1002", "mm-v-broke": "1008", "mm-v-good": "ok"})
    ix = video(sim, "rotate the keys")
    sim.wait_interaction(ix["id"], lambda i: i.get("original") and i["original"]["attachments"], timeout=60)
    codes = sorted(str(e.get("base_code")) for e in submits(mm))
    check(codes == ["0", "1002", "1008"], "each key tried once: %r" % codes)
    for k in ("mm-v-rate", "mm-v-broke", "mm-v-good"):
        check(k not in inst.logs(), "a key value in the log")


# ---- delivery exactly once (PostgreSQL outage, kill -9) -------------------------------------------

def uploads(sim, ix):
    """Video files the bot uploaded for this interaction: every attachment id
    seen in the original's edits, its followups and the channel's messages
    (a new upload makes a new attachment id; a text edit keeps the old one)."""
    st = sim.interaction_state(ix["id"])
    ids = set()
    for m in [st.get("original")] + st.get("followups", []):
        for e in ((m or {}).get("edits") or []) + [m or {}]:
            ids.update(a["id"] for a in e.get("attachments") or [])
    for m in sim.channel_messages(CH_VID):
        ids.update(a["id"] for a in m.get("attachments") or [])
    return ids


def retrieves(mm):
    return [e for e in mm.log() if e.get("path", "").startswith("/v1/files/retrieve")]


def deliver_with_pg_down(t):
    """Start a video whose download is slowed (about 4 s) and stop PostgreSQL
    while it downloads, so the delivery happens and the row cannot say so.
    Returns once the user has the video."""
    redis, sim, mm, inst = setup(t)
    mm.config(video_bytes=256 * 1024, download_bps=64 * 1024)
    ix = video(sim, "delivered exactly once")
    wait_until(lambda: [e for e in mm.log() if e.get("path", "").startswith("/_files")], 30, "download started")
    inst.pg.stop()
    sim.wait_interaction(ix["id"], lambda i: i.get("original") and i["original"]["attachments"], timeout=60)
    inst.wait_record(timeout=10, msg="video delivered")
    return redis, sim, mm, inst, ix


def check_delivered_once(sim, mm, inst, ix):
    rows = wait_until(lambda: [r for r in jobs(inst) if r[1] == "done"], 60, "the row is done after the outage")
    check(rows[0][0] == ix["id"], rows)
    check(len(uploads(sim, ix)) == 1, "the video was uploaded once: %r" % uploads(sim, ix))
    check(len(retrieves(mm)) == 1, "the file was retrieved once: %r" % retrieves(mm))
    check(len(submits(mm)) == 1, "one submit")


@harness.timeout(180)
def test_pg_outage_at_delivery_delivers_once(t):
    redis, sim, mm, inst, ix = deliver_with_pg_down(t)
    inst.pg.start()
    check_delivered_once(sim, mm, inst, ix)
    check(inst.alive(), "still running")


@harness.timeout(180)
def test_kill9_after_delivery_with_pg_down_delivers_once(t):
    redis, sim, mm, inst, ix = deliver_with_pg_down(t)
    inst.kill()
    inst.pg.start()
    inst.start()
    inst.wait_healthy(15)
    wait_until(lambda: inst.health()[1]["postgres"]["ok"], 30, "postgres up")
    check_delivered_once(sim, mm, inst, ix)


# ---- the largest video: streamed from disk, the loop keeps its pace ---------------------------

def rss_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for pid %d" % (field, pid))


@harness.timeout(300)
def test_largest_video_upload_keeps_the_loop_responsive(t):
    """A VIDEO_MAX_MB (200 MiB) video is downloaded to VIDEO_DIR and
    attached: the file goes to Discord straight from disk, so /health's
    loop_lag_ms stays small all along and the instance does not grow by the
    file's size."""
    size = 200 * 1024 * 1024
    redis, sim, mm, inst = setup(t)
    sim.config(attachment_size_limit=size + 1024 * 1024, max_file_bytes=size + 1024 * 1024,
               max_request_bytes=size + 2 * 1024 * 1024, keep_file_bytes=size + 1024 * 1024)
    mm.config(video_bytes=size)
    # an idle instance first: the start's own work has left the lag window
    wait_until(lambda: inst.health()[1]["loop_lag_ms"] < 50, 20 * SCALE, "an idle loop")
    rss0 = rss_kb(inst.pid, "VmRSS")
    ix = video(sim, "the largest video there is")
    lags = []

    def attached():
        lags.append(inst.health()[1]["loop_lag_ms"])
        st = sim.interaction_state(ix["id"])
        return st.get("original") and st["original"]["attachments"] and st

    st = wait_until(attached, 240 * SCALE, "the video attached", interval=0.2)
    lags.append(inst.health()[1]["loop_lag_ms"])
    att = st["original"]["attachments"][0]
    check(att["filename"] == "video.mp4" and att["size"] == size, att)
    grown_mb = (rss_kb(inst.pid, "VmHWM") - rss0) // 1024
    t.log("loop_lag_ms max %.1f over %d samples; peak RSS +%d MiB" % (max(lags), len(lags), grown_mb))
    check(max(lags) < 250 * SCALE, "the loop stalled: loop_lag_ms %r" % sorted(lags)[-5:])
    if t.variant != "asan":
        check(grown_mb < 64, "the instance grew by %d MiB for a 200 MiB video" % grown_mb)
    wait_until(lambda: [r for r in jobs(inst) if r[1] == "done"], 30 * SCALE, "the row is done")
    check(len(uploads(sim, ix)) == 1, "uploaded once: %r" % uploads(sim, ix))
    check(not [n for n in os.listdir(t.path("videos"))], "the file was removed after delivery")
