#!/usr/bin/python3
"""An OpenAI-compatible chat server for black-box tests, on one TCP port of
127.0.0.1, in one asyncio process (no thread per request: thousands of
streams at once are cheap).

    /usr/bin/python3 tests/sim/openai_sim.py --port 0 [--key KEY ...] [--verbose]

prints one line `SIM READY port=NNNN` on stdout once it listens, logs to
stderr and exits 0 on SIGTERM/SIGINT.

  /v1/chat/completions   chat, plain JSON or Server-Sent Events
  /v1/moderations        flags input holding a trigger word
  /v1/models             one model
  /_sim/...              the control API the tests use (README-openai.md)

Python 3 standard library only. The OpenAI facts it follows are in
/work/shared/reference/providers.md.
"""

import asyncio
import collections
import json
import math
import secrets
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (as tests/run.py)
import simhttp  # noqa: E402
from simhttp import BadControl, jdump, response_head, send_json  # noqa: E402

simhttp.NAME = "openai-sim"

BEHAVIOURS = ("ok", "401", "429_rate", "429_quota", "500", "hang", "break")

# Options a key may carry besides its behaviour (POST /_sim/keys).
KEY_OPTIONS = {
    "hang_after_chunks": None,    # hang: stream this many chunks first (None: answer nothing)
    "break_after_chunks": 2,      # break: chunks sent before the connection is closed
    "retry_after_ms": 1200,       # 429_rate: retry-after-ms (retry-after is its ceiling in s)
    "remaining": None,            # misbehave this many times, then act as "ok" (None: always)
    "chunk_chars": None,          # delivery overrides for this key (None: the global config)
    "delay_ms": None,
    "split_bytes": None,
}

DEFAULT_CONFIG = {
    "chunk_chars": 8,             # characters per content delta
    "delay_ms": 0,                # sleep between stream chunks (non-stream: once)
    "split_bytes": 0,             # >0: body bytes go out in pieces of this size
    "split_sleep_ms": 1,          # sleep after each split piece
    "transfer": "chunked",        # stream framing: "chunked" or "close" (no length, EOF ends)
    "moderation_trigger": "FLAGME",
    "moderation_category": "harassment",
    "default_answer": None,       # fixed answer text instead of the echo
    "model": "gpt-4o-mini",       # listed by /v1/models
    "strict_model": False,        # other model names -> 404 model_not_found
    "max_context_chars": 0,       # >0: longer prompts -> 400 context_length_exceeded
    "accept_any_key": False,      # unknown keys act as "ok" (like a local server)
    "ratelimit_headers": True,    # x-ratelimit-* on answers
    "limit_requests": 5000,       # per key and minute (headers; enforced only if enforce_rate_limits)
    "limit_tokens": 2000000,
    "enforce_rate_limits": False,
    "obfuscation": True,          # an unknown "obfuscation" field in every other chunk
    "separate_finish_chunk": False,  # finish_reason in its own empty-delta chunk (as OpenAI does)
    "log_max_entries": 100000,
    "log_messages": True,         # keep the request messages in the log
}

MOD_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                  "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent",
                  "sexual", "sexual/minors", "violence", "violence/graphic")

def has_hangul(s):
    return any("\uac00" <= c <= "\ud7a3" or "\u1100" <= c <= "\u11ff" or "\u3130" <= c <= "\u318f" for c in s)


def tokens_of(text):
    """The sim's token count: one token per started 4 characters."""
    return (len(text) + 3) // 4


