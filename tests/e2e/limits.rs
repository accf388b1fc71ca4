//! Per-key limits: the concurrency limit counted in the database (two API processes on one
//! database, submitting at once) and the per-process request rate limit, both answering 429
//! with `Retry-After` and a detail naming the setting, and a refused request changing nothing.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};
use smoothd_tests::{Backend, TestDb, TestServer, backend_tests, test_settings};

backend_tests!(
    concurrency_limit_holds_across_api_processes,
    rate_limit_refuses_then_recovers
);

/// (status, Retry-After, body) of a request.
async fn send(rb: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, retry, body)
}

async fn concurrency_limit_holds_across_api_processes(b: Backend) {
    let db = TestDb::new(b).await;
    let mut settings = test_settings(&db);
    settings.max_running_per_key = 3;
    // Two API processes, each with a store of its own, and no workers: tasks stay waiting, so
    // only the database can tell one process what the other accepted.
    let a = TestServer::api_only(settings.clone()).await;
    let c = TestServer::api_only(settings).await;
    let submits = (0..12).map(|i| {
        let server = if i % 2 == 0 { &a } else { &c };
        let body = if i % 3 == 0 {
            json!({"task": null})
        } else {
            json!({"task": format!("task {i}")})
        };
        send(server.req(reqwest::Method::POST, "/v1/task").json(&body))
    });
    let results = join_all(submits).await;
    let accepted: Vec<&Value> = results
        .iter()
        .filter(|(s, _, _)| *s == 200)
        .map(|(_, _, body)| body)
        .collect();
    assert_eq!(accepted.len(), 3, "exactly the limit is accepted: {results:?}");
    for (status, retry, body) in results.iter().filter(|(s, _, _)| *s != 200) {
        assert_eq!(*status, 429, "{body}");
        assert_eq!(retry.as_deref(), Some("5"), "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.starts_with("max_running_per_key:"), "{detail}");
    }
    // The refused submits stored nothing.
    let (_, list) = a.get("/v1/task?l=128").await;
    assert_eq!(list["r"].as_array().unwrap().len(), 3, "{list}");

    // The limit is per key.
    let other = a.other_key("other").await;
    let (status, _, body) = send(
        c.req_as(&other, reqwest::Method::POST, "/v1/task")
            .json(&json!({"task": "mine"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // A slot frees when a task ends; the next submit (through the other process) is accepted.
    let first = accepted[0]["r"]["id"].as_str().unwrap();
    let (status, _) = c.delete(&format!("/v1/task/{first}")).await;
    assert_eq!(status, 200);
    let (status, _, body) = send(
        a.req(reqwest::Method::POST, "/v1/task")
            .json(&json!({"task": "again"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, retry, _) = send(
        c.req(reqwest::Method::POST, "/v1/task")
            .json(&json!({"task": "one more"})),
    )
    .await;
    assert_eq!((status, retry.as_deref()), (429, Some("5")));

    // The deprecated session route refuses before it creates a profile.
    let (_, before) = a.get("/v1/profile").await;
    let (status, _, body) = send(
        a.req(reqwest::Method::POST, "/v1/browser/session")
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    let (_, after) = a.get("/v1/profile").await;
    assert_eq!(before["r"], after["r"]);
    a.stop().await;
    c.stop().await;
}

async fn rate_limit_refuses_then_recovers(b: Backend) {
    let db = TestDb::new(b).await;
    let mut settings = test_settings(&db);
    // A token every 2 s, bursts of 30.
    settings.rate_limit_per_minute = 30;
    let server = TestServer::api_only(settings).await;
    let (status, task) = server.post("/v1/task", json!({"task": "counted"})).await;
    assert_eq!(status, 200, "{task}");
    let id = task["r"]["id"].as_str().unwrap().to_string();

    // Spend the burst on a counted route until the first refusal.
    let started = Instant::now();
    let mut ok = 1;
    let (retry, detail) = loop {
        let (status, retry, body) = send(server.req(reqwest::Method::GET, "/v1/profile")).await;
        match status {
            200 => ok += 1,
            429 => break (retry, body["detail"].as_str().unwrap().to_string()),
            other => panic!("unexpected {other}: {body}"),
        }
        assert!(ok <= 200, "no 429 after {ok} requests");
    };
    let refill = (started.elapsed().as_secs_f64() / 2.0).ceil() as i64;
    assert!(
        ok >= 30 && ok <= 30 + refill + 1,
        "{ok} requests passed in {:?}",
        started.elapsed()
    );
    assert!(detail.starts_with("rate_limit_per_minute:"), "{detail}");
    let retry: u64 = retry.expect("a Retry-After header").parse().unwrap();
    assert!(
        (1..=2).contains(&retry),
        "the next token is at most 2 s away: {retry}"
    );

    // A refused submit creates nothing.
    let (status, retry_submit, _) = send(
        server
            .req(reqwest::Method::POST, "/v1/task")
            .json(&json!({"task": "refused"})),
    )
    .await;
    assert_eq!(status, 429);
    assert!(retry_submit.is_some());

    // Reading a task and cancelling it are not counted: the SDK's poller must survive.
    for _ in 0..5 {
        let (status, _) = server.get(&format!("/v1/task/{id}")).await;
        assert_eq!(status, 202);
    }
    let (status, body) = server.delete(&format!("/v1/task/{id}")).await;
    assert_eq!((status, body["r"].as_bool()), (200, Some(true)));

    // Another key has a bucket of its own.
    let other = server.other_key("other").await;
    let (status, _, _) = send(server.req_as(&other, reqwest::Method::GET, "/v1/profile")).await;
    assert_eq!(status, 200);

    // After Retry-After, requests pass again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (status, list) = server.get("/v1/task?l=128").await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["r"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "the refused submit stored nothing");
    server.stop().await;
}
