"""The agent's guardrails through the real SDK, against the scripted model and the fixture pages
under tests/fixtures/site/agent: the loop guard (a model repeating a click on a dead button,
going back and forth between two pages, or waiting and scrolling on a page that does not change
is warned in its next observation, then stopped) without flagging real progress (a form filled
field by field, paging, scrolling an article), and the spend cap `max_cost_usd` (the task's, and
the server's default `SMOOTHD_MAX_COST_USD`, the smallest winning).

The module runs its own smoothd per backend with the guard's defaults (3 repeats, 4 alternating
observations, 5 steps without change, 2 steps of grace), `SMOOTHD_LLM_MAX_TOKENS=200`, a global
cap of $0.50, and a price table where the lite model costs nothing per prompt token and
$1000 per million reply tokens, so the number of requests a cap allows follows from the replies'
token counts alone.
"""

import subprocess

import pytest

from smooth._exceptions import ApiError

from smoothd_support import LLM_MODEL, close_client, get_task, llm_env, make_client, scripted_model, serve

RESULT_TIMEOUT = 120
LITE_MODEL = "scripted-lite"
LITE_PRICE_OUT = 1000.0  # USD per million reply tokens; prompt tokens are free
MAX_TOKENS = 200
GLOBAL_CAP = 0.5


@pytest.fixture(scope="module")
def llm():
    yield from scripted_model()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, llm):
    # The default model is cheap here, so the global cap never stops the loop guard's tasks.
    prices = f"{{{LLM_MODEL}={{input=1.0,output=1.0}},{LITE_MODEL}={{input=0.0,output={LITE_PRICE_OUT}}}}}"
    env = llm_env(
        llm.base_url,
        SMOOTHD_LLM_LITE_MODEL=LITE_MODEL,
        SMOOTHD_LLM_PRICES=prices,
        SMOOTHD_LLM_MAX_TOKENS=str(MAX_TOKENS),
        SMOOTHD_MAX_COST_USD=str(GLOBAL_CAP),
    )
    yield from serve(request.param, env)


@pytest.fixture(autouse=True)
def _needs_browser(browser):
    """Every test here drives Chromium."""


def task_json(server, tid: str) -> dict:
    r = get_task(server, tid, event_t=0)
    assert r.status_code in (200, 202), r.text
    return r.json()["r"]


def steps_of(server, tid: str) -> list[dict]:
    r = server.request("GET", f"/v1/task/{tid}/steps")
    assert r.status_code == 200, r.text
    return r.json()["r"]


def step_events(server, tid: str) -> list[dict]:
    return [e["payload"] for e in task_json(server, tid)["events"] or [] if e["name"] == "step"]


def view_of(body: dict) -> str:
    users = [m for m in body["messages"] if m.get("role") == "user"]
    content = users[-1]["content"]
    return content if isinstance(content, str) else "\n".join(p.get("text", "") for p in content)


def warned(reqs: list[dict]) -> list[int]:
    """The requests (0-based) whose page view opens with the guard's warning."""
    return [i for i, b in enumerate(reqs) if view_of(b).startswith("WARNING:")]


# --- the loop guard ---


