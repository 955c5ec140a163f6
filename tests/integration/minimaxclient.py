"""Drive the MiniMax simulator (tests/sim/minimax_sim.py) from a test.

    import minimaxclient
    mm = minimaxclient.start(t, keys={"mm-good": "ok", "mm-poor": "1008"})  # stopped at teardown
    mm.keys("mm-flaky", "1002", remaining=1)
    mm.config(video_steps_ms=200, video_bytes=64 * 1024)
    bot = t.instance("media", env=dict(env, MINIMAX_BASE_URL=mm.base_url, ...))
    ...
    mm.submit_count("a prompt", key="mm-good")   # video submits that reached the provider
    mm.tasks()                                   # every video task, its state and counters
    mm.log()                                     # every request (key fingerprints, never keys)

Also a small blocking client acting as the bot (mm.image, mm.video_submit,
mm.video_query, mm.file_retrieve, mm.download, mm.request), used by the
simulator's own tests. Python 3 standard library only; the control API is
in tests/sim/README-minimax.md; starting and stopping the process is
simproc's.
"""

import os
import time
import urllib.parse

import simproc

SIM_PATH = os.path.join(simproc.SIM_DIR, "minimax_sim.py")
PYTHON = simproc.PYTHON

fingerprint = simproc.fingerprint  # how the simulator names a key in its log, tasks and stats
http = simproc.json_http


class SimError(Exception):
    pass


class Result(simproc.Answer):
    """One answer (simproc.Answer: status, headers, body, json, error);
    base_code / base_msg read base_resp."""

    def _base_resp(self, field):
        try:
            return self.json["base_resp"][field]
        except (TypeError, KeyError):
            return None

    base_code = property(lambda self: self._base_resp("status_code"))
    base_msg = property(lambda self: self._base_resp("status_msg"))

    def __repr__(self):
        return "<Result status=%s error=%s json=%s body=%r>" % (
            self.status, self.error, str(self.json)[:300] if self.json is not None else None, self.body[:80])


def request(base, method, path, key=None, body=None, timeout=10.0, headers=None):
    """One request as the bot would send it (path: below base, or a whole
    URL); returns a Result (never raises on HTTP errors, timeouts or a
    closed connection)."""
    url = path if path.startswith("http") else base + path
    return simproc.ask(Result(), method, url, key, body, headers, timeout)


# (width, height, (r, g, b) of the first pixel) of an 8-bit RGB PNG;
# ValueError when the bytes are not a valid one.
png_info = simproc.png_rgb


class MiniMaxSim(simproc.ProviderSim):
    """A running simulator process plus its control API (keys, config, log,
    stats, reset, wait_stats: simproc.ProviderSim). base_url has no /v1:
    the bot adds the paths."""

    error = SimError

    # -- control API of MiniMax's own: video tasks

    def tasks(self, prompt=None, key=None, task_id=None):
        """Every video task (optionally only those of one prompt / key / id)."""
        return self.get("/_sim/tasks?" + self._q(prompt, key, task_id))["tasks"]

    def submits(self, prompt=None, key=None):
        """Video submits per (key, prompt): {key_fingerprint, prompt, count, accepted, task_ids}."""
        return self.get("/_sim/tasks?" + self._q(prompt, key, None))["submits"]

    def submit_count(self, prompt, key=None):
        """How many POST /v1/video_generation with exactly this prompt (and key) reached the simulator."""
        return sum(s["count"] for s in self.submits(prompt, key))

    def force_task(self, task_id, status, code=0):
        """Put a task in a state now (status Success/Fail/...; code: base_resp on Fail)."""
        return self.post("/_sim/tasks", {"task_id": task_id, "status": status, "code": code})["task"]

    def release_task(self, task_id):
        return self.post("/_sim/tasks", {"task_id": task_id, "release": True})["task"]

    @staticmethod
    def _q(prompt, key, task_id):
        q = {}
        if prompt is not None:
            q["prompt"] = prompt
        if key is not None:
            q["key_fingerprint"] = fingerprint(key)
        if task_id is not None:
            q["task_id"] = task_id
        return urllib.parse.urlencode(q)

    # -- acting as the bot

    def request(self, method, path, key=None, body=None, **kw):
        return request(self.base_url, method, path, key, body, **kw)

    def image(self, key, prompt, model="image-01", timeout=10.0, **fields):
        body = dict(fields, model=model, prompt=prompt)
        return self.request("POST", "/v1/image_generation", key, body, timeout=timeout)

    def video_submit(self, key, prompt, model="MiniMax-Hailuo-02", timeout=10.0, **fields):
        body = dict(fields, model=model)
        if prompt is not None:
            body["prompt"] = prompt
        return self.request("POST", "/v1/video_generation", key, body, timeout=timeout)

    def video_query(self, key, task_id, timeout=10.0):
        return self.request("GET", "/v1/query/video_generation?" + urllib.parse.urlencode({"task_id": task_id}),
                            key, timeout=timeout)

    def file_retrieve(self, key, file_id, timeout=10.0):
        return self.request("GET", "/v1/files/retrieve?" + urllib.parse.urlencode({"file_id": file_id}), key,
                            timeout=timeout)

    def download(self, url, timeout=30.0):
        return request(self.base_url, "GET", url, timeout=timeout)

    def wait_video(self, key, task_id, timeout=20.0, interval=0.05):
        """Poll until Success or Fail; returns (last Result, statuses seen in order)."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            r = self.video_query(key, task_id)
            st = (r.json or {}).get("status")
            if not seen or seen[-1] != st:
                seen.append(st)
            if st in ("Success", "Fail") or r.base_code not in (0, None) and st is None:
                return r, seen
            if time.monotonic() > deadline:
                raise AssertionError("video task %s still %s after %gs" % (task_id, st, timeout))
            time.sleep(interval)


def start(t=None, keys=None, config=None, args=(), timeout=15.0, log_path=None):
    """Start a simulator on a free port and wait for `SIM READY`. keys:
    {key: behaviour}. With a harness TestContext `t` it is stopped at
    teardown and its stderr goes to t.tmp/minimax-sim-*.log."""
    return simproc.start_provider(MiniMaxSim, SIM_PATH, "minimax-sim", "minimax simulator", t, keys, config,
                                  args, timeout, log_path)