def duration(seconds):
    """OpenAI's reset format: 12ms, 1s, 51.2s, 6m0s."""
    if seconds < 1:
        return "%dms" % max(0, int(seconds * 1000))
    if seconds < 60:
        s = ("%.1f" % seconds).rstrip("0").rstrip(".")
        return s + "s"
    return "%dm%ds" % (seconds // 60, seconds % 60)


class ApiError(Exception):
    def __init__(self, status, message, type_, code=None, param=None, headers=()):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = list(headers)

    def body(self):
        return jdump({"error": {"message": self.message, "type": self.type, "param": self.param,
                                "code": self.code}}).encode()


def bad_request(message, param=None, code=None):
    return ApiError(400, message, "invalid_request_error", code, param)


# ----------------------------------------------------------------------------
# State


class KeyState(simhttp.KeyState):
    __slots__ = ("window_start", "req_count", "tok_count")
    OPTIONS = KEY_OPTIONS

    def __init__(self, key, behaviour="ok", opts=None):
        super().__init__(key, behaviour, opts)
        self.window_start = 0.0
        self.req_count = 0
        self.tok_count = 0


# ----------------------------------------------------------------------------
# The OpenAI side


def validate_chat(body):
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter", "model", "missing_required_parameter"
                          if model is None else "invalid_type")
    msgs = body.get("messages")
    if not isinstance(msgs, list):
        raise bad_request("Missing required parameter: 'messages'." if msgs is None
                          else "Invalid type for 'messages': expected an array.", "messages",
                          "missing_required_parameter" if msgs is None else "invalid_type")
    if not msgs:
        raise bad_request("Invalid 'messages': empty array. Expected an array with minimum length 1.",
                          "messages", "empty_array")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise bad_request("Invalid type for 'messages[%d]': expected an object." % i,
                              "messages[%d]" % i, "invalid_type")
        if m.get("role") not in ("system", "user", "assistant"):
            raise bad_request("Invalid value: %r. Supported values are: 'system', 'user' and 'assistant'."
                              % m.get("role"), "messages[%d].role" % i, "invalid_value")
        if not isinstance(m.get("content"), str):
            raise bad_request("Invalid type for 'messages[%d].content': expected a string." % i,
                              "messages[%d].content" % i, "invalid_type")
    if "stream" in body and not isinstance(body["stream"], bool) and body["stream"] is not None:
        raise bad_request("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict):
            raise bad_request("Invalid type for 'stream_options': expected an object.", "stream_options",
                              "invalid_type")
        if not body.get("stream"):
            raise bad_request("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                              "stream_options", "invalid_value")
    for name in ("max_completion_tokens", "max_tokens"):
        v = body.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise bad_request("Invalid '%s': expected an integer of at least 1." % name, name, "invalid_value")
    t = body.get("temperature")
    if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t <= 2):
        raise bad_request("Invalid 'temperature': expected a number between 0 and 2.", "temperature",
                          "invalid_value")
    if "user" in body and body["user"] is not None and not isinstance(body["user"], str):
        raise bad_request("Invalid type for 'user': expected a string.", "user", "invalid_type")
    return model, msgs


class Api:
    def __init__(self, sim):
        self.sim = sim

    def auth(self, req):
        """(key state or None, fingerprint or None). Raises 401."""
        h = req.header("authorization")
        if not h.lower().startswith("bearer ") or not h[7:].strip():
            raise ApiError(401, "You didn't provide an API key. You need to provide your API key in an "
                           "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                           "invalid_request_error", None)
        key = h[7:].strip()
        ks = self.sim.keys.get(key)
        fp = simhttp.fingerprint(key)
        if ks is None and self.sim.cfg["accept_any_key"]:
            ks = self.sim.keys[key] = KeyState(key)
        return ks, fp

    def misbehaviour(self, ks):
        """The behaviour to act out for this request (counts "remaining")."""
        if ks is None:
            return "401"
        b = ks.active()
        if b != "ok":
            ks.served += 1
        return b

    def error_for(self, behaviour, ks):
        if behaviour == "401":
            return ApiError(401, "Incorrect API key provided. You can find your API key at "
                            "https://platform.openai.com/account/api-keys.", "invalid_request_error",
                            "invalid_api_key")
        if behaviour == "429_rate":
            ms = int(ks.opts.get("retry_after_ms") or 0)
            return ApiError(429, "Rate limit reached for requests. Please try again in %s." % duration(ms / 1000),
                            "requests", "rate_limit_exceeded",
                            headers=[("retry-after-ms", str(ms)), ("retry-after", str(max(1, math.ceil(ms / 1000))))])
        if behaviour == "429_quota":
            return ApiError(429, "You exceeded your current quota, please check your plan and billing details.",
                            "insufficient_quota", "insufficient_quota")
        if behaviour == "500":
            return ApiError(500, "The server had an error while processing your request. Sorry about that!",
                            "server_error", None)
        return None

    async def handle(self, req, reader, writer):
        """Answer one /v1 request; returns False when the connection must end."""
        sim = self.sim
        try:
            ks, fp = self.auth(req)
        except ApiError as e:
            ent = sim.new_entry(req, None)
            return await self.send_error(writer, ent, e, None)
        ent = sim.new_entry(req, fp)
        try:
            route = (req.method, req.path.rstrip("/"))
            known = route in (("POST", "/v1/chat/completions"), ("POST", "/v1/moderations"), ("GET", "/v1/models")) \
                or (req.method == "GET" and route[1].startswith("/v1/models/"))
            if not known:
                raise ApiError(404, "Invalid URL (%s %s)" % (req.method, req.path), "invalid_request_error", None)
            # authentication comes first: a bad key is refused before the body is looked at
            behaviour = self.misbehaviour(ks)
            ent["behaviour"] = behaviour
            if behaviour == "401":
                return await self.send_error(writer, ent, self.error_for("401", ks), ks)
            if route == ("POST", "/v1/chat/completions"):
                return await self.chat(req, reader, writer, ent, ks, behaviour)
            if route == ("POST", "/v1/moderations"):
                return await self.moderation(req, reader, writer, ent, ks, behaviour)
            if route == ("GET", "/v1/models"):
                err = self.error_for(behaviour, ks)
                if err:
                    return await self.send_error(writer, ent, err, ks)
                body = jdump({"object": "list", "data": [self.model_obj(sim.cfg["model"])]}).encode()
                return await self.send_json(writer, ent, 200, body, ks)
            if req.path.rstrip("/").startswith("/v1/models/") and req.method == "GET":
                name = req.path.rstrip("/")[len("/v1/models/"):]
                if name != sim.cfg["model"]:
                    raise ApiError(404, "The model `%s` does not exist or you do not have access to it." % name,
                                   "invalid_request_error", "model_not_found", "model")
                return await self.send_json(writer, ent, 200, jdump(self.model_obj(name)).encode(), ks)
        except ApiError as e:
            return await self.send_error(writer, ent, e, ks)

    def model_obj(self, name):
        return {"id": name, "object": "model", "created": int(self.sim.started_at), "owned_by": "openai-sim"}

    def parse_json(self, req):
        try:
            return json.loads(req.body.decode("utf-8")) if req.body else None
        except (ValueError, UnicodeDecodeError) as e:
            raise bad_request("We could not parse the JSON body of your request. (%s)" % e)

    async def send_json(self, writer, ent, status, body, ks, extra=(), tokens=0):
        headers = [("Content-Type", "application/json"), ("x-request-id", ent["request_id"]),
                   ("openai-processing-ms", "1")] + self.sim.ratelimit_headers(ks, tokens) + list(extra)
        self.sim.finish(ent, status)
        return await simhttp.send(writer, status, headers, body)

    async def send_error(self, writer, ent, err, ks):
        ent["error_code"] = err.code
        return await self.send_json(writer, ent, err.status, err.body(), ks, err.headers)

    async def hang(self, reader, ent):
        """Keep the connection open, answer nothing, until the client leaves."""
        ent["hung"] = True
        return await simhttp.hang(reader)

    # -- chat

    def answer_for(self, msgs):
        sim = self.sim
        finish = "stop"
        if sim.script:
            a = sim.script.popleft()
            if isinstance(a, dict):
                return str(a.get("text", "")), a.get("finish_reason") or "stop", True
            return str(a), finish, True
        if sim.cfg["default_answer"] is not None:
            return str(sim.cfg["default_answer"]), finish, False
        last = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")
        text = ("답변: " if has_hangul(last) else "Answer: ") + last
        others = [m for m in msgs if m["role"] != "system"]
        if len(others) > 1:
            text += "\n(context: %d messages)" % len(msgs)
        return text, finish, False

    async def chat(self, req, reader, writer, ent, ks, behaviour):
        sim = self.sim
        body = self.parse_json(req)
        model, msgs = validate_chat(body)
        stream = bool(body.get("stream"))
        include_usage = bool(stream and (body.get("stream_options") or {}).get("include_usage"))
        max_tok = body.get("max_completion_tokens") or body.get("max_tokens")
        ent.update({"model": model, "stream": stream, "include_usage": include_usage,
                    "max_tokens": max_tok, "temperature": body.get("temperature"), "user": body.get("user"),
                    "message_count": len(msgs), "chunks": 0})
        if sim.cfg["log_messages"]:
            ent["messages"] = [{"role": m["role"], "content": m["content"]} for m in msgs]
        err = self.error_for(behaviour, ks)
        if err:
            return await self.send_error(writer, ent, err, ks)
        if sim.cfg["strict_model"] and model != sim.cfg["model"]:
            raise ApiError(404, "The model `%s` does not exist or you do not have access to it." % model,
                           "invalid_request_error", "model_not_found", "model")
        prompt_chars = sum(len(m["content"]) for m in msgs)
        limit = int(sim.cfg["max_context_chars"] or 0)
        if limit and prompt_chars > limit:
            raise bad_request("This model's maximum context length is %d tokens. However, your messages "
                              "resulted in %d tokens." % (tokens_of("x" * limit), tokens_of("x" * prompt_chars)),
                              "messages", "context_length_exceeded")
        if sim.over_limit(ks):
            return await self.send_error(writer, ent, self.error_for("429_rate", ks), ks)
        if behaviour == "hang" and (not stream or ks.opts.get("hang_after_chunks") is None):
            sim.finish(ent, "hang")
            return await self.hang(reader, ent)
        text, finish, scripted = self.answer_for(msgs)
        if max_tok and tokens_of(text) > max_tok:
            text, finish = text[:max_tok * 4], "length"
        prompt_tokens = sum(tokens_of(m["content"]) + 4 for m in msgs)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens_of(text),
                 "total_tokens": prompt_tokens + tokens_of(text)}
        ent.update({"scripted": scripted, "answer_chars": len(text), "finish_reason": finish})
        cid = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        if not stream:
            delay = sim.delivery(ks, "delay_ms")
            if delay:
                await asyncio.sleep(delay / 1000)
            obj = {"id": cid, "object": "chat.completion", "created": created, "model": model,
                   "system_fingerprint": "fp_sim",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                                "logprobs": None, "finish_reason": finish}],
                   "usage": usage, "service_tier": "default"}
            data = jdump(obj).encode()
            if behaviour == "break":
                head = response_head(200, [("Content-Type", "application/json"),
                                           ("x-request-id", ent["request_id"])], len(data))
                sim.finish(ent, "break")
                writer.write(head + data[:len(data) // 2])
                await writer.drain()
                return False
            return await self.send_json(writer, ent, 200, data, ks, tokens=usage["total_tokens"])
        return await self.stream(writer, reader, ent, ks, behaviour, cid, created, model, text, finish,
                                 usage, include_usage)

    def events(self, cid, created, model, text, finish, usage, include_usage, chunk_chars):
        """The SSE events of one answer, as bytes, in order."""
        sim = self.sim
        pre = '{"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,"system_fingerprint":"fp_sim",' \
              '"choices":[{"index":0,"delta":' % (cid, created, jdump(model))
        tail_usage = ',"usage":null' if include_usage else ""
        obf = sim.cfg["obfuscation"]
        n = [0]

        def ev(delta, fin):
            n[0] += 1
            extra = ',"obfuscation":"%s"' % secrets.token_hex(3) if obf and n[0] % 2 == 0 else ""
            s = pre + delta + ',"logprobs":null,"finish_reason":%s}]%s%s}' % (
                "null" if fin is None else '"%s"' % fin, tail_usage, extra)
            return b"data: " + s.encode("utf-8") + b"\n\n"

        yield ev('{"role":"assistant","content":"","refusal":null}', None)
        step = max(1, int(chunk_chars))
        pieces = [text[i:i + step] for i in range(0, len(text), step)]
        sep = sim.cfg["separate_finish_chunk"]
        for i, p in enumerate(pieces):
            last = i == len(pieces) - 1
            yield ev('{"content":%s}' % jdump(p), finish if last and not sep else None)
        if sep or not pieces:
            yield ev("{}", finish)
        if include_usage:
            s = '{"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,"system_fingerprint":"fp_sim",' \
                '"choices":[],"usage":%s%s}' % (cid, created, jdump(model), jdump(usage),
                                                ',"obfuscation":"%s"' % secrets.token_hex(4) if obf else "")
            yield b"data: " + s.encode("utf-8") + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def stream(self, writer, reader, ent, ks, behaviour, cid, created, model, text, finish, usage,
                     include_usage):
        sim = self.sim
        chunked = sim.cfg["transfer"] != "close"
        headers = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
                   ("x-request-id", ent["request_id"]), ("openai-processing-ms", "1")] + \
            sim.ratelimit_headers(ks, usage["total_tokens"])
        writer.write(response_head(200, headers, chunked=chunked, close=not chunked))
        sim.finish(ent, 200)
        sim.active_streams += 1
        sim.streams_started += 1
        sim.max_streams = max(sim.max_streams, sim.active_streams)
        delay = float(sim.delivery(ks, "delay_ms") or 0) / 1000
        split = int(sim.delivery(ks, "split_bytes") or 0)
        split_sleep = float(sim.cfg["split_sleep_ms"] or 0) / 1000
        stop_after = None
        if behaviour == "hang":
            stop_after = int(ks.opts.get("hang_after_chunks") or 0)
        elif behaviour == "break":
            stop_after = int(ks.opts.get("break_after_chunks") or 0)

        def frame(b):
            return b"%x\r\n%s\r\n" % (len(b), b) if chunked else b

        try:
            await writer.drain()
            pending = b""
            for i, ev in enumerate(self.events(cid, created, model, text, finish, usage, include_usage,
                                               sim.delivery(ks, "chunk_chars"))):
                if stop_after is not None and i >= stop_after:
                    break
                if i and delay:
                    await asyncio.sleep(delay)
                if split > 0:
                    pending += ev
                    while len(pending) >= split:
                        writer.write(frame(pending[:split]))
                        pending = pending[split:]
                        await writer.drain()
                        await asyncio.sleep(split_sleep)
                else:
                    writer.write(frame(ev))
                    await writer.drain()
                ent["chunks"] += 1
                sim.chunks_sent += 1
            else:
                if pending:
                    writer.write(frame(pending))
                if chunked:
                    writer.write(b"0\r\n\r\n")
                await writer.drain()
                ent["outcome"] = "completed"
                sim.by_outcome["completed"] += 1
                sim.streams_completed += 1
                return chunked
            if pending:  # the cut-off stream still delivers what it had
                writer.write(frame(pending))
                await writer.drain()
            ent["outcome"] = behaviour
            sim.by_outcome[behaviour] += 1
            if behaviour == "hang":
                return await self.hang(reader, ent)
            return False
        except (ConnectionError, OSError):
            ent["outcome"] = "client_gone"
            sim.by_outcome["client_gone"] += 1
            return False
        finally:
            sim.active_streams -= 1

    # -- moderation

    async def moderation(self, req, reader, writer, ent, ks, behaviour):
        sim = self.sim
        body = self.parse_json(req)
        if not isinstance(body, dict) or "input" not in body:
            raise bad_request("Missing required parameter: 'input'.", "input", "missing_required_parameter")
        inp = body["input"]
        items = [inp] if isinstance(inp, str) else inp
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items) or not items:
            raise bad_request("Invalid 'input': expected a string or an array of strings.", "input",
                              "invalid_type")
        model = body.get("model") or "omni-moderation-latest"
        ent.update({"model": model, "inputs": len(items)})
        if sim.cfg["log_messages"]:
            ent["input"] = items
        err = self.error_for(behaviour, ks)
        if err:
            return await self.send_error(writer, ent, err, ks)
        if behaviour == "hang":
            sim.finish(ent, "hang")
            return await self.hang(reader, ent)
        trigger = sim.cfg["moderation_trigger"] or ""
        cat = sim.cfg["moderation_category"]
        results = []
        for x in items:
            hit = bool(trigger) and trigger.lower() in x.lower()
            sim.flagged += hit
            results.append({"flagged": hit,
                            "categories": {c: hit and c == cat for c in MOD_CATEGORIES},
                            "category_scores": {c: (0.97 if hit and c == cat else 0.0001) for c in MOD_CATEGORIES},
                            "category_applied_input_types": {c: ["text"] for c in MOD_CATEGORIES}})
        ent["flagged"] = [r["flagged"] for r in results]
        data = jdump({"id": "modr-" + secrets.token_hex(8), "model": model, "results": results}).encode()
        if behaviour == "break":
            sim.finish(ent, "break")
            writer.write(response_head(200, [("Content-Type", "application/json")], len(data)) + data[:10])
            await writer.drain()
            return False
        return await self.send_json(writer, ent, 200, data, ks, tokens=sum(tokens_of(x) for x in items))


