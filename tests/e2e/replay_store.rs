//! Replay paths in the store, on both databases: saved per key, upserted with the creation
//! time and replay count kept, listed, counted and deleted; another key sees none of them.

use serde_json::json;
use smoothd_store::NewReplayPath;
use smoothd_tests::{Backend, TestDb, backend_tests};

backend_tests!(replay_paths_belong_to_one_key_and_are_upserted);

async fn replay_paths_belong_to_one_key_and_are_upserted(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.store().await;
    let first = json!({"steps": [{"url": "https://x/"}]});
    let new = |path| NewReplayPath {
        owner: "key_a",
        cache_key: "daily",
        task: "read the report",
        url: Some("https://x/"),
        steps: 1,
        path,
    };
    store.save_replay_path(&new(&first)).await.unwrap();
    let row = store.replay_path("key_a", "daily").await.unwrap().unwrap();
    assert_eq!((row.steps, row.replays, row.url.as_deref()), (1, 0, Some("https://x/")));
    assert_eq!(row.path_json().unwrap(), first);
    assert!(store.replay_path("key_b", "daily").await.unwrap().is_none());
    assert!(store.replay_paths("key_b").await.unwrap().is_empty());
    assert!(!store.delete_replay_path("key_b", "daily").await.unwrap());

    store.count_replay("key_a", "daily").await.unwrap();
    store.count_replay("key_b", "daily").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let healed = json!({"steps": [{"url": "https://x/"}, {"url": "https://x/2"}]});
    store
        .save_replay_path(&NewReplayPath {
            steps: 2,
            ..new(&healed)
        })
        .await
        .unwrap();
    let row = store.replay_path("key_a", "daily").await.unwrap().unwrap();
    assert_eq!((row.steps, row.replays), (2, 1));
    assert!(row.updated_at > row.created_at, "{row:?}");
    assert_eq!(row.path_json().unwrap(), healed);
    let listed = store.replay_paths("key_a").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(store.delete_replay_path("key_a", "daily").await.unwrap());
    assert!(store.replay_path("key_a", "daily").await.unwrap().is_none());
}
