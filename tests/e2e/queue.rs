//! The worker side through the server: wake-ups without busy polling, crossing processes
//! through the database, shutdown, and tasks without a model.

use std::time::{Duration, Instant};

use serde_json::json;
use smoothd_tests::{Backend, TestDb, TestServer, backend_tests, test_settings};

backend_tests!(
    workers_wake_on_new_work_across_processes,
    task_without_model_fails_clearly,
    shutdown_gives_sessions_a_final_state,
    idle_sessions_end_with_a_clear_state
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
