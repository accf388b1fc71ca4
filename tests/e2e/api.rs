//! The HTTP API against the real server on 127.0.0.1:0, on both databases.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use smoothd_tests::{Backend, TestDb, TestServer, backend_tests};

backend_tests!(
    both_prefixes_envelope_and_auth,
    validation_names_the_field_and_changes_nothing,
    isolation_between_keys,
    profiles_files_extensions,
    upload_and_body_limits,
    long_poll_wakes_on_event_and_answers_202_then_200,
    session_events_answered_in_order_under_burst,
    cancel_waiting_and_running,
    graceful_close_delivers_answer_before_final,
    erase_task_data,
    list_is_newest_first_and_paged,
);

async fn both_prefixes_envelope_and_auth(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db).await;
    for prefix in ["/v1", "/api/v1"] {
        let (code, body) = s.post(&format!("{prefix}/task"), json!({"task": null})).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["r"]["status"], "waiting");
        assert_eq!(body["r"]["device"], "desktop");
        assert!(body["r"]["created_at"].as_i64().unwrap() > 1_600_000_000);
        let id = body["r"]["id"].as_str().unwrap();
        let (code, body) = s.get(&format!("{prefix}/task/{id}")).await;
        assert!(code == 200 || code == 202, "{code}");
        assert_eq!(body["r"]["id"], id);
    }
    // No key, bad key: 401 with a detail.
    let (code, body) = TestServer::send(s.http.get(format!("{}/v1/task", s.base))).await;
    assert_eq!(code, 401);
    assert!(body["detail"].as_str().unwrap().contains("apikey"));
    let (code, body) = TestServer::send(s.req_as("nope", Method::GET, "/v1/task")).await;
    assert_eq!(
        (code, body["detail"].as_str().unwrap()),
        (401, "invalid or revoked API key")
    );
    // Unknown routes and methods keep the error shape.
    let (code, body) = s.get("/v1/nothing").await;
    assert_eq!(code, 404);
    assert!(body["detail"].is_string());
    let (code, body) = TestServer::send(s.req(Method::PATCH, "/v1/task")).await;
    assert_eq!(code, 405);
    assert!(body["detail"].is_string());
    // Health, readiness, telemetry, OpenAPI.
    assert_eq!(
        TestServer::send(s.http.get(format!("{}/healthz", s.base)))
            .await
            .0,
        200
    );
    let (code, body) = TestServer::send(s.http.get(format!("{}/readyz", s.base))).await;
    assert_eq!(
        (code, body["database"].as_str().unwrap()),
        (
            200,
            if b == Backend::Sqlite {
                "sqlite"
            } else {
                "postgres"
            }
        )
    );
    assert_eq!(
        s.post("/v1/telemetry", json!({"events": [{"name": "x"}]}))
            .await
            .0,
        200
    );
    let (code, doc) = TestServer::send(s.http.get(format!("{}/openapi.json", s.base))).await;
    assert_eq!(code, 200);
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/v1/task", vec!["post", "get"]),
        ("/v1/task/{id}", vec!["get", "delete", "put"]),
        ("/v1/task/{id}/event", vec!["post"]),
        ("/v1/task/{id}/data", vec!["delete"]),
        ("/v1/profile", vec!["post", "get"]),
        ("/v1/profile/{id}", vec!["delete"]),
        ("/v1/file", vec!["post"]),
        ("/v1/file/{id}", vec!["delete"]),
        ("/v1/extension", vec!["post", "get"]),
        ("/v1/extension/{id}", vec!["delete"]),
        ("/v1/browser/extension/{id}", vec!["delete"]),
        ("/v1/browser/session", vec!["post"]),
        ("/v1/browser/session/{live_id}", vec!["delete"]),
        ("/v1/telemetry", vec!["post"]),
        ("/v1/webhook", vec!["get", "put"]),
        ("/v1/task/{id}/webhooks", vec!["get"]),
        ("/healthz", vec!["get"]),
        ("/readyz", vec!["get"]),
        ("/live/{id}", vec!["get"]),
        ("/artifacts/{id}/{name}", vec!["get"]),
    ] {
        for m in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(m)).is_some(),
                "openapi lacks {m} {path}"
            );
        }
    }
    // `agent` is Smooth's enum.
    assert_eq!(
        doc["components"]["schemas"]["AgentName"]["enum"],
        json!(["smooth", "smooth-lite"]),
        "{}",
        doc["components"]["schemas"]["TaskRequest"]["properties"]["agent"]
    );
    let agent = doc["components"]["schemas"]["TaskRequest"]["properties"]["agent"].to_string();
    assert!(agent.contains("#/components/schemas/AgentName"), "{agent}");
    // WebSocket endpoints are served but not described: OpenAPI cannot say what they speak.
    for ws in ["/~!frp", "/live/{id}/ws"] {
        assert!(paths.get(ws).is_none(), "{ws} is in the OpenAPI document");
    }
    // Every operation behind the API key documents the key's refusal.
    for (path, methods) in paths {
        for (method, op) in methods.as_object().unwrap() {
            let public = op["security"] == json!([{}]);
            assert!(
                public || op["responses"].get("401").is_some(),
                "{method} {path} does not document 401"
            );
        }
    }
    s.stop().await;
}