def test_a_repeated_click_on_a_dead_button_is_warned_then_stopped(server, client, site, llm):
    marker = llm.script("dead-button", [[{"op": "click", "target": {"id": "noop"}}] for _ in range(20)])
    handle = client.run(f"Press until something happens {marker}", url=site.url("/agent/slow.html"), max_steps=20)
    res = handle.result(timeout=RESULT_TIMEOUT)
    assert res.status == "failed", res
    reqs = llm.requests(marker)
    # Three clicks change nothing: the fourth request warns; two more without progress end it.
    assert warned(reqs) == [3, 4], [view_of(b)[:160] for b in reqs]
    first = view_of(reqs[3])
    assert first.startswith("WARNING: you have repeated click on <button id=noop>Noop 3 times on the same page"), first
    assert "Change your approach" in first and "\nStep 4/20\n" in first, first[:400]
    assert len(reqs) == 5, len(reqs)
    final = task_json(server, handle.id())
    assert final["error"] == (
        "stopped: the agent was in a loop (click on <button id=noop>Noop 5 times, page unchanged); "
        "15 of max_steps 20 steps saved"
    ), final["error"]
    steps = steps_of(server, handle.id())
    assert len(steps) == 5 < 20, steps
    assert [s.get("guard") is not None for s in steps] == [False, False, False, True, True], steps
    assert "click on <button id=noop>Noop 3 times" in steps[3]["guard"], steps[3]
    events = step_events(server, handle.id())
    assert [("guard" in e) for e in events] == [False, False, False, True, True], events
    assert events[3]["guard"] == steps[3]["guard"], events


def test_going_back_and_forth_between_two_pages_is_stopped(server, client, site, llm):
    turns = [[{"op": "click", "target": {"text": "Go to Pong" if i % 2 == 0 else "Go to Ping"}}] for i in range(20)]
    marker = llm.script("ping-pong", turns)
    handle = client.run(f"Find the answer {marker}", url=site.url("/agent/ping.html"), max_steps=20)
    res = handle.result(timeout=RESULT_TIMEOUT)
    assert res.status == "failed", res
    reqs = llm.requests(marker)
    assert warned(reqs) == [3, 4], [view_of(b)[:160] for b in reqs]
    assert "back and forth between the same two page states" in view_of(reqs[3]), view_of(reqs[3])[:300]
    error = task_json(server, handle.id())["error"]
    assert error.startswith("stopped: the agent was in a loop (alternating between two page states ("), error
    assert site.url("/agent/ping.html") in error and site.url("/agent/pong.html") in error, error
    assert error.endswith("; 15 of max_steps 20 steps saved"), error


def test_waiting_and_scrolling_on_a_page_that_never_changes_stalls(server, client, site, llm):
    turns = [
        [{"op": "wait", "seconds": 0.2}] if i % 2 == 0 else [{"op": "scroll", "direction": "down", "expect_error": True}]
        for i in range(20)
    ]
    marker = llm.script("stall", turns)
    handle = client.run(f"Wait for news {marker}", url=site.url("/agent/slow.html"), max_steps=20)
    res = handle.result(timeout=RESULT_TIMEOUT)
    assert res.status == "failed", res
    reqs = llm.requests(marker)
    assert warned(reqs) == [5, 6], [view_of(b)[:160] for b in reqs]
    assert "taken 5 steps without any change to the page" in view_of(reqs[5]), view_of(reqs[5])[:300]
    error = task_json(server, handle.id())["error"]
    assert error == (
        "stopped: the agent was in a loop (7 steps without any change to the page); 13 of max_steps 20 steps saved"
    ), error


