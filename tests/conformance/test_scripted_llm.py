"""The scripted model on its own (no smoothd): target resolution, turn tracking, faults, usage."""

import json

import pytest
import requests

from scripted_llm import ScriptedLLM, parse_view, plan, resolve

VIEW = """Step 3/15
URL: http://127.0.0.1:8765/agent/form.html
Title: Sign up
Viewport 1920x1080; 0 px above, 400 px below
Sign up
Full name
[0]<input id=name name=fullname required>
Email
*[1]<input id=email name=email type=email placeholder="you@example.com" value="a b">
[2]<select id=plan name=plan>Basic (options: Basic|Pro|Team)
[3]<input name=terms type=checkbox checked>
I accept the terms
[4]<input name=size type=radio value=s>
Small
[5]<input name=size type=radio value=l>
Large
[6]<button type=submit aria-label="Send it">Create account
[7]<a>Next page
[8]<a>Very long link text that was cut at eighty characters by the page vie…"""


def conversation(view, *history):
    msgs = [{"role": "system", "content": "rules"}, {"role": "user", "content": "Task: x [script:t-1]"}]
    msgs.extend(history)
    msgs.append({"role": "user", "content": view})
    return msgs


def step(calls, results):
    """History of one earlier step: our assistant message and one tool result per call."""
    out = [{"role": "assistant", "content": None, "tool_calls": calls}]
    for c, r in zip(calls, results, strict=True):
        out.append({"role": "tool", "tool_call_id": c["id"], "content": r})
    return out


def test_parse_view_reads_attributes_quotes_flags_and_labels():
    els = parse_view(VIEW)
    assert [e.index for e in els] == list(range(9))
    email = els[1]
    assert email.tag == "input" and email.attrs["placeholder"] == "you@example.com" and email.attrs["value"] == "a b"
    assert email.before == "Email" and els[0].before == "Full name"
    assert "checked" in els[3].attrs and els[3].after == "I accept the terms"
    assert els[2].text.startswith("Basic (options:")
    assert els[6].attrs["aria-label"] == "Send it" and els[6].text == "Create account"


@pytest.mark.parametrize(
    "target,index",
    [
        ({"id": "email"}, 1),
        ({"name": "fullname"}, 0),
        ({"placeholder": "you@example.com"}, 1),
        ({"label": "Email"}, 1),
        ({"label": "Full name"}, 0),
        ({"label": "I accept the terms"}, 3),
        ({"label": "Large"}, 5),
        ({"tag": "input", "type": "radio", "nth": 1}, 5),
        ({"type": "radio", "value": "s"}, 4),
        ({"text": "Create account"}, 6),
        ({"text": "Send it"}, 6),
        ({"text": "Next page"}, 7),
        ({"text": "Next"}, 7),
        ({"text": "Very long link text that was cut at eighty characters by the page view"}, 8),
        ({"tag": "select"}, 2),
        ({"checked": True}, 3),
    ],
)
def test_resolve(target, index):
    el = resolve(parse_view(VIEW), target)
    assert el is not None and el.index == index, (target, el)


def test_resolve_misses():
    els = parse_view(VIEW)
    assert resolve(els, {"id": "nope"}) is None
    assert resolve(els, {"text": "Next", "tag": "button"}) is None
    assert resolve(els, {"type": "radio", "nth": 2}) is None


SCRIPT = [
    [{"op": "type", "target": {"id": "email"}, "text": "a@b.c"}, {"op": "click", "target": {"text": "Next page"}}],
    [{"op": "click", "target": {"id": "later"}}],
    [{"op": "done", "output_from": r"Title: (.+)"}],
]


def test_turns_advance_from_ids_and_repeat_identically():
    calls, turn, _ = plan(conversation(VIEW), SCRIPT)
    assert turn == 0
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("type", {"index": 1, "text": "a@b.c"}),
        ("click", {"index": 7}),
    ]
    assert calls[0]["id"] == "call_0_0_0_0" and calls[1]["id"] == "call_0_1_0_0"
    # The same request again: the same answer.
    assert plan(conversation(VIEW), SCRIPT)[0] == calls

    # Both ok -> turn 1, whose target is not in view: a scroll, on the same turn.
    hist = step(calls, ["ok", "ok: navigated to x"])
    calls2, turn2, _ = plan(conversation(VIEW, *hist), SCRIPT)
    assert turn2 == 1 and calls2[0]["function"]["name"] == "scroll" and calls2[0]["id"].endswith("_s")
    # After the scroll, the element appears: the click.
    view2 = VIEW + "\n[9]<button id=later>Later"
    hist2 = hist + step(calls2, ["ok"])
    calls3, turn3, _ = plan(conversation(view2, *hist2), SCRIPT)
    assert turn3 == 1 and json.loads(calls3[0]["function"]["arguments"]) == {"index": 9}
    # Then done, with the output read from the page view.
    calls4, turn4, _ = plan(conversation(view2, *hist2, *step(calls3, ["ok"])), SCRIPT)
    assert turn4 == 2 and json.loads(calls4[0]["function"]["arguments"]) == {"output": "Sign up", "success": True}
    # All tool-call ids of the conversation are distinct.
    ids = [c["id"] for c in calls + calls2 + calls3 + calls4]
    assert len(set(ids)) == len(ids)