async fn task_count(s: &TestServer) -> usize {
    s.get("/v1/task?l=128").await.1["r"].as_array().unwrap().len()
}

async fn validation_names_the_field_and_changes_nothing(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db).await;
    let many: serde_json::Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!(i))).collect();
    let cases = [
        (json!({"task": "x", "max_steps": 1}), 422, "max_steps"),
        (json!({"task": "x", "max_steps": 129}), 422, "max_steps"),
        (json!({"task": "x", "max_steps": "ten"}), 422, "max_steps"),
        (json!({"task": "x", "device": "tablet"}), 422, "device"),
        (json!({"task": "x", "metadata": many}), 422, "metadata"),
        (
            json!({"task": "x", "metadata": {"a": "z".repeat(2049)}}),
            422,
            "metadata.a",
        ),
        (
            json!({"task": "x", "response_model": {"type": 12}}),
            422,
            "response_model",
        ),
        (
            json!({"task": "x", "additional_tools": {"teleport": null}}),
            422,
            "additional_tools.teleport",
        ),
        (json!({"task": "x", "files": ["file_missing"]}), 400, "files[0]"),
        (
            json!({"task": "x", "extensions": ["ext_missing"]}),
            400,
            "extensions[0]",
        ),
        (json!({"task": "x", "profile_id": "nope"}), 400, "profile_id"),
        (json!({"task": "x", "use_stealth": "yes"}), 422, "use_stealth"),
        (
            json!({"task": "x", "proxy_server": "self", "proxy_password": "p"}),
            422,
            "proxy_server",
        ),
        (
            json!({"task": null, "proxy_server": "self"}),
            422,
            "proxy_password",
        ),
    ];
    for (body, code, field) in cases {
        let (got, resp) = s.post("/v1/task", body.clone()).await;
        assert_eq!(got, code, "{body} -> {resp}");
        let detail = resp["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("{field}:")),
            "detail {detail:?} should name {field}"
        );
    }
    // Malformed JSON.
    let (code, resp) = TestServer::send(s.req(Method::POST, "/v1/task").body("{not json")).await;
    assert_eq!(code, 400);
    assert!(resp["detail"].as_str().unwrap().starts_with("body:"));
    assert_eq!(task_count(&s).await, 0, "no rejected request created a task");
    // Unknown extra fields are accepted.
    let (code, _) = s
        .post(
            "/v1/task",
            json!({"task": "x", "future_field": {"a": 1}, "stealth_mode": true}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(task_count(&s).await, 1);
    s.stop().await;
}

async fn isolation_between_keys(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db).await;
    let other = s.other_key("other").await;
    let (_, t) = s.post("/v1/task", json!({"task": null})).await;
    let tid = t["r"]["id"].as_str().unwrap().to_string();
    s.post("/v1/profile", json!({"id": "mine"})).await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"hi".to_vec()).file_name("a.txt"),
    );
    let (_, f) = TestServer::send(s.req(Method::POST, "/v1/file").multipart(form)).await;
    let fid = f["r"]["id"].as_str().unwrap().to_string();
    for (m, path) in [
        (Method::GET, format!("/v1/task/{tid}")),
        (Method::DELETE, format!("/v1/task/{tid}")),
        (Method::DELETE, format!("/v1/task/{tid}/data")),
        (Method::DELETE, "/v1/profile/mine".to_string()),
        (Method::DELETE, format!("/v1/file/{fid}")),
    ] {
        let (code, body) = TestServer::send(s.req_as(&other, m.clone(), &path)).await;
        assert_eq!(code, 404, "{m} {path}: {body}");
    }
    let (code, _) = TestServer::send(
        s.req_as(&other, Method::POST, &format!("/v1/task/{tid}/event"))
            .json(&json!({"name": "x", "payload": {}})),
    )
    .await;
    assert_eq!(code, 404);
    // The other key cannot use my file or profile either.
    let (code, _) = TestServer::send(
        s.req_as(&other, Method::POST, "/v1/task")
            .json(&json!({"task": "x", "files": [fid]})),
    )
    .await;
    assert_eq!(code, 400);
    let (_, list) = TestServer::send(s.req_as(&other, Method::GET, "/v1/task")).await;
    assert_eq!(list["r"], json!([]));
    let (_, list) = TestServer::send(s.req_as(&other, Method::GET, "/v1/profile")).await;
    assert_eq!(list["r"], json!([]));
    // Still mine.
    assert_eq!(s.get(&format!("/v1/task/{tid}")).await.1["r"]["id"], tid.as_str());
    s.stop().await;
}