def test_real_progress_is_not_flagged(server, client, site, llm):
    """A form filled one field per step, three pages of results, an article scrolled to its end:
    each step changes the page, however alike the actions."""
    form = llm.script(
        "one-by-one",
        [
            [{"op": "type", "target": {"label": "Full name"}, "text": "Ada Lovelace"}],
            [{"op": "type", "target": {"id": "email"}, "text": "ada@example.com"}],
            [{"op": "select_option", "target": {"id": "plan"}, "option": "Pro"}],
            [{"op": "click", "target": {"label": "Send me the newsletter"}}],
            [{"op": "click", "target": {"type": "radio", "value": "L"}}],
            [{"op": "click", "target": {"text": "Create account"}}],
            [{"op": "done", "output_from": r"Confirmation: (\S+)"}],
        ],
    )
    paging = llm.script(
        "paging",
        [
            [{"op": "type", "target": {"placeholder": "Search products"}, "text": "lamp", "submit": True}],
            [{"op": "click", "target": {"text": "Next page"}}],
            [{"op": "click", "target": {"text": "Next page"}}],
            [{"op": "done", "output_from": r"page (\d) of 3"}],
        ],
    )
    article = llm.script(
        "article", [[{"op": "scroll", "direction": "down"}] for _ in range(9)] + [[{"op": "done", "output": "read"}]]
    )
    counter = llm.script(
        "counter",
        [[{"op": "click", "target": {"id": "add"}}] for _ in range(6)] + [[{"op": "done", "output_from": r"Count: (\d+)"}]],
    )
    runs = [
        (form, "/agent/form.html", "PRO-L-Y-12"),
        (paging, "/agent/search.html", "3"),
        (article, "/agent/article.html", "read"),
        (counter, "/agent/counter.html", "6"),
    ]
    handles = [(m, client.run(f"Do it {m}", url=site.url(path), max_steps=15), want) for m, path, want in runs]
    for marker, handle, want in handles:
        res = handle.result(timeout=RESULT_TIMEOUT)
        assert res.status == "done" and res.output == want, (marker, res)
        reqs = llm.requests(marker)
        assert len(reqs) >= 4 and warned(reqs) == [], (marker, [view_of(b)[:120] for b in reqs])
        assert all(s.get("guard") is None for s in steps_of(server, handle.id())), marker


# --- the spend cap ---


def cost_of(usages: list[dict]) -> float:
    """What the lite model's replies cost, as the agent computes it (prompt tokens are free)."""
    prompt = sum(u["prompt_tokens"] for u in usages)
    completion = sum(u["completion_tokens"] for u in usages)
    return prompt * 0.0 / 1e6 + completion * LITE_PRICE_OUT / 1e6


def allowed_requests(usages: list[dict], cap: float) -> int:
    """How many requests of the lite model a cap lets out, given the replies' token counts: the
    next one goes out while what was spent plus a reply of MAX_TOKENS stays within the cap (its
    prompt is free). One more than were made when the cap did not stop the run."""
    worst = 0.0 + MAX_TOKENS * LITE_PRICE_OUT / 1e6
    n = 0
    while n <= len(usages) and cost_of(usages[:n]) + worst <= cap:
        n += 1
    return n


def counting_task(client, llm, site, name: str, **kw):
    """A lite task that clicks "Add one" for ever (real progress, so only the cap stops it)."""
    marker = llm.script(name, [[{"op": "click", "target": {"id": "add"}}] for _ in range(60)])
    handle = client.run(
        f"Count for ever {marker}", url=site.url("/agent/counter.html"), agent="smooth-lite", max_steps=60, **kw
    )
    return marker, handle


@pytest.mark.parametrize("cap", [0.3, 0.34])
def test_max_cost_usd_stops_the_run_at_the_cap_within_one_request(server, client, site, llm, cap):
    marker, handle = counting_task(client, llm, site, f"capped-{cap}", experimental_features={"max_cost_usd": cap})
    res = handle.result(timeout=RESULT_TIMEOUT)
    assert res.status == "failed", res
    usages = llm.usages(marker)
    assert len(usages) == allowed_requests(usages, cap) > 2, (len(usages), usages)
    spent = cost_of(usages)
    assert spent <= cap, spent
    final = task_json(server, handle.id())
    assert final["error"].startswith(f"budget reached: spent ${spent:.6f} of max_cost_usd ${cap} "), final["error"]
    # The partial work is there: the counter went up once per request.
    steps = steps_of(server, handle.id())
    assert len(steps) == len(usages), steps
    assert f"Count: {len(usages) - 1}" in steps[-1]["view"], steps[-1]["view"][-300:]
    # Each step event carries its cost and the running total, which only grows.
    events = step_events(server, handle.id())
    assert len(events) == len(usages), events
    totals = [e["total_cost_usd"] for e in events]
    assert totals == sorted(totals) and len(set(totals)) == len(totals), totals
    assert totals[-1] == pytest.approx(spent, abs=1e-12), (totals, spent)
    assert [e["cost_usd"] for e in events] == pytest.approx(
        [u["completion_tokens"] * LITE_PRICE_OUT / 1e6 for u in usages], abs=1e-12
    ), events
    assert [s["total_cost_usd"] for s in steps] == pytest.approx(totals, abs=1e-12), steps


