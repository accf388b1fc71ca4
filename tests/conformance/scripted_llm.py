"""A scripted OpenAI-compatible model for the agent tests (the only stand-in for a real model).

    llm = ScriptedLLM()                      # serves http://127.0.0.1:<free port>/v1 from a thread
    marker = llm.script("form", [            # -> "[script:form-1]": put it in the task text
        [{"op": "type", "target": {"id": "email"}, "text": "a@b.c"},
         {"op": "click", "target": {"text": "Send"}}],
        [{"op": "done", "output_from": r"Confirmation: (\\S+)"}],
    ])
    llm.requests(marker)                     # every request body of that script, in order

Endpoints: POST /v1/chat/completions (non-stream), GET /v1/models, GET /admin/requests?script=NAME.

A request is matched to a script by the first `[script:NAME]` marker in its user messages (the
task text, or an `extract` prompt). A script is a list of turns; a turn is a list of ops (or
`{"ops": [...], "fault": ...}`), answered as the tool calls of one reply. Ops:
  type {target, text, submit?}   click {target}   select_option {target, option}   hover {target}
  upload_file {target, file}     scroll {direction?, amount?}   press_key {key}   wait {seconds?}
  goto {url (relative to the view's URL ok)}   go_back   switch_tab {tab}   screenshot {full_page?}
  custom {name, args}            raw {name, arguments (a string is sent as is: garbage allowed)}
  done {output | output_from (a regex over the page view: group 1, or all matches with "all"), success?}
An op may set `"expect_error": true`: its `error:` result does not make the model issue it again.
A target is matched against the `[N]<tag attrs>text` lines of the last user message (the page
view): keys id, name, tag, type, role, placeholder, value, aria-label, text (visible text, exact
before substring), label (the plain text line before the field, or after a checkbox/radio), index,
and nth (which of several matches, default 0). A target that is not in the view gets a `scroll`
instead, on the same turn (at most MAX_TRIES, then `done` with success=false naming the target).

State lives in the conversation, not in the server: every tool-call id is
`call_<turn>_<op>_<try>_<n>[_s]` (n = assistant messages before, `_s` = a scroll looking for a
target). The next request reads the last assistant message's ids and their results: all ok ->
the next op/turn; a `skipped:` (page changed) or `error:` result -> that op again (try + 1). So an
identical retried request gets the identical answer.

Faults (per turn, for the first `times` requests that reach the turn; no `times` = always):
  {"fault": "http500", "times": N}      HTTP 500 with an OpenAI error body
  {"fault": "timeout", "seconds": S}    sleeps S seconds (default 30) before answering
  {"fault": "garbage"}                  200 with a body that is not a chat completion
  {"fault": "garbage_args"}             a tool call whose arguments are not JSON
Every reply has an OpenAI `usage`: prompt_tokens = len(json(messages + tools)) // 4.

Replay (`experimental_features.replay`): smoothd's one request for the answer of a replayed run
has a last user message starting with REPLAY_LINE; it is answered with the script's last turn
that holds a `done` op (its `output_from` read from that request's page view), whatever the
conversation. `llm.requests(marker)` counts these requests like any other.
"""

from __future__ import annotations

import http.server
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

MAX_TRIES = 4
REPLAY_LINE = "REPLAY: the recorded steps ran again; read the answer from the page below and call done."
MARKER_RE = re.compile(r"\[script:([A-Za-z0-9_.-]+)\]")
ELEMENT_RE = re.compile(r"^\*?\[(\d+)\]<([A-Za-z][\w-]*)")
CALL_ID_RE = re.compile(r"^call_(\d+)_(\d+)_(\d+)_(\d+)(_s)?$")
FLAGS = ("checked", "selected", "disabled", "required")


# --- the page view ---


@dataclass
class Element:
    index: int
    tag: str
    attrs: dict[str, str]
    text: str
    before: str = ""  # the plain line just before
    after: str = ""  # the plain line just after