def test_skipped_and_error_results_reissue_the_op():
    calls, _, _ = plan(conversation(VIEW), SCRIPT)
    hist = step(calls, ["ok", "skipped: the page changed before this action ran"])
    again, turn, _ = plan(conversation(VIEW, *hist), SCRIPT)
    assert turn == 0 and [c["function"]["name"] for c in again] == ["click"]
    assert again[0]["id"].startswith("call_0_1_1_")
    hist = step(calls, ["error: there is no element [1]", "skipped: x"])
    again, _, _ = plan(conversation(VIEW, *hist), SCRIPT)
    assert [c["function"]["name"] for c in again] == ["type", "click"]


def test_expected_error_advances_and_endless_failure_gives_up():
    script = [[{"op": "done", "output": {"n": "x"}, "expect_error": True}], [{"op": "done", "output": {"n": 1}}]]
    calls, _, _ = plan(conversation(VIEW), script)
    calls2, turn, _ = plan(conversation(VIEW, *step(calls, ["error: output does not match"])), script)
    assert turn == 1 and json.loads(calls2[0]["function"]["arguments"])["output"] == {"n": 1}

    script = [[{"op": "click", "target": {"id": "ghost"}}]]
    hist: list = []
    for _ in range(10):
        calls, _, _ = plan(conversation(VIEW, *hist), script)
        if calls[0]["function"]["name"] == "done":
            break
        hist += step(calls, ["ok"])
    args = json.loads(calls[0]["function"]["arguments"])
    assert args["success"] is False and "ghost" in args["output"], args


@pytest.fixture
def llm():
    s = ScriptedLLM()
    yield s
    s.close()


def post(llm, messages, tools=()):
    return requests.post(
        llm.base_url + "/chat/completions",
        json={"model": "scripted", "messages": messages, "tools": list(tools)},
        timeout=10,
    )


def test_server_replies_records_and_counts_usage(llm):
    marker = llm.script("t", [[{"op": "custom", "name": "ask", "args": {"q": "?"}}]])
    msgs = conversation(VIEW)
    msgs[1]["content"] = f"Task: go {marker}"
    r = post(llm, msgs, [{"type": "function", "function": {"name": "ask", "parameters": {}}}])
    assert r.status_code == 200, r.text
    body = r.json()
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "ask", "arguments": '{"q": "?"}'}
    assert body["usage"]["prompt_tokens"] > 50 and body["usage"]["completion_tokens"] > 0
    assert llm.requests(marker)[0]["messages"][1]["content"] == f"Task: go {marker}"
    assert requests.get(llm.base_url + "/models", timeout=5).json()["data"][0]["id"] == "scripted"
    # Unknown script: a failing done, not a hang.
    r = post(llm, [{"role": "user", "content": "Task: nothing"}])
    assert json.loads(r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])["success"] is False


def test_faults(llm):
    marker = llm.script(
        "f", [[{"fault": "http500", "times": 2}, {"op": "wait"}], {"fault": "garbage", "ops": [{"op": "wait"}]}]
    )
    msgs = conversation(VIEW)
    msgs[1]["content"] = f"Task: {marker}"
    codes = [post(llm, msgs).status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    first = post(llm, msgs).json()["choices"][0]["message"]["tool_calls"]
    r = post(llm, [msgs[0], msgs[1], *step(first, ["ok"]), msgs[-1]])
    assert r.status_code == 200 and "chat.completion" not in r.text
    assert llm.statuses(marker) == [500, 500, 200, 200, 200]

    marker = llm.script("g", [[{"fault": "garbage_args", "times": 1}, {"op": "click", "target": {"id": "email"}}]])
    msgs[1]["content"] = f"Task: {marker}"
    bad = post(llm, msgs).json()["choices"][0]["message"]["tool_calls"]
    assert bad[0]["function"]["arguments"] == "{index: oops"
    good = post(llm, [msgs[0], msgs[1], *step(bad, ["error: not JSON"]), msgs[-1]]).json()
    assert good["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"index": 1}'
