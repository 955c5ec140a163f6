#!/usr/bin/python3
"""A MiniMax native-API server (images and the three-step video flow) for
black-box tests, on one TCP port of 127.0.0.1, in one asyncio process.

    /usr/bin/python3 tests/sim/minimax_sim.py --port 0 [--key KEY ...] [--verbose]

prints one line `SIM READY port=NNNN` on stdout once it listens, logs to
stderr and exits 0 on SIGTERM/SIGINT.

  POST /v1/image_generation          images (URLs served here, or base64 PNG)
  POST /v1/video_generation          submit a video task -> task_id
  GET  /v1/query/video_generation    task status (wall-clock driven)
  GET  /v1/files/retrieve            file info with a download_url
  GET  /_files/<name>                the generated PNGs and MP4-ish videos
  /_sim/...                          the control API (README-minimax.md)

Errors are HTTP 200 with a non-zero base_resp.status_code, as MiniMax does.
Python 3 standard library only. The facts it follows are in the MiniMax
section of /work/shared/reference/providers.md.
"""

import asyncio
import base64
import collections
import hashlib
import json
import os
import secrets
import struct
import sys
import time
import zlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (as tests/run.py)
import simhttp  # noqa: E402
from simhttp import MIB, BadControl, debug, fingerprint, jdump, response_head, send  # noqa: E402

simhttp.NAME = "minimax-sim"

# base_resp codes (providers.md) and the messages MiniMax sends with them
CODES = {
    1000: "unknown error",
    1001: "request timeout",
    1002: "rate limit exceeded(RPM)",
    1004: "login fail: Please carry the API secret key in the 'Authorization' field of the request header",
    1008: "insufficient balance",
    1013: "internal service error",
    1024: "internal error",
    1026: "input new_sensitive",
    1027: "output new_sensitive",
    1033: "system error",
    1039: "token limit",
    1041: "conn limit",
    2013: "invalid params",
    2045: "rate growth limit",
    2049: "invalid api key",
}
# behaviours a key can have: ok, a real HTTP 500, hang, a video task that ends
# in Fail, or any base_resp code above (as a string)
BEHAVIOURS = ("ok", "500", "hang", "video_fail") + tuple(str(c) for c in sorted(CODES))
CONTENT_BEHAVIOURS = ("1026", "1027", "video_fail")   # only touch image/video submits

class KeyState(simhttp.KeyState):
    OPTIONS = {
        "remaining": None,        # misbehave this many times, then act as "ok" (None: always)
        "video_steps_ms": None,   # per-key task timing override (like the config key)
        "delay_ms": None,         # per-key latency override
    }


STATES = ("Preparing", "Queueing", "Processing")

DEFAULT_CONFIG = {
    "video_steps_ms": {"Preparing": 300, "Queueing": 300, "Processing": 300},
    "video_fail_state": "Processing",       # a failing task turns Fail when this state ends
    "video_bytes": 200 * 1024,              # size of every generated video file
    "image_short_side": 64,                 # px; the long side follows the aspect ratio
    "image_pad_bytes": 0,                   # > 0: a filler chunk makes each PNG this much bigger
    "sensitive_input_trigger": "SENSITIVE",     # prompt word -> 1026 (image and video submit)
    "sensitive_output_trigger": "BADOUTPUT",    # prompt word -> image 1027 / video task Fail + 1027
    "video_fail_trigger": "VIDEOFAIL",          # prompt word -> video task ends in Fail
    "partial_trigger": "PARTIALFAIL",           # prompt word -> only ceil(n/2) images, rest failed
    "delay_ms": 0,                          # latency before every /v1 answer
    "download_bps": 0,                      # > 0: /_files downloads limited to this many bytes/s
    "url_ttl_s": 86400,                     # file URLs expire after this (then 403)
    "task_key_strict": True,                # a task/file is only visible to the key that made it
    "metadata_counts_as_strings": True,     # metadata success_count/failed_count as "1" (MiniMax) or 1
    "log_max_entries": 100000,
    "log_prompt_chars": 200,                # prompt prefix kept in log entries and the task list
    "max_tasks": 100000,                    # oldest tasks/files forgotten past these
    "max_files": 200000,
}

