//! The store conformance suite: every test runs on SQLite and on PostgreSQL.

use std::collections::HashSet;

use serde_json::json;
use smoothd_core::{Direction, Final, StepTrace, TaskSpec, TaskStatus, ids};
use smoothd_store::{CancelOutcome, EraseOutcome, EventFence, Heartbeat, NewTask, Store, StoreError};
use smoothd_tests::{Backend, TestDb, backend_tests};

/// Step `n`'s trace, told apart by `url`.
fn step(n: u32, url: &str) -> StepTrace {
    StepTrace {
        step: n,
        url: url.into(),
        view_chars: 0,
        view: None,
        model: "m".into(),
        cost: None,
        actions: Vec::new(),
        error: None,
        source: None,
        diverged: None,
    }
}

/// A successful end with `output` and `credits_used`.
fn done(output: serde_json::Value, credits_used: i64) -> Final {
    Final::Done { output, credits_used }
}

pub async fn new_task(store: &Store, owner: &str, session: bool, max_attempts: i64) -> String {
    let spec = TaskSpec::from_json(&if session {
        json!({"task": null})
    } else {
        json!({"task": "x"})
    })
    .unwrap();
    let t = NewTask {
        id: ids::task_id(),
        owner: owner.into(),
        spec,
        max_attempts,
        live_token: ids::random_token(8),
    };
    store.insert_task(&t).await.unwrap().id
}

backend_tests!(
    claims_are_exclusive_under_races,
    lease_expiry_reclaims_and_fences_the_old_attempt,
    lost_worker_with_effects_fails_with_event,
    cancel_of_lost_task_and_attempt_exhaustion,
    event_timestamps_strictly_increase_under_concurrency,
    status_only_moves_forward,
    keys_hash_and_revoke,
    resources_are_scoped_to_owner,
    erase_keeps_a_tombstone,
    release_requeues_only_a_clean_attempt,
    profile_lock_excludes_live_holders_only,
    reap_artifacts_deletes_bytes_of_ended_tasks_only,
    record_step_is_fenced_and_numbered,
    finish_writes_each_kind_of_end,
);

async fn claims_are_exclusive_under_races(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    let mut ids = HashSet::new();
    for _ in 0..40 {
        ids.insert(new_task(&store, "o", false, 3).await);
    }
    let mut handles = Vec::new();
    for w in 0..6 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(c) = store.claim(&format!("w{w}"), 60_000).await.unwrap() {
                assert_eq!(c.task.attempt, 1);
                assert_eq!(c.task.status, "running");
                got.push(c.task.id);
            }
            got
        }));
    }
    let mut claimed = Vec::new();
    for h in handles {
        claimed.extend(h.await.unwrap());
    }
    assert_eq!(claimed.len(), 40, "each task claimed once");
    assert_eq!(claimed.iter().cloned().collect::<HashSet<_>>(), ids);
    assert_eq!(store.queue_depth().await.unwrap().0, 0);
}

async fn lease_expiry_reclaims_and_fences_the_old_attempt(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    let id = new_task(&store, "o", false, 3).await;
    let first = store.claim("w1", 1).await.unwrap().unwrap().task;
    assert_eq!(first.attempt, 1);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // The lease expired and nothing acted outside: another worker may take it.
    let second = store.claim("w2", 60_000).await.unwrap().unwrap().task;
    assert_eq!((second.id.as_str(), second.attempt), (id.as_str(), 2));
    // The first attempt is fenced off everywhere.
    assert_eq!(store.heartbeat(&id, 1, 60_000).await.unwrap(), Heartbeat::Lost);
    let stale = store
        .append_event(&id, EventFence::Lease(1), Direction::Out, "e1", "x", &json!({}))
        .await
        .unwrap();
    assert!(stale.is_none());
    assert!(!store.finish(&id, 1, &done(json!(null), 0)).await.unwrap());
    assert!(!store.mark_effects(&id, 1).await.unwrap());
    // The second attempt holds it.
    assert_eq!(
        store.heartbeat(&id, 2, 60_000).await.unwrap(),
        Heartbeat::Held { cancel: false }
    );
    assert!(
        store
            .append_event(&id, EventFence::Lease(2), Direction::Out, "e2", "x", &json!({}))
            .await
            .unwrap()
            .is_some()
    );
    assert!(store.finish(&id, 2, &done(json!({"ok": 1}), 3)).await.unwrap());
    let row = store.get_task("o", &id).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.credits_used, row.output_json()),
        ("done", 3, json!({"ok": 1}))
    );
    assert_eq!(row.recording.as_deref(), Some(""), "no recording was made");
}

