#!/usr/bin/python3
"""A Stability AI v2beta stable-image server for black-box tests, on one TCP
port of 127.0.0.1, in one asyncio process.

    /usr/bin/python3 tests/sim/stability_sim.py --port 0 [--key KEY ...] [--verbose]

prints one line `SIM READY port=NNNN` on stdout once it listens, logs to
stderr and exits 0 on SIGTERM/SIGINT.

  POST /v2beta/stable-image/generate/{core|ultra|sd3}   multipart/form-data
  /_sim/...                                             the control API (README-stability.md)

Answers real images: PNG, baseline JPEG and lossless WebP, one solid colour
each (a different colour per image). Python 3 standard library only. The
facts it follows are in the Stability section of
/work/shared/reference/providers.md.
"""

import asyncio
import base64
import collections
import re
import secrets
import struct
import sys
import time
import urllib.parse
import zlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (as tests/run.py)
import simhttp  # noqa: E402
from simhttp import MIB, BadControl, debug, jdump, send  # noqa: E402

simhttp.NAME = "stability-sim"
DRAIN_MAX = 64 * MIB   # bigger bodies than this are not read: 413 and the connection is closed

BEHAVIOURS = ("ok", "401", "403", "429", "500", "hang")

DEFAULT_CONFIG = {
    "max_body_bytes": 10 * MIB,          # larger bodies -> 413 payload_too_large
    "rate_limit_requests": 150,          # more than this many requests ...
    "rate_limit_window_s": 10,           # ... within this window (per key) ...
    "rate_limit_timeout_s": 60,          # ... -> 429 for this long
    "retry_after_header": False,         # send Retry-After (seconds left) on the rate-limit 429
    "moderation_trigger": "MODERATEME",  # prompt word -> 403 content_moderation
    "filter_trigger": "FILTERME",        # prompt word -> 200 finish-reason CONTENT_FILTERED (grey image)
    "reject_trigger": "REJECTME",        # prompt word -> 422 invalid_language
    "delay_ms": 0,                       # generation latency before every answer
    "image_short_side": 64,              # px of the short side of generated images
    "log_max_entries": 100000,
    "log_value_chars": 200,              # text field values kept in the log (prompt prefix etc.)
}

ENDPOINTS = ("core", "ultra", "sd3")
ASPECTS = {"16:9": (16, 9), "1:1": (1, 1), "21:9": (21, 9), "2:3": (2, 3), "3:2": (3, 2), "4:5": (4, 5),
           "5:4": (5, 4), "9:16": (9, 16), "9:21": (9, 21)}
FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
STYLE_PRESETS = ("3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance",
                 "fantasy-art", "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami",
                 "photographic", "pixel-art", "tile-texture")
SD3_MODELS = {"sd3.5-large": 6.5, "sd3.5-large-turbo": 4, "sd3.5-medium": 3.5, "sd3.5-flash": 2.5,
              "sd3-large": 6.5, "sd3-large-turbo": 4, "sd3-medium": 3.5}
CREDITS = {"ultra": 8, "core": 3}
SEED_MAX = 4294967294
MIN_SIDE, MAX_PIXELS = 64, 9437184

# ----------------------------------------------------------------------------
# Image encoders (one solid colour) and the sniffer for uploads


def png_bytes(w, h, rgb):
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xffffffff)
    raw = (b"\x00" + bytes(rgb) * w) * h
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


