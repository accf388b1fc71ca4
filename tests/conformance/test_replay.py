"""Replay (`experimental_features.replay`) through the real SDK, with the scripted model, on pages
this module serves (each test has its own namespace whose layout and data it changes between
runs): a repeated task runs from its recorded path with at most one model request (the answer,
read from the page reached), heals itself when the page changes, types this run's metadata and
secrets, belongs to one API key, and obeys `mode` and `DELETE /v1/replay/{key}`.
"""

import http.server
import json
import secrets
import threading
from urllib.parse import parse_qs, urlsplit

import pytest
from smooth.models import Secret

from smoothd_support import db_text, download_names, get_task, llm_env, make_client, close_client, scripted_model, serve, wait_status

RESULT_TIMEOUT = 120


@pytest.fixture(scope="module")
def llm():
    yield from scripted_model()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, llm):
    yield from serve(request.param, llm_env(llm.base_url))


@pytest.fixture(autouse=True)
def _needs_browser(browser):
    """Every replay test drives Chromium."""


class Shop:
    """Pages under /s/<ns>/: a form (email, name, Send) that leads to a two-page list whose second
    page shows the order's price. Each namespace has its own switches: `price`, `renamed` (Send
    is called "Place order"), `moved` (Send above the fields), `interstitial` (a Continue page
    first), `file` (the name of the report that /s/<ns>/reports links to as an attachment)."""

    def __init__(self) -> None:
        self.state: dict[str, dict] = {}
        shop = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if len(parts) != 3 or parts[0] != "s":
                    self.send_response(404)
                    self.end_headers()
                    return
                if parts[2] == "file":
                    name = shop.state.setdefault(parts[1], {}).get("file", "report-1.csv")
                    body = f"quarter,sales\nQ3,{name}\n".encode()
                    self.send_response(200)
                    self.send_header("content-type", "text/csv")
                    self.send_header("content-disposition", f'attachment; filename="{name}"')
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                body = shop.page(parts[1], parts[2], q).encode()
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def ns(self, name: str) -> str:
        self.state[name] = {"price": 42}
        return f"{self.base}/s/{name}/start"

    def page(self, ns: str, page: str, q: dict) -> str:
        st = self.state.setdefault(ns, {"price": 42})
        if page == "start" and st.get("interstitial"):
            return (
                "<!doctype html><title>One moment</title><h1>Before you order</h1>"
                f'<p>Please read our terms.</p><a href="/s/{ns}/form">Continue</a>'
            )
        if page in ("start", "form"):
            button = f'<button id="send" type="submit">{"Place order" if st.get("renamed") else "Send"}</button>'
            fields = (
                '<p><label for="email">Email</label> <input id="email" name="email"></p>'
                '<p><label for="name">Name</label> <input id="name" name="name"></p>'
            )
            inner = button + fields if st.get("moved") else fields + button
            return (
                "<!doctype html><title>Order form</title><h1>Order a widget</h1>"
                f'<form action="/s/{ns}/list">{inner}</form>'
            )
        if page == "reveal":
            # The form shows when "Show form" is clicked: at once, or `late` (ms) later, as
            # content a script brings; then Name is there too, or shows `late` ms after Email is
            # typed into.
            late = int(st.get("late", 0))
            show = "f.hidden = false" if not late else f"setTimeout(() => {{ f.hidden = false; }}, {late})"
            name = "n.hidden = false" if not late else f"setTimeout(() => {{ n.hidden = false; }}, {late})"
            return (
                "<!doctype html><title>Order form</title><h1>Order a widget</h1>"
                f'<button id="show" type="button" onclick="{show}">Show form</button>'
                f'<form id="f" action="/s/{ns}/list" hidden>'
                '<p><label for="email">Email</label> <input id="email" name="email"></p>'
                f'<p id="n"{" hidden" if late else ""}><label for="name">Name</label> <input id="name" name="name"></p>'
                '<button id="send" type="submit">Send</button></form>'
                "<script>const f = document.getElementById('f'), n = document.getElementById('n');"
                f"document.getElementById('email').addEventListener('input', () => {{ {name}; }});</script>"
            )
        if page == "reports":
            return (
                "<!doctype html><title>Reports</title><h1>Sales reports</h1>"
                "<p>Quarterly figures as a spreadsheet.</p>"
                f'<a id="dl" href="/s/{ns}/file">Get it</a>'
            )
        if page == "list":
            email, name, n = q.get("email", ""), q.get("name", ""), q.get("page", "1")
            if n == "1":
                items = "".join(f"<li>Gadget {i}</li>" for i in range(1, 4))
                nxt = f'<a href="/s/{ns}/list?email={email}&name={name}&page=2">Next</a>'
                return f"<!doctype html><title>Results</title><h1>Results for {name}</h1><ul>{items}</ul>{nxt}"
            return (
                f"<!doctype html><title>Results</title><h1>Results for {name}</h1>"
                f"<ul><li>Widget</li></ul><p>Order for {email} costs ${st['price']}</p>"
            )
        return "<!doctype html><title>Nothing</title><p>no such page</p>"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def shop():
    s = Shop()
    yield s
    s.close()


