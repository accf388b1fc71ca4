//! Task events. Timestamps are milliseconds and strictly increasing within a task, because
//! clients ask for "events newer than T": two events with one timestamp would lose one.

use serde::{Deserialize, Serialize};

/// Who sent an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Client to server: commands for whoever runs the task, tool answers.
    In,
    /// Server to client: answers, tool calls, progress.
    Out,
}

impl Direction {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One event as the wire protocol shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub name: String,
    pub payload: serde_json::Value,
    pub timestamp: i64,
}

/// The timestamp of a task's next event: the clock, but never at or before the last one.
pub fn next_timestamp(last: i64, now_ms: i64) -> i64 {
    now_ms.max(last.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_in_one_millisecond() {
        let mut last = 0;
        let mut seen = Vec::new();
        for _ in 0..5 {
            last = next_timestamp(last, 1_000);
            seen.push(last);
        }
        assert_eq!(seen, vec![1_000, 1_001, 1_002, 1_003, 1_004]);
        assert_eq!(next_timestamp(1_004, 2_000), 2_000);
        // A clock that steps back never reorders events.
        assert_eq!(next_timestamp(2_000, 1_500), 2_001);
    }
}
