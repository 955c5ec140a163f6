"""Drive the Stability simulator (tests/sim/stability_sim.py) from a test.

    import stabilityclient
    st = stabilityclient.start(t, keys={"sk-good": "ok", "sk-bad": "401"})   # stopped at teardown
    st.config(rate_limit_requests=3, rate_limit_window_s=2, rate_limit_timeout_s=1)
    bot = t.instance("media", env=dict(env, STABILITY_BASE_URL=st.base_url, ...))
    ...
    st.log()      # every request: fields, file sizes, status (key fingerprints, never keys)
    st.stats()

Also a small blocking client acting as the bot (st.generate, st.request,
stabilityclient.multipart, stabilityclient.image_info), used by the
simulator's own tests. Python 3 standard library only; the control API is in
tests/sim/README-stability.md; starting and stopping the process is
simproc's.
"""

import os
import secrets
import struct
import zlib

import simproc

SIM_PATH = os.path.join(simproc.SIM_DIR, "stability_sim.py")
PYTHON = simproc.PYTHON

fingerprint = simproc.fingerprint  # how the simulator names a key in its log and stats
http = simproc.json_http


class SimError(Exception):
    pass


def multipart(fields=None, files=None, boundary=None):
    """(body bytes, Content-Type) of a multipart/form-data body. fields:
    {name: text}; files: {name: (filename, bytes, content_type)}."""
    boundary = boundary or "----simboundary" + secrets.token_hex(12)
    out = bytearray()
    for name, value in (fields or {}).items():
        out += b"--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n" % (boundary.encode(), name.encode())
        out += (value if isinstance(value, bytes) else str(value).encode("utf-8")) + b"\r\n"
    for name, (filename, data, ctype) in (files or {}).items():
        out += b"--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\nContent-Type: %s\r\n\r\n" % (
            boundary.encode(), name.encode(), filename.encode(), ctype.encode())
        out += data + b"\r\n"
    out += b"--%s--\r\n" % boundary.encode()
    return bytes(out), "multipart/form-data; boundary=%s" % boundary


def png(w, h, rgb=(10, 20, 30), extra=b""):
    """A valid RGB PNG (extra: bytes put in a private ancillary chunk, e.g.
    to place CRLF or boundary-like bytes inside the file)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xffffffff)
    raw = (b"\x00" + bytes(rgb) * w) * h
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + (chunk(b"tsTt", extra) if extra else b"") + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def image_info(data):
    """(format, width, height, first pixel (r, g, b) or None) of a PNG, JPEG or
    WebP; raises ValueError when the bytes are none of those or are broken.
    PNGs are checked fully (CRCs, IDAT inflated); JPEG and WebP by their
    headers (SOI..EOI and SOF0; RIFF sizes and the VP8L header)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ("png",) + simproc.png_rgb(data)
    if data.startswith(b"\xff\xd8"):
        if not data.endswith(b"\xff\xd9"):
            raise ValueError("JPEG: no EOI")
        i = 2
        while i + 4 <= len(data):
            m = data[i + 1]
            ln = struct.unpack(">H", data[i + 2:i + 4])[0]
            if m == 0xC0:
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return "jpeg", w, h, None
            if m == 0xDA:
                break
            i += 2 + ln
        raise ValueError("JPEG: no SOF0")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        if struct.unpack("<I", data[4:8])[0] != len(data) - 8:
            raise ValueError("WebP: RIFF size does not match")
        if data[12:16] != b"VP8L" or data[20] != 0x2f:
            raise ValueError("WebP: not a VP8L image")
        v = int.from_bytes(data[21:25], "little")
        return "webp", (v & 0x3fff) + 1, ((v >> 14) & 0x3fff) + 1, None
    raise ValueError("not a PNG, JPEG or WebP: %r" % data[:12])


class Result(simproc.Answer):
    """One answer (simproc.Answer: status, headers, body, json, error);
    name / errors of a Stability error body."""

    @property
    def name(self):
        return (self.json or {}).get("name") if isinstance(self.json, dict) else None

    @property
    def errors(self):
        return (self.json or {}).get("errors") if isinstance(self.json, dict) else None

    def __repr__(self):
        return "<Result status=%s error=%s headers=%s json=%s>" % (
            self.status, self.error, {k: v for k, v in self.headers.items() if k in ("content-type", "finish-reason")},
            str(self.json)[:300] if self.json is not None else None)


def request(base, method, path, key=None, body=None, headers=None, timeout=10.0):
    """One request as the bot would send it; returns a Result (never raises
    on HTTP errors, timeouts or a closed connection)."""
    return simproc.ask(Result(), method, base + path, key, body, headers, timeout)


class StabilitySim(simproc.ProviderSim):
    """A running simulator process plus its control API (keys, config, log,
    stats, reset, wait_stats: simproc.ProviderSim; keys(..., unblock=True)
    also clears a key's rate limit). base_url has no /v2beta: the bot adds
    the paths."""

    error = SimError

    # -- acting as the bot

    def request(self, method, path, key=None, body=None, headers=None, timeout=10.0):
        return request(self.base_url, method, path, key, body, headers, timeout)

    def generate(self, key, endpoint="core", fields=None, files=None, accept="image/*", timeout=10.0,
                 body=None, content_type=None):
        """POST /v2beta/stable-image/generate/<endpoint> as multipart (or a
        raw body/content_type when given)."""
        if body is None:
            body, ctype = multipart(fields, files)
        else:
            ctype = content_type
        hdrs = {}
        if ctype is not None:
            hdrs["Content-Type"] = ctype
        if accept is not None:
            hdrs["Accept"] = accept
        return self.request("POST", "/v2beta/stable-image/generate/%s" % endpoint, key, body, hdrs, timeout)


def start(t=None, keys=None, config=None, args=(), timeout=15.0, log_path=None):
    """Start a simulator on a free port and wait for `SIM READY`. keys:
    {key: behaviour}. With a harness TestContext `t` it is stopped at
    teardown and its stderr goes to t.tmp/stability-sim-*.log."""
    return simproc.start_provider(StabilitySim, SIM_PATH, "stability-sim", "stability simulator", t, keys,
                                  config, args, timeout, log_path)
