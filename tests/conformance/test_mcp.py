"""The MCP server at /mcp, driven by the official MCP Python SDK (`mcp`) over Streamable HTTP with
the API key in the `apikey` header: list the tools (input schemas cut from POST /v1/task's), run a
task to `done` with the scripted model and receive a progress notification per step, drive a
session through open_session, goto, evaluate_js and close_session (and see it in GET /v1/task),
and have a wrong key refused. On SQLite all-in-one and on PostgreSQL.
"""

import asyncio
import json

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from smoothd_support import llm_env, scripted_model, serve, Server, wait_final

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("browser")]

TOOLS = {
    "run_task",
    "open_session",
    "goto",
    "extract",
    "evaluate_js",
    "run_session_task",
    "close_session",
    "list_tasks",
    "get_task",
}


@pytest.fixture(scope="module")
def llm():
    yield from scripted_model()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, llm):
    yield from serve(request.param, llm_env(llm.base_url), create_other_key=False)


async def with_session(server, key, fn, statuses: list | None = None):
    async def record(response):
        if statuses is not None:
            statuses.append(response.status_code)

    hooks = {"response": [record]}
    async with httpx2.AsyncClient(headers={"apikey": key}, timeout=120, event_hooks=hooks) as http:
        async with streamable_http_client(server.base + "/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await fn(session)


def result_json(res) -> dict:
    assert not res.is_error, res.content
    return json.loads(res.content[0].text)


def test_tools_and_schemas_come_from_the_task_request(server):
    async def go(session):
        return (await session.list_tools()).tools

    tools = {t.name: t for t in asyncio.run(with_session(server, server.key, go))}
    assert set(tools) == TOOLS
    doc = server.request("GET", "/openapi.json").json()
    rest = doc["components"]["schemas"]["TaskRequest"]["properties"]
    run = tools["run_task"].input_schema
    assert set(run["properties"]) == set(rest), "run_task's inputs differ from POST /v1/task's body"
    assert run["required"] == ["task"]
    assert run["properties"]["max_steps"] == rest["max_steps"]
    assert "task" not in tools["open_session"].input_schema["properties"]
    assert set(tools["run_session_task"].input_schema["properties"]) >= {"session_id", "task", "max_steps"}


def test_run_task_to_done_with_progress(server, llm, site):
    marker = llm.script(
        "mcp-run",
        [[{"op": "goto", "url": site.url("/index.html")}], [{"op": "done", "output": "from mcp"}]],
    )
    progress = []

    async def on_progress(p, total, message):
        progress.append((p, message))

    async def go(session):
        return await session.call_tool(
            "run_task",
            {"task": f"Say from mcp {marker}", "max_steps": 5},
            progress_callback=on_progress,
        )

    out = result_json(asyncio.run(with_session(server, server.key, go)))
    assert out["status"] == "done", out
    assert out["output"] == "from mcp"
    assert out["live_url"].startswith(server.base + "/live/")
    assert out["recording_url"] is not None
    assert [p for p, _ in progress] == [1.0, 2.0], progress
    assert all(m.startswith(f"step {i + 1} ") for i, (_, m) in enumerate(progress)), progress
    # The same task through REST.
    r = server.request("GET", f"/v1/task/{out['id']}")
    assert r.status_code == 200 and r.json()["r"]["output"] == "from mcp"

    async def bad(session):
        return await session.call_tool("run_task", {"task": "x", "max_steps": 1000})

    res = asyncio.run(with_session(server, server.key, bad))
    assert res.is_error and "max_steps" in res.content[0].text, res.content


def test_session_goto_evaluate_js_close(server, site):
    async def go(session):
        opened = result_json(await session.call_tool("open_session", {"device": "mobile"}))
        sid = opened["session_id"]
        listed = result_json(await session.call_tool("list_tasks", {"limit": 10}))
        assert sid in [t["id"] for t in listed["tasks"]]
        assert result_json(await session.call_tool("goto", {"session_id": sid, "url": site.url("/index.html")}))
        title = result_json(await session.call_tool("evaluate_js", {"session_id": sid, "js": "document.title"}))
        dpr = result_json(await session.call_tool("evaluate_js", {"session_id": sid, "js": "window.devicePixelRatio"}))
        closed = result_json(await session.call_tool("close_session", {"session_id": sid}))
        return sid, opened, title, dpr, closed

    sid, opened, title, dpr, closed = asyncio.run(with_session(server, server.key, go))
    assert opened["live_url"].startswith(server.base + "/live/")
    assert title["output"] == "Conformance home"
    assert dpr["output"] == 3, "device=mobile was not applied"
    assert closed["closed"] is True
    final = wait_final(server, sid, timeout=60)
    assert final["status"] in ("cancelled", "done"), final
    # An ordinary session: listed by the REST API.
    r = server.request("GET", "/v1/task", params={"l": 50})
    assert sid in [t["id"] for t in r.json()["r"]]


def test_wrong_key_is_refused(server):
    async def go(session):
        return await session.list_tools()

    statuses = []
    with pytest.raises(BaseException):
        asyncio.run(with_session(server, "smd_wrong_" + "0" * 30, go, statuses))
    assert statuses and set(statuses) == {401}, statuses
    r = server.request("POST", "/mcp", key="smd_wrong_" + "0" * 30, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert r.status_code == 401 and "API key" in r.json()["detail"]
    r = server.request("POST", "/mcp", key=None, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert r.status_code == 401 and "apikey" in r.json()["detail"]


def test_cancelling_the_call_cancels_the_task(server, llm, site):
    # Slow steps (each model reply takes 1 s, under the 3 s model timeout) so the task is still
    # running when the client gives up on the call.
    slow = [{"ops": [{"op": "goto", "url": site.url("/index.html")}], "fault": "timeout", "seconds": 1}]
    marker = llm.script("mcp-cancel", slow * 20 + [[{"op": "done", "output": "too late"}]])
    first_step = asyncio.Event()

    async def on_progress(p, total, message):
        first_step.set()

    async def go(session):
        call = asyncio.create_task(
            session.call_tool("run_task", {"task": f"Go slowly {marker}", "max_steps": 30}, progress_callback=on_progress)
        )
        await asyncio.wait_for(first_step.wait(), 60)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        listed = result_json(await session.call_tool("list_tasks", {"limit": 5}))
        return [t for t in listed["tasks"] if t["status"] in ("waiting", "running", "cancelled")]

    asyncio.run(with_session(server, server.key, go))
    r = server.request("GET", "/v1/task", params={"l": 5})
    newest = r.json()["r"][0]
    final = wait_final(server, newest["id"], timeout=60)
    assert final["status"] == "cancelled", final
    assert final["output"] != "too late"


def test_run_task_with_separate_api_and_worker_processes(tmp_path, llm, site):
    """PostgreSQL, `serve --no-workers` plus a `worker`: the MCP call on the API process
    submits, the worker runs, progress and the result come back through the database."""
    from test_scale_out import Cluster

    cluster = Cluster(tmp_path)
    base_env = cluster.env
    cluster.env = lambda: {**base_env(), **llm_env(llm.base_url)}
    try:
        api = cluster.start("api", "api1")
        cluster.start("worker", "worker1")
        marker = llm.script(
            "mcp-cluster",
            [[{"op": "goto", "url": site.url("/index.html")}], [{"op": "done", "output": "clustered"}]],
        )
        progress = []

        async def on_progress(p, total, message):
            progress.append(p)

        async def go(session):
            return await session.call_tool("run_task", {"task": f"Say {marker}"}, progress_callback=on_progress)

        class Api:
            base = api.base

        out = result_json(asyncio.run(with_session(Api, cluster.key, go)))
        assert out["status"] == "done" and out["output"] == "clustered", out
        assert progress == [1.0, 2.0], progress
        rows = cluster.sql(f"SELECT status, worker_id FROM tasks WHERE id = '{out['id']}'")
        assert rows[0][0] == "done" and rows[0][1].startswith("wrk_"), rows
    finally:
        cluster.close()


def test_mcp_requests_count_against_the_rate_limit():
    srv = Server("sqlite", extra_env={"SMOOTHD_RATE_LIMIT_PER_MINUTE": "2"})
    try:
        srv.start(create_other_key=False)
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        first = [srv.request("POST", "/mcp", json=ping).status_code for _ in range(2)]
        assert all(c not in (401, 429) for c in first), first
        r = srv.request("POST", "/mcp", json=ping)
        assert r.status_code == 429, (r.status_code, r.text)
        assert r.json()["detail"].startswith("rate_limit_per_minute:") and int(r.headers["retry-after"]) >= 1
    finally:
        srv.cleanup()