def _parse_attrs(s: str) -> tuple[dict[str, str], str]:
    """`id=a name="b c" checked>text` -> ({id: a, name: "b c", checked: ""}, "text")."""
    attrs: dict[str, str] = {}
    i, n = 0, len(s)
    while i < n:
        if s[i] == " ":
            i += 1
            continue
        if s[i] == ">":
            return attrs, s[i + 1 :].strip()
        j = i
        while j < n and s[j] not in " =>":
            j += 1
        key, val = s[i:j].lower(), ""
        if j < n and s[j] == "=":
            j += 1
            if j < n and s[j] == '"':
                k = s.find('"', j + 1)
                k = n if k < 0 else k
                val, j = s[j + 1 : k], k + 1
            else:
                k = j
                while k < n and s[k] not in " >":
                    k += 1
                val, j = s[j:k], k
        attrs[key] = val
        i = j
    return attrs, ""


def parse_view(text: str) -> list[Element]:
    """The elements of a page view, each with the plain text lines around it."""
    els: list[Element] = []
    last_plain = ""
    for raw in text.split("\n"):
        line = raw.strip()
        m = ELEMENT_RE.match(line)
        if not m:
            if line:
                if els and not els[-1].after and last_plain == "":
                    els[-1].after = line
                last_plain = line
            continue
        attrs, rest = _parse_attrs(line[m.end() :])
        els.append(Element(int(m.group(1)), m.group(2).lower(), attrs, rest, before=last_plain))
        last_plain = ""
    return els


def _norm(s: Any) -> str:
    return " ".join(str(s).split()).lower().rstrip(":*").strip()


def _score_text(have: list[str], want: str) -> int:
    """2 = equal, 1 = contains (or a cut text `Long te…` that starts `want`), 0 = no."""
    w = _norm(want)
    best = 0
    for h in have:
        h = _norm(h)
        if not h:
            continue
        if h == w:
            return 2
        if w in h or (h.endswith("…") and w.startswith(h[:-1].rstrip()) and len(h) > 3):
            best = 1
    return best


def _score(el: Element, key: str, want: Any) -> int:
    a = el.attrs
    if key == "index":
        return 2 if el.index == int(want) else 0
    if key == "tag":
        return 2 if el.tag == str(want).lower() else 0
    if key == "text":
        return _score_text([el.text, a.get("aria-label", ""), a.get("value", "")], want)
    if key == "label":
        toggle = a.get("type") in ("checkbox", "radio")
        near, far = (el.after, el.before) if toggle else (el.before, el.after)
        s = _score_text([near, a.get("aria-label", ""), a.get("placeholder", "")], want)
        return s or min(1, _score_text([far], want))
    if key in FLAGS:
        return 2 if (key in a) == bool(want) else 0
    return 2 if key in a and _norm(a[key]) == _norm(want) else 0


def resolve(els: list[Element], target: dict) -> Element | None:
    """The element `target` names: all keys must match; exact matches beat partial ones."""
    crit = {k: v for k, v in target.items() if k != "nth"}
    scored = []
    for el in els:
        s = min((_score(el, k, v) for k, v in crit.items()), default=2)
        if s:
            scored.append((s, el))
    if not scored:
        return None
    top = max(s for s, _ in scored)
    hits = [el for s, el in scored if s == top]
    nth = int(target.get("nth", 0))
    return hits[nth] if nth < len(hits) else None


