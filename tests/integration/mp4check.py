"""Is this an MP4 a player can open? Two checks for the tests:

- `parse(data)`: our own ISO BMFF reader, no dependency. The top-level boxes
  tile the file; ftyp comes first; there is one moov and one mdat; every
  track has a handler, a sample description, a timescale and a duration;
  and every sample the tables (stsz, stsc, stco/co64) point at lies inside
  the mdat payload. Raises ValueError naming what is wrong; returns a summary.
- `ffprobe(path)`: Debian's ffprobe (the `ffmpeg` package, installed by
  deploy/install-deps.sh), a real demuxer and decoder, counts the frames it
  decodes.
"""

import json
import shutil
import struct
import subprocess

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"mvex"}


def boxes(data, start, end):
    """[(type, payload_start, box_end)] of the boxes that tile data[start:end]."""
    out, off = [], start
    while off < end:
        if end - off < 8:
            raise ValueError("%d stray bytes at %d" % (end - off, off))
        size, kind = struct.unpack(">I4s", data[off:off + 8])
        head = 8
        if size == 1:
            if end - off < 16:
                raise ValueError("truncated 64-bit box size at %d" % off)
            size = struct.unpack(">Q", data[off + 8:off + 16])[0]
            head = 16
        elif size == 0:
            size = end - off
        if size < head or off + size > end:
            raise ValueError("box %r at %d: size %d runs past its parent (ends at %d)" % (kind, off, size, end))
        out.append((kind, off + head, off + size))
        off += size
    return out


def child(data, parent, kind):
    found = [b for b in boxes(data, parent[1], parent[2]) if b[0] == kind]
    if len(found) != 1:
        raise ValueError("%d %r boxes in %r" % (len(found), kind, parent[0]))
    return found[0]


def full(data, box):
    """(version, payload after the version and flags) of a full box."""
    return data[box[1]], data[box[1] + 4:box[2]]


def track(data, trak, mdat):
    mdia = child(data, trak, b"mdia")
    version, mdhd = full(data, child(data, mdia, b"mdhd"))
    if version == 1:
        timescale, duration = struct.unpack(">IQ", mdhd[16:28])
    else:
        timescale, duration = struct.unpack(">II", mdhd[8:16])
    if not timescale or not duration:
        raise ValueError("track with timescale %d, duration %d" % (timescale, duration))
    handler = full(data, child(data, mdia, b"hdlr"))[1][4:8].decode("latin-1")
    stbl = child(data, child(data, mdia, b"minf"), b"stbl")
    stsd = full(data, child(data, stbl, b"stsd"))[1]
    if struct.unpack(">I", stsd[:4])[0] < 1:
        raise ValueError("no sample description")
    codec = stsd[8:12].decode("latin-1")
    width = height = None
    if handler == "vide":
        width, height = struct.unpack(">HH", stsd[4 + 8 + 24:4 + 8 + 28])
    stsz = full(data, child(data, stbl, b"stsz"))[1]
    fixed, count = struct.unpack(">II", stsz[:8])
    sizes = [fixed] * count if fixed else list(struct.unpack(">%dI" % count, stsz[8:8 + 4 * count]))
    stsc = full(data, child(data, stbl, b"stsc"))[1]
    runs = [struct.unpack(">III", stsc[4 + 12 * i:16 + 12 * i]) for i in range(struct.unpack(">I", stsc[:4])[0])]
    kinds = {b[0]: b for b in boxes(data, stbl[1], stbl[2])}
    if b"stco" in kinds:
        co = full(data, kinds[b"stco"])[1]
        n = struct.unpack(">I", co[:4])[0]
        chunks = list(struct.unpack(">%dI" % n, co[4:4 + 4 * n]))
    elif b"co64" in kinds:
        co = full(data, kinds[b"co64"])[1]
        n = struct.unpack(">I", co[:4])[0]
        chunks = list(struct.unpack(">%dQ" % n, co[4:4 + 8 * n]))
    else:
        raise ValueError("no chunk offsets (stco or co64)")
    # walk the chunks: each sample must lie inside the mdat payload
    sample = 0
    for ci, offset in enumerate(chunks):
        per = next(r[1] for r in reversed(runs) if r[0] <= ci + 1)
        for _ in range(per):
            if sample >= count:
                raise ValueError("the chunk tables hold more samples than stsz (%d)" % count)
            if not (mdat[1] <= offset and offset + sizes[sample] <= mdat[2]):
                raise ValueError("sample %d (%d bytes at %d) is outside mdat [%d, %d)"
                                 % (sample, sizes[sample], offset, mdat[1], mdat[2]))
            offset += sizes[sample]
            sample += 1
    if sample != count:
        raise ValueError("the chunk tables hold %d samples, stsz %d" % (sample, count))
    return {"handler": handler, "codec": codec, "samples": count, "seconds": duration / timescale,
            "width": width, "height": height}


def parse(data):
    top = boxes(data, 0, len(data))
    if not top or top[0][0] != b"ftyp":
        raise ValueError("the file does not start with ftyp: %r" % [b[0] for b in top[:3]])
    for kind in (b"moov", b"mdat"):
        if [b[0] for b in top].count(kind) != 1:
            raise ValueError("%d %r boxes at the top" % ([b[0] for b in top].count(kind), kind))
    moov = next(b for b in top if b[0] == b"moov")
    mdat = next(b for b in top if b[0] == b"mdat")
    tracks = [track(data, b, mdat) for b in boxes(data, moov[1], moov[2]) if b[0] == b"trak"]
    if not tracks:
        raise ValueError("no track in moov")
    return {"brand": data[8:12].decode("latin-1"), "boxes": [b[0].decode("latin-1") for b in top],
            "tracks": tracks}


def ffprobe(path):
    """{codec_name, width, height, nb_read_frames, ...} of the first video
    stream as ffprobe decodes it; raises AssertionError when it cannot."""
    exe = shutil.which("ffprobe")
    if not exe:
        raise AssertionError("ffprobe is missing: run ./deploy/install-deps.sh (Debian's ffmpeg)")
    r = subprocess.run([exe, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                        "stream=codec_name,profile,width,height,pix_fmt,nb_read_frames,duration", "-of", "json",
                        path], capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or r.stderr.strip():
        raise AssertionError("ffprobe cannot read %s (%d): %s" % (path, r.returncode, r.stderr.strip()[:500]))
    streams = json.loads(r.stdout).get("streams") or []
    if not streams:
        raise AssertionError("ffprobe finds no video stream in %s" % path)
    return streams[0]