def order_script(llm, name: str, interstitial: bool = False) -> str:
    turns = [
        [
            {"op": "type", "target": {"id": "email"}, "text": "ada@example.com"},
            {"op": "type", "target": {"id": "name"}, "text": "Ada"},
            {"op": "click", "target": {"id": "send"}},
        ],
        [{"op": "click", "target": {"text": "Next"}}],
        [{"op": "done", "output_from": r"(Order for \S+ costs \$\d+)"}],
    ]
    if interstitial:
        turns.insert(0, [{"op": "click", "target": {"text": "Continue"}}])
    return llm.script(name, turns)


def run(client, task: str, url: str, replay: dict | None = None, **kw):
    kw.setdefault("max_steps", 12)
    features = {"replay": replay if replay is not None else {}}
    return client.run(task, url=url, experimental_features=features, **kw).result(timeout=RESULT_TIMEOUT)


def steps_of(server, tid: str, key: str = "default") -> list[dict]:
    r = server.request("GET", f"/v1/task/{tid}/steps", key=key)
    assert r.status_code == 200, r.text
    return r.json()["r"]


def paths(server, key: str = "default") -> list[dict]:
    r = server.request("GET", "/v1/replay", key=key)
    assert r.status_code == 200, r.text
    return r.json()["r"]


def path_for(server, task: str, key: str = "default") -> dict:
    found = [p for p in paths(server, key) if p["task"] == task]
    assert len(found) == 1, paths(server, key)
    return found[0]


def sources(steps: list[dict]) -> list[str]:
    return [s.get("source") for s in steps]


# --- (1) a multi-step task replayed, (2) with changed data, (4) with other metadata ---


def test_a_second_run_replays_the_path_with_one_model_request(server, client, shop, llm):
    marker = order_script(llm, "replay-basic")
    url = shop.ns("basic")
    task = f"Order a widget for {{email}} and report the price {marker}"
    first = run(client, task, url, metadata={"email": "ada@example.com"})
    assert first.status == "done" and first.output == "Order for ada@example.com costs $42", first
    asked = len(llm.requests(marker))
    assert asked == 3, asked
    stored = path_for(server, task)
    assert stored["steps"] == 2 and stored["replays"] == 0 and stored["key"].startswith("auto-"), stored

    second = run(client, task, url, metadata={"email": "ada@example.com"})
    assert second.status == "done" and second.output == "Order for ada@example.com costs $42", second
    replay_reqs = llm.requests(marker)[asked:]
    assert len(replay_reqs) == 1, [r["messages"][-1]["content"][:200] for r in replay_reqs]
    last = replay_reqs[0]["messages"][-1]["content"]
    assert last.startswith("REPLAY: the recorded steps ran again; read the answer from the page below and call done.\n")
    assert [t["function"]["name"] for t in replay_reqs[0]["tools"]] == ["done"]
    steps = steps_of(server, second.id)
    assert sources(steps) == ["replay"] * 3, steps
    assert [s["prompt_tokens"] for s in steps[:2]] == [0, 0], steps
    assert steps[0]["actions"][0]["args"]["text"] == "ada@example.com", steps[0]
    # The answer request is small: at most a fifth of the first run's prompt tokens (the target).
    first_tokens = sum(u["prompt_tokens"] for u in llm.usages(marker)[:asked])
    assert llm.usages(marker)[asked]["prompt_tokens"] <= 0.2 * first_tokens, llm.usages(marker)
    assert path_for(server, task)["replays"] == 1
    events = get_task(server, second.id, event_t=0).json()["r"]["events"]
    step_events = [e for e in events if e.get("name") == "step"]
    assert step_events and all(e["payload"].get("source") == "replay" for e in step_events), step_events