# ----------------------------------------------------------------------------
# Control API


class Control(simhttp.Control):
    ROUTES = {**simhttp.Control.ROUTES, ("POST", "/_sim/script"): "set_script", ("GET", "/_sim/script"): "get_script"}
    BEHAVIOURS = BEHAVIOURS
    BASE_PATH = "/v1"

    def about(self):
        return {"model": self.sim.cfg["model"]}

    def check_config(self, k, v):
        if k == "transfer" and v not in ("chunked", "close"):
            raise BadControl("transfer is 'chunked' or 'close'")

    def keep_key_state(self, old, ks, item):  # the rate-limit window
        ks.window_start, ks.req_count, ks.tok_count = old.window_start, old.req_count, old.tok_count

    def set_script(self, req, body):
        sim = self.sim
        answers = body.get("answers")
        if not isinstance(answers, list):
            raise BadControl("answers is a list of strings or {text, finish_reason}")
        for a in answers:
            if not isinstance(a, (str, dict)):
                raise BadControl("answers is a list of strings or {text, finish_reason}")
        if body.get("replace"):
            sim.script.clear()
        sim.script.extend(answers)
        return {"queued": len(sim.script)}

    def get_script(self, req, body):
        return {"queued": len(self.sim.script)}

    def stats(self, req, body):
        sim = self.sim
        return {"requests": sim.requests, "by_status": dict(sim.by_status), "by_key_fingerprint": dict(sim.by_key),
                "by_path": dict(sim.by_path), "active_streams": sim.active_streams,
                "max_concurrent_streams": sim.max_streams, "stream_outcomes": dict(sim.by_outcome),
                "streams_started": sim.streams_started,
                "streams_completed": sim.streams_completed, "chunks_sent": sim.chunks_sent,
                "script_queued": len(sim.script), "moderation_flagged": sim.flagged,
                "open_connections": len(sim.writers), "sim_errors": sim.sim_errors}