async fn profiles_files_extensions(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db).await;
    let (code, p) = s.post("/v1/profile", json!({})).await;
    assert_eq!(code, 200);
    assert!(p["r"]["id"].as_str().unwrap().starts_with("profile_"));
    assert_eq!(p["r"]["cookie_count"], 0);
    let (code, _) = s.post("/v1/profile", json!({"id": "work"})).await;
    assert_eq!(code, 200);
    let (code, dup) = s.post("/v1/profile", json!({"id": "work"})).await;
    assert_eq!(code, 409);
    assert!(dup["detail"].as_str().unwrap().starts_with("id:"));
    let (code, bad) = s.post("/v1/profile", json!({"id": "../etc"})).await;
    assert_eq!(code, 422, "{bad}");
    let (_, list) = s.get("/v1/profile").await;
    assert_eq!(list["r"].as_array().unwrap().len(), 2);
    assert_eq!(s.delete("/v1/profile/work").await.0, 200);
    assert_eq!(s.delete("/v1/profile/work").await.0, 404);
    // A task can use an existing profile.
    let pid = p["r"]["id"].as_str().unwrap();
    assert_eq!(
        s.post("/v1/task", json!({"task": "x", "profile_id": pid}))
            .await
            .0,
        200
    );

    let zip = b"PK\x03\x04rest-of-a-zip".to_vec();
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(zip).file_name("ext.zip"));
    let (code, e) = TestServer::send(s.req(Method::POST, "/v1/extension").multipart(form)).await;
    assert_eq!(code, 200, "{e}");
    let eid = e["r"]["id"].as_str().unwrap().to_string();
    let (_, list) = s.get("/v1/extension").await;
    assert_eq!(list["r"][0]["id"], eid.as_str());
    assert_eq!(list["r"][0]["file_name"], "ext.zip");
    assert!(list["r"][0]["creation_time"].as_i64().unwrap() > 1_600_000_000);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("x.zip"),
    );
    let (code, bad) = TestServer::send(s.req(Method::POST, "/v1/extension").multipart(form)).await;
    assert_eq!(code, 400);
    assert!(bad["detail"].as_str().unwrap().starts_with("file:"));
    assert_eq!(
        s.post("/v1/task", json!({"task": "x", "extensions": [eid]}))
            .await
            .0,
        200
    );
    assert_eq!(s.delete(&format!("/v1/browser/extension/{eid}")).await.0, 200);
    assert_eq!(s.get("/v1/extension").await.1["r"], json!([]));

    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"a,b\n1,2\n".to_vec()).file_name("data.csv"),
        )
        .text("file_purpose", "a table");
    let (code, f) = TestServer::send(s.req(Method::POST, "/v1/file").multipart(form)).await;
    assert_eq!(code, 200);
    let fid = f["r"]["id"].as_str().unwrap().to_string();
    // The bytes are stored in the data folder's artifact store.
    let stored = db.dir.path().join("artifacts").join("files");
    assert!(
        walk_has_file_with(&stored, b"a,b\n1,2\n"),
        "uploaded bytes stored under {stored:?}"
    );
    assert_eq!(
        s.post("/v1/task", json!({"task": "x", "files": [fid]})).await.0,
        200
    );
    assert_eq!(s.delete(&format!("/v1/file/{fid}")).await.0, 200);
    assert!(
        !walk_has_file_with(&stored, b"a,b\n1,2\n"),
        "bytes deleted with the file"
    );
    assert_eq!(s.delete(&format!("/v1/file/{fid}")).await.0, 404);
    s.stop().await;
}

