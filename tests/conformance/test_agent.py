"""The agent through the real SDK, against the scripted model (scripted_llm.py) and the fixture
pages under tests/fixtures/site/agent: forms, pagination with a response_model, uploads, custom
tools, max_steps, model failures, cancel, session extract/run_task, secrets, credits and step
traces, additional tools. Every task text carries the marker of its script.

The module runs its own smoothd per backend (the `server` fixture below overrides conftest's), set
up by smoothd_support.llm_env: a 3 s model timeout, 3 retries, a price table, vision off.
"""

import json
import math
import os
import re
import secrets
import signal
import time

import pytest
from pydantic import BaseModel
from smooth import ToolCallError
from smooth._exceptions import ApiError
from smooth.models import Secret

from scripted_llm import content_text, tool_names, tool_results
from smoothd_support import (
    LLM_MODEL,
    LLM_PRICE_IN,
    LLM_PRICE_OUT,
    AuthProxy,
    chromium_browser_pids,
    download_names,
    get_task,
    llm_env,
    named,
    scripted_model,
    serve,
    Site,
    wait_final,
    wait_status,
)

RESULT_TIMEOUT = 120
# The model `agent: "smooth-lite"` tasks run on (SMOOTHD_LLM_LITE_MODEL).
LITE_MODEL = "scripted-lite"
BASE_TOOLS = {
    "goto",
    "click",
    "type",
    "select_option",
    "scroll",
    "press_key",
    "go_back",
    "switch_tab",
    "upload_file",
    "wait",
    "done",
}


@pytest.fixture(scope="module")
def llm():
    yield from scripted_model()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, llm):
    yield from serve(request.param, llm_env(llm.base_url, SMOOTHD_LLM_LITE_MODEL=LITE_MODEL))


@pytest.fixture(autouse=True)
def _needs_browser(browser):
    """Every agent test drives Chromium."""


def task_json(server, tid: str) -> dict:
    r = get_task(server, tid)
    assert r.status_code in (200, 202), r.text
    return r.json()["r"]


def steps_of(server, tid: str) -> list[dict]:
    r = server.request("GET", f"/v1/task/{tid}/steps")
    assert r.status_code == 200, f"GET /v1/task/{tid}/steps -> {r.status_code} {r.text}"
    return r.json()["r"]


def view_of(body: dict) -> str:
    """The page view of a request: its last user message."""
    users = [m for m in body["messages"] if m.get("role") == "user"]
    return content_text(users[-1]["content"]) if users else ""


def tool_def(body: dict, name: str) -> dict:
    for t in body.get("tools") or []:
        if (t.get("function") or {}).get("name") == name:
            return t["function"]
    raise AssertionError(f"no tool {name!r} in {tool_names(body)}")


def all_results(llm, marker) -> list[str]:
    """Every tool result the model was shown, in order: those of the last request (the history
    is cumulative)."""
    reqs = llm.requests(marker)
    return tool_results(reqs[-1]) if reqs else []


def run(client, task: str, **kw):
    kw.setdefault("max_steps", 10)
    return client.run(task, **kw).result(timeout=RESULT_TIMEOUT)


# --- (1) a form ---