def test_a_replay_reads_the_new_data_and_types_this_runs_metadata(server, client, shop, llm):
    marker = order_script(llm, "replay-data")
    url = shop.ns("data")
    task = f"Order a widget for {{email}} and report the price {marker}"
    first = run(client, task, url, metadata={"email": "ada@example.com"})
    assert first.output == "Order for ada@example.com costs $42", first
    stored = server.request("GET", f"/v1/replay/{path_for(server, task)['key']}").json()["r"]
    typed = stored["path"]["steps"][0]["actions"][0]
    assert typed["args"]["text"] == {"var": "email"} and "index" not in typed["args"], typed
    assert "ada@example.com" not in json.dumps(stored["path"]), stored["path"]
    asked = len(llm.requests(marker))

    shop.state["data"]["price"] = 57
    second = run(client, task, url, metadata={"email": "bob@example.com"})
    assert second.status == "done", second
    assert second.output == "Order for bob@example.com costs $57", second.output
    assert len(llm.requests(marker)) - asked == 1
    steps = steps_of(server, second.id)
    assert steps[0]["actions"][0]["args"]["text"] == "bob@example.com", steps[0]
    assert sources(steps) == ["replay"] * 3, steps


def report_task(llm, shop, ns: str, output: str) -> tuple[str, str, str]:
    marker = llm.script(f"replay-{ns}", [[{"op": "click", "target": {"id": "dl"}}], [{"op": "done", "output": output}]])
    url = shop.ns(ns).replace("/start", "/reports")
    return marker, url, f"Download the sales report and tell me the name of the downloaded file {marker}"


def test_an_answer_naming_the_download_is_this_runs_download_with_no_model_request(server, client, shop, llm):
    marker, url, task = report_task(llm, shop, "download", "Downloaded the sales report as report-1.csv")
    first = run(client, task, url)
    assert first.status == "done" and first.output == "Downloaded the sales report as report-1.csv", first
    asked = len(llm.requests(marker))
    assert asked == 2, asked
    stored = server.request("GET", f"/v1/replay/{path_for(server, task)['key']}").json()["r"]["path"]
    assert stored["output"] == {
        "output": "Downloaded the sales report as {{download:0}}",
        "downloads": 1,
        "task": task,
    }, stored

    # Today the report has another name: the replay answers with the file it downloaded itself.
    shop.state["download"]["file"] = "report-2.csv"
    second = run(client, task, url)
    assert second.status == "done", second
    assert second.output == "Downloaded the sales report as report-2.csv", second.output
    assert len(llm.requests(marker)) == asked, "a replay whose answer names its download asks no model"
    steps = steps_of(server, second.id)
    assert sources(steps) == ["replay", "replay"], steps
    assert [s["prompt_tokens"] for s in steps] == [0, 0], steps
    assert steps[-1]["actions"] == [
        {"name": "done", "args": {"output": second.output, "success": True}, "result": "ok"}
    ], steps[-1]
    assert download_names(server, second.id) == ["report-2.csv"]
    assert path_for(server, task)["replays"] == 1


def test_an_answer_with_page_words_beside_the_download_is_still_read_by_the_model(server, client, shop, llm):
    # "Quarterly figures" are the page's words, not the task's: the answer may come from the page.
    marker, url, task = report_task(llm, shop, "figures", "Downloaded the quarterly figures as report-1.csv")
    first = run(client, task, url)
    assert first.status == "done", first
    asked = len(llm.requests(marker))
    stored = server.request("GET", f"/v1/replay/{path_for(server, task)['key']}").json()["r"]["path"]
    assert "output" not in stored, stored
    second = run(client, task, url)
    assert second.status == "done", second
    replay_reqs = llm.requests(marker)[asked:]
    assert len(replay_reqs) == 1, len(replay_reqs)
    assert replay_reqs[0]["messages"][-1]["content"].startswith(
        "REPLAY: the recorded steps ran again; read the answer from the page below and call done.\n"
    )


# --- (3) layout changes ---


def test_a_renamed_button_hands_over_to_the_model_and_the_healed_path_replays(server, client, shop, llm):
    marker = order_script(llm, "replay-renamed")
    url = shop.ns("renamed")
    task = f"Order a widget and report the price {marker}"
    assert run(client, task, url).status == "done"
    shop.state["renamed"]["renamed"] = True
    before = len(llm.requests(marker))
    healed = run(client, task, url)
    assert healed.status == "done" and healed.output == "Order for ada@example.com costs $42", healed
    steps = steps_of(server, healed.id)
    assert sources(steps)[0] == "replay" and "model" in sources(steps), steps
    diverged = [s for s in steps if s.get("diverged")]
    assert len(diverged) == 1 and diverged[0]["source"] == "model", steps
    assert "recorded step 1 of 2" in diverged[0]["diverged"], diverged[0]
    assert [a["name"] for a in steps[0]["actions"]] == ["type", "type"], steps[0]
    assert len(llm.requests(marker)) - before >= 2
    # The model saw what the replay had done.
    took_over = llm.requests(marker)[before]
    assert any(m["role"] == "assistant" and m.get("tool_calls") for m in took_over["messages"]), took_over

    before = len(llm.requests(marker))
    third = run(client, task, url)
    assert third.status == "done" and third.output == "Order for ada@example.com costs $42", third
    assert len(llm.requests(marker)) - before <= 1
    assert set(sources(steps_of(server, third.id))) == {"replay"}


