"""Check Discord REST traffic against Discord's OpenAPI 3.1 spec.

The Discord simulator (discord_sim.py) runs every request the bot sends
through SpecChecker.check_request and, optionally, every answer it gives
itself through SpecChecker.check_response. Each problem found becomes a
violation: a dict {kind, method, path, route, pointer, problem}.

Where the spec and Discord's written docs disagree, the docs win
(/work/shared/reference/discord-api-spec/README.md): a few rules from the
docs are checked on top of the schema (kind "docs"), and the schema is read
leniently where the docs say Discord accepts more (a snowflake may be a JSON
integer; a big integer such as a permission bitfield may be a decimal string).

What the schema walker understands: $ref (local), type (also arrays with
"null"), enum, const, minLength/maxLength (code points), pattern,
minimum/maximum (+ exclusive), minItems/maxItems, uniqueItems, items,
properties, required, additionalProperties (false or a schema),
minProperties/maxProperties, allOf, anyOf, oneOf (both read as "at least one
branch": the spec marks its unions x-discord-union), format date-time /
int64 / snowflake. Other keywords are ignored.

Python 3 standard library only. Run this file to run its self-test:

    /usr/bin/python3 tests/sim/openapi_check.py [SPEC_PATH]
"""

import json
import os
import re
import sys
import unicodedata

# Discord's OpenAPI spec, vendored with its MIT license in tests/sim/spec/;
# DISCORD_OPENAPI_SPEC points at another copy.
DEFAULT_SPEC = os.environ.get("DISCORD_OPENAPI_SPEC") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "spec", "openapi.json")

_MISSING = object()
_BIG_INT = 2 ** 53
_DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
_FILE_PART = re.compile(r"^files\[(\d+)\]$")

# Routes whose bodies carry message content, and those carrying commands,
# as the spec spells their templates. The docs rules key on these.
MESSAGE_ROUTES = {
    ("POST", "/channels/{channel_id}/messages"),
    ("PATCH", "/channels/{channel_id}/messages/{message_id}"),
    ("POST", "/webhooks/{webhook_id}/{webhook_token}"),
    ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"),
    ("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"),
}
CALLBACK_ROUTE = ("POST", "/interactions/{interaction_id}/{interaction_token}/callback")
COMMAND_LIST_ROUTES = {
    ("PUT", "/applications/{application_id}/commands"),
    ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands"),
}
COMMAND_ONE_ROUTES = {
    ("POST", "/applications/{application_id}/commands"),
    ("POST", "/applications/{application_id}/guilds/{guild_id}/commands"),
    ("PATCH", "/applications/{application_id}/commands/{command_id}"),
    ("PATCH", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}"),
}

MAX_CONTENT = 2000
MAX_EMBED_TOTAL = 6000
FLAG_VOICE_MESSAGE = 1 << 13