def test_form_fill_and_submit_reports_the_confirmation(client, site, llm):
    marker = llm.script(
        "form",
        [
            [
                {"op": "type", "target": {"label": "Full name"}, "text": "Ada Lovelace"},
                {"op": "type", "target": {"id": "email"}, "text": "ada@example.com"},
                {"op": "select_option", "target": {"id": "plan"}, "option": "Pro"},
                {"op": "click", "target": {"label": "Send me the newsletter"}},
                {"op": "click", "target": {"type": "radio", "value": "L"}},
            ],
            [{"op": "click", "target": {"text": "Create account"}}],
            [{"op": "done", "output_from": r"Confirmation: (\S+)"}],
        ],
    )
    res = run(client, f"Create an account for Ada Lovelace {marker}", url=site.url("/agent/form.html"))
    assert res.status == "done", res
    assert res.output == "PRO-L-Y-12", res.output

    reqs = llm.requests(marker)
    assert len(reqs) == 3, [view_of(b)[:200] for b in reqs]
    first = reqs[0]
    msgs = first["messages"]
    # The contract's shape: system, the task, the view; tools with tool_choice auto.
    assert [m["role"] for m in msgs] == ["system", "user", "user"], [m["role"] for m in msgs]
    assert msgs[1]["content"].startswith(f"Task: Create an account for Ada Lovelace {marker}"), msgs[1]
    assert f"Start URL: {site.url('/agent/form.html')}" in msgs[1]["content"], msgs[1]
    assert first["model"] == "scripted" and first.get("stream") in (None, False), first.get("model")
    assert first.get("tool_choice") == "auto", first.get("tool_choice")
    assert BASE_TOOLS <= set(tool_names(first)), tool_names(first)
    assert "screenshot" not in tool_names(first)
    view = view_of(first)
    assert view.startswith("Step 1/10\n"), view[:100]
    assert f"URL: {site.url('/agent/form.html')}" in view and "Title: Sign up" in view, view[:300]
    assert "<input id=email name=email type=email required>" in view, view
    # The history: our calls with their ids, then one ok per call; the old view is not repeated.
    second = reqs[1]["messages"]
    assistant = [m for m in second if m["role"] == "assistant"]
    assert len(assistant) == 1 and [c["id"] for c in assistant[0]["tool_calls"]] == [
        f"call_0_{k}_0_0" for k in range(5)
    ]
    results = tool_results(reqs[1])
    assert len(results) == 5 and all(r == "ok" or r.startswith("ok: ") for r in results), results
    assert sum(1 for m in second if m["role"] == "user" and "Step 1/" in content_text(m["content"])) == 0
    # The page really got the values (the summary is computed by the page from the fields).
    assert "Name: Ada Lovelace; Email: ada@example.com; Plan: Pro; Size: L; Newsletter: Y" in view_of(reqs[2]), view_of(
        reqs[2]
    )


def test_task_without_url_starts_on_a_blank_tab(client, site, llm):
    marker = llm.script(
        "blank",
        [
            [{"op": "goto", "url": site.url("/agent/search.html?q=kettle")}],
            [{"op": "done", "output_from": r"Product: (\w+)"}],
        ],
    )
    res = run(client, f"Find the kettle {marker}")
    assert res.status == "done" and res.output == "Kettle", res
    reqs = llm.requests(marker)
    assert len(reqs) == 2, [view_of(b)[:200] for b in reqs]
    assert "URL: about:blank" in view_of(reqs[0]), view_of(reqs[0])
    assert "Start URL" not in reqs[0]["messages"][1]["content"]
    assert tool_results(reqs[1])[0].startswith("ok"), tool_results(reqs[1])
    assert f"URL: {site.url('/agent/search.html?q=kettle')}" in view_of(reqs[1]), view_of(reqs[1])


def test_model_persistent_500_on_a_blank_tab_is_not_retried_twice(server, client, llm):
    """Without a start URL the first step is asked before the browser is ready: its failure must
    not cost a second round of retries."""
    marker = llm.script("down-blank", [[{"fault": "http500"}, {"op": "done", "output": "never"}]])
    handle = client.run(f"Say never {marker}")
    res = handle.result(timeout=RESULT_TIMEOUT)
    assert res.status == "failed", res
    assert "model" in (task_json(server, handle.id()).get("error") or "")
    assert llm.statuses(marker) == [500] * 4


# --- (2) search, pagination, response_model ---


class Product(BaseModel):
    name: str
    price: float


class Catalogue(BaseModel):
    items: list[Product]


LAMPS = [
    ("Desk Lamp", 19.99),
    ("Floor Lamp", 49.5),
    ("Lava Lamp", 15.25),
    ("Reading Lamp", 32.0),
    ("Salt Lamp", 12.75),
    ("Lamp Shade", 8.0),
    ("Lamp Oil", 6.5),
]