def test_the_server_default_cap_applies_and_the_smallest_cap_wins(server, client, site, llm):
    # No cap of its own, then a looser one: the server's $0.50 stops both.
    for name, kw in [("global-cap", {}), ("looser-cap", {"experimental_features": {"max_cost_usd": 5}})]:
        marker, handle = counting_task(client, llm, site, name, **kw)
        res = handle.result(timeout=RESULT_TIMEOUT)
        assert res.status == "failed", res
        usages = llm.usages(marker)
        assert len(usages) == allowed_requests(usages, GLOBAL_CAP), (name, len(usages))
        assert cost_of(usages) <= GLOBAL_CAP
        error = task_json(server, handle.id())["error"]
        assert error.startswith("budget reached: spent $") and f"of max_cost_usd ${GLOBAL_CAP} " in error, error


def keys_cli(server, *args: str) -> str:
    r = subprocess.run(
        [server.bin, "keys", *args], cwd=server.tmp, env=server.env(), capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, f"smoothd keys {args}: {r.stderr}"
    return r.stdout


def test_a_key_default_cap_applies_to_its_tasks(server, site, llm):
    name = f"capped-key-{server.backend}"
    key = keys_cli(server, "create", "--name", name, "--max-cost-usd", "0.3").strip().splitlines()[-1]
    assert f"max_cost_usd $0.3" in keys_cli(server, "list"), keys_cli(server, "list")
    capped = make_client(server.base + "/", key)
    try:
        marker, handle = counting_task(capped, llm, site, f"key-cap-{server.backend}")
        res = handle.result(timeout=RESULT_TIMEOUT)
        assert res.status == "failed", res
        usages = llm.usages(marker)
        assert len(usages) == allowed_requests(usages, 0.3), len(usages)
        error = get_task(server, handle.id(), key=key).json()["r"]["error"]
        assert "budget reached" in error and "of max_cost_usd $0.3 " in error, error
    finally:
        close_client(capped)
    # Cleared, the server's default applies again.
    assert "no max_cost_usd" in keys_cli(server, "max-cost", name)
    assert "max_cost_usd $0.3" not in keys_cli(server, "list")


def test_a_cap_below_one_reply_sends_nothing(server, client, site, llm):
    marker = llm.script("too-poor", [[{"op": "done", "output": "never"}]])
    handle = client.run(
        f"Answer {marker}", agent="smooth-lite", max_steps=5, experimental_features={"max_cost_usd": 0.1}
    )
    res = handle.result(timeout=RESULT_TIMEOUT)
    assert res.status == "failed", res
    assert llm.requests(marker) == [], "a request that could cost $0.20 went out under a $0.10 cap"
    error = task_json(server, handle.id())["error"]
    assert error.startswith("budget reached: spent $0.000000 of max_cost_usd $0.1 "), error


@pytest.mark.parametrize(
    "bad, says",
    [
        (-1, "positive number"),
        (0, "positive number"),
        ("0.5", "got a string"),
        (True, "got a boolean"),
    ],
)
def test_a_bad_max_cost_usd_is_refused_naming_the_field(server, client, bad, says):
    with pytest.raises(ApiError) as e:
        client.run("anything", experimental_features={"max_cost_usd": bad})
    assert e.value.status_code == 422, e.value
    assert "experimental_features.max_cost_usd" in str(e.value) and says in str(e.value), e.value
    r = server.request("POST", "/v1/task", json={"task": "x", "experimental_features": {"max_cost_usd": bad}})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("experimental_features.max_cost_usd: "), r.text