# --- requests ---


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def last_user_text(messages: list[dict]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return content_text(m.get("content"))
    return ""


def view_url(view: str) -> str:
    m = re.search(r"^URL: (\S+)", view, re.M)
    return m.group(1) if m else ""


def script_name(messages: list[dict]) -> str | None:
    for m in messages:
        if m.get("role") == "user":
            found = MARKER_RE.search(content_text(m.get("content")))
            if found:
                return found.group(1)
    return None


@dataclass
class Position:
    turn: int = 0
    op: int = 0
    tries: int = 0


def position(messages: list[dict], turns: list[list[dict]]) -> Position:
    """Where the script stands, read from our own tool-call ids in the last assistant message."""
    results = {m.get("tool_call_id"): content_text(m.get("content")) for m in messages if m.get("role") == "tool"}
    for m in reversed(messages):
        if m.get("role") != "assistant":
            continue
        calls = []
        for tc in m.get("tool_calls") or []:
            mm = CALL_ID_RE.match(str(tc.get("id", "")))
            if mm:
                calls.append((int(mm.group(1)), int(mm.group(2)), int(mm.group(3)), bool(mm.group(5)), tc["id"]))
        if not calls:
            continue
        turn, op, tries, search, _ = calls[0]
        if search:
            return Position(turn, op, tries + 1)
        for t, o, tr, _, cid in calls:
            res = (results.get(cid) or "").lstrip().lower()
            ops = turns[t] if t < len(turns) else []
            expect_error = o < len(ops) and ops[o].get("expect_error")
            if res.startswith("skipped") or (res.startswith("error") and not expect_error):
                return Position(t, o, tr + 1)
        t, o = calls[-1][0], calls[-1][1]
        if o + 1 < len(turns[t] if t < len(turns) else []):
            return Position(t, o + 1, 0)
        return Position(t + 1, 0, 0)
    return Position()


def _split_turn(turn: Any) -> tuple[list[dict], dict | None]:
    """A turn's ops and its fault, from `[ops...]` (a fault may be one item) or `{"ops", "fault"}`."""
    if isinstance(turn, dict):
        fault = {k: v for k, v in turn.items() if k != "ops"} if "fault" in turn else None
        return list(turn.get("ops", [])), fault
    ops = [o for o in turn if "fault" not in o]
    faults = [o for o in turn if "fault" in o]
    return ops, (faults[0] if faults else None)


def _call(cid: str, name: str, args: Any) -> dict:
    arguments = args if isinstance(args, str) else json.dumps(args)
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


class ScriptError(Exception):
    """The script cannot go on; the model answers `done` with success=false and this message."""


def op_call(op: dict, els: list[Element], view: str, cid: str) -> dict | None:
    """The tool call for one op, or None when its target is not in the view."""
    kind = op["op"]
    args: dict[str, Any] = {}
    if "target" in op:
        el = resolve(els, op["target"])
        if el is None:
            return None
        args["index"] = el.index
    elif "index" in op:
        args["index"] = op["index"]
    if kind == "type":
        args["text"] = op["text"]
        if "submit" in op:
            args["submit"] = op["submit"]
    elif kind == "select_option":
        args["option"] = op["option"]
    elif kind == "upload_file":
        args["file"] = op["file"]
    elif kind == "scroll":
        args["direction"] = op.get("direction", "down")
        if "amount" in op:
            args["amount"] = op["amount"]
    elif kind == "press_key":
        args["key"] = op["key"]
    elif kind == "wait":
        args["seconds"] = op.get("seconds", 1)
    elif kind == "goto":
        args["url"] = urljoin(view_url(view), op["url"])
    elif kind == "switch_tab":
        args["tab"] = op["tab"]
    elif kind == "screenshot":
        if "full_page" in op:
            args["full_page"] = op["full_page"]
    elif kind == "custom":
        return _call(cid, op["name"], op.get("args", {}))
    elif kind == "raw":
        return _call(cid, op["name"], op.get("arguments", {}))
    elif kind == "done":
        if "output_from" in op:
            found = re.findall(op["output_from"], view)
            if not found:
                raise ScriptError(f"done: {op['output_from']!r} is not in the page view")
            output: Any = found if op.get("all") else found[0]
        else:
            output = op.get("output", "")
        args = {"output": output, "success": op.get("success", True)}
    elif kind not in ("click", "hover", "go_back"):
        raise ScriptError(f"unknown op {kind!r}")
    return _call(cid, kind, args)


def _give_up(pos: Position, n: int, why: str) -> list[dict]:
    """A failing `done`: the task ends `failed` with `why`, so a broken script shows in the test."""
    return [_call(f"call_{pos.turn}_{pos.op}_{pos.tries}_{n}", "done", {"output": why, "success": False})]


def _replay_answer(split: list[tuple[list[dict], dict | None]], view: str, n: int) -> tuple[list[dict], int, dict | None]:
    """The answer to a replay's done request: the `done` op of the script's last turn with one."""
    for t in range(len(split) - 1, -1, -1):
        ops, fault = split[t]
        for k, op in enumerate(ops):
            if op.get("op") == "done":
                try:
                    call = op_call(op, [], view, f"call_{t}_{k}_0_{n}")
                except ScriptError as e:
                    return _give_up(Position(t, k), n, f"scripted model: {e}"), t, fault
                return [call], t, fault
    return _give_up(Position(), n, "scripted model: the script has no done op to answer a replay"), -1, None


def plan(messages: list[dict], turns: list[Any]) -> tuple[list[dict], int, dict | None]:
    """(tool calls of the reply, its turn, the turn's fault) for a conversation."""
    split = [_split_turn(t) for t in turns]
    if last_user_text(messages).startswith(REPLAY_LINE):
        n = sum(1 for m in messages if m.get("role") == "assistant")
        return _replay_answer(split, last_user_text(messages), n)
    pos = position(messages, [ops for ops, _ in split])
    n = sum(1 for m in messages if m.get("role") == "assistant")
    view = last_user_text(messages)
    if pos.turn >= len(split):
        return _give_up(pos, n, "scripted model: the script is over"), pos.turn, None
    ops, fault = split[pos.turn]
    if pos.tries >= MAX_TRIES:
        why = f"scripted model: turn {pos.turn} op {pos.op} ({ops[pos.op]}) still fails after {MAX_TRIES} tries"
        return _give_up(pos, n, why), pos.turn, fault
    els = parse_view(view)
    calls: list[dict] = []
    try:
        for k in range(pos.op, len(ops)):
            call = op_call(ops[k], els, view, f"call_{pos.turn}_{k}_{pos.tries}_{n}")
            if call is None:
                break
            calls.append(call)
    except ScriptError as e:
        return _give_up(pos, n, f"scripted model: {e}"), pos.turn, fault
    if not calls:  # the first op's target is not in view: look further down (or back up)
        below = re.search(r"(\d+) px below", view)
        direction = "up" if below and below.group(1) == "0" and " 0 px above" not in view else "down"
        calls = [_call(f"call_{pos.turn}_{pos.op}_{pos.tries}_{n}_s", "scroll", {"direction": direction})]
    return calls, pos.turn, fault


# --- the server ---


@dataclass
class Recorded:
    script: str | None
    body: dict
    status: int  # 0 while the answer is pending
    usage: dict | None = None  # the usage of a real (200, chat completion) reply
    at: float = field(default_factory=time.time)


class ScriptedLLM:
    """The scripted model on 127.0.0.1, served from a daemon thread of this process."""

    MODEL = "scripted"

    def __init__(self, host: str = "127.0.0.1", url_host: str | None = None) -> None:
        """`host` is the address to bind; `url_host` the name `base_url` uses (default `host`)."""
        self._scripts: dict[str, list[Any]] = {}
        self._arrivals: dict[tuple[str, int], int] = {}
        self._log: list[Recorded] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        llm = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(code)
                    self.send_header("content-type", ctype)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout fault)
                    self.close_connection = True

            def do_GET(self):  # noqa: N802
                url = urlsplit(self.path)
                if url.path in ("/v1/models", "/models"):
                    self._send(
                        200, {"object": "list", "data": [{"id": llm.MODEL, "object": "model", "owned_by": "tests"}]}
                    )
                elif url.path == "/admin/requests":
                    name = (parse_qs(url.query).get("script") or [None])[0]
                    self._send(200, [r.body for r in llm._records(name)])
                else:
                    self._send(404, {"error": {"message": f"no route {url.path}"}})

            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                if urlsplit(self.path).path not in ("/v1/chat/completions", "/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    self._send(400, {"error": {"message": f"bad JSON: {e}", "type": "invalid_request_error"}})
                    return
                code, reply, ctype = llm.answer(body)
                self._send(code, reply, ctype)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://{url_host or host}:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- for tests ---

    def script(self, name: str, turns: list[Any]) -> str:
        """Registers a script under a fresh name; returns the marker to put in the task text."""
        unique = f"{name}-{next(self._ids)}"
        with self._lock:
            self._scripts[unique] = turns
        return f"[script:{unique}]"

    def _records(self, name_or_marker: str | None) -> list[Recorded]:
        name = name_or_marker
        if name and (m := MARKER_RE.search(name)):
            name = m.group(1)
        with self._lock:
            return [r for r in self._log if name is None or r.script == name]

    def requests(self, marker: str | None = None) -> list[dict]:
        """The bodies of every request of that script (all when None), in arrival order."""
        return [r.body for r in self._records(marker)]

    def statuses(self, marker: str) -> list[int]:
        return [r.status for r in self._records(marker)]

    def usages(self, marker: str) -> list[dict]:
        """The `usage` of every chat completion this script answered (faults left out)."""
        return [r.usage for r in self._records(marker) if r.usage is not None]

    # --- answering ---

    def answer(self, body: dict) -> tuple[int, Any, str]:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        name = script_name(messages)
        with self._lock:
            turns = self._scripts.get(name) if name else None
        if turns is None:
            calls, turn, fault = _give_up(Position(), 0, f"scripted model: no script for {name!r}"), -1, None
        else:
            calls, turn, fault = plan(messages, turns)
        active = False
        if fault is not None and name is not None:
            with self._lock:
                seen = self._arrivals.get((name, turn), 0)
                self._arrivals[(name, turn)] = seen + 1
            times = fault.get("times")
            active = times is None or seen < int(times)
        kind = fault.get("fault") if active and fault else None
        # Recorded on arrival: a request that sleeps (timeout fault) is already counted.
        rec = Recorded(name, body, 0)
        with self._lock:
            self._log.append(rec)
        status, reply, ctype = 200, None, "application/json"
        if kind == "timeout":
            time.sleep(float(fault.get("seconds", 30)))
            kind = None  # then the real reply, to a client that has given up
        if kind == "http500":
            status, reply = 500, {"error": {"message": "scripted server error", "type": "server_error", "code": None}}
        elif kind == "garbage":
            reply, ctype = b"<html>this is not a chat completion</html>", "text/html"
        elif kind == "garbage_args":
            calls = [dict(calls[0], function={"name": calls[0]["function"]["name"], "arguments": "{index: oops"})]
        elif kind is not None:
            raise ValueError(f"unknown fault {kind!r}")
        if reply is None:
            reply = self.completion(body, calls)
            rec.usage = reply["usage"]
        rec.status = status
        return status, reply, ctype

    def completion(self, body: dict, calls: list[dict]) -> dict:
        prompt = len(json.dumps(body.get("messages")) + json.dumps(body.get("tools"))) // 4
        completion = max(1, len(json.dumps(calls)) // 4)
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": None, "tool_calls": calls},
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }


# --- helpers for assertions ---


def tool_names(body: dict) -> list[str]:
    return [(t.get("function") or {}).get("name") for t in body.get("tools") or []]


def tool_results(body: dict) -> list[str]:
    """The `tool` messages' texts of a request."""
    return [content_text(m.get("content")) for m in body.get("messages") or [] if m.get("role") == "tool"]