def test_search_paginate_and_return_a_validated_list(client, site, llm):
    good = {"items": [{"name": n, "price": p} for n, p in LAMPS]}
    marker = llm.script(
        "search",
        [
            [{"op": "type", "target": {"placeholder": "Search products"}, "text": "lamp", "submit": True}],
            [{"op": "click", "target": {"text": "Next page"}}],
            [{"op": "click", "target": {"text": "Next page"}}],
            # A first answer that does not match the schema: the agent must say so and go on.
            [{"op": "done", "output": {"items": [{"name": "Desk Lamp", "price": "cheap"}]}, "expect_error": True}],
            [{"op": "done", "output": good}],
        ],
    )
    res = run(
        client, f"List every lamp with its price {marker}", url=site.url("/agent/search.html"), response_model=Catalogue
    )
    assert res.status == "done", res
    assert Catalogue.model_validate(res.output).model_dump() == good, res.output

    reqs = llm.requests(marker)
    assert "Output:" in reqs[0]["messages"][1]["content"], reqs[0]["messages"][1]["content"]
    out_schema = tool_def(reqs[0], "done")["parameters"]["properties"]["output"]
    assert "items" in json.dumps(out_schema), out_schema
    views = [view_of(b) for b in reqs]
    assert any("page 1 of 3" in v and "Product: Desk Lamp" in v for v in views), views
    assert any("page 2 of 3" in v and "Product: Reading Lamp" in v for v in views), views
    assert any("page 3 of 3" in v and "Product: Lamp Oil" in v for v in views), views
    errors = [r for r in all_results(llm, marker) if r.startswith("error")]
    assert len(errors) == 1 and "response model" in errors[0] and "cheap" in errors[0], errors


# --- (3) upload ---


def test_upload_a_task_file_into_a_file_input(client, site, llm):
    data = b"quarterly numbers\n" * 7
    fid = client.upload_file(named(data, "report.txt")).id
    marker = llm.script(
        "upload",
        [
            [{"op": "upload_file", "target": {"id": "doc"}, "file": "report.txt"}],
            [{"op": "done", "output_from": r"Selected: (.+)"}],
        ],
    )
    res = run(client, f"Attach the report {marker}", url=site.url("/agent/upload.html"), files=[fid])
    assert res.status == "done", res
    assert res.output == f"report.txt ({len(data)} bytes)", res.output
    task_msg = llm.requests(marker)[0]["messages"][1]["content"]
    assert "Files you can upload: report.txt" in task_msg, task_msg


def test_cross_origin_frames_are_read_and_driven(client, site, llm):
    """An out-of-process frame (another site: localhost against 127.0.0.1) and an in-process
    cross-origin frame (the same site on another port) are read into the view in place, numbered
    after the page's own elements, and typed into, selected in, uploaded into and clicked through
    the top page's real input events."""
    other = Site()
    try:
        data = b"receipt body\n" * 3
        fid = client.upload_file(named(data, "receipt.txt")).id
        marker = llm.script(
            "frames",
            [
                [
                    {"op": "type", "target": {"aria-label": "Card holder"}, "text": "Ada Lovelace"},
                    {"op": "select_option", "target": {"id": "card"}, "option": "Mastercard"},
                    {"op": "upload_file", "target": {"id": "receipt"}, "file": "receipt.txt"},
                    {"op": "click", "target": {"text": "Accept terms"}},
                ],
                [{"op": "click", "target": {"text": "Pay now"}}],
                [{"op": "done", "output_from": r"Frames said: (.+)"}],
            ],
        )
        url = site.url("/agent/frames.html?terms=" + other.base)
        res = run(client, f"Pay with the embedded form {marker}", url=url, files=[fid])
        assert res.status == "done", res
        assert res.output == "TERMS-OK + PAID by Ada Lovelace with Mastercard receipt receipt.txt", res.output

        first = view_of(llm.requests(marker)[0])
        port = site.base.rsplit(":", 1)[1]
        # Both frames are read in place, between the page's own text.
        assert f"--- iframe http://localhost:{port} ---" in first, first
        assert f"--- iframe {other.base} ---" in first, first
        assert "not readable" not in first, first
        assert first.index("Checkout") < first.index("Card holder") < first.index("Terms of sale v7") < first.index(
            "Frames said"
        ), first
        # One numbering across the page and its frames: every index once, in order.
        idx = [int(m) for m in re.findall(r"^\*?\[(\d+)\]", first, re.M)]
        assert idx == list(range(len(idx))) and len(idx) >= 5, first
        # The frame's own page changed after the click: the next view shows it.
        second = view_of(llm.requests(marker)[1])
        assert "Accepted" in second and "Card holder" in second, second
    finally:
        other.close()


# --- (4) custom tools ---