fn walk_has_file_with(dir: &std::path::Path, content: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            walk_has_file_with(&p, content)
        } else {
            std::fs::read(&p).map(|b| b == content).unwrap_or(false)
        }
    })
}

async fn upload_and_body_limits(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db).await;
    // Test settings: 64 KiB for bodies and uploads.
    let big = vec![b'x'; 65 * 1024];
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(big).file_name("big.bin"));
    let (code, body) = TestServer::send(s.req(Method::POST, "/v1/file").multipart(form)).await;
    assert_eq!(code, 413, "{body}");
    assert!(body["detail"].as_str().unwrap().starts_with("file:"));
    let (code, body) = s.post("/v1/task", json!({"task": "y".repeat(70 * 1024)})).await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(task_count(&s).await, 0);
    s.stop().await;
}

async fn long_poll_wakes_on_event_and_answers_202_then_200(b: Backend) {
    let db = TestDb::new(b).await;
    let mut settings = smoothd_tests::test_settings(&db);
    settings.long_poll_seconds = 20;
    let s = TestServer::all_in_one(settings).await;
    let (_, t) = s.post("/v1/task", json!({"task": null})).await;
    let id = t["r"]["id"].as_str().unwrap().to_string();
    s.wait_status(&id, "running", Duration::from_secs(10)).await;
    // event_t = 0 is never held.
    let started = Instant::now();
    let (code, body) = s.get(&format!("/v1/task/{id}?event_t=0")).await;
    assert_eq!(code, 202);
    assert_eq!(body["r"]["events"], json!([]));
    let unheld = started.elapsed();
    // A poll with event_t > 0 is held until the answer to a client event exists.
    let base = 1;
    let poll = {
        let req = s.req(Method::GET, &format!("/v1/task/{id}?event_t={base}"));
        tokio::spawn(async move {
            let t0 = Instant::now();
            let r = TestServer::send(req).await;
            (r, t0.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "poll with nothing new is held");
    s.post(&format!("/v1/task/{id}/event"), json!({"id": "cmd-1", "name": "browser_action", "payload": {"name": "goto", "input": {"url": "http://127.0.0.1:1/"}}})).await;
    let ((code, body), held) = poll.await.unwrap();
    assert_eq!(code, 202);
    let events = body["r"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["id"], "cmd-1");
    assert_eq!(events[0]["name"], "browser_action");
    // Nothing listens on port 1: a navigation error is the user's to fix (400).
    assert_eq!(events[0]["payload"]["code"], 400, "{body}");
    assert!(
        held < Duration::from_secs(10),
        "woken by the event, well before the 20 s bound ({held:?}, unheld poll {unheld:?})"
    );
    // A held poll also wakes on a status change.
    let t = events[0]["timestamp"].as_i64().unwrap();
    let poll = {
        let req = s.req(Method::GET, &format!("/v1/task/{id}?event_t={t}"));
        tokio::spawn(async move {
            let t0 = Instant::now();
            let r = TestServer::send(req).await;
            (r, t0.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.delete(&format!("/v1/task/{id}")).await;
    let ((code, body), held) = poll.await.unwrap();
    assert_eq!((code, body["r"]["status"].as_str().unwrap()), (200, "cancelled"));
    assert!(held < Duration::from_secs(10));
    // The client's events are kept after cancel.
    let (_, body) = s.get(&format!("/v1/task/{id}?event_t=0")).await;
    assert_eq!(body["r"]["events"].as_array().unwrap().len(), 1);
    s.stop().await;
}

async fn session_events_answered_in_order_under_burst(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db).await;
    let (_, t) = s.post("/v1/task", json!({"task": null})).await;
    let id = t["r"]["id"].as_str().unwrap().to_string();
    let sent: Vec<String> = (0..200).map(|i| format!("burst-{i:03}")).collect();
    let path = format!("/v1/task/{id}/event");
    let posts = sent.iter().map(|eid| {
        s.post(&path, json!({"id": eid, "name": "browser_action", "payload": {"name": "evaluate_js", "input": {"js": "1"}}}))
    });
    for (code, body) in futures::future::join_all(posts).await {
        assert_eq!(code, 200, "{body}");
    }
    // Read back like the SDK: event_t = last timestamp seen.
    let mut last = 0;
    let mut got: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < 200 && Instant::now() < deadline {
        let (_, body) = s.get(&format!("/v1/task/{id}?event_t={last}")).await;
        for e in body["r"]["events"].as_array().unwrap() {
            let ts = e["timestamp"].as_i64().unwrap();
            assert!(ts > last, "strictly increasing and newer than event_t");
            last = ts;
            got.push(e.clone());
        }
    }
    assert_eq!(got.len(), 200);
    let mut ids: Vec<String> = got
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, sent, "one answer per posted event, none lost or duplicated");
    // Each was evaluated in the real browser.
    let bad: Vec<&Value> = got
        .iter()
        .filter(|e| {
            e["payload"]["code"] != 200
                || e["payload"]["output"]["output"] != 1
                || e["name"] != "browser_action"
        })
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
    s.stop().await;
}

async fn cancel_waiting_and_running(b: Backend) {
    let db = TestDb::new(b).await;
    // API only: tasks stay waiting.
    let settings = smoothd_tests::test_settings(&db);
    let api = TestServer::api_only(settings.clone()).await;
    let (_, t) = api.post("/v1/task", json!({"task": "x"})).await;
    let id = t["r"]["id"].as_str().unwrap().to_string();
    let (code, body) = api.delete(&format!("/v1/task/{id}")).await;
    assert_eq!((code, body["r"].clone()), (200, json!(true)));
    let (code, body) = api.get(&format!("/v1/task/{id}")).await;
    assert_eq!((code, body["r"]["status"].as_str().unwrap()), (200, "cancelled"));
    assert_eq!(body["r"]["recording_url"], "", "no recording will come");
    // Cancelling again is harmless (the SDK's context manager closes twice).
    assert_eq!(
        api.delete(&format!("/v1/task/{id}")).await,
        (200, json!({"r": false}))
    );
    assert_eq!(api.delete("/v1/task/tsk_missing").await.0, 404);
    // Running: a session on a server with workers.
    let (_, t) = api.post("/v1/task", json!({"task": null})).await;
    let sid = t["r"]["id"].as_str().unwrap().to_string();
    let workers = TestServer::workers_only(settings).await;
    api.wait_status(&sid, "running", Duration::from_secs(15)).await;
    api.post(
        &format!("/v1/task/{sid}/event"),
        json!({"name": "browser_action", "payload": {"name": "goto", "input": {}}}),
    )
    .await;
    let (_, answered) = api.get(&format!("/v1/task/{sid}?event_t=1")).await;
    assert_eq!(answered["r"]["events"].as_array().unwrap().len(), 1, "{answered}");
    let started = Instant::now();
    assert_eq!(api.delete(&format!("/v1/task/{sid}")).await.0, 200);
    let r = api.wait_final(&sid, Duration::from_secs(15)).await;
    assert_eq!(r["status"], "cancelled");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ends within seconds, not at lease expiry"
    );
    let (_, body) = api.get(&format!("/v1/task/{sid}?event_t=0")).await;
    assert_eq!(body["r"]["events"].as_array().unwrap().len(), 1, "events kept");
    workers.stop().await;
    api.stop().await;
}

async fn graceful_close_delivers_answer_before_final(b: Backend) {
    let db = TestDb::new(b).await;
    let mut settings = smoothd_tests::test_settings(&db);
    settings.close_grace_seconds = 20;
    let s = TestServer::all_in_one(settings).await;
    let (_, t) = s.post("/v1/task", json!({"task": null})).await;
    let id = t["r"]["id"].as_str().unwrap().to_string();
    s.post(
        &format!("/v1/task/{id}/event"),
        json!({"id": "close-1", "name": "session_action", "payload": {"name": "close"}}),
    )
    .await;
    // The answer is served while the task still reads running...
    let (code, body) = loop {
        let (code, body) = s.get(&format!("/v1/task/{id}?event_t=1")).await;
        if body["r"]["events"].as_array().is_some_and(|e| !e.is_empty()) || code == 200 {
            break (code, body);
        }
    };
    assert_eq!(code, 202, "{body}");
    let e = &body["r"]["events"][0];
    assert_eq!(
        (e["id"].as_str().unwrap(), e["payload"]["code"].as_i64().unwrap()),
        ("close-1", 200)
    );
    assert_eq!(e["payload"]["output"]["output"], true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.get(&format!("/v1/task/{id}")).await.1["r"]["status"],
        "running",
        "not final until read"
    );
    // ...and once the client polls past it, the session ends done well before the grace period.
    let t = e["timestamp"].as_i64().unwrap();
    let started = Instant::now();
    s.get(&format!("/v1/task/{id}?event_t={t}")).await;
    let r = s.wait_final(&id, Duration::from_secs(15)).await;
    assert_eq!(r["status"], "done");
    assert!(started.elapsed() < Duration::from_secs(10));
    s.stop().await;
}

async fn erase_task_data(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db).await;
    let (_, t) = s
        .post("/v1/task", json!({"task": null, "metadata": {"secret": "v"}}))
        .await;
    let id = t["r"]["id"].as_str().unwrap().to_string();
    s.wait_status(&id, "running", Duration::from_secs(10)).await;
    let (code, body) = s.delete(&format!("/v1/task/{id}/data")).await;
    assert_eq!(code, 409, "{body}");
    s.post(
        &format!("/v1/task/{id}/event"),
        json!({"name": "browser_action", "payload": {"name": "goto"}}),
    )
    .await;
    s.delete(&format!("/v1/task/{id}")).await;
    s.wait_final(&id, Duration::from_secs(10)).await;
    assert_eq!(s.delete(&format!("/v1/task/{id}/data")).await.0, 200);
    let (code, body) = s.get(&format!("/v1/task/{id}?event_t=0")).await;
    assert_eq!(code, 200);
    assert_eq!(body["r"]["status"], "cancelled");
    assert_eq!(body["r"]["events"], json!([]));
    assert_eq!(body["r"]["data_deleted"], true);
    s.stop().await;
}

async fn list_is_newest_first_and_paged(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::api_only(smoothd_tests::test_settings(&db)).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            s.post("/v1/task", json!({"task": "x"})).await.1["r"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    ids.reverse();
    let (_, page1) = s.get("/v1/task?l=2").await;
    let p1: Vec<&str> = page1["r"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(p1, &ids[..2]);
    let cursor = page1["r"][1]["created_at_ms"].as_i64().unwrap();
    let (_, page2) = s.get(&format!("/v1/task?l=2&t={cursor}")).await;
    let p2: Vec<&str> = page2["r"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(p2, &ids[2..4]);
    assert_eq!(s.get("/v1/task?l=0").await.0, 422);
    assert_eq!(s.get("/v1/task?l=abc").await.0, 422);
    s.stop().await;
}