def _jtype(v):
    """The JSON type name of a decoded value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _esc(key):
    return str(key).replace("~", "~0").replace("/", "~1")


def _short(v, n=60):
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return text if len(text) <= n else text[: n - 3] + "..."


class _Err:
    """One schema failure. kind lets anyOf pick the closest branch:
    'type' at the branch root or 'enum' on a direct child mean the branch
    was not meant for this value at all."""

    __slots__ = ("ptr", "problem", "kind", "allowed")

    def __init__(self, ptr, problem, kind="other", allowed=None):
        self.ptr, self.problem, self.kind, self.allowed = ptr, problem, kind, allowed


def _name_ok(name):
    """Discord's command-name rule from the docs:
    ^[-_'\\p{L}\\p{N}\\p{sc=Deva}\\p{sc=Thai}]{1,32}$, lowercase where a case
    exists. Python's re has no \\p{..}, so the classes are checked with
    unicodedata; Devanagari and Thai are taken by their Unicode blocks."""
    if not isinstance(name, str) or not 1 <= len(name) <= 32:
        return "must be 1-32 characters"
    for ch in name:
        if ch in "-_'":
            continue
        cat = unicodedata.category(ch)
        if cat[0] in "LN" or "\u0900" <= ch <= "\u097f" or "\u0e00" <= ch <= "\u0e7f":
            continue
        if cat[0] == "M" and ("\u0900" <= ch <= "\u097f" or "\u0e00" <= ch <= "\u0e7f"):
            continue
        return "character %r is not allowed" % ch
    if name.lower() != name:
        return "must be lowercase"
    return None


class SpecChecker:
    """The compiled spec. Loading costs ~50 ms; build one and keep it."""

    def __init__(self, spec=None):
        if spec is None or isinstance(spec, str):
            path = spec or DEFAULT_SPEC
            with open(path, "r", encoding="utf-8") as f:
                spec = json.load(f)
            self.path = path
        else:
            self.path = None
        self.spec = spec
        self._refs = {}
        self._match_cache = {}
        self._routes = []
        for template, item in spec.get("paths", {}).items():
            parts = template.strip("/").split("/")
            rx = []
            literal = 0
            for p in parts:
                m = re.fullmatch(r"\{([A-Za-z0-9_]+)\}", p)
                if m:
                    rx.append("(?P<%s>[^/]+)" % m.group(1))
                else:
                    rx.append(re.escape(p))
                    literal += 1
            regex = re.compile("^/" + "/".join(rx) + "$")
            self._routes.append((literal, len(parts), regex, template, item))
        # Most literal segments first: /messages/@original beats /messages/{id}.
        self._routes.sort(key=lambda r: (-r[0], -r[1]))

    # ---------------------------------------------------------------- lookup

    def match(self, path):
        """(template, path_item, params) for a path without the /api/v10
        prefix and without the query, or None."""
        hit = self._match_cache.get(path, _MISSING)
        if hit is not _MISSING:
            return hit
        found = None
        for _lit, _n, regex, template, item in self._routes:
            m = regex.match(path)
            if m:
                found = (template, item, m.groupdict())
                break
        if len(self._match_cache) > 20000:
            self._match_cache.clear()
        self._match_cache[path] = found
        return found

    def operation(self, method, path):
        """(template, operation, path_item, params) or None."""
        hit = self.match(path)
        if not hit:
            return None
        template, item, params = hit
        op = item.get(method.lower())
        if not isinstance(op, dict):
            return None
        return template, op, item, params

    def resolve(self, schema):
        """Follow $ref chains (local refs only)."""
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema:
            ref = schema["$ref"]
            target = self._refs.get(ref)
            if target is None:
                if not ref.startswith("#/"):
                    raise ValueError("non-local $ref %r" % ref)
                target = self.spec
                for part in ref[2:].split("/"):
                    target = target[part.replace("~1", "/").replace("~0", "~")]
                self._refs[ref] = target
            schema = target
            seen += 1
            if seen > 50:
                raise ValueError("$ref loop at %r" % ref)
        return schema

    # ------------------------------------------------------------ validation

    def validate(self, schema, value, pointer=""):
        """[(pointer, problem)] for value against schema; [] when valid."""
        errs = []
        self._v(schema, value, pointer, errs)
        return [(e.ptr, e.problem) for e in errs]

    def _v(self, schema, value, ptr, out):
        if schema is True or schema is None:
            return
        if schema is False:
            out.append(_Err(ptr, "no value is allowed here"))
            return
        if "$ref" in schema:
            target = self.resolve(schema)
            extra = {k: v for k, v in schema.items() if k != "$ref"}
            self._v(target, value, ptr, out)
            if not extra:
                return
            schema = extra
        fmt = schema.get("format")
        if "type" in schema and not self._type_ok(schema, value, fmt):
            want = schema["type"]
            want = "/".join(want) if isinstance(want, list) else want
            out.append(_Err(ptr, "expected %s, got %s %s" % (want, _jtype(value), _short(value)), "type"))
            return
        if "enum" in schema and not any(self._same(value, e) for e in schema["enum"]):
            out.append(_Err(ptr, "%s is not one of %s" % (_short(value), _short(schema["enum"], 120)),
                            "enum", list(schema["enum"])))
        if "const" in schema and not self._same(value, schema["const"]):
            out.append(_Err(ptr, "%s is not %s" % (_short(value), _short(schema["const"])),
                            "enum", [schema["const"]]))
        if isinstance(value, str):
            self._string(schema, value, ptr, out, fmt)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self._number(schema, value, ptr, out)
        elif isinstance(value, list):
            self._array(schema, value, ptr, out)
        elif isinstance(value, dict):
            self._object(schema, value, ptr, out)
        for sub in schema.get("allOf", ()):
            self._v(sub, value, ptr, out)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                self._union(schema[key], key, value, ptr, out)

    @staticmethod
    def _same(a, b):
        if isinstance(a, bool) != isinstance(b, bool):
            return False
        return a == b

    def _type_ok(self, schema, value, fmt):
        want = schema["type"]
        kinds = want if isinstance(want, list) else [want]
        got = _jtype(value)
        for k in kinds:
            if k == got:
                return True
            if k == "number" and got == "integer":
                return True
            if k == "integer" and got == "number" and float(value).is_integer():
                return True
            # Docs win: snowflakes and big bitfields travel as strings or ints.
            if k == "integer" and got == "string" and re.fullmatch(r"-?\d{1,20}", value):
                if fmt in ("int64", "snowflake") or schema.get("maximum", 0) > _BIG_INT:
                    return True
            if k == "string" and got == "integer" and fmt == "snowflake" and value >= 0:
                return True
        return False

    def _string(self, schema, value, ptr, out, fmt):
        n = len(value)  # code points
        if "minLength" in schema and n < schema["minLength"]:
            out.append(_Err(ptr, "length %d is below minLength %d" % (n, schema["minLength"])))
        if "maxLength" in schema and n > schema["maxLength"]:
            out.append(_Err(ptr, "length %d is over maxLength %d" % (n, schema["maxLength"])))
        pat = schema.get("pattern")
        if pat:
            try:
                if not re.search(pat, value):
                    out.append(_Err(ptr, "%s does not match %s" % (_short(value), pat)))
            except re.error:
                pass
        if fmt == "date-time" and not _DATE_TIME.match(value):
            out.append(_Err(ptr, "%s is not an RFC 3339 date-time" % _short(value)))
        if "minimum" in schema or "maximum" in schema:
            if re.fullmatch(r"-?\d{1,20}", value):
                self._number(schema, int(value), ptr, out)

    def _number(self, schema, value, ptr, out):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(_Err(ptr, "%s is below minimum %s" % (value, schema["minimum"])))
        if "maximum" in schema and value > schema["maximum"]:
            out.append(_Err(ptr, "%s is over maximum %s" % (value, schema["maximum"])))
        ex = schema.get("exclusiveMinimum")
        if isinstance(ex, (int, float)) and not isinstance(ex, bool) and value <= ex:
            out.append(_Err(ptr, "%s is not above %s" % (value, ex)))
        ex = schema.get("exclusiveMaximum")
        if isinstance(ex, (int, float)) and not isinstance(ex, bool) and value >= ex:
            out.append(_Err(ptr, "%s is not below %s" % (value, ex)))

    def _array(self, schema, value, ptr, out):
        n = len(value)
        if "minItems" in schema and n < schema["minItems"]:
            out.append(_Err(ptr, "%d items, minItems is %d" % (n, schema["minItems"])))
        if "maxItems" in schema and n > schema["maxItems"]:
            out.append(_Err(ptr, "%d items, maxItems is %d" % (n, schema["maxItems"])))
        if schema.get("uniqueItems") and n > 1:
            seen = set()
            for item in value:
                key = json.dumps(item, sort_keys=True)
                if key in seen:
                    out.append(_Err(ptr, "items are not unique (%s twice)" % _short(item)))
                    break
                seen.add(key)
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                self._v(items, item, "%s/%d" % (ptr, i), out)

    def _object(self, schema, value, ptr, out):
        props = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                out.append(_Err(ptr + "/" + _esc(name), "required property is missing", "required"))
        n = len(value)
        if "minProperties" in schema and n < schema["minProperties"]:
            out.append(_Err(ptr, "%d properties, minProperties is %d" % (n, schema["minProperties"])))
        if "maxProperties" in schema and n > schema["maxProperties"]:
            out.append(_Err(ptr, "%d properties, maxProperties is %d" % (n, schema["maxProperties"])))
        addl = schema.get("additionalProperties", True)
        for name, sub in value.items():
            p = ptr + "/" + _esc(name)
            if name in props:
                self._v(props[name], sub, p, out)
            elif addl is False:
                out.append(_Err(p, "property is not allowed here (additionalProperties is false)"))
            elif isinstance(addl, dict):
                self._v(addl, sub, p, out)

    def _union(self, branches, key, value, ptr, out):
        results = []
        for i, b in enumerate(branches):
            errs = []
            self._v(b, value, ptr, errs)
            if not errs:
                return
            results.append((self._distance(errs, ptr), i, b, errs))
        results.sort(key=lambda r: r[0])
        best = results[0]
        ties = [r for r in results if r[0] == best[0]]
        enum_only = all(
            all(e.kind == "enum" for e in r[3]) and len({e.ptr for e in r[3]}) == 1 for r in ties
        ) and len({r[3][0].ptr for r in ties}) == 1
        if len(ties) > 1 and enum_only:
            allowed = []
            for r in ties:
                for e in r[3]:
                    for a in e.allowed or ():
                        if a not in allowed:
                            allowed.append(a)
            e0 = ties[0][3][0]
            out.append(_Err(e0.ptr, "matches no branch of %s: value must be one of %s"
                            % (key, _short(allowed, 200)), "enum", allowed))
            return
        same = {tuple((e.ptr, e.problem) for e in r[3]) for r in ties}
        if len(ties) > 1 and len(same) == 1:
            # Every candidate fails the same way: say it once, plainly.
            out.extend(ties[0][3])
            return
        name = best[2].get("$ref", "").rsplit("/", 1)[-1] if isinstance(best[2], dict) else ""
        label = "%s branch %d%s" % (key, best[1], " (%s)" % name if name else "")
        for e in best[3]:
            out.append(_Err(e.ptr, "%s [closest: %s]" % (e.problem, label), e.kind, e.allowed))

    @staticmethod
    def _distance(errs, ptr):
        """Sort key: how far a branch is from fitting the value."""
        depth = ptr.count("/")
        root_type = sum(1 for e in errs if e.kind == "type" and e.ptr == ptr)
        discr = sum(1 for e in errs if e.kind in ("enum", "type") and e.ptr != ptr
                    and e.ptr.count("/") == depth + 1)
        return (root_type, discr, len(errs))

    # --------------------------------------------------------------- requests

    def _violation(self, kind, method, path, route, pointer, problem):
        return {"kind": kind, "method": method, "path": path, "route": route,
                "pointer": pointer, "problem": problem}

    def check_request(self, method, path, query=None, content_type=None, body=_MISSING,
                      parts=None):
        """Violations of one request.

        path: without /api/v10 and without the query. query: {name: [values]}.
        content_type: the media type without parameters (or None). body: the
        decoded JSON body (for multipart: payload_json decoded), _MISSING when
        the request had no body. parts: for multipart, [{name, filename, size}]
        of every part (payload_json included)."""
        method = method.upper()
        out = []
        found = self.operation(method, path)
        if found is None:
            hit = self.match(path)
            problem = ("method %s is not defined for %s" % (method, hit[0]) if hit
                       else "route is not in the spec")
            return [self._violation("unknown_route", method, path, hit[0] if hit else None,
                                    "", problem)]
        template, op, item, params = found

        def add(kind, pointer, problem):
            out.append(self._violation(kind, method, path, template, pointer, problem))

        declared = {}
        for p in list(item.get("parameters", ())) + list(op.get("parameters", ())):
            p = self.resolve(p)
            declared[(p.get("in"), p.get("name"))] = p
        for name, value in params.items():
            p = declared.get(("path", name))
            if p:
                for ptr, prob in self.validate(p.get("schema", {}), value, "{%s}" % name):
                    add("path_param", ptr, prob)
        for name, values in (query or {}).items():
            p = declared.get(("query", name))
            if p is None:
                add("query", "?" + name, "query parameter is not defined for this operation")
                continue
            sch = self.resolve(p.get("schema", {}))
            for v in values:
                coerced = self._coerce_query(sch, v)
                for ptr, prob in self.validate(sch, coerced, "?" + name):
                    add("query", ptr, prob)
        rb = op.get("requestBody")
        rb = self.resolve(rb) if rb else None
        if body is _MISSING:
            if rb and rb.get("required"):
                add("schema", "", "request body is required")
            return out
        if rb is None:
            add("schema", "", "this operation takes no request body")
            return out
        content = rb.get("content", {})
        schema = None
        if content_type == "multipart/form-data":
            mp = content.get("multipart/form-data")
            if mp is None:
                add("content_type", "", "multipart/form-data is not accepted here")
            else:
                schema = self._payload_json_schema(mp.get("schema", {}))
            if schema is None:
                schema = (content.get("application/json") or {}).get("schema")
            for part in parts or ():
                name = part.get("name")
                m = _FILE_PART.match(name or "")
                if name == "payload_json":
                    continue
                if m is None:
                    add("multipart", "<part %s>" % name, "unexpected multipart part")
                elif int(m.group(1)) > 9:
                    add("multipart", "<part %s>" % name, "at most files[0]..files[9]")
        else:
            media = content.get(content_type or "")
            if media is None:
                add("content_type", "", "content type %r is not accepted (want one of %s)"
                    % (content_type, ", ".join(sorted(content))))
                media = content.get("application/json", {})
            schema = media.get("schema")
        if schema is not None:
            for ptr, prob in self.validate(schema, body, ""):
                add("schema", ptr, prob)
        for ptr, prob in docs_rules(method, template, body, parts):
            add("docs", ptr, prob)
        return out

    def _payload_json_schema(self, schema):
        """The schema of the payload_json part when the multipart schema names
        one; None otherwise (the caller then uses the JSON body schema)."""
        schema = self.resolve(schema)
        stack = [schema]
        while stack:
            s = self.resolve(stack.pop())
            if not isinstance(s, dict):
                continue
            pj = s.get("properties", {}).get("payload_json")
            if pj is not None:
                return pj
            stack.extend(s.get("allOf", ()))
        return None

    @staticmethod
    def _coerce_query(schema, v):
        t = schema.get("type")
        if t == "boolean":
            return {"true": True, "false": False, "1": True, "0": False}.get(v.lower(), v)
        if t in ("integer", "number"):
            try:
                return int(v) if t == "integer" else float(v)
            except ValueError:
                return v
        return v

    # -------------------------------------------------------------- responses

    def check_response(self, method, path, status, body=_MISSING):
        """Violations of an answer (the simulator checks its own answers)."""
        found = self.operation(method, path)
        if found is None:
            return []
        template, op, _item, _params = found
        responses = op.get("responses", {})
        resp = responses.get(str(status)) or responses.get("%dXX" % (status // 100)) \
            or responses.get("default")
        out = []
        if resp is None:
            if status < 400:
                out.append(self._violation("response", method, path, template, "",
                                           "status %d is not documented" % status))
            return out
        resp = self.resolve(resp)
        media = resp.get("content", {}).get("application/json")
        if media is None:
            if body is not _MISSING and body is not None:
                out.append(self._violation("response", method, path, template, "",
                                           "status %d has no body in the spec" % status))
            return out
        if body is _MISSING:
            out.append(self._violation("response", method, path, template, "",
                                       "status %d needs a JSON body" % status))
            return out
        errors = _MISSING
        if status >= 400 and isinstance(body, dict) and "errors" in body:
            # Docs win: field errors carry string codes ("BASE_TYPE_REQUIRED")
            # where the spec's Error says integer. Check their shape here.
            body = dict(body)
            errors = body.pop("errors")
        for ptr, prob in self.validate(media.get("schema", {}), body, ""):
            out.append(self._violation("response", method, path, template, ptr, prob))
        if errors is not _MISSING:
            for ptr, prob in _error_tree(errors, "/errors"):
                out.append(self._violation("response", method, path, template, ptr, prob))
        return out


def _error_tree(node, ptr):
    """Problems in Discord's nested field-error object: every leaf is
    {"_errors": [{"code": str, "message": str}, ...]}."""
    if not isinstance(node, dict) or not node:
        return [(ptr, "expected a non-empty object")]
    out = []
    for k, v in node.items():
        p = ptr + "/" + _esc(k)
        if k == "_errors":
            if not isinstance(v, list) or not v:
                out.append((p, "expected a non-empty array"))
                continue
            for i, e in enumerate(v):
                if not (isinstance(e, dict) and isinstance(e.get("code"), str)
                        and isinstance(e.get("message"), str)):
                    out.append(("%s/%d" % (p, i), "expected {code: string, message: string}"))
        else:
            out.extend(_error_tree(v, p))
    return out


# ------------------------------------------------------------------ docs rules


def docs_rules(method, template, body, parts=None):
    """[(pointer, problem)]: rules from Discord's written docs that the
    schema does not carry (or carries differently)."""
    key = (method.upper(), template)
    out = []
    if key in MESSAGE_ROUTES and isinstance(body, dict):
        _message_rules(body, "", out, parts, creating=(method.upper() == "POST"))
    elif key == CALLBACK_ROUTE and isinstance(body, dict):
        if body.get("type") in (4, 7) and isinstance(body.get("data"), dict):
            _message_rules(body["data"], "/data", out, parts, creating=False)
    elif key in COMMAND_LIST_ROUTES and isinstance(body, list):
        seen = set()
        for i, cmd in enumerate(body):
            if isinstance(cmd, dict):
                _command_rules(cmd, "/%d" % i, out)
                k = (cmd.get("type") or 1, cmd.get("name"))
                if k in seen:
                    out.append(("/%d/name" % i, "duplicate command name %r" % (k[1],)))
                seen.add(k)
    elif key in COMMAND_ONE_ROUTES and isinstance(body, dict):
        _command_rules(body, "", out)
    return out


def _message_rules(msg, ptr, out, parts, creating):
    content = msg.get("content")
    if isinstance(content, str) and len(content) > MAX_CONTENT:
        out.append((ptr + "/content", "content is %d characters; the docs allow %d"
                    % (len(content), MAX_CONTENT)))
    embeds = msg.get("embeds")
    if isinstance(embeds, list):
        total = 0
        for e in embeds:
            if not isinstance(e, dict):
                continue
            for k in ("title", "description"):
                if isinstance(e.get(k), str):
                    total += len(e[k])
            for k in ("footer", "author"):
                sub = e.get(k)
                if isinstance(sub, dict):
                    total += len(sub.get("text") or sub.get("name") or "")
            for f in e.get("fields") or ():
                if isinstance(f, dict):
                    total += len(str(f.get("name", ""))) + len(str(f.get("value", "")))
        if total > MAX_EMBED_TOTAL:
            out.append((ptr + "/embeds", "embeds hold %d characters together; the docs allow %d"
                        % (total, MAX_EMBED_TOTAL)))
    flags = msg.get("flags")
    files = [p for p in (parts or ()) if _FILE_PART.match(p.get("name") or "")]
    if isinstance(flags, int) and not isinstance(flags, bool) and flags & FLAG_VOICE_MESSAGE:
        atts = msg.get("attachments") or []
        if content:
            out.append((ptr + "/content", "a voice message has no content"))
        if len(atts) != 1 or (creating and len(files) != 1):
            out.append((ptr + "/attachments", "a voice message has exactly one audio attachment"))
        for i, a in enumerate(atts if isinstance(atts, list) else ()):
            if not isinstance(a, dict):
                continue
            if not isinstance(a.get("duration_secs"), (int, float)):
                out.append((ptr + "/attachments/%d/duration_secs" % i, "a voice message needs duration_secs"))
            wf = a.get("waveform")
            if not isinstance(wf, str):
                out.append((ptr + "/attachments/%d/waveform" % i, "a voice message needs a waveform"))
            else:
                import base64
                import binascii
                try:
                    n = len(base64.b64decode(wf, validate=True))
                    if n > 256:
                        out.append((ptr + "/attachments/%d/waveform" % i,
                                    "waveform holds %d samples; at most 256" % n))
                except (binascii.Error, ValueError):
                    out.append((ptr + "/attachments/%d/waveform" % i, "waveform is not base64"))
    atts = msg.get("attachments")
    if files and isinstance(atts, list):
        ids = {str(a.get("id")) for a in atts if isinstance(a, dict)}
        for p in files:
            n = _FILE_PART.match(p["name"]).group(1)
            if n not in ids:
                out.append((ptr + "/attachments", "part %s has no attachments entry with id %s"
                            % (p["name"], n)))


def _command_rules(cmd, ptr, out):
    ctype = cmd.get("type") or 1
    why = _name_ok(cmd.get("name")) if ctype == 1 else None
    if why:
        out.append((ptr + "/name", "command name %s: %s" % (_short(cmd.get("name")), why)))
    if ctype == 1:
        d = cmd.get("description")
        if not isinstance(d, str) or not 1 <= len(d) <= 100:
            out.append((ptr + "/description",
                        "a CHAT_INPUT command needs a description of 1-100 characters"))
    _options_rules(cmd.get("options"), ptr + "/options", out, 0)


def _options_rules(options, ptr, out, depth):
    if not isinstance(options, list):
        return
    if len(options) > 25:
        out.append((ptr, "%d options; at most 25" % len(options)))
    seen_optional = False
    for i, o in enumerate(options):
        if not isinstance(o, dict):
            continue
        p = "%s/%d" % (ptr, i)
        why = _name_ok(o.get("name"))
        if why:
            out.append((p + "/name", "option name %s: %s" % (_short(o.get("name")), why)))
        if o.get("type") in (1, 2):
            _options_rules(o.get("options"), p + "/options", out, depth + 1)
            continue
        if o.get("required"):
            if seen_optional:
                out.append((p + "/required", "required options must come before optional ones"))
        else:
            seen_optional = True


# ------------------------------------------------------------------ self-test


def self_test(spec_path=None, verbose=False):
    """Check the checker on known good and bad bodies. Returns a list of
    failure strings (empty = passed)."""
    c = SpecChecker(spec_path)
    fails = []

    def expect(label, violations, want):
        """want: None for 'no violations', else a list of (pointer-substring,
        problem-substring) that must each appear."""
        if verbose:
            print("%-44s %s" % (label, json.dumps([(v["pointer"], v["problem"]) for v in violations],
                                                  ensure_ascii=False)))
        if want is None:
            if violations:
                fails.append("%s: expected no violation, got %r" % (label, violations))
            return
        for wp, wprob in want:
            if not any(wp in v["pointer"] and wprob in v["problem"] for v in violations):
                fails.append("%s: expected (%r, %r) in %r" % (label, wp, wprob, violations))

    msg = "/channels/1234567890/messages"
    J = "application/json"
    expect("message: valid", c.check_request("POST", msg, {}, J, {
        "content": "hello", "embeds": [{"title": "t", "description": "d", "color": 5}],
        "allowed_mentions": {"parse": []}, "message_reference": {"message_id": "42"}}), None)
    expect("message: content too long", c.check_request("POST", msg, {}, J, {"content": "x" * 4001}),
           [("/content", "maxLength 4000")])
    expect("message: docs 2000 limit", c.check_request("POST", msg, {}, J, {"content": "é" * 2001}),
           [("/content", "docs allow 2000")])
    expect("message: content not a string", c.check_request("POST", msg, {}, J, {"content": 5}),
           [("/content", "expected string/null")])
    expect("message: 11 embeds", c.check_request("POST", msg, {}, J, {"embeds": [{}] * 11}),
           [("/embeds", "maxItems is 10")])
    expect("message: bad flags type", c.check_request("POST", msg, {}, J, {"content": "a", "flags": "x"}),
           [("/flags", "expected integer/null")])
    expect("message: attachment without id", c.check_request(
        "POST", msg, {}, "multipart/form-data", {"attachments": [{"filename": "a.png"}]},
        [{"name": "payload_json"}, {"name": "files[0]", "filename": "a.png", "size": 3}]),
        [("/attachments/0/id", "required")])
    expect("message: multipart valid", c.check_request(
        "POST", msg, {}, "multipart/form-data", {"content": "", "attachments": [{"id": 0, "filename": "a.png"}]},
        [{"name": "payload_json"}, {"name": "files[0]", "filename": "a.png", "size": 3}]), None)
    expect("message: unknown part", c.check_request(
        "POST", msg, {}, "multipart/form-data", {"content": "x"},
        [{"name": "payload_json"}, {"name": "file", "filename": "a.png", "size": 3}]),
        [("<part file>", "unexpected")])
    expect("message: bad channel id", c.check_request("POST", "/channels/abc/messages", {}, J, {"content": "a"}),
           [("{channel_id}", "does not match")])
    cmds = "/applications/123456789012345678/commands"
    good = [{"name": "chat", "description": "Talk to the bot", "type": 1,
             "default_member_permissions": "8",
             "name_localizations": {"ko": "채팅"},
             "options": [{"type": 3, "name": "prompt", "description": "what to say", "required": True,
                          "max_length": 6000},
                         {"type": 11, "name": "file", "description": "an attachment"},
                         {"type": 10, "name": "temp", "description": "0-2", "min_value": 0, "max_value": 2}]},
            {"name": "상태", "description": "status"}]
    expect("commands: valid", c.check_request("PUT", cmds, {}, J, good), None)
    expect("commands: name too long", c.check_request("PUT", cmds, {}, J, [{"name": "n" * 33, "description": "d"}]),
           [("/0/name", "maxLength 32")])
    expect("commands: missing option description", c.check_request("PUT", cmds, {}, J, [
        {"name": "chat", "description": "d", "options": [{"type": 3, "name": "prompt"}]}]),
        [("/0/options/0/description", "required property is missing")])
    expect("commands: missing command description (docs)", c.check_request("PUT", cmds, {}, J, [
        {"name": "chat"}]), [("/0/description", "CHAT_INPUT")])
    expect("commands: wrong option type", c.check_request("PUT", cmds, {}, J, [
        {"name": "chat", "description": "d", "options": [{"type": 99, "name": "p", "description": "d"}]}]),
        [("/0/options/0/type", "one of")])
    expect("commands: option type as string", c.check_request("PUT", cmds, {}, J, [
        {"name": "chat", "description": "d", "options": [{"type": "3", "name": "p", "description": "d"}]}]),
        [("/0/options/0/type", "expected integer")])
    expect("commands: uppercase name (docs)", c.check_request("PUT", cmds, {}, J, [
        {"name": "Chat", "description": "d"}]), [("/0/name", "lowercase")])
    expect("commands: not a list", c.check_request("PUT", cmds, {}, J, {"name": "chat"}),
           [("", "expected array/null")])
    expect("commands: description too long", c.check_request("PUT", cmds, {}, J, [
        {"name": "chat", "description": "d" * 101}]), [("/0/description", "maxLength 100")])
    cb = "/interactions/1234/tok/callback"
    expect("callback: valid deferred", c.check_request("POST", cb, {"with_response": ["true"]}, J,
                                                       {"type": 5, "data": {"flags": 64}}), None)
    expect("callback: bad type", c.check_request("POST", cb, {}, J, {"type": 42}), [("/type", "")])
    expect("unknown route", c.check_request("GET", "/nope/1", {}, None), [("", "not in the spec")])
    expect("unknown query", c.check_request("POST", cb, {"bogus": ["1"]}, J, {"type": 1}),
           [("?bogus", "not defined")])
    expect("response: message", c.check_response("POST", msg, 200, {
        "id": "1", "channel_id": "2", "type": 0, "content": "x", "mentions": [], "mention_roles": [],
        "attachments": [], "embeds": [], "timestamp": "2026-01-01T00:00:00.000000+00:00",
        "edited_timestamp": None, "flags": 0, "components": [], "pinned": False,
        "mention_everyone": False, "tts": False,
        "author": {"id": "3", "username": "bot", "discriminator": "0", "avatar": None,
                   "global_name": None, "public_flags": 0, "flags": 0, "bot": True,
                   "primary_guild": None}}), None)
    return fails


def main(argv):
    spec = argv[1] if len(argv) > 1 else None
    fails = self_test(spec, verbose=True)
    for f in fails:
        print("FAIL", f)
    print("self-test: %s" % ("ok" if not fails else "%d failure(s)" % len(fails)))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