def lookup_tool(client, behaviour, calls):
    @client.tool(
        name="lookup_code",
        description="Looks up the code of a key in the customer's system.",
        inputs={"key": {"type": "string", "description": "the key"}},
        output="string",
    )
    def lookup_code(key: str):
        calls.append(key)
        return behaviour(key)

    return lookup_code


def test_custom_tool_result_reaches_the_model(client, site, llm):
    calls: list[str] = []
    tool = lookup_tool(client, lambda key: f"code-for-{key}-7731", calls)
    marker = llm.script(
        "tool-ok",
        [
            [{"op": "custom", "name": "lookup_code", "args": {"key": "alpha"}}],
            [{"op": "done", "output": "looked up"}],
        ],
    )
    res = run(client, f"Look up alpha {marker}", url=site.url("/agent/slow.html"), custom_tools=[tool])
    assert res.status == "done", res
    assert calls == ["alpha"]
    reqs = llm.requests(marker)
    params = tool_def(reqs[0], "lookup_code")["parameters"]
    assert params["properties"]["key"]["type"] == "string", params
    results = tool_results(reqs[-1])
    assert any("code-for-alpha-7731" in r for r in results), results


def test_custom_tool_error_goes_back_to_the_model(client, site, llm):
    calls: list[str] = []

    def refuse(key):
        raise ToolCallError(f"no such key: {key}")

    tool = lookup_tool(client, refuse, calls)
    marker = llm.script(
        "tool-400",
        [
            [{"op": "custom", "name": "lookup_code", "args": {"key": "beta"}, "expect_error": True}],
            [{"op": "done", "output": "gave up on beta"}],
        ],
    )
    res = run(client, f"Look up beta {marker}", url=site.url("/agent/slow.html"), custom_tools=[tool])
    assert res.status == "done", res
    assert calls == ["beta"]
    results = tool_results(llm.requests(marker)[-1])
    assert any(r.startswith("error") and "no such key: beta" in r for r in results), results


def test_custom_tool_can_run_js_in_the_task_browser(client, site, llm):
    """A tool may call back into the task (`task.evaluate_js`) while the agent waits for it."""

    @client.tool(name="page_title", description="Reads the page title with JavaScript.", inputs={}, output="string")
    def page_title(task):
        return "title is " + task.evaluate_js("document.title").output

    marker = llm.script(
        "tool-js",
        [
            [{"op": "custom", "name": "page_title", "args": {}}],
            [{"op": "done", "output": "read"}],
        ],
    )
    res = run(client, f"Read the title {marker}", url=site.url("/agent/slow.html"), custom_tools=[page_title])
    assert res.status == "done", res
    results = all_results(llm, marker)
    assert results[0] == "ok: title is Waiting room", results


def test_essential_custom_tool_failure_fails_the_task(server, client, site, llm):
    calls: list[str] = []

    def crash(key):
        raise RuntimeError("the customer database is down")

    tool = lookup_tool(client, crash, calls)
    marker = llm.script(
        "tool-500",
        [
            [{"op": "custom", "name": "lookup_code", "args": {"key": "gamma"}}],
            [{"op": "done", "output": "should not get here"}],
        ],
    )
    handle = client.run(f"Look up gamma {marker}", url=site.url("/agent/slow.html"), custom_tools=[tool], max_steps=10)
    res = handle.result(timeout=RESULT_TIMEOUT)
    assert res.status == "failed", res
    assert calls == ["gamma"]
    final = task_json(server, handle.id())
    assert "the customer database is down" in (final.get("error") or ""), final
    assert len(llm.requests(marker)) == 1, "the model was asked again after an essential tool failed"


# --- (5) max_steps ---


def test_running_out_of_max_steps_fails(server, client, site, llm):
    marker = llm.script("endless", [[{"op": "scroll", "direction": "down"}] for _ in range(10)])
    handle = client.run(f"Scroll forever {marker}", url=site.url("/agent/slow.html"), max_steps=3)
    res = handle.result(timeout=RESULT_TIMEOUT)
    assert res.status == "failed", res
    final = task_json(server, handle.id())
    assert "max_steps" in (final.get("error") or ""), final
    assert len(llm.requests(marker)) == 3


# --- (6) model failures ---