class _Bits:
    """MSB-first bit writer with JPEG byte stuffing."""

    def __init__(self):
        self.out, self.acc, self.n = bytearray(), 0, 0

    def put(self, value, bits):
        for i in range(bits - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc, self.n = 0, 0

    def flush(self):
        while self.n:
            self.put(1, 1)
        return bytes(self.out)


def jpeg_bytes(w, h, rgb):
    """A baseline JPEG (YCbCr 4:4:4) of one colour. Quantisation 1; a DC
    Huffman table of twelve 4-bit codes and an AC table holding only EOB."""
    r, g, b = rgb
    ycc = (0.299 * r + 0.587 * g + 0.114 * b,
           128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
           128 + 0.5 * r - 0.418688 * g - 0.081312 * b)
    dcs = [8 * (max(0, min(255, int(round(v)))) - 128) for v in ycc]

    def seg(marker, data):
        return struct.pack(">BBH", 0xFF, marker, len(data) + 2) + data

    out = b"\xff\xd8" + seg(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    out += seg(0xDB, b"\x00" + b"\x01" * 64)
    out += seg(0xC0, struct.pack(">BHHB", 8, h, w, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00")
    dc_bits = bytes([0, 0, 0, 12] + [0] * 12)
    ac_bits = bytes([1] + [0] * 15)
    out += seg(0xC4, b"\x00" + dc_bits + bytes(range(12)) + b"\x10" + ac_bits + b"\x00")
    out += seg(0xDA, b"\x03\x01\x00\x02\x00\x03\x00\x00\x3f\x00")
    bw = _Bits()
    blocks = ((w + 7) // 8) * ((h + 7) // 8)
    for i in range(blocks):
        for c in range(3):
            diff = dcs[c] if i == 0 else 0
            cat = abs(diff).bit_length()
            bw.put(cat, 4)
            if cat:
                bw.put(diff if diff > 0 else diff + (1 << cat) - 1, cat)
            bw.put(0, 1)  # EOB
    return out + bw.flush() + b"\xff\xd9"


def webp_bytes(w, h, rgb):
    """A lossless (VP8L) WebP of one colour: five one-symbol prefix codes, so
    the pixels themselves take no bits."""
    bits, n = 0, 0

    def put(v, k):
        nonlocal bits, n
        bits |= (v & ((1 << k) - 1)) << n
        n += k

    put(w - 1, 14)
    put(h - 1, 14)
    put(0, 1)   # alpha not used
    put(0, 3)   # version
    put(0, 1)   # no transform
    put(0, 1)   # no colour cache
    put(0, 1)   # no meta prefix codes
    for sym in (rgb[1], rgb[0], rgb[2], 255):   # green, red, blue, alpha
        put(1, 1)      # simple code
        put(0, 1)      # one symbol
        put(1, 1)      # 8-bit symbol
        put(sym, 8)
    put(1, 1)          # distance: simple, one symbol, 1-bit symbol 0
    put(0, 1)
    put(0, 1)
    put(0, 1)
    data = b"\x2f" + bits.to_bytes((n + 7) // 8, "little")
    chunk = b"VP8L" + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


ENCODERS = {"png": png_bytes, "jpeg": jpeg_bytes, "webp": webp_bytes}


def sniff(data):
    """(format, width, height) of an uploaded image; format None when it is
    not PNG/JPEG/WebP, sizes None when they cannot be read."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) >= 24 and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return "png", w, h
        return "png", None, None
    if data.startswith(b"\xff\xd8\xff"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return "jpeg", None, None
            m = data[i + 1]
            if m == 0xFF:
                i += 1
                continue
            if m in (0xD8, 0x01) or 0xD0 <= m <= 0xD7:
                i += 2
                continue
            ln = struct.unpack(">H", data[i + 2:i + 4])[0]
            if m in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return "jpeg", w, h
            if m == 0xDA:
                break
            i += 2 + ln
        return "jpeg", None, None
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = data[12:16]
        try:
            if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
                w, h = struct.unpack("<HH", data[26:30])
                return "webp", w & 0x3fff, h & 0x3fff
            if kind == b"VP8L" and data[20] == 0x2f:
                v = int.from_bytes(data[21:25], "little")
                return "webp", (v & 0x3fff) + 1, ((v >> 14) & 0x3fff) + 1
            if kind == b"VP8X":
                return "webp", int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
        except IndexError:
            pass
        return "webp", None, None
    return None, None, None


def colour_of(n):
    return ((n * 67 + 40) % 256, (n * 131 + 90) % 256, (n * 199 + 160) % 256)


# ----------------------------------------------------------------------------
# multipart/form-data


_TOKEN = re.compile(r'\s*([^\s=;]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;]*))?\s*(?:;|$)')


def parse_header_value(value):
    """'type/sub; a=1; b="x y"' -> ('type/sub', {'a': '1', 'b': 'x y'}); names lowercased."""
    main, _, rest = value.partition(";")
    params = {}
    pos = 0
    while pos < len(rest):
        m = _TOKEN.match(rest, pos)
        if not m or m.end() == pos:
            break
        name, val = m.group(1).lower(), (m.group(2) or "").strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        params[name] = val
        pos = m.end()
    return main.strip().lower(), params


class Part:
    __slots__ = ("name", "filename", "content_type", "data")


def parse_multipart(body, ctype):
    """The parts of a multipart/form-data body; raises ValueError with a
    message for anything malformed."""
    mt, params = parse_header_value(ctype)
    if mt != "multipart/form-data":
        raise ValueError("content-type: must be multipart/form-data (got %s)" % (mt or "nothing"))
    b = params.get("boundary")
    if not b:
        raise ValueError("content-type: the multipart boundary is missing")
    if len(b) > 70:
        raise ValueError("content-type: the multipart boundary is longer than 70 characters")
    delim = b"--" + b.encode("latin-1")
    if body.startswith(delim):
        pos = len(delim)
    else:
        i = body.find(b"\r\n" + delim)
        if i < 0:
            raise ValueError("body: no multipart part with the declared boundary")
        pos = i + 2 + len(delim)
    parts = []
    while True:
        if body[pos:pos + 2] == b"--":
            break
        if pos >= len(body) - 2 and not body[pos:].strip():
            raise ValueError("body: the multipart body is not terminated (no closing boundary)")
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise ValueError("body: malformed multipart delimiter line")
        hstart = eol + 2
        if body[hstart:hstart + 2] == b"\r\n":
            hdr_lines, cstart = [], hstart + 2
        else:
            hend = body.find(b"\r\n\r\n", hstart)
            if hend < 0:
                raise ValueError("body: a multipart part has no end of headers")
            hdr_lines, cstart = body[hstart:hend].decode("utf-8", "replace").split("\r\n"), hend + 4
        nxt = body.find(b"\r\n" + delim, cstart)
        if nxt < 0:
            raise ValueError("body: the multipart body is not terminated (no closing boundary)")
        p = Part()
        p.name, p.filename, p.content_type, p.data = None, None, None, body[cstart:nxt]
        for line in hdr_lines:
            k, sep, v = line.partition(":")
            if not sep:
                raise ValueError("body: malformed multipart part header")
            k = k.strip().lower()
            if k == "content-disposition":
                disp, dp = parse_header_value(v)
                if disp != "form-data":
                    raise ValueError("body: part disposition must be form-data")
                p.name = dp.get("name")
                p.filename = dp.get("filename")
                if "filename*" in dp:
                    fn = dp["filename*"]
                    p.filename = urllib.parse.unquote(fn.split("''", 1)[-1])
            elif k == "content-type":
                p.content_type = v.strip()
        if not p.name:
            raise ValueError("body: a multipart part has no name")
        parts.append(p)
        pos = nxt + 2 + len(delim)
    return parts


# ----------------------------------------------------------------------------
# State


class KeyState(simhttp.KeyState):
    __slots__ = ("recent", "blocked_until")
    OPTIONS = {
        "remaining": None,   # misbehave this many times, then act as "ok" (None: always)
        "delay_ms": None,    # per-key generation latency (None: the config's)
    }

    def __init__(self, key, behaviour="ok", opts=None):
        super().__init__(key, behaviour, opts)
        self.recent = collections.deque()
        self.blocked_until = 0.0

    def info(self):
        left = max(0.0, self.blocked_until - time.monotonic())
        return dict(super().info(), rate_limited_for_s=round(left, 3), requests_in_window=len(self.recent))


class ApiError(Exception):
    def __init__(self, status, name, errors, headers=()):
        super().__init__("%d %s" % (status, name))
        self.status, self.name, self.errors, self.headers = status, name, list(errors), list(headers)


def bad(msg):
    return ApiError(400, "bad_request", [msg])


# ----------------------------------------------------------------------------
# The Stability side


class Api:
    def __init__(self, sim):
        self.sim = sim

    async def handle(self, req, reader, writer):
        sim = self.sim
        h = req.header("authorization")
        key = h[7:].strip() if h.lower().startswith("bearer ") else ""
        fp = simhttp.fingerprint(key) if key else None
        ks = sim.keys.get(key) if key else None
        ent = sim.new_entry(req, fp)
        rid = secrets.token_hex(16)
        try:
            m = re.fullmatch(r"/v2beta/stable-image/generate/([a-z0-9]+)/?", req.path)
            if not m or m.group(1) not in ENDPOINTS:
                raise ApiError(404, "not_found", ["%s %s: no such route" % (req.method, req.path)])
            if req.method != "POST":
                raise ApiError(405, "method_not_allowed", ["%s is not allowed on %s" % (req.method, req.path)])
            endpoint = m.group(1)
            ent["endpoint"] = endpoint
            sim.by_endpoint[endpoint] += 1
            if req.too_large:
                raise ApiError(413, "payload_too_large",
                               ["body: payloads cannot be larger than %d bytes in size" % sim.cfg["max_body_bytes"]])
            if ks is None:
                raise ApiError(401, "unauthorized", ["authorization: missing or invalid API key"])
            behaviour = ks.active()
            ent["behaviour"] = behaviour
            if behaviour == "401":
                ks.served += 1
                raise ApiError(401, "unauthorized", ["authorization: missing or invalid API key"])
            self.rate_limit(ks)
            if behaviour == "429":
                ks.served += 1
                raise self.rate_error(ks, forced=True)
            if behaviour == "500":
                ks.served += 1
                raise ApiError(500, "internal_error", ["An unexpected server error has occurred, please try again "
                                                       "later."])
            if behaviour == "hang":
                ks.served += 1
                ent["status"] = "hang"
                sim.by_status["hang"] += 1
                sim.hung += 1
                return await simhttp.hang(reader)
            return await self.generate(req, writer, ent, ks, endpoint, behaviour, rid)
        except ApiError as e:
            return await self.send_error(writer, ent, e, rid, close=req.body_bytes > DRAIN_MAX)

    def rate_limit(self, ks):
        sim, now = self.sim, time.monotonic()
        if now < ks.blocked_until:
            raise self.rate_error(ks)
        win = float(sim.cfg["rate_limit_window_s"])
        while ks.recent and ks.recent[0] <= now - win:
            ks.recent.popleft()
        ks.recent.append(now)
        if len(ks.recent) > int(sim.cfg["rate_limit_requests"]):
            ks.blocked_until = now + float(sim.cfg["rate_limit_timeout_s"])
            ks.recent.clear()
            raise self.rate_error(ks)

    def rate_error(self, ks, forced=False):
        sim = self.sim
        sim.rate_limited += 1
        hdrs = []
        if sim.cfg["retry_after_header"]:
            left = ks.blocked_until - time.monotonic() if not forced else sim.cfg["rate_limit_timeout_s"]
            hdrs.append(("Retry-After", str(max(1, int(left + 0.999)))))
        return ApiError(429, "rate_limit_exceeded",
                        ["You have exceeded the rate limit of %s requests within a %s second period, and have "
                         "been timed out for %s seconds." % (sim.cfg["rate_limit_requests"],
                                                             sim.cfg["rate_limit_window_s"],
                                                             sim.cfg["rate_limit_timeout_s"])], hdrs)

    async def send_error(self, writer, ent, e, rid, close=False):
        sim = self.sim
        body = jdump({"id": rid, "name": e.name, "errors": e.errors}).encode()
        ent["status"], ent["error_name"], ent["errors"] = e.status, e.name, e.errors
        debug("%s %s key=%s -> %d %s", ent["method"], ent["path"], ent["key_fingerprint"], e.status, e.name)
        sim.by_status[str(e.status)] += 1
        sim.by_error[e.name] += 1
        sim.bytes_out += len(body)
        await send(writer, e.status, [("Content-Type", "application/json")] + e.headers, body, close)
        return not close

    def fields_of(self, req, ent):
        sim = self.sim
        ctype = req.header("content-type")
        ent["content_type"] = ctype.split(";")[0].strip().lower() if ctype else None
        try:
            parts = parse_multipart(req.body, ctype)
        except ValueError as e:
            raise bad(str(e))
        keep = int(sim.cfg["log_value_chars"])
        fields, files, log_fields, dups = {}, {}, {}, []
        for p in parts:
            info = {"size": len(p.data)}
            if p.filename is not None or p.name == "image":
                info.update({"kind": "file", "filename": p.filename, "content_type": p.content_type})
                if p.name in files:
                    dups.append(p.name)
                files.setdefault(p.name, p)
            else:
                try:
                    text = p.data.decode("utf-8")
                except UnicodeDecodeError:
                    raise bad("%s: is not valid UTF-8 text" % p.name)
                info.update({"kind": "text", "value": text[:keep], "chars": len(text)})
                if p.name in fields:
                    dups.append(p.name)
                fields.setdefault(p.name, text)
            log_fields.setdefault(p.name, info)
        ent["fields"] = log_fields
        if dups:
            ent["duplicate_fields"] = dups
        return fields, files

    async def generate(self, req, writer, ent, ks, endpoint, behaviour, rid):
        sim = self.sim
        accept = req.header("accept", "")
        ent["accept"] = accept
        a = accept.lower()
        if "application/json" in a:
            as_json = True
        elif not a or "image/" in a or "*/*" in a:
            as_json = False
        else:
            raise bad("accept: must be image/* or application/json")
        fields, files = self.fields_of(req, ent)
        prompt = fields.get("prompt")
        if prompt is None:
            raise bad("prompt: is required")
        if not prompt.strip():
            raise bad("prompt: cannot be empty")
        if len(prompt) > 10000:
            raise bad("prompt: must be at most 10000 characters (got %d)" % len(prompt))
        neg = fields.get("negative_prompt")
        if neg is not None and len(neg) > 10000:
            raise bad("negative_prompt: must be at most 10000 characters")
        ar = fields.get("aspect_ratio", "1:1")
        if ar not in ASPECTS:
            raise bad("aspect_ratio: must be one of %s" % ", ".join(ASPECTS))
        fmt = fields.get("output_format", "png")
        if fmt not in FORMATS:
            raise bad("output_format: must be one of png, jpeg, webp")
        seed = fields.get("seed", "0")
        try:
            seed = int(seed)
            if not 0 <= seed <= SEED_MAX:
                raise ValueError
        except ValueError:
            raise bad("seed: must be an integer between 0 and %d" % SEED_MAX)
        sp = fields.get("style_preset")
        if sp is not None and sp not in STYLE_PRESETS:
            raise bad("style_preset: must be one of %s" % ", ".join(STYLE_PRESETS))
        image = files.get("image")
        if image is None and "image" in fields:
            image = fields["image"].encode()
        model = endpoint
        credits = CREDITS.get(endpoint)
        if endpoint == "sd3":
            model = fields.get("model", "sd3.5-large")
            if model not in SD3_MODELS:
                raise bad("model: must be one of %s" % ", ".join(SD3_MODELS))
            credits = SD3_MODELS[model]
            mode = fields.get("mode", "text-to-image")
            if mode not in ("text-to-image", "image-to-image"):
                raise bad("mode: must be text-to-image or image-to-image")
            if mode == "image-to-image" and image is None:
                raise bad("image: is required when mode is image-to-image")
            if mode == "text-to-image" and image is not None:
                raise bad("image: is only allowed when mode is image-to-image")
        if endpoint == "core" and image is not None:
            raise bad("image: is not supported by stable-image/generate/core")
        ent.update({"model": model, "output_format": fmt, "aspect_ratio": ar})
        size = None
        if image is not None:
            data = image.data if isinstance(image, Part) else image
            st = fields.get("strength")
            if st is None:
                raise bad("strength: is required when an image is provided")
            try:
                stv = float(st)
                if not 0 <= stv <= 1:
                    raise ValueError
            except ValueError:
                raise bad("strength: must be a number between 0 and 1")
            kind, w, h = sniff(data)
            ent["image"] = {"format": kind, "width": w, "height": h, "bytes": len(data)}
            if kind is None:
                raise bad("image: unsupported image format, use png, jpeg or webp")
            if w is None or h is None:
                raise bad("image: could not be decoded")
            if min(w, h) < MIN_SIDE:
                raise bad("image: every side must be at least %d pixels (got %dx%d)" % (MIN_SIDE, w, h))
            if w * h > MAX_PIXELS:
                raise bad("image: must have at most %d pixels (got %d)" % (MAX_PIXELS, w * h))
            short = int(sim.cfg["image_short_side"])
            size = (short, max(1, round(h * short / w))) if w <= h else (max(1, round(w * short / h)), short)
        if behaviour == "403" or self.hit("moderation_trigger", prompt):
            if behaviour == "403":
                ks.served += 1
            raise ApiError(403, "content_moderation",
                           ["Your request was flagged by our content moderation system, as a result your request "
                            "was denied and you were not charged."])
        if self.hit("reject_trigger", prompt):
            raise ApiError(422, "invalid_language", ["English is the only supported language for this service."])
        delay = sim.cfg["delay_ms"] if ks.opts.get("delay_ms") is None else ks.opts["delay_ms"]
        if delay:
            await asyncio.sleep(float(delay) / 1000)
        if size is None:
            a_, b_ = ASPECTS[ar]
            short = int(sim.cfg["image_short_side"])
            size = (round(short * a_ / b_), short) if a_ >= b_ else (short, round(short * b_ / a_))
        finish = "CONTENT_FILTERED" if self.hit("filter_trigger", prompt) else "SUCCESS"
        if finish == "SUCCESS":
            sim.colour_counter += 1
            rgb = colour_of(sim.colour_counter)
        else:
            rgb = (128, 128, 128)
        if seed == 0:
            seed = secrets.randbelow(SEED_MAX) + 1
        img = ENCODERS[fmt](size[0], size[1], rgb)
        sim.images += 1
        sim.credits += credits
        sim.finish_reasons[finish] += 1
        ent.update({"finish_reason": finish, "seed": seed, "width": size[0], "height": size[1],
                    "colour": list(rgb), "credits": credits})
        if as_json:
            body = jdump({"image": base64.b64encode(img).decode(), "finish_reason": finish, "seed": seed}).encode()
            hdrs = [("Content-Type", "application/json")]
        else:
            body = img
            hdrs = [("Content-Type", FORMATS[fmt])]
        hdrs += [("finish-reason", finish), ("seed", str(seed)), ("x-request-id", rid)]
        ent["status"] = 200
        ent["response_bytes"] = len(body)
        debug("POST %s key=%s -> 200 %s %s", req.path, ent["key_fingerprint"], finish, fmt)
        sim.by_status["200"] += 1
        sim.bytes_out += len(body)
        return await send(writer, 200, hdrs, body)

    def hit(self, name, text):
        w = self.sim.cfg.get(name)
        return bool(w) and w in text


# ----------------------------------------------------------------------------
# Control API


class Control(simhttp.Control):
    BEHAVIOURS = BEHAVIOURS
    KEY_FIELDS = ("key", "behaviour", "remove", "unblock")

    def check_config(self, k, v):
        if k == "max_body_bytes" and v > DRAIN_MAX:
            raise BadControl("max_body_bytes is at most %d" % DRAIN_MAX)
        if k == "image_short_side" and not 1 <= v <= 4096:
            raise BadControl("image_short_side is 1..4096")
        if k in ("rate_limit_window_s", "log_max_entries") and v <= 0:
            raise BadControl("%s is > 0" % k)

    def keep_key_state(self, old, ks, item):  # the rate-limit state, unless unblocked
        if not item.get("unblock"):
            ks.recent, ks.blocked_until = old.recent, old.blocked_until

    def stats(self, req, body):
        sim = self.sim
        return {"requests": sim.requests, "by_status": dict(sim.by_status), "by_error_name": dict(sim.by_error),
                "by_key_fingerprint": dict(sim.by_key), "by_endpoint": dict(sim.by_endpoint),
                "finish_reasons": dict(sim.finish_reasons), "images": sim.images,
                "credits": round(sim.credits, 3), "rate_limited": sim.rate_limited, "bytes_in": sim.bytes_in,
                "bytes_out": sim.bytes_out, "hung": sim.hung, "open_connections": len(sim.writers),
                "sim_errors": sim.sim_errors}


# ----------------------------------------------------------------------------
# Server


class Sim(simhttp.ProviderSim):
    DEFAULTS, Key, Api, Control = DEFAULT_CONFIG, KeyState, Api, Control

    def reset(self, keep_keys=False, keep_config=False):
        super().reset(keep_keys, keep_config)
        if keep_keys:
            for ks in self.keys.values():
                ks.recent.clear()
                ks.blocked_until = 0.0
        self.colour_counter = 0
        self.by_error = collections.Counter()
        self.by_endpoint = collections.Counter()
        self.finish_reasons = collections.Counter()
        self.credits = 0.0
        self.images = 0
        self.rate_limited = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.hung = 0

    def body_limits(self):
        return int(self.cfg["max_body_bytes"]), DRAIN_MAX

    def refusal(self, e):
        name = "payload_too_large" if e.status == 413 else "bad_request"
        return [("Content-Type", "application/json")], \
            jdump({"id": secrets.token_hex(16), "name": name, "errors": [e.text]}).encode()

    async def route(self, req, reader, writer):
        return await self.api.handle(req, reader, writer)

    def new_entry(self, req, fp):
        self.bytes_in += req.body_bytes
        return super().new_entry(req, fp, error_name=None, body_bytes=req.body_bytes)


def main(argv=None):
    return simhttp.main(Sim, simhttp.arg_parser("Stability AI v2beta simulator for integration tests"), argv)


if __name__ == "__main__":
    sys.exit(main())