# ----------------------------------------------------------------------------
# Server


class Sim(simhttp.ProviderSim):
    DEFAULTS, Key, Api, Control = DEFAULT_CONFIG, KeyState, Api, Control
    backlog = 4096

    def reset(self, keep_keys=False, keep_config=False):
        super().reset(keep_keys, keep_config)
        self.script = collections.deque()
        self.by_outcome = collections.Counter()
        self.max_streams = getattr(self, "active_streams", 0)
        self.active_streams = getattr(self, "active_streams", 0)
        self.streams_started = 0
        self.streams_completed = 0
        self.chunks_sent = 0
        self.flagged = 0

    def refusal(self, e):
        return [("Content-Type", "application/json")], ApiError(e.status, e.text, "invalid_request_error").body()

    async def route(self, req, reader, writer):
        if req.path == "/v1" or req.path.startswith("/v1/"):
            return await self.api.handle(req, reader, writer)
        return await send_json(writer, 404, ApiError(404, "Invalid URL (%s %s)" % (req.method, req.path),
                                                     "invalid_request_error").body())

    def new_entry(self, req, fp):
        return super().new_entry(req, fp, request_id="req_" + secrets.token_hex(12))

    def finish(self, e, status):
        e["status"] = status
        self.by_status[str(status)] += 1

    def ratelimit_headers(self, ks, tokens):
        if not self.cfg["ratelimit_headers"] or ks is None:
            return []
        now = time.monotonic()
        if now - ks.window_start >= 60.0:
            ks.window_start, ks.req_count, ks.tok_count = now, 0, 0
        ks.req_count += 1
        ks.tok_count += tokens
        lr, lt = int(self.cfg["limit_requests"]), int(self.cfg["limit_tokens"])
        left = max(0.0, 60.0 - (now - ks.window_start))
        per_req = 60.0 / max(1, lr)
        per_tok = 60.0 / max(1, lt)
        return [("x-ratelimit-limit-requests", str(lr)), ("x-ratelimit-limit-tokens", str(lt)),
                ("x-ratelimit-remaining-requests", str(max(0, lr - ks.req_count))),
                ("x-ratelimit-remaining-tokens", str(max(0, lt - ks.tok_count))),
                ("x-ratelimit-reset-requests", duration(min(left, per_req * ks.req_count))),
                ("x-ratelimit-reset-tokens", duration(min(left, per_tok * max(1, ks.tok_count))))]

    def over_limit(self, ks):
        if not self.cfg["enforce_rate_limits"] or ks is None:
            return False
        if time.monotonic() - ks.window_start >= 60.0:
            return False
        return ks.req_count >= int(self.cfg["limit_requests"]) or ks.tok_count >= int(self.cfg["limit_tokens"])

    def delivery(self, ks, name):
        v = ks.opts.get(name) if ks is not None else None
        return self.cfg[name] if v is None else v


def main(argv=None):
    return simhttp.main(Sim, simhttp.arg_parser("OpenAI-compatible chat simulator for integration tests"), argv)


if __name__ == "__main__":
    sys.exit(main())