def test_model_http_500_is_retried(client, site, llm):
    marker = llm.script("flaky", [[{"fault": "http500", "times": 2}, {"op": "done", "output": "fine"}]])
    res = run(client, f"Say fine {marker}", url=site.url("/agent/slow.html"))
    assert res.status == "done" and res.output == "fine", res
    assert llm.statuses(marker) == [500, 500, 200]


def test_model_persistent_500_fails_naming_the_model(server, client, site, llm):
    marker = llm.script("down", [[{"fault": "http500"}, {"op": "done", "output": "never"}]])
    handle = client.run(f"Say never {marker}", url=site.url("/agent/slow.html"))
    res = handle.result(timeout=RESULT_TIMEOUT)
    assert res.status == "failed", res
    error = task_json(server, handle.id()).get("error") or ""
    assert "model" in error and f"127.0.0.1:{llm.port}" in error and "500" in error, error
    assert llm.statuses(marker) == [500] * 4, "SMOOTHD_LLM_MAX_RETRIES=3 means 4 attempts"


def test_model_timeout_is_retried(client, site, llm):
    marker = llm.script(
        "slow-once", [[{"fault": "timeout", "seconds": 8, "times": 1}, {"op": "done", "output": "late"}]]
    )
    t0 = time.monotonic()
    res = run(client, f"Say late {marker}", url=site.url("/agent/slow.html"))
    assert res.status == "done" and res.output == "late", res
    assert len(llm.requests(marker)) == 2
    assert time.monotonic() - t0 < 60


def test_model_that_never_answers_fails_in_bounded_time(server, client, site, llm):
    marker = llm.script("hung", [[{"fault": "timeout", "seconds": 8}, {"op": "done", "output": "never"}]])
    t0 = time.monotonic()
    handle = client.run(f"Say never {marker}", url=site.url("/agent/slow.html"))
    res = handle.result(timeout=RESULT_TIMEOUT)
    elapsed = time.monotonic() - t0
    assert res.status == "failed", res
    # 4 attempts of 3 s plus short backoffs, plus the browser: far below a minute.
    assert elapsed < 45, f"a hung model took {elapsed:.0f}s to fail the task"
    error = task_json(server, handle.id()).get("error") or ""
    assert "model" in error and "timed out" in error, error
    assert len(llm.requests(marker)) == 4


def test_model_garbage_reply_fails_cleanly(server, client, site, llm):
    marker = llm.script("garbage", [[{"fault": "garbage"}, {"op": "done", "output": "never"}]])
    handle = client.run(f"Say never {marker}", url=site.url("/agent/slow.html"))
    res = handle.result(timeout=RESULT_TIMEOUT)
    assert res.status == "failed", res
    error = task_json(server, handle.id()).get("error") or ""
    assert "model" in error and f"127.0.0.1:{llm.port}" in error, error


def test_tool_arguments_that_are_not_json_go_back_to_the_model(client, site, llm):
    marker = llm.script(
        "bad-args",
        [
            [{"fault": "garbage_args", "times": 1}, {"op": "click", "target": {"id": "noop"}}],
            [{"op": "done", "output": "recovered"}],
        ],
    )
    res = run(client, f"Click noop {marker}", url=site.url("/agent/slow.html"))
    assert res.status == "done" and res.output == "recovered", res
    results = all_results(llm, marker)
    assert results[0].startswith("error") and "JSON" in results[0], results
    assert results[1].startswith("ok"), results


# --- (7) cancel ---


def test_cancel_mid_run(server, client, site, llm):
    marker = llm.script("waiter", [[{"op": "wait", "seconds": 5}] for _ in range(20)])
    handle = client.run(f"Wait a lot {marker}", url=site.url("/agent/slow.html"), max_steps=30)
    deadline = time.monotonic() + 60
    while not llm.requests(marker):
        assert time.monotonic() < deadline, "the model was never asked"
        time.sleep(0.2)
    t0 = time.monotonic()
    r = server.request("DELETE", f"/v1/task/{handle.id()}")
    assert r.status_code in (200, 202, 204), r.text
    final = wait_final(server, handle.id(), timeout=10)
    assert final["status"] == "cancelled", final
    assert time.monotonic() - t0 < 10
    asked = len(llm.requests(marker))
    time.sleep(2)
    assert len(llm.requests(marker)) == asked, "the agent went on asking the model after cancel"
    assert handle.result(timeout=30).status == "cancelled"