def test_an_interstitial_page_hands_over_and_the_healed_path_replays(server, client, shop, llm):
    url = shop.ns("inter")
    key = "inter-" + secrets.token_hex(4)
    first = order_script(llm, "replay-inter-a")
    assert run(client, f"Order a widget {first}", url, {"key": key}).status == "done"
    shop.state["inter"]["interstitial"] = True
    healing = order_script(llm, "replay-inter-b", interstitial=True)
    healed = run(client, f"Order a widget {healing}", url, {"key": key})
    assert healed.status == "done" and healed.output == "Order for ada@example.com costs $42", healed
    steps = steps_of(server, healed.id)
    assert steps[0]["source"] == "model" and "recorded step 1 of 2" in steps[0]["diverged"], steps[0]
    assert "differs" in steps[0]["diverged"], steps[0]
    assert server.request("GET", f"/v1/replay/{key}").json()["r"]["steps"] == 3

    third = order_script(llm, "replay-inter-c", interstitial=True)
    again = run(client, f"Order a widget {third}", url, {"key": key})
    assert again.status == "done" and again.output == "Order for ada@example.com costs $42", again
    assert len(llm.requests(third)) == 1
    assert set(sources(steps_of(server, again.id))) == {"replay"}


def test_a_moved_button_is_found_by_its_description(server, client, shop, llm):
    marker = order_script(llm, "replay-moved")
    url = shop.ns("moved")
    task = f"Order a widget and report the price {marker}"
    assert run(client, task, url).status == "done"
    shop.state["moved"]["moved"] = True
    before = len(llm.requests(marker))
    moved = run(client, task, url)
    assert moved.status == "done" and moved.output == "Order for ada@example.com costs $42", moved
    assert len(llm.requests(marker)) - before == 1
    steps = steps_of(server, moved.id)
    assert set(sources(steps)) == {"replay"} and not any(s.get("diverged") for s in steps), steps


def test_content_that_comes_late_after_a_replayed_action_is_waited_for(server, client, shop, llm):
    marker = llm.script(
        "replay-late",
        [
            [{"op": "click", "target": {"text": "Show form"}}],
            [
                {"op": "type", "target": {"id": "email"}, "text": "ada@example.com"},
                {"op": "type", "target": {"id": "name"}, "text": "Ada"},
                {"op": "click", "target": {"id": "send"}},
            ],
            [{"op": "click", "target": {"text": "Next"}}],
            [{"op": "done", "output_from": r"(Order for \S+ costs \$\d+)"}],
        ],
    )
    shop.ns("late")
    url = f"{shop.base}/s/late/reveal"
    task = f"Order a widget and report the price {marker}"
    assert run(client, task, url).status == "done"
    assert path_for(server, task)["steps"] == 3
    # Now the form comes 250 ms after the click, and the Name field 250 ms after Email is typed
    # (a step's page and an action's element not there yet when the replay gets to them).
    shop.state["late"]["late"] = 250
    before = len(llm.requests(marker))
    late = run(client, task, url)
    assert late.status == "done" and late.output == "Order for ada@example.com costs $42", late
    assert len(llm.requests(marker)) - before == 1
    steps = steps_of(server, late.id)
    assert sources(steps) == ["replay"] * 4 and not any(s.get("diverged") for s in steps), steps
    assert [a["name"] for a in steps[1]["actions"]] == ["type", "type", "click"], steps[1]
    assert path_for(server, task)["replays"] == 1


# --- (5) secrets ---


def db_paths_text(server) -> str:
    return db_text(server, "SELECT owner, cache_key, task, path FROM replay_paths")