async fn lost_worker_with_effects_fails_with_event(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    let id = new_task(&store, "o", true, 3).await;
    let c = store.claim("w1", 1).await.unwrap().unwrap().task;
    assert!(store.mark_effects(&id, c.attempt).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // Not claimable again: it may have acted in the browser.
    assert!(store.claim("w2", 60_000).await.unwrap().is_none());
    let reaped = store.reap_expired().await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].status, TaskStatus::Failed);
    let row = store.get_task("o", &id).await.unwrap().unwrap();
    assert_eq!(row.status, "failed");
    assert!(row.error.unwrap().starts_with("worker lost"));
    let events = store.events_after(&id, Direction::Out, 0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, "task_ended");
    assert_eq!(events[0].payload["status"], "failed");
    // Reaping again changes nothing.
    assert!(store.reap_expired().await.unwrap().is_empty());
}

async fn cancel_of_lost_task_and_attempt_exhaustion(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    // A running task whose user cancelled and whose worker vanished ends cancelled.
    let a = new_task(&store, "o", false, 3).await;
    store.claim("w1", 1).await.unwrap().unwrap();
    assert_eq!(
        store.request_cancel("o", &a).await.unwrap(),
        CancelOutcome::Signalled
    );
    // A task that keeps losing its worker runs at most max_attempts times.
    let b2 = new_task(&store, "o", false, 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let c1 = store.claim("w1", 1).await.unwrap().unwrap().task;
    assert_eq!((c1.id.as_str(), c1.attempt), (b2.as_str(), 1));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let c2 = store.claim("w2", 1).await.unwrap().unwrap().task;
    assert_eq!((c2.id.as_str(), c2.attempt), (b2.as_str(), 2));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(
        store.claim("w3", 1).await.unwrap().is_none(),
        "attempts exhausted"
    );
    let mut reaped = store.reap_expired().await.unwrap();
    reaped.sort_by_key(|r| r.id != a);
    assert_eq!(reaped.len(), 2);
    assert_eq!(
        (reaped[0].id.as_str(), reaped[0].status),
        (a.as_str(), TaskStatus::Cancelled)
    );
    assert_eq!(
        (reaped[1].id.as_str(), reaped[1].status),
        (b2.as_str(), TaskStatus::Failed)
    );
}

async fn event_timestamps_strictly_increase_under_concurrency(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    let id = new_task(&store, "o", true, 3).await;
    let mut handles = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        let id = id.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..25 {
                let dir = if i % 2 == 0 { Direction::In } else { Direction::Out };
                let e = store
                    .append_event(
                        &id,
                        EventFence::Open,
                        dir,
                        &format!("{w}-{i}"),
                        "n",
                        &json!({"i": i}),
                    )
                    .await
                    .unwrap();
                assert!(e.is_some());
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let ins = store.events_after(&id, Direction::In, 0, 1000).await.unwrap();
    let outs = store.events_after(&id, Direction::Out, 0, 1000).await.unwrap();
    assert_eq!((ins.len(), outs.len()), (104, 96));
    let mut all: Vec<i64> = ins.iter().chain(outs.iter()).map(|e| e.timestamp).collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "no two events share a timestamp");
    assert!(
        outs.windows(2).all(|w| w[0].timestamp < w[1].timestamp),
        "returned in order"
    );
    // "Newer than T" returns exactly the suffix.
    let t = outs[40].timestamp;
    let after = store.events_after(&id, Direction::Out, t, 1000).await.unwrap();
    assert_eq!(after.len(), 96 - 41);
    assert_eq!(after[0].id, outs[41].id);
}

async fn status_only_moves_forward(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    let id = new_task(&store, "o", false, 3).await;
    // Nothing can finish a task no worker holds.
    assert!(!store.finish(&id, 0, &done(json!(null), 0)).await.unwrap());
    assert_eq!(
        store.request_cancel("o", &id).await.unwrap(),
        CancelOutcome::CancelledNow
    );
    assert_eq!(
        store.request_cancel("o", &id).await.unwrap(),
        CancelOutcome::AlreadyFinal(TaskStatus::Cancelled)
    );
    assert!(
        store.claim("w", 60_000).await.unwrap().is_none(),
        "a cancelled task is never claimed"
    );
    // A client event to a final task is refused.
    let e = store
        .append_event(&id, EventFence::Open, Direction::In, "e", "n", &json!({}))
        .await
        .unwrap();
    assert!(e.is_none());
    assert_eq!(
        store.request_cancel("o", "missing").await.unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        store.request_cancel("someone-else", &id).await.unwrap(),
        CancelOutcome::NotFound
    );
    // Finished tasks stay finished.
    let id2 = new_task(&store, "o", false, 3).await;
    let c = store.claim("w", 60_000).await.unwrap().unwrap().task;
    assert!(
        store
            .finish(&id2, c.attempt, &Final::failed("boom"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish(&id2, c.attempt, &done(json!(null), 0))
            .await
            .unwrap()
    );
    assert_eq!(store.get_task("o", &id2).await.unwrap().unwrap().status, "failed");
}

async fn keys_hash_and_revoke(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    let row = store.create_key("alice", "smd_secret_value_1").await.unwrap();
    assert!(matches!(
        store.create_key("alice", "other").await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.find_key("smd_secret_value_1").await.unwrap().unwrap().id,
        row.id
    );
    assert!(store.find_key("smd_secret_value_2").await.unwrap().is_none());
    // The key itself is not stored.
    let keys = store.list_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].prefix, "smd_secr");
    assert!(store.revoke_key("alice").await.unwrap());
    assert!(!store.revoke_key("alice").await.unwrap());
    assert!(store.find_key("smd_secret_value_1").await.unwrap().is_none());
    // ensure_key keeps the identity (owner id) and replaces the key.
    let b1 = store
        .ensure_key("bootstrap", "first-bootstrap-key")
        .await
        .unwrap();
    let b2 = store
        .ensure_key("bootstrap", "second-bootstrap-key")
        .await
        .unwrap();
    assert_eq!(b1.id, b2.id);
    assert!(store.find_key("first-bootstrap-key").await.unwrap().is_none());
    assert_eq!(
        store.find_key("second-bootstrap-key").await.unwrap().unwrap().id,
        b1.id
    );
}

async fn resources_are_scoped_to_owner(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    store.create_profile("a", "shared-name").await.unwrap();
    // Profile ids are per owner.
    store.create_profile("b", "shared-name").await.unwrap();
    assert!(matches!(
        store.create_profile("a", "shared-name").await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.list_profiles("a").await.unwrap().len(), 1);
    assert!(store.delete_profile("a", "shared-name").await.unwrap().is_some());
    assert!(store.get_profile("b", "shared-name").await.unwrap().is_some());
    let f = smoothd_store::FileRow {
        id: ids::file_id(),
        owner: "a".into(),
        name: "x.txt".into(),
        purpose: None,
        size_bytes: 3,
        storage_key: "k".into(),
        created_at: 1,
    };
    store.insert_file(&f).await.unwrap();
    assert!(store.get_file("b", &f.id).await.unwrap().is_none());
    assert!(store.delete_file("b", &f.id).await.unwrap().is_none());
    assert_eq!(
        store.delete_file("a", &f.id).await.unwrap().unwrap().storage_key,
        "k"
    );
    let t = new_task(&store, "a", false, 3).await;
    assert!(store.get_task("b", &t).await.unwrap().is_none());
    assert!(store.list_tasks("b", i64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(store.list_tasks("a", i64::MAX, 10).await.unwrap().len(), 1);
}

async fn erase_keeps_a_tombstone(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    let id = new_task(&store, "o", false, 3).await;
    let c = store.claim("w", 60_000).await.unwrap().unwrap().task;
    store
        .append_event(
            &id,
            EventFence::Lease(c.attempt),
            Direction::Out,
            "e",
            "n",
            &json!({"secret": 1}),
        )
        .await
        .unwrap();
    assert_eq!(
        store.erase_task_data("o", &id).await.unwrap(),
        EraseOutcome::NotFinal(TaskStatus::Running)
    );
    store
        .finish(&id, c.attempt, &done(json!("answer"), 1))
        .await
        .unwrap();
    store
        .insert_artifact(&smoothd_store::ArtifactRow {
            id: ids::artifact_id(),
            owner: "o".into(),
            task_id: Some(id.clone()),
            kind: "recording".into(),
            name: "run.mp4".into(),
            content_type: "video/mp4".into(),
            size_bytes: 1,
            storage_key: "rec/key".into(),
            created_at: 1,
        })
        .await
        .unwrap();
    assert_eq!(
        store.erase_task_data("o", &id).await.unwrap(),
        EraseOutcome::Erased(vec!["rec/key".into()])
    );
    let row = store.get_task("o", &id).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.request.as_str(), row.output),
        ("done", "{}", None)
    );
    assert!(row.data_deleted_at.is_some());
    assert!(
        store
            .events_after(&id, Direction::Out, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.task_artifacts(&id).await.unwrap().is_empty());
}

async fn release_requeues_only_a_clean_attempt(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    // A released attempt goes back to the queue and the next claim is attempt 2.
    let id = new_task(&store, "o", false, 3).await;
    let first = store.claim("w1", 60_000).await.unwrap().unwrap().task;
    assert!(
        !store.release(&id, 2).await.unwrap(),
        "another attempt's release is fenced off"
    );
    assert!(store.release(&id, first.attempt).await.unwrap());
    let again = store.claim("w2", 60_000).await.unwrap().unwrap().task;
    assert_eq!((again.id.as_str(), again.attempt), (id.as_str(), 2));
    // An attempt that acted in the browser is not released: running it again could repeat
    // its effects.
    assert!(store.mark_effects(&id, 2).await.unwrap());
    assert!(!store.release(&id, 2).await.unwrap());
    assert!(store.claim("w3", 60_000).await.unwrap().is_none());
    // The last allowed attempt is not released either.
    let last = new_task(&store, "o", false, 1).await;
    let c = store.claim("w1", 60_000).await.unwrap().unwrap().task;
    assert_eq!(c.id, last);
    assert!(!store.release(&last, 1).await.unwrap());
    // Nor is a task that has ended.
    assert!(store.finish(&id, 2, &done(json!(null), 0)).await.unwrap());
    assert!(!store.release(&id, 2).await.unwrap());
}

async fn profile_lock_excludes_live_holders_only(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    store.create_profile("o", "work").await.unwrap();
    let t1 = new_task(&store, "o", false, 3).await;
    let t2 = new_task(&store, "o", false, 3).await;
    assert!(store.lock_profile("o", "work", &t1).await.unwrap());
    assert!(
        store.lock_profile("o", "work", &t1).await.unwrap(),
        "the holder may take it again"
    );
    assert!(
        !store.lock_profile("o", "work", &t2).await.unwrap(),
        "a waiting holder keeps it"
    );
    // Another key's profile of the same name is another profile.
    assert!(
        !store.lock_profile("other", "work", &t2).await.unwrap(),
        "no such profile for that key"
    );
    // Unlocking by a task that does not hold it changes nothing.
    store.unlock_profile("o", "work", &t2).await.unwrap();
    assert!(!store.lock_profile("o", "work", &t2).await.unwrap());
    store.unlock_profile("o", "work", &t1).await.unwrap();
    assert!(store.lock_profile("o", "work", &t2).await.unwrap());
    // A holder that ended (here: cancelled while waiting) no longer blocks anyone.
    let cancelled = store.request_cancel("o", &t2).await.unwrap();
    assert!(matches!(cancelled, CancelOutcome::CancelledNow), "{cancelled:?}");
    assert!(store.lock_profile("o", "work", &t1).await.unwrap());
}

async fn reap_artifacts_deletes_bytes_of_ended_tasks_only(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    let blobs = smoothd_store::Blobs::local(&db.dir.path().join("artifacts")).unwrap();
    let ended = new_task(&store, "o", false, 3).await;
    let running = new_task(&store, "o", false, 3).await;
    for _ in 0..2 {
        let c = store.claim("w", 60_000).await.unwrap().unwrap().task;
        if c.id == ended {
            assert!(store.finish(&ended, 1, &done(json!(null), 0)).await.unwrap());
        }
    }
    let artifact = |task: &str, created_at: i64| smoothd_store::ArtifactRow {
        id: ids::artifact_id(),
        owner: "o".into(),
        task_id: Some(task.into()),
        kind: "recording".into(),
        name: "recording.mp4".into(),
        content_type: "video/mp4".into(),
        size_bytes: 3,
        storage_key: format!("recordings/{}", ids::random_token(8)),
        created_at,
    };
    let old_ended = artifact(&ended, 1_000);
    let new_ended = artifact(&ended, 5_000);
    let old_running = artifact(&running, 1_000);
    for a in [&old_ended, &new_ended, &old_running] {
        blobs
            .put(&a.storage_key, bytes::Bytes::from_static(b"mp4"))
            .await
            .unwrap();
        store.insert_artifact(a).await.unwrap();
    }
    let deleted = store.reap_artifacts(&blobs, 2_000).await.unwrap();
    assert_eq!(
        deleted,
        vec![old_ended.storage_key.clone()],
        "only the old artifact of an ended task"
    );
    assert!(
        blobs.get(&old_ended.storage_key).await.is_err(),
        "its bytes are gone"
    );
    assert!(
        store.get_artifact(&old_ended.id).await.unwrap().is_none(),
        "and its index entry"
    );
    for kept in [&new_ended, &old_running] {
        assert_eq!(&blobs.get(&kept.storage_key).await.unwrap()[..], b"mp4");
        assert!(store.get_artifact(&kept.id).await.unwrap().is_some());
    }
    // A second pass finds nothing more.
    assert!(store.reap_artifacts(&blobs, 2_000).await.unwrap().is_empty());
}

async fn record_step_is_fenced_and_numbered(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    let id = new_task(&store, "o", false, 3).await;
    // Nothing is recorded for a task no worker runs.
    assert!(!store.record_step(&id, 1, &step(1, "one")).await.unwrap());
    let c = store.claim("w1", 60_000).await.unwrap().unwrap().task;
    assert!(store.record_step(&id, c.attempt, &step(2, "two")).await.unwrap());
    assert!(store.record_step(&id, c.attempt, &step(1, "one")).await.unwrap());
    // A step number is written once; another attempt's write is fenced off.
    assert!(
        !store
            .record_step(&id, c.attempt, &step(1, "again"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_step(&id, c.attempt + 1, &step(3, "three"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.steps(&id).await.unwrap(),
        vec![
            serde_json::to_value(step(1, "one")).unwrap(),
            serde_json::to_value(step(2, "two")).unwrap()
        ]
    );
    assert_eq!(store.step_count(&id).await.unwrap(), 2);
    // After the task ends, late writes are refused.
    assert!(store.finish(&id, c.attempt, &done(json!(null), 0)).await.unwrap());
    assert!(
        !store
            .record_step(&id, c.attempt, &step(3, "three"))
            .await
            .unwrap()
    );
    assert_eq!(store.step_count(&id).await.unwrap(), 2);
}

async fn finish_writes_each_kind_of_end(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    let ends = [
        done(json!({"answer": 42}), 7),
        Final::Failed {
            error: "reached max_steps".into(),
            output: Some(json!("partial")),
            credits_used: 2,
        },
        Final::failed("boom"),
        Final::Cancelled,
    ];
    for end in ends {
        let id = new_task(&store, "o", false, 3).await;
        let c = store.claim("w", 60_000).await.unwrap().unwrap().task;
        assert!(store.finish(&id, c.attempt, &end).await.unwrap(), "{end:?}");
        let row = store.get_task("o", &id).await.unwrap().unwrap();
        let output = row.output.as_deref().map(|t| serde_json::from_str(t).unwrap());
        assert_eq!(
            (
                row.status.as_str(),
                output.as_ref(),
                row.error.as_deref(),
                row.credits_used
            ),
            (
                end.status().as_str(),
                end.output(),
                end.error(),
                end.credits_used()
            ),
            "{end:?}"
        );
        assert_eq!(row.lease_expires_at, None);
        assert!(row.finished_at.is_some());
    }
}