# --- (8) extract and run_task in a session ---


def open_session(client, server):
    s = client.session()
    wait_status(server, s.id(), "running", timeout=60)
    return s


def test_session_extract_and_run_task(server, client, site, llm):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "price": {"type": "number"}},
        "required": ["name", "price"],
    }
    ex = llm.script(
        "extract",
        [
            [
                {
                    "op": "custom",
                    "name": "extract_result",
                    "args": {"output": {"name": "Desk Lamp"}},
                    "expect_error": True,
                }
            ],
            [{"op": "custom", "name": "extract_result", "args": {"output": {"name": "Desk Lamp", "price": 19.99}}}],
        ],
    )
    rt = llm.script(
        "session-task",
        [
            [{"op": "click", "target": {"text": "Next page"}}],
            [{"op": "done", "output_from": r"page (\d) of 3"}],
        ],
    )
    s = open_session(client, server)
    try:
        s.goto(site.url("/agent/search.html?q=lamp"))
        got = s.extract(schema, prompt=f"The first product {ex}")
        assert got.output == {"name": "Desk Lamp", "price": 19.99}, got
        ex_reqs = llm.requests(ex)
        assert len(ex_reqs) == 2, "a schema mismatch gets one more try"
        assert "Product: Desk Lamp | Price: $19.99" in json.dumps(ex_reqs[0]["messages"]), "the page text was not sent"
        assert any(r.startswith("error") for r in tool_results(ex_reqs[1])), ex_reqs[1]["messages"]

        done = s.run_task(f"Go to the next page and say its number {rt}", max_steps=5)
        assert done.output == "2", done
        view = view_of(llm.requests(rt)[0])
        assert "URL: " + site.url("/agent/search.html?q=lamp") in view, view[:300]
        page = s.evaluate_js("location.search").output
        assert page == "?q=lamp&page=2", page
    finally:
        s.close(force=True)
    assert wait_final(server, s.id(), timeout=30)["status"] == "cancelled"


# --- (9) secrets ---


def test_secrets_reach_the_page_but_never_the_model(server, client, site, llm):
    token = "tok-" + secrets.token_hex(8)
    elsewhere = "nope-" + secrets.token_hex(8)
    marker = llm.script(
        "secret",
        [
            # A secret not allowed on this site: refused, and its value goes nowhere.
            [{"op": "type", "target": {"id": "user"}, "text": "<secret>OTHER</secret>", "expect_error": True}],
            [
                {"op": "type", "target": {"id": "user"}, "text": "ada"},
                {"op": "type", "target": {"label": "Access token"}, "text": "<secret>API_TOKEN</secret>"},
                {"op": "click", "target": {"text": "Sign in"}},
            ],
            [{"op": "done", "output_from": r"(Signed in as ada)"}],
        ],
    )
    s = open_session(client, server)
    try:
        done = s.run_task(
            f"Sign in as ada {marker}",
            url=site.url("/agent/login.html"),
            max_steps=6,
            secrets={
                "API_TOKEN": Secret(value=token, allowed_urls=[f"{site.base}/agent/**"]),
                "OTHER": Secret(value=elsewhere, allowed_urls=["https://example.com/**"]),
            },
        )
        assert done.output == "Signed in as ada", done
        # Read before evaluate_js below puts the value in an answer on purpose.
        events = get_task(server, s.id(), event_t=0).text
        assert s.evaluate_js("document.getElementById('token').value").output == token
        assert s.evaluate_js("document.getElementById('user').value").output == "ada"
        steps = steps_of(server, s.id())
    finally:
        s.close(force=True)
    reqs = llm.requests(marker)
    assert reqs, "the model was never asked"
    for body in reqs:
        text = json.dumps(body)
        assert token not in text and elsewhere not in text, "a secret value reached the model"
    task_msg = reqs[0]["messages"][1]["content"]
    assert "API_TOKEN" in task_msg and "OTHER" in task_msg, task_msg
    results = all_results(llm, marker)
    assert results[0].startswith("error") and "OTHER" in results[0], results
    # The page echoes the token: the view shows the placeholder instead.
    assert "with token <secret>API_TOKEN</secret>" in view_of(reqs[-1]), view_of(reqs[-1])
    dumped = json.dumps(steps)
    assert token not in dumped and elsewhere not in dumped, "a secret value is in the step traces"
    assert token not in events and elsewhere not in events, "a secret value is in the task's events"
    logs = server.stderr_path.read_text(errors="replace") + server.stdout_path.read_text(errors="replace")
    assert token not in logs and elsewhere not in logs, "a secret value is in smoothd's logs"