VIDEO_MODELS = ("MiniMax-Hailuo-2.3", "MiniMax-Hailuo-02", "T2V-01", "T2V-01-Director")
HAILUO = ("MiniMax-Hailuo-2.3", "MiniMax-Hailuo-02")
IMAGE_MODELS = ("image-01", "image-01-live")
ASPECTS = {"1:1": (1, 1), "16:9": (16, 9), "4:3": (4, 3), "3:2": (3, 2), "2:3": (2, 3), "3:4": (3, 4),
           "9:16": (9, 16), "21:9": (21, 9)}
RES_SIZE = {"720P": (1280, 720), "768P": (1366, 768), "1080P": (1920, 1080)}

def phash(prompt):
    """Submits are counted per (key, prompt); the prompt is kept as a hash (bodies can be big)."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


# ----------------------------------------------------------------------------
# Generated media


def png_bytes(w, h, rgb, pad=0):
    """A valid 8-bit RGB PNG of one colour; pad > 0 adds a private ancillary
    chunk ("siMp") of that many bytes (decoders skip it)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xffffffff)
    row = b"\x00" + bytes(rgb) * w
    raw = row * h
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    if pad > 0:
        out += chunk(b"siMp", (b"minimax-sim filler " * (pad // 19 + 1))[:pad])
    return out + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def colour_of(n):
    """A distinct colour per counter value (period 256)."""
    return ((n * 67 + 40) % 256, (n * 131 + 90) % 256, (n * 199 + 160) % 256)


def image_size(aspect, short):
    a, b = ASPECTS[aspect]
    if a >= b:
        return int(round(short * a / b)), short
    return short, int(round(short * b / a))


# A real, playable video (2 s, 160x90, H.264; tests/sim/make-sample-video.sh
# made it): every video handed out is this file padded to video_bytes.
SAMPLE_VIDEO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample-video.mp4")
with open(SAMPLE_VIDEO, "rb") as _f:
    SAMPLE_MP4 = _f.read()


def mp4_head(total):
    """An ISO BMFF start: an ftyp box (isom) and an mdat box spanning the rest
    (a file too small to hold the sample video: not playable)."""
    ftyp = struct.pack(">I", 32) + b"ftypisom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41"
    return ftyp + struct.pack(">I", max(8, total - 32)) + b"mdat"


def free_box_head(size):
    """The header of a `free` box of `size` bytes in all (64-bit size past 4 GiB)."""
    if size <= 0xFFFFFFFF:
        return struct.pack(">I", size) + b"free"
    return struct.pack(">I", 1) + b"free" + struct.pack(">Q", size)


def video_chunks(total, seed, size=65536):
    """The bytes of a video of `total` bytes, in pieces (generated, never
    stored): the sample video, then a `free` box (players skip it) of filler
    up to `total`."""
    pattern = (hashlib.sha256(seed.encode()).digest() * 2048)[:size]  # 64 KiB of filler
    pad = total - len(SAMPLE_MP4)
    head = SAMPLE_MP4 + free_box_head(pad) if pad >= 8 else mp4_head(total)[:total]
    yield head
    left = total - len(head)
    while left > 0:
        n = min(left, size)
        yield pattern[:n]
        left -= n


# ----------------------------------------------------------------------------
# State


def steps_of(v):
    """video_steps_ms (a number for every state, or {state: ms}) -> [ms, ms, ms]."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return [float(v)] * 3
    return [float(v.get(s, 0)) for s in STATES]


class Task:
    def __init__(self, sim, key_fp, body, outcome, fail_code, steps, fail_state):
        self.task_id = str(secrets.randbelow(9 * 10 ** 17) + 10 ** 17)
        self.key_fp = key_fp
        self.model = body["model"]
        self.prompt = body.get("prompt") or ""
        self.duration = body.get("duration") or 6
        self.resolution = body.get("resolution") or ("768P" if self.model in HAILUO else "720P")
        self.first_frame = bool(body.get("first_frame_image"))
        self.created = time.time()
        self.steps = steps
        self.outcome = outcome          # "Success" or "Fail" at the end
        self.fail_code = fail_code      # base_resp code on a Fail (0: a success envelope)
        self.fail_state = fail_state
        self.forced = None              # (status, code) set through POST /_sim/tasks
        self.queries = 0
        self.statuses_seen = []
        self.file_id = None
        self.width, self.height = RES_SIZE[self.resolution]

    def status(self, now=None):
        """(status, base_resp code) by the wall clock."""
        if self.forced:
            return self.forced
        el = ((time.time() if now is None else now) - self.created) * 1000.0
        t = 0.0
        for i, s in enumerate(STATES):
            t += self.steps[i]
            if self.outcome == "Fail" and s == self.fail_state and el >= t:
                return "Fail", self.fail_code
            if el < t:
                return s, 0
        return self.outcome, (self.fail_code if self.outcome == "Fail" else 0)

    def info(self, sim):
        st, code = self.status()
        f = sim.files.get(sim.file_names.get(self.file_id or "", ""), {})
        return {"task_id": self.task_id, "key_fingerprint": self.key_fp, "model": self.model,
                "prompt": self.prompt[:int(sim.cfg["log_prompt_chars"])], "prompt_chars": len(self.prompt),
                "duration": self.duration, "resolution": self.resolution, "first_frame_image": self.first_frame,
                "created_at": round(self.created, 3), "age_s": round(time.time() - self.created, 3),
                "steps_ms": self.steps, "status": st, "status_code": code, "outcome": self.outcome,
                "forced": bool(self.forced), "queries": self.queries, "statuses_seen": self.statuses_seen,
                "file_id": self.file_id, "retrieves": f.get("retrieves", 0), "downloads": f.get("downloads", 0),
                "submits": sim.submits.get((self.key_fp, phash(self.prompt)), {}).get("count", 0)}


# ----------------------------------------------------------------------------
# The MiniMax side


class BaseErr(Exception):
    """An answer with HTTP 200 and a non-zero base_resp."""

    def __init__(self, code, detail=None):
        msg = CODES.get(code, "error")
        if detail:
            msg = "%s, %s" % (msg, detail)
        super().__init__(msg)
        self.code, self.msg = code, msg


def invalid(detail):
    return BaseErr(2013, detail)


def validate_image(body):
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    model = body.get("model")
    if model is None or model == "":
        raise invalid("model is required")
    if model not in IMAGE_MODELS:
        raise invalid("model %s is not supported, use image-01" % jdump(model))
    p = body.get("prompt")
    if not isinstance(p, str) or not p.strip():
        raise invalid("prompt is required")
    if len(p) > 1500:
        raise invalid("prompt length %d exceeds the limit of 1500 characters" % len(p))
    ar = body.get("aspect_ratio", "1:1")
    if ar is None:
        ar = "1:1"
    if ar not in ASPECTS:
        raise invalid("aspect_ratio %s is not one of %s" % (jdump(ar), ", ".join(ASPECTS)))
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not is_int(n) or not 1 <= n <= 9:
        raise invalid("n must be an integer in [1, 9]")
    rf = body.get("response_format", "url")
    if rf is None:
        rf = "url"
    if rf not in ("url", "base64"):
        raise invalid("response_format must be url or base64")
    if "seed" in body and body["seed"] is not None and not is_int(body["seed"]):
        raise invalid("seed must be an integer")
    if "prompt_optimizer" in body and body["prompt_optimizer"] is not None \
            and not isinstance(body["prompt_optimizer"], bool):
        raise invalid("prompt_optimizer must be a boolean")
    return model, p, ar, n, rf


def validate_video(body):
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    model = body.get("model")
    if model is None or model == "":
        raise invalid("model is required")
    if model not in VIDEO_MODELS:
        raise invalid("model %s is not supported (one of %s)" % (jdump(model), ", ".join(VIDEO_MODELS)))
    ffi = body.get("first_frame_image")
    if ffi is not None:
        if model not in HAILUO:
            raise invalid("%s does not take first_frame_image" % model)
        if not isinstance(ffi, str) or not (ffi.startswith(("http://", "https://"))
                                            or (ffi.startswith("data:image/") and ";base64," in ffi)):
            raise invalid("first_frame_image must be a URL or a data:image/...;base64, URL")
    p = body.get("prompt")
    if p is not None and not isinstance(p, str):
        raise invalid("prompt must be a string")
    if not (p or "").strip() and not ffi:
        raise invalid("prompt is required")
    if p and len(p) > 2000:
        raise invalid("prompt length %d exceeds the limit of 2000 characters" % len(p))
    dur = body.get("duration")
    if dur is not None and not is_int(dur):
        raise invalid("duration must be an integer")
    res = body.get("resolution")
    if res is not None and not isinstance(res, str):
        raise invalid("resolution must be a string")
    if model in HAILUO:
        if dur not in (None, 6, 10):
            raise invalid("duration must be 6 or 10 for %s" % model)
        if res not in (None, "768P", "1080P"):
            raise invalid("resolution must be 768P or 1080P for %s" % model)
        if res == "1080P" and dur == 10:
            raise invalid("1080P is only available with duration 6 for %s" % model)
    else:
        if dur not in (None, 6):
            raise invalid("duration must be 6 for %s" % model)
        if res not in (None, "720P"):
            raise invalid("resolution must be 720P for %s" % model)
    if "prompt_optimizer" in body and body["prompt_optimizer"] is not None \
            and not isinstance(body["prompt_optimizer"], bool):
        raise invalid("prompt_optimizer must be a boolean")
    return model, p or ""


class Api:
    ROUTES = {("POST", "/v1/image_generation"): "image", ("POST", "/v1/video_generation"): "video_submit",
              ("GET", "/v1/query/video_generation"): "video_query", ("GET", "/v1/files/retrieve"): "retrieve"}

    def __init__(self, sim):
        self.sim = sim

    def base_url(self):
        return "http://127.0.0.1:%d" % self.sim.port

    async def handle(self, req, reader, writer):
        """Answer one /v1 request; returns False when the connection must end."""
        sim = self.sim
        h = req.header("authorization")
        key = h[7:].strip() if h.lower().startswith("bearer ") else ""
        fp = fingerprint(key) if key else None
        ks = sim.keys.get(key) if key else None
        ent = sim.new_entry(req, fp)
        trace = secrets.token_hex(16)
        ent["trace_id"] = trace
        route = self.ROUTES.get((req.method, req.path.rstrip("/")))
        if route is None:
            body = b"404 page not found\n"
            sim.finish(ent, 404)
            return await send(writer, 404, [("Content-Type", "text/plain; charset=utf-8"), ("Trace-Id", trace)], body)
        ent["endpoint"] = route
        if req.method == "POST":
            ent["body_bytes"] = len(req.body)
            try:
                quiet = json.loads(req.body.decode("utf-8")) if req.body else None
            except (ValueError, UnicodeDecodeError):
                quiet = None
            self.summary(ent, quiet)
            if route == "video_submit":  # every submit that reaches us counts, whatever its answer
                p = quiet.get("prompt") if isinstance(quiet, dict) else None
                sim.count_submit(fp, p if isinstance(p, str) else "")
        behaviour = "1004" if ks is None else ks.active()
        ent["behaviour"] = behaviour
        delay = sim.cfg["delay_ms"] if ks is None or ks.opts.get("delay_ms") is None else ks.opts["delay_ms"]
        if delay:
            await asyncio.sleep(float(delay) / 1000)
        if behaviour == "hang":
            ks.served += 1
            sim.finish(ent, "hang")
            sim.hung += 1
            return await simhttp.hang(reader)
        if behaviour == "500":
            ks.served += 1
            body = b"<html><head><title>500 Internal Server Error</title></head><body><center>" \
                   b"<h1>500 Internal Server Error</h1></center></body></html>"
            sim.finish(ent, 500)
            return await send(writer, 500, [("Content-Type", "text/html"), ("Trace-Id", trace)], body)
        try:
            if behaviour not in ("ok",) + CONTENT_BEHAVIOURS:
                if ks is not None:
                    ks.served += 1
                raise BaseErr(int(behaviour), "missing or unknown API key" if ks is None else None)
            obj = await getattr(self, route)(req, ent, ks, fp, behaviour)
        except BaseErr as e:
            obj = self.error_obj(route, e)
        code = obj["base_resp"]["status_code"]
        if code:
            ent["status_msg"] = obj["base_resp"]["status_msg"]
        data = jdump(obj).encode()
        sim.finish(ent, 200, code)
        debug("%s %s key=%s behaviour=%s -> base_resp %s", req.method, req.path, fp, behaviour, code)
        return await send(writer, 200, [("Content-Type", "application/json; charset=utf-8"), ("Trace-Id", trace)], data)

    @staticmethod
    def error_obj(route, e):
        br = {"status_code": e.code, "status_msg": e.msg}
        if route == "image":
            return {"id": secrets.token_hex(16), "data": None, "metadata": None, "base_resp": br}
        if route == "video_submit":
            return {"task_id": "", "base_resp": br}
        return {"base_resp": br}

    def parse_json(self, req):
        try:
            return json.loads(req.body.decode("utf-8")) if req.body else None
        except (ValueError, UnicodeDecodeError):
            raise invalid("the body is not valid JSON")

    def summary(self, ent, body):
        if not isinstance(body, dict):
            return
        keep = int(self.sim.cfg["log_prompt_chars"])
        p = body.get("prompt")
        if isinstance(p, str):
            ent["prompt"] = p[:keep]
            ent["prompt_chars"] = len(p)
        for k in ("model", "aspect_ratio", "n", "response_format", "duration", "resolution", "seed",
                  "prompt_optimizer"):
            if k in body:
                ent[k] = body[k]
        if "first_frame_image" in body:
            v = body["first_frame_image"]
            ent["first_frame_image_chars"] = len(v) if isinstance(v, str) else None
        unknown = sorted(k for k in body if k not in ("model", "prompt", "aspect_ratio", "n", "response_format",
                                                      "duration", "resolution", "seed", "prompt_optimizer",
                                                      "first_frame_image", "callback_url", "subject_reference",
                                                      "width", "height"))
        if unknown:
            ent["unknown_fields"] = unknown

    # -- images

    async def image(self, req, ent, ks, fp, behaviour):
        sim = self.sim
        body = self.parse_json(req)
        model, prompt, ar, n, rf = validate_image(body)
        if behaviour == "1026" or sim.trigger("sensitive_input_trigger", prompt):
            if behaviour == "1026":
                ks.served += 1
            raise BaseErr(1026)
        if behaviour == "1027" or sim.trigger("sensitive_output_trigger", prompt):
            if behaviour == "1027":
                ks.served += 1
            sim.images_failed += n
            raise BaseErr(1027)
        good = n
        if sim.trigger("partial_trigger", prompt):
            good = (n + 1) // 2
        w, h = image_size(ar, int(sim.cfg["image_short_side"]))
        urls, b64, names = [], [], []
        for _ in range(good):
            sim.colour_counter += 1
            rgb = colour_of(sim.colour_counter)
            name = "img%s.png" % secrets.token_hex(12)
            rec = {"kind": "image", "w": w, "h": h, "rgb": rgb, "pad": int(sim.cfg["image_pad_bytes"]),
                   "created": time.time(), "key_fingerprint": fp, "downloads": 0}
            if rf == "base64":
                b64.append(base64.b64encode(png_bytes(w, h, rgb, rec["pad"])).decode())
            else:
                sim.add_file(name, rec)
                urls.append("%s/_files/%s?Expires=%d&sig=%s" % (self.base_url(), name,
                                                               int(time.time() + sim.cfg["url_ttl_s"]),
                                                               secrets.token_hex(8)))
            names.append(name)
        sim.images_generated += good
        sim.images_failed += n - good
        ent.update({"images": good, "image_size": [w, h], "files": names if rf == "url" else []})
        cnt = (lambda v: str(v)) if sim.cfg["metadata_counts_as_strings"] else (lambda v: v)
        return {"id": secrets.token_hex(16),
                "data": {"image_urls": urls} if rf == "url" else {"image_base64": b64},
                "metadata": {"failed_count": cnt(n - good), "success_count": cnt(good)},
                "base_resp": {"status_code": 0, "status_msg": "success"}}

    # -- video

    async def video_submit(self, req, ent, ks, fp, behaviour):
        sim = self.sim
        body = self.parse_json(req)
        model, prompt = validate_video(body)
        sub = sim.submits.get((fp, phash(prompt))) or sim.count_submit(fp, prompt)
        if behaviour == "1026" or sim.trigger("sensitive_input_trigger", prompt):
            if behaviour == "1026":
                ks.served += 1
            raise BaseErr(1026)
        outcome, code = "Success", 0
        if behaviour == "1027" or sim.trigger("sensitive_output_trigger", prompt):
            if behaviour == "1027":
                ks.served += 1
            outcome, code = "Fail", 1027
        elif behaviour == "video_fail" or sim.trigger("video_fail_trigger", prompt):
            if behaviour == "video_fail":
                ks.served += 1
            outcome = "Fail"
        steps = steps_of(ks.opts["video_steps_ms"] if ks.opts.get("video_steps_ms") is not None
                         else sim.cfg["video_steps_ms"])
        task = Task(sim, fp, body, outcome, code, steps, sim.cfg["video_fail_state"])
        sim.add_task(task)
        sub["accepted"] += 1
        sub["task_ids"] = (sub["task_ids"] + [task.task_id])[-20:]
        ent["task_id"] = task.task_id
        return {"task_id": task.task_id, "base_resp": {"status_code": 0, "status_msg": "success"}}

    def own_task(self, tid, fp):
        t = self.sim.tasks.get(tid)
        if t is None or (self.sim.cfg["task_key_strict"] and t.key_fp != fp):
            return None
        return t

    async def video_query(self, req, ent, ks, fp, behaviour):
        sim = self.sim
        tid = req.query.get("task_id", "")
        ent["task_id"] = tid
        if not tid:
            raise invalid("task_id is required")
        t = self.own_task(tid, fp)
        if t is None:
            raise invalid("task %s not found" % tid)
        t.queries += 1
        st, code = t.status()
        if not t.statuses_seen or t.statuses_seen[-1] != st:
            t.statuses_seen.append(st)
        ent["task_status"] = st
        out = {"task_id": t.task_id, "status": st, "file_id": ""}
        if st == "Success":
            if t.file_id is None:
                t.file_id = str(secrets.randbelow(9 * 10 ** 14) + 10 ** 14)
                name = "vid%s.mp4" % secrets.token_hex(12)
                sim.add_file(name, {"kind": "video", "file_id": t.file_id, "task_id": t.task_id,
                                    "bytes": int(sim.cfg["video_bytes"]), "created": time.time(),
                                    "key_fingerprint": t.key_fp, "downloads": 0, "retrieves": 0})
                sim.file_names[t.file_id] = name
            out.update({"file_id": t.file_id, "video_width": t.width, "video_height": t.height})
        out["base_resp"] = {"status_code": code, "status_msg": CODES.get(code, "success") if code else "success"}
        return out

    async def retrieve(self, req, ent, ks, fp, behaviour):
        sim = self.sim
        fid = req.query.get("file_id", "")
        ent["file_id"] = fid
        if not fid:
            raise invalid("file_id is required")
        if not fid.isdigit():
            raise invalid("file_id must be an integer")
        name = sim.file_names.get(fid)
        rec = sim.files.get(name) if name else None
        if rec is None or (sim.cfg["task_key_strict"] and rec["key_fingerprint"] != fp):
            raise invalid("file %s not found" % fid)
        rec["retrieves"] += 1
        url = "%s/_files/%s?Expires=%d&sig=%s" % (self.base_url(), name, int(time.time() + sim.cfg["url_ttl_s"]),
                                                 secrets.token_hex(8))
        return {"file": {"file_id": int(fid), "bytes": rec["bytes"], "created_at": int(rec["created"]),
                         "filename": "output_aigc.mp4", "purpose": "video_generation", "download_url": url},
                "base_resp": {"status_code": 0, "status_msg": "success"}}

    # -- file downloads (the "CDN")

    async def download(self, req, writer):
        sim = self.sim
        ent = sim.new_entry(req, None)
        name = req.path[len("/_files/"):]
        rec = sim.files.get(name)
        ent["file"] = name
        expires = req.query.get("Expires")
        if rec is None or req.method not in ("GET", "HEAD"):
            body = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code></Error>"
            sim.finish(ent, 404)
            return await send(writer, 404, [("Content-Type", "application/xml")], body)
        if expires and expires.isdigit() and int(expires) < time.time():
            body = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>" \
                   b"<Message>Request has expired.</Message></Error>"
            sim.finish(ent, 403)
            return await send(writer, 403, [("Content-Type", "application/xml")], body)
        if rec["kind"] == "image":
            data = png_bytes(rec["w"], rec["h"], rec["rgb"], rec["pad"])
            pieces, total, ctype = [data], len(data), "image/png"
        else:
            total = rec["bytes"]
            pieces, ctype = video_chunks(total, rec["file_id"]), "video/mp4"
        rec["downloads"] += 1
        sim.file_downloads += 1
        sim.finish(ent, 200)
        ent["bytes"] = total
        writer.write(response_head(200, [("Content-Type", ctype), ("Accept-Ranges", "none"),
                                         ("Cache-Control", "max-age=86400")], total))
        if req.method == "HEAD":
            await writer.drain()
            return True
        bps = float(sim.cfg["download_bps"] or 0)
        for p in pieces:
            if bps > 0:
                # each slice waits its share first, so the last byte comes after total / bps
                for i in range(0, len(p), 16384):
                    await asyncio.sleep(len(p[i:i + 16384]) / bps)
                    writer.write(p[i:i + 16384])
                    await writer.drain()
            else:
                writer.write(p)
                await writer.drain()
            sim.bytes_served += len(p)
        return True


# ----------------------------------------------------------------------------
# Control API


class Control(simhttp.Control):
    ROUTES = {**simhttp.Control.ROUTES, ("GET", "/_sim/tasks"): "get_tasks", ("POST", "/_sim/tasks"): "set_task"}
    BEHAVIOURS = BEHAVIOURS

    def check_config(self, k, v):
        if k == "video_steps_ms":
            check_steps(v)
        elif k == "video_fail_state" and v not in STATES:
            raise BadControl("video_fail_state is one of %s" % ", ".join(STATES))
        elif k == "image_short_side" and not 1 <= v <= 4096:
            raise BadControl("image_short_side is 1..4096")
        elif k == "video_bytes" and not 40 <= v <= 4 * 1024 * MIB:
            raise BadControl("video_bytes is 40 .. 4 GiB")
        elif k == "log_max_entries" and v < 1:
            raise BadControl("log_max_entries is at least 1")

    def check_key_option(self, k, v):
        if k == "video_steps_ms":
            check_steps(v)
        else:
            super().check_key_option(k, v)

    def get_tasks(self, req, body):
        sim = self.sim
        q = req.query
        fp = q.get("key_fingerprint")
        prompt = q.get("prompt")
        tasks = [t.info(sim) for t in sim.tasks.values()
                 if (fp is None or t.key_fp == fp) and (prompt is None or t.prompt == prompt)]
        ph = phash(prompt) if prompt is not None else None
        subs = [dict(s) for (kfp, p), s in sim.submits.items()
                if (fp is None or kfp == fp) and (ph is None or p == ph)]
        if "task_id" in q:
            tasks = [t for t in tasks if t["task_id"] == q["task_id"]]
        return {"tasks": tasks, "submits": subs, "now": round(time.time(), 3)}

    def set_task(self, req, body):
        """Force a task's state: {task_id, status: Success|Fail|Preparing|..., code?} or
        {task_id, release: true} to go back to the clock."""
        sim = self.sim
        t = sim.tasks.get(body.get("task_id"))
        if t is None:
            raise BadControl("no such task")
        if body.get("release"):
            t.forced = None
        else:
            st = body.get("status")
            if st not in STATES + ("Success", "Fail"):
                raise BadControl("status is one of Preparing, Queueing, Processing, Success, Fail")
            code = body.get("code", 0)
            if not is_int(code):
                raise BadControl("code is an integer")
            t.forced = (st, code if st == "Fail" else 0)
            if st == "Success":
                t.outcome = "Success"
        return {"task": t.info(sim)}

    def stats(self, req, body):
        sim = self.sim
        states = collections.Counter(t.status()[0] for t in sim.tasks.values())
        return {"requests": sim.requests, "by_status": dict(sim.by_status), "by_base_code": dict(sim.by_code),
                "by_key_fingerprint": dict(sim.by_key), "by_path": dict(sim.by_path),
                "images_generated": sim.images_generated, "images_failed": sim.images_failed,
                "tasks_created": sim.tasks_created, "tasks_by_status": dict(states),
                "video_submits": sum(s["count"] for s in sim.submits.values()),
                "file_downloads": sim.file_downloads, "bytes_served": sim.bytes_served, "hung": sim.hung,
                "open_connections": len(sim.writers), "sim_errors": sim.sim_errors}


def check_steps(v):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if v < 0:
            raise BadControl("video_steps_ms is >= 0")
        return
    if not isinstance(v, dict) or any(k not in STATES for k in v) or \
            any(not isinstance(x, (int, float)) or isinstance(x, bool) or x < 0 for x in v.values()):
        raise BadControl("video_steps_ms is a number or {Preparing, Queueing, Processing: ms}")


# ----------------------------------------------------------------------------
# Server


class Sim(simhttp.ProviderSim):
    DEFAULTS, Key, Api, Control = DEFAULT_CONFIG, KeyState, Api, Control

    def reset(self, keep_keys=False, keep_config=False):
        super().reset(keep_keys, keep_config)
        self.tasks = collections.OrderedDict()      # task_id -> Task
        self.files = collections.OrderedDict()      # name -> {kind, ...}
        self.file_names = {}                        # video file_id -> name
        self.submits = collections.OrderedDict()    # (key_fp, phash(prompt)) -> {count, accepted, task_ids}
        self.colour_counter = 0
        self.by_code = collections.Counter()
        self.images_generated = 0
        self.images_failed = 0
        self.tasks_created = 0
        self.file_downloads = 0
        self.bytes_served = 0
        self.hung = 0

    def refusal(self, e):
        return [("Content-Type", "application/json")], \
            jdump({"base_resp": {"status_code": 2013, "status_msg": e.text}}).encode()

    async def route(self, req, reader, writer):
        if req.path.startswith("/_files/"):
            return await self.api.download(req, writer)
        if req.path.startswith("/v1/"):
            return await self.api.handle(req, reader, writer)
        return await send(writer, 404, [("Content-Type", "text/plain")], b"404 page not found\n")

    def new_entry(self, req, fp):
        return super().new_entry(req, fp, base_code=None)

    def finish(self, e, status, code=None):
        e["status"] = status
        e["base_code"] = code
        self.by_status[str(status)] += 1
        if code is not None:
            self.by_code[str(code)] += 1

    def add_file(self, name, rec):
        self.files[name] = rec
        while len(self.files) > int(self.cfg["max_files"]):
            old, r = self.files.popitem(last=False)
            if r.get("file_id"):
                self.file_names.pop(r["file_id"], None)

    def add_task(self, task):
        self.tasks[task.task_id] = task
        self.tasks_created += 1
        while len(self.tasks) > int(self.cfg["max_tasks"]):
            self.tasks.popitem(last=False)

    def count_submit(self, fp, prompt):
        k = (fp, phash(prompt))
        s = self.submits.get(k)
        if s is None:
            s = self.submits[k] = {"key_fingerprint": fp, "prompt": prompt[:int(self.cfg["log_prompt_chars"])],
                                   "prompt_chars": len(prompt), "count": 0, "accepted": 0, "task_ids": []}
            while len(self.submits) > int(self.cfg["max_tasks"]):
                self.submits.popitem(last=False)
        s["count"] += 1
        return s

    def trigger(self, name, text):
        w = self.cfg.get(name)
        return bool(w) and isinstance(text, str) and w in text


def main(argv=None):
    return simhttp.main(Sim, simhttp.arg_parser("MiniMax native API simulator for integration tests"), argv)


if __name__ == "__main__":
    sys.exit(main())
