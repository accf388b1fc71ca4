//! The dashboard's store reads on both databases: filters, literal text search, keyset paging
//! without gaps or repeats, owner scoping, step totals, and the all-tasks change feed.

use std::collections::HashSet;

use serde_json::json;
use smoothd_core::{TaskSpec, ids};
use smoothd_store::{NewTask, Store, TaskFilter};
use smoothd_tests::{Backend, TestDb, backend_tests};

backend_tests!(
    dashboard_list_filters_and_pages,
    dashboard_step_totals_and_change_feed
);

async fn task(store: &Store, owner: &str, text: &str) -> String {
    let t = NewTask {
        id: ids::task_id(),
        owner: owner.into(),
        spec: TaskSpec::from_json(&json!({"task": text})).unwrap(),
        max_attempts: 3,
        live_token: ids::random_token(8),
    };
    store.insert_task(&t).await.unwrap().id
}

fn text(s: &str) -> TaskFilter {
    TaskFilter {
        text: Some(s.into()),
        ..TaskFilter::default()
    }
}

async fn dashboard_list_filters_and_pages(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    let texts = ["alpha one", "beta 50% off", "gamma_x", "ALPHA two", "delta"];
    let mut mine = HashSet::new();
    for t in texts {
        mine.insert(task(&store, "a", t).await);
    }
    let theirs = task(&store, "b", "alpha secret").await;
    let all = store
        .dashboard_tasks("a", &TaskFilter::default(), 50)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|t| t.id.clone()).collect::<HashSet<_>>(), mine);
    assert!(
        all.windows(2)
            .all(|w| (w[0].created_at, &w[0].id) > (w[1].created_at, &w[1].id))
    );

    // Pages of 2 walk the same order with no gap and no repeat, ties on created_at included.
    let mut walked = Vec::new();
    let mut f = TaskFilter::default();
    loop {
        let page = store.dashboard_tasks("a", &f, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        f.after = Some((last.created_at, last.id.clone()));
        walked.extend(page.into_iter().map(|t| t.id));
    }
    assert_eq!(walked, all.iter().map(|t| t.id.clone()).collect::<Vec<_>>());

    // Case-insensitive, and `%`, `_` are literal characters, not wildcards.
    let count = |f: TaskFilter| {
        let store = store.clone();
        async move { store.dashboard_tasks("a", &f, 50).await.unwrap().len() }
    };
    assert_eq!(count(text("alpha")).await, 2);
    assert_eq!(count(text("%")).await, 1);
    assert_eq!(count(text("_")).await, 1);
    assert_eq!(count(text("nothing like it")).await, 0);
    // Another owner's task never shows, whatever the filter.
    let b_alpha = store.dashboard_tasks("b", &text("alpha"), 50).await.unwrap();
    assert_eq!(
        b_alpha.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        [theirs.as_str()]
    );

    // Status and time.
    let claimed = store.claim("w1", 60_000).await.unwrap().unwrap().task;
    let running = TaskFilter {
        status: Some("running".into()),
        ..TaskFilter::default()
    };
    let got: Vec<String> = store
        .dashboard_tasks(&claimed.owner, &running, 50)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(got, [claimed.id]);
    let future = TaskFilter {
        since_ms: Some(all[0].created_at + 1),
        ..TaskFilter::default()
    };
    assert_eq!(count(future).await, 0);
    let past = TaskFilter {
        until_ms: Some(all[0].created_at + 1),
        ..TaskFilter::default()
    };
    assert_eq!(count(past).await, 5);
}

async fn dashboard_step_totals_and_change_feed(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    let mut feed = store.signals().subscribe_all_tasks();
    let first = task(&store, "a", "count me").await;
    let second = task(&store, "a", "never runs").await;
    // New tasks are found through the queue index.
    let waiting: Vec<String> = store
        .waiting_since(0)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(
        waiting.contains(&first) && waiting.contains(&second),
        "{waiting:?}"
    );
    let c = store.claim("w1", 60_000).await.unwrap().unwrap().task;
    let id = c.id.clone();
    let idle = if id == first { second } else { first };
    for step in 1..=2u32 {
        let trace = smoothd_core::StepTrace {
            step,
            url: "https://example.com/".into(),
            view_chars: 0,
            view: None,
            model: "m".into(),
            cost: Some(smoothd_core::StepCost {
                prompt_tokens: 10 * u64::from(step),
                completion_tokens: 3,
                llm_ms: 0,
                act_ms: 0,
                step_ms: 0,
                retries: 0,
                first_request_ms: None,
                reasoning: String::new(),
                cost_usd: None,
            }),
            actions: Vec::new(),
            error: None,
            source: None,
            diverged: None,
        };
        assert!(store.record_step(&id, c.attempt, &trace).await.unwrap());
    }
    let totals = store.step_totals(&[id.clone(), idle.clone()]).await.unwrap();
    let t = totals[&id];
    assert_eq!((t.steps, t.prompt_tokens, t.completion_tokens), (2, 30, 6));
    assert!(!totals.contains_key(&idle));
    assert_eq!(store.running_per_worker().await.unwrap(), [("w1".to_string(), 1)]);
    // The claim announced the task to the process-wide feed.
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), feed.recv())
        .await
        .expect("a change within 5 s")
        .unwrap();
    assert_eq!(got, id);
}
