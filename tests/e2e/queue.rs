//! The worker side through the server: wake-ups without busy polling, crossing processes
//! through the database, shutdown, and tasks without a model.

use std::time::{Duration, Instant};

use serde_json::json;
use smoothd_tests::{Backend, TestDb, TestServer, backend_tests, test_settings};

backend_tests!(
    workers_wake_on_new_work_across_processes,
    task_without_model_fails_clearly,
    shutdown_gives_sessions_a_final_state,
    idle_sessions_end_with_a_clear_state,
    api_only_processes_reap_lost_tasks
);

async fn workers_wake_on_new_work_across_processes(b: Backend) {
    let db = TestDb::new(b).await;
    let mut settings = test_settings(&db);
    // Idle workers would find the task by polling only after a minute.
    settings.queue_poll_seconds = 60;
    // Separate "processes": each server opens its own store, so a wake-up can only cross
    // through the database (NOTIFY on PostgreSQL); on SQLite the slow poll is the path, so
    // that is what this measures there.
    let api = TestServer::api_only(settings.clone()).await;
    let workers = TestServer::workers_only(settings).await;
    // Let the idle pool settle into waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (_, t) = api.post("/v1/task", json!({"task": null})).await;
    let id = t["r"]["id"].as_str().unwrap().to_string();
    api.wait_status(&id, "running", Duration::from_secs(15)).await;
    let waited = started.elapsed();
    if b == Backend::Postgres {
        // The slow poll is 60 s; a claim well before that came through LISTEN/NOTIFY.
        assert!(waited < Duration::from_secs(30), "claimed after {waited:?}");
    }
    // A client event posted through the API process reaches the worker and is answered.
    api.post(
        &format!("/v1/task/{id}/event"),
        json!({"id": "e1", "name": "session_action", "payload": {"name": "nope"}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = api.get(&format!("/v1/task/{id}?event_t=1")).await;
        if let Some(e) = body["r"]["events"].get(0) {
            assert_eq!(
                (e["id"].as_str().unwrap(), e["payload"]["code"].as_i64().unwrap()),
                ("e1", 400)
            );
            break;
        }
        assert!(Instant::now() < deadline, "the worker never answered: {body}");
    }
    api.delete(&format!("/v1/task/{id}")).await;
    assert_eq!(
        api.wait_final(&id, Duration::from_secs(15)).await["status"],
        "cancelled"
    );
    workers.stop().await;
    api.stop().await;
}

async fn task_without_model_fails_clearly(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db).await;
    let (_, t) = s
        .post(
            "/v1/task",
            json!({"task": "find the cheapest flight", "device": "mobile"}),
        )
        .await;
    let id = t["r"]["id"].as_str().unwrap().to_string();
    let r = s.wait_final(&id, Duration::from_secs(15)).await;
    assert_eq!(r["status"], "failed");
    assert!(
        r["error"].as_str().unwrap().contains("no model configured"),
        "{r}"
    );
    assert_eq!(r["device"], "mobile");
    assert_eq!(r["recording_url"], "");
    s.stop().await;
}

async fn shutdown_gives_sessions_a_final_state(b: Backend) {
    let db = TestDb::new(b).await;
    let settings = test_settings(&db);
    let s = TestServer::all_in_one(settings.clone()).await;
    let (_, t) = s.post("/v1/task", json!({"task": null})).await;
    let id = t["r"]["id"].as_str().unwrap().to_string();
    s.wait_status(&id, "running", Duration::from_secs(10)).await;
    let started = Instant::now();
    s.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "sessions do not hold shutdown for the drain deadline"
    );
    let store = db.store().await;
    let row = store.get_task_unscoped(&id).await.unwrap().unwrap();
    assert_eq!(row.status, "failed");
    assert!(row.error.unwrap().contains("shut down"));
}

async fn idle_sessions_end_with_a_clear_state(b: Backend) {
    let db = TestDb::new(b).await;
    let mut settings = test_settings(&db);
    settings.session_idle_seconds = 1;
    let s = TestServer::all_in_one(settings).await;
    let (_, t) = s.post("/v1/task", json!({"task": null})).await;
    let id = t["r"]["id"].as_str().unwrap().to_string();
    let r = s.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!(r["status"], "failed");
    assert!(r["error"].as_str().unwrap().contains("idle timeout"), "{r}");
    s.stop().await;
}

async fn api_only_processes_reap_lost_tasks(b: Backend) {
    let db = TestDb::new(b).await;
    let api = TestServer::api_only(test_settings(&db)).await;
    let (_, t) = api.post("/v1/task", json!({"task": null})).await;
    let id = t["r"]["id"].as_str().unwrap().to_string();
    // A worker (this test) claims it, acts in the browser, and dies: its lease runs out and
    // no worker process is up to reap it.
    let store = db.store().await;
    let claim = store.claim("doomed-worker", 200).await.unwrap().unwrap().task;
    assert_eq!(claim.id, id);
    assert!(store.mark_effects(&id, claim.attempt).await.unwrap());
    let r = api.wait_final(&id, Duration::from_secs(40)).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert!(r["error"].as_str().unwrap().starts_with("worker lost"), "{r}");
    api.stop().await;
}

/// A TCP forwarder to `target` that can be cut (listener closed, open connections dropped).
async fn cuttable_forwarder(target: String) -> (String, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cut = tokio_util::sync::CancellationToken::new();
    let stop = cut.clone();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = tokio::select! {
                _ = stop.cancelled() => return,
                c = listener.accept() => match c { Ok(c) => c, Err(_) => return },
            };
            let target = target.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                }
            });
        }
    });
    (addr, cut)
}

/// PostgreSQL only: a local SQLite file has no outage to wait through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn db_acquire_timeout_is_a_setting() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut url = url::Url::parse(&db.url).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let (fwd, cut) = cuttable_forwarder(target).await;
    let (host, port) = fwd.rsplit_once(':').unwrap();
    url.set_host(Some(host)).unwrap();
    url.set_port(Some(port.parse().unwrap())).unwrap();
    let mut settings = test_settings(&db);
    settings.database_url = Some(url.to_string().into());
    settings.db_acquire_timeout_seconds = 1;
    let api = TestServer::api_only(settings).await;
    let (code, _) = api.get("/v1/task/nonexistent").await;
    assert_eq!(code, 404);
    cut.cancel();
    let started = Instant::now();
    let (code, body) = api.get("/v1/task/nonexistent").await;
    let waited = started.elapsed();
    assert_eq!(code, 503, "{body}");
    assert!(body["detail"].as_str().is_some(), "{body}");
    // Before this was a setting, every request waited the fixed 10 s.
    assert!(waited < Duration::from_secs(6), "the 503 came after {waited:?}");
    api.shutdown.cancel();
}