# --- (10) credits and step traces ---


def test_credits_and_step_traces(server, client, site, llm):
    marker = llm.script(
        "traced",
        [
            [{"op": "scroll", "direction": "down"}],
            [{"op": "click", "target": {"id": "noop"}}],
            [{"op": "done", "output": "traced"}],
        ],
    )
    handle = client.run(f"Leave a trace {marker}", url=site.url("/agent/slow.html"), max_steps=5)
    res = handle.result(timeout=RESULT_TIMEOUT)
    assert res.status == "done", res
    usages = llm.usages(marker)
    assert len(usages) == 3
    prompt = sum(u["prompt_tokens"] for u in usages)
    completion = sum(u["completion_tokens"] for u in usages)
    want = math.ceil((prompt * LLM_PRICE_IN + completion * LLM_PRICE_OUT) / 1e6 * 100 - 1e-9)
    assert res.credits_used is not None and res.credits_used > 0, res
    assert res.credits_used == want, f"credits {res.credits_used}, tokens {prompt}+{completion} -> {want}"

    # Without the key: refused.
    r = server.request("GET", f"/v1/task/{handle.id()}/steps", key=None)
    assert r.status_code == 401, r.status_code
    steps = steps_of(server, handle.id())
    assert [s["step"] for s in steps] == [1, 2, 3], steps
    assert [s["prompt_tokens"] for s in steps] == [u["prompt_tokens"] for u in usages], steps
    assert [s["completion_tokens"] for s in steps] == [u["completion_tokens"] for u in usages], steps
    assert [[a["name"] for a in s["actions"]] for s in steps] == [["scroll"], ["click"], ["done"]], steps
    assert steps[1]["actions"][0]["args"] == {"index": 0} and steps[1]["actions"][0]["result"].startswith("ok"), steps[
        1
    ]
    assert all(s["url"] == site.url("/agent/slow.html") and s.get("error") is None for s in steps), steps
    assert all(isinstance(s["llm_ms"], int) for s in steps), steps


# --- (11) additional tools ---


def screenshot_task(client, site, llm):
    """A task with additional_tools={"screenshot": None} that takes one; (handle, its requests)."""
    marker = llm.script("shot", [[{"op": "screenshot"}], [{"op": "done", "output": "shot"}]])
    handle = client.run(
        f"Take a screenshot {marker}", url=site.url("/agent/slow.html"), additional_tools={"screenshot": None}
    )
    res = handle.result(timeout=RESULT_TIMEOUT)
    assert res.status == "done", res
    return handle, llm.requests(marker)


def test_screenshot_is_offered_only_when_asked_for(client, site, llm):
    _, reqs = screenshot_task(client, site, llm)
    assert "screenshot" in tool_names(reqs[0]), tool_names(reqs[0])
    assert tool_results(reqs[1])[0].startswith("ok"), tool_results(reqs[1])
    # The image goes to the model with the next view (even with vision off).
    parts = reqs[1]["messages"][-1]["content"]
    assert isinstance(parts, list) and any(
        p.get("type") == "image_url" and p["image_url"]["url"].startswith("data:image/") for p in parts
    ), f"no image in the view after a screenshot: {str(parts)[:300]}"

    without = llm.script(
        "no-shot", [[{"op": "screenshot", "expect_error": True}], [{"op": "done", "output": "no shot"}]]
    )
    res = run(client, f"Try a screenshot {without}", url=site.url("/agent/slow.html"))
    assert res.status == "done", res
    reqs = llm.requests(without)
    assert "screenshot" not in tool_names(reqs[0]), tool_names(reqs[0])
    assert tool_results(reqs[1])[0].startswith("error"), "a tool that was not offered must be refused"


def test_screenshot_lands_in_the_downloads_archive(server, client, site, llm):
    handle, _ = screenshot_task(client, site, llm)
    names = download_names(server, handle.id())
    assert any(n.endswith(".png") for n in names), names