def test_a_secret_is_typed_on_replay_and_stored_nowhere(server, client, shop, llm, site):
    token = "tok-" + secrets.token_hex(8)
    marker = llm.script(
        "replay-secret",
        [
            [
                {"op": "type", "target": {"id": "user"}, "text": "ada"},
                {"op": "type", "target": {"label": "Access token"}, "text": "<secret>API_TOKEN</secret>"},
                {"op": "click", "target": {"text": "Sign in"}},
            ],
            [{"op": "done", "output_from": r"(Signed in as ada)"}],
        ],
    )
    task = f"Sign in as ada {marker}"
    secret = {"API_TOKEN": Secret(value=token, allowed_urls=[f"{site.base}/agent/**"])}
    ids = []
    for _ in range(2):
        s = client.session(experimental_features={"replay": {}})
        ids.append(s.id())
        wait_status(server, s.id(), "running", timeout=60)
        try:
            done = s.run_task(task, url=site.url("/agent/login.html"), max_steps=6, secrets=secret)
            assert done.output == "Signed in as ada", done
            # Read before evaluate_js below puts the value in an answer on purpose.
            events = get_task(server, s.id(), event_t=0).text
            assert token not in events, "a secret value is in the session's events"
            assert s.evaluate_js("document.getElementById('token').value").output == token
        finally:
            s.close(force=True)
    assert len(llm.requests(marker)) == 3, len(llm.requests(marker))
    replayed = steps_of(server, ids[1])
    assert [st["source"] for st in replayed] == ["replay", "replay"], replayed
    stored = server.request("GET", f"/v1/replay/{path_for(server, task)['key']}").json()["r"]
    assert "<secret>API_TOKEN</secret>" in json.dumps(stored), stored
    for text in (
        json.dumps(stored),
        db_paths_text(server),
        json.dumps([steps_of(server, i) for i in ids]),
        json.dumps(llm.requests(marker)),
    ):
        assert token not in text
    logs = server.stderr_path.read_text(errors="replace") + server.stdout_path.read_text(errors="replace")
    assert token not in logs, "a secret value is in smoothd's logs"


# --- (6) another key, (7) mode record, DELETE, bad values ---


def test_another_key_can_neither_see_use_nor_delete_a_path(server, client, shop, llm):
    marker = order_script(llm, "replay-keys")
    url = shop.ns("keys")
    task = f"Order a widget and report the price {marker}"
    assert run(client, task, url).status == "done"
    key = path_for(server, task)["key"]
    assert all(p["key"] != key for p in paths(server, server.other_key))
    assert server.request("GET", f"/v1/replay/{key}", key=server.other_key).status_code == 404
    r = server.request("DELETE", f"/v1/replay/{key}", key=server.other_key)
    assert r.status_code == 404 and "detail" in r.json(), r.text
    other = make_client(server.base + "/", server.other_key)
    try:
        before = len(llm.requests(marker))
        theirs = run(other, task, url)
        assert theirs.status == "done", theirs
        assert len(llm.requests(marker)) - before == 3
        assert set(sources(steps_of(server, theirs.id, key=server.other_key))) == {"model"}
    finally:
        close_client(other)
    assert path_for(server, task, key=server.other_key)["key"] == key
    assert path_for(server, task)["replays"] == 0


def test_mode_record_refreshes_and_delete_records_again(server, client, shop, llm):
    marker = order_script(llm, "replay-modes")
    url = shop.ns("modes")
    task = f"Order a widget and report the price {marker}"
    assert run(client, task, url).status == "done"
    created = path_for(server, task)
    before = len(llm.requests(marker))
    recorded = run(client, task, url, {"mode": "record"})
    assert recorded.status == "done" and len(llm.requests(marker)) - before == 3
    assert set(sources(steps_of(server, recorded.id))) == {"model"}
    refreshed = path_for(server, task)
    assert refreshed["updated_at"] >= created["updated_at"] and refreshed["replays"] == 0, refreshed

    off = run(client, task, url, {"mode": "off"})
    assert off.status == "done" and len(llm.requests(marker)) - before == 6

    r = server.request("DELETE", f"/v1/replay/{created['key']}")
    assert r.status_code == 200 and r.json()["r"] is True, r.text
    assert server.request("GET", f"/v1/replay/{created['key']}").status_code == 404
    before = len(llm.requests(marker))
    again = run(client, task, url)
    assert again.status == "done" and len(llm.requests(marker)) - before == 3
    assert path_for(server, task)["steps"] == 2


@pytest.mark.parametrize(
    "replay, field",
    [
        ({"mode": "sometimes"}, "experimental_features.replay.mode"),
        ({"key": "a/b"}, "experimental_features.replay.key"),
        ({"key": 3}, "experimental_features.replay.key"),
        ("on", "experimental_features.replay"),
        ({"ttl": 1}, "experimental_features.replay.ttl"),
    ],
)
def test_bad_replay_options_are_refused_naming_the_field(server, replay, field):
    r = server.request("POST", "/v1/task", json={"task": "x", "experimental_features": {"replay": replay}})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{field}:"), r.text
