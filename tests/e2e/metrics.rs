//! `GET /metrics`: its access rule, and that its series move as tasks are submitted, claimed,
//! run in a browser and finished. Database series are exact (each test has its own
//! database); in-process counters are shared by the tests running in this binary, so they are
//! asserted to grow by at least what this test did.

use std::time::Duration;

use serde_json::json;
use smoothd_tests::{Backend, Session, TestDb, TestServer, backend_tests, fixture_site, test_settings};

backend_tests!(
    metrics_follow_tasks_through_the_queue,
    metrics_key_rule_and_route_labels
);

/// The value of the series `name` (with its `{labels}` written exactly as rendered), or 0.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == series).then(|| v.parse::<f64>().ok()).flatten()
        })
        .unwrap_or(0.0)
}

async fn scrape(server: &TestServer) -> String {
    let resp = server.req(reqwest::Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    resp.text().await.unwrap()
}

async fn metrics_follow_tasks_through_the_queue(b: Backend) {
    let db = TestDb::new(b).await;
    let settings = test_settings(&db);
    // The API alone first, so submitted tasks stay queued.
    let api = TestServer::api_only(settings.clone()).await;
    let before = scrape(&api).await;
    assert_eq!(value(&before, "smoothd_queue_depth"), 0.0, "{before}");
    assert_eq!(value(&before, "smoothd_queue_oldest_waiting_seconds"), 0.0);

    let mut ids = Vec::new();
    for i in 0..3 {
        let (code, body) = api.post("/v1/task", json!({"task": format!("task {i}")})).await;
        assert_eq!(code, 200, "{body}");
        ids.push(body["r"]["id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let queued = scrape(&api).await;
    assert_eq!(
        value(&queued, "smoothd_tasks{status=\"waiting\"}"),
        3.0,
        "{queued}"
    );
    assert_eq!(value(&queued, "smoothd_queue_depth"), 3.0);
    assert!(
        value(&queued, "smoothd_queue_oldest_waiting_seconds") > 0.0,
        "{queued}"
    );
    let posts =
        "smoothd_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/task\",status=\"200\"}";
    assert!(value(&queued, posts) >= value(&before, posts) + 3.0, "{queued}");

    // Artifact bytes are the sum of the artifacts index, by kind.
    let store = db.store().await;
    let owner = store.get_task_unscoped(&ids[0]).await.unwrap().unwrap().owner;
    for (n, size) in [(1, 1000_i64), (2, 234)] {
        store
            .insert_artifact(&smoothd_store::ArtifactRow {
                id: format!("art_{n}"),
                owner: owner.clone(),
                task_id: Some(ids[0].clone()),
                kind: "download".into(),
                name: format!("file{n}.png"),
                content_type: "image/png".into(),
                size_bytes: size,
                storage_key: format!("test/{n}"),
                created_at: smoothd_core::time::now_ms(),
            })
            .await
            .unwrap();
    }
    store.close().await;

    // Now a worker process: without a model, agent tasks fail at once; a session runs in
    // Chromium.
    let worker = TestServer::workers_only(settings).await;
    for id in &ids {
        assert_eq!(
            api.wait_final(id, Duration::from_secs(30)).await["status"],
            "failed"
        );
    }
    let site = fixture_site().await;
    let session = Session::open(&api, json!({})).await;
    let (code, out) = session.goto(&format!("{site}/index.html")).await;
    assert_eq!(code, 200, "{out}");
    let running = scrape(&api).await;
    assert_eq!(
        value(&running, "smoothd_tasks{status=\"running\"}"),
        1.0,
        "{running}"
    );
    // The worker runs in this test process, so its browser shows in this process's series.
    assert!(value(&running, "smoothd_browser_processes") >= 1.0, "{running}");
    assert!(
        value(&running, "smoothd_browser_launches_total") >= 1.0,
        "{running}"
    );
    api.delete(&format!("/v1/task/{}", session.id)).await;
    api.wait_final(&session.id, Duration::from_secs(30)).await;

    let after = scrape(&api).await;
    assert_eq!(value(&after, "smoothd_tasks{status=\"failed\"}"), 3.0, "{after}");
    assert_eq!(
        value(&after, "smoothd_tasks{status=\"cancelled\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(value(&after, "smoothd_tasks{status=\"waiting\"}"), 0.0);
    assert_eq!(value(&after, "smoothd_queue_depth"), 0.0);
    assert_eq!(value(&after, "smoothd_queue_oldest_waiting_seconds"), 0.0);
    assert_eq!(
        value(&after, "smoothd_artifact_bytes{kind=\"download\"}"),
        1234.0,
        "{after}"
    );
    for (series, grew) in [
        ("smoothd_claims_total{attempt=\"first\"}", 4.0),
        ("smoothd_claim_latency_seconds_count", 4.0),
        ("smoothd_claim_query_seconds_count", 4.0),
        ("smoothd_worker_tasks_finished_total{status=\"failed\"}", 3.0),
        ("smoothd_worker_tasks_finished_total{status=\"cancelled\"}", 1.0),
    ] {
        assert!(
            value(&after, series) >= value(&before, series) + grew,
            "{series} did not grow by {grew}:\n{after}"
        );
    }
    worker.stop().await;
    api.stop().await;
}

async fn metrics_key_rule_and_route_labels(b: Backend) {
    let db = TestDb::new(b).await;
    let api = TestServer::start(&db).await;
    // By default the scrape needs a key, like every other route.
    let resp = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("apikey"), "{body}");
    let (code, _) = TestServer::send(api.req_as("not-a-key", reqwest::Method::GET, "/metrics")).await;
    assert_eq!(code, 401);

    // Latency is labelled by route pattern, never by the raw path with its id.
    let (_, t) = api.post("/v1/task", json!({"task": null})).await;
    let id = t["r"]["id"].as_str().unwrap().to_string();
    let before = scrape(&api).await;
    api.get(&format!("/v1/task/{id}")).await;
    api.get(&format!("/api/v1/task/{id}")).await;
    api.get("/v1/no-such-route").await;
    let after = scrape(&api).await;
    assert!(!after.contains(&id), "a task id leaked into a label:\n{after}");
    for route in ["/v1/task/{id}", "/api/v1/task/{id}"] {
        let series = format!(
            "smoothd_http_request_duration_seconds_count{{method=\"GET\",route=\"{route}\",status=\"202\"}}"
        );
        assert!(
            value(&after, &series) >= value(&before, &series) + 1.0,
            "{series}:\n{after}"
        );
    }
    let unmatched =
        "smoothd_http_request_duration_seconds_count{method=\"GET\",route=\"unmatched\",status=\"404\"}";
    assert!(
        value(&after, unmatched) >= value(&before, unmatched) + 1.0,
        "{after}"
    );
    api.delete(&format!("/v1/task/{id}")).await;
    api.wait_final(&id, Duration::from_secs(30)).await;
    api.stop().await;

    // metrics_public opens the scrape on the API port without a key.
    let mut settings = test_settings(&db);
    settings.metrics_public = true;
    let open = TestServer::api_only(settings).await;
    let resp = open
        .http
        .get(format!("{}/metrics", open.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert_eq!(value(&text, "smoothd_tasks{status=\"cancelled\"}"), 1.0, "{text}");
    open.stop().await;
}