def test_unknown_additional_tool_is_refused_at_submit(server, client):
    with pytest.raises(ApiError) as e:
        client.run("anything", additional_tools={"teleport": None})
    assert 400 <= e.value.status_code < 500, e.value
    assert "teleport" in str(e.value), e.value
    r = server.request("POST", "/v1/task", json={"task": "x", "additional_tools": {"teleport": None}})
    assert 400 <= r.status_code < 500 and "additional_tools" in r.json()["detail"], r.text


# --- agents and models ---


def test_smooth_lite_runs_on_the_lite_model_and_the_trace_says_so(server, client, site, llm):
    lite = llm.script("lite", [[{"op": "scroll", "direction": "down"}], [{"op": "done", "output": "quick"}]])
    handle = client.run(f"Be quick {lite}", url=site.url("/agent/slow.html"), agent="smooth-lite", max_steps=5)
    res = handle.result(timeout=RESULT_TIMEOUT)
    assert res.status == "done" and res.output == "quick", res
    assert [r["model"] for r in llm.requests(lite)] == [LITE_MODEL, LITE_MODEL]
    assert [s["model"] for s in steps_of(server, handle.id())] == [LITE_MODEL, LITE_MODEL]
    # The default agent stays on the default model.
    full = llm.script("full", [[{"op": "done", "output": "thorough"}]])
    handle = client.run(f"Be thorough {full}", url=site.url("/agent/slow.html"), agent="smooth", max_steps=5)
    assert handle.result(timeout=RESULT_TIMEOUT).status == "done"
    assert [r["model"] for r in llm.requests(full)] == [LLM_MODEL]
    assert [s["model"] for s in steps_of(server, handle.id())] == [LLM_MODEL]
    # Anything else is refused at submit, naming the field.
    r = server.request("POST", "/v1/task", json={"task": "x", "agent": "smooth-max"})
    assert r.status_code == 422 and "agent" in r.json()["detail"], r.text


# --- proxies ---


def test_a_proxy_refusing_the_credentials_is_observed_and_named_in_the_final_error(server, client, site, llm):
    proxy = AuthProxy("alice", "s3cret", page_407=True)
    try:
        marker = llm.script(
            "proxy407",
            [
                [{"op": "goto", "url": site.url("/agent/slow.html"), "expect_error": True}],
                [{"op": "done", "output": "the page would not open", "success": False}],
            ],
        )
        handle = client.run(
            f"Open the slow page {marker}",
            proxy_server=proxy.url,
            proxy_username="alice",
            proxy_password="wrong",
            max_steps=4,
        )
        res = handle.result(timeout=RESULT_TIMEOUT)
        assert res.status == "failed", res
        # The model saw the refusal as the result of its goto...
        results = all_results(llm, marker)
        assert any("proxy refused the credentials" in r and "407" in r for r in results), results
        # ...and the final error says what stopped it.
        error = task_json(server, handle.id()).get("error") or ""
        assert "proxy refused the credentials" in error and "407" in error, error
        assert proxy.refused > 0 and proxy.forwarded == []
    finally:
        proxy.close()


# --- a browser that dies ---


def test_an_agent_task_whose_browser_dies_while_the_model_thinks_fails_at_once(server, client, site, llm):
    """The crash ends the task then, not at the agent's next action."""
    marker = llm.script(
        "crash-thinking",
        [
            [{"fault": "timeout", "seconds": 2.5, "times": 1}, {"op": "scroll", "direction": "down"}],
            [{"op": "done", "output": "never"}],
        ],
    )
    handle = client.run(f"Think slowly {marker}", url=site.url("/agent/slow.html"), max_steps=5)
    deadline = time.monotonic() + 60
    while not llm.requests(marker):
        assert time.monotonic() < deadline, "the model was never asked"
        time.sleep(0.05)
    pids = chromium_browser_pids(server.proc.pid)
    assert pids, "no browser to kill"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    res = handle.result(timeout=RESULT_TIMEOUT)
    assert res.status == "failed", res
    error = task_json(server, handle.id()).get("error") or ""
    # This task's own crash message (not the one of an action that met a dead browser).
    assert "the browser crashed (its process exited" in error, error
    assert len(llm.requests(marker)) == 1, "the loop went on after the crash"
