//! Task status and its only legal transitions: waiting → running → done | failed | cancelled,
//! and waiting → cancelled. A final status never changes.

use serde::{Deserialize, Serialize};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Accepted and queued; no worker holds it.
    Waiting,
    /// A worker holds a lease on it.
    Running,
    /// Finished successfully.
    Done,
    /// Finished with an error.
    Failed,
    /// Stopped at the user's request.
    Cancelled,
}

impl TaskStatus {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Waiting => "waiting",
            TaskStatus::Running => "running",
            TaskStatus::Done => "done",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "waiting" => TaskStatus::Waiting,
            "running" => TaskStatus::Running,
            "done" => TaskStatus::Done,
            "failed" => TaskStatus::Failed,
            "cancelled" => TaskStatus::Cancelled,
            _ => return None,
        })
    }

    /// Done, failed or cancelled.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Done | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// Whether `self → to` is a legal move.
    pub fn can_become(self, to: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, to),
            (Waiting, Running)
                | (Waiting, Cancelled)
                | (Running, Done)
                | (Running, Failed)
                | (Running, Cancelled)
        )
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::TaskStatus::*;
    use super::*;

    #[test]
    fn only_forward() {
        assert!(Waiting.can_become(Running));
        assert!(Running.can_become(Done));
        assert!(Waiting.can_become(Cancelled));
        assert!(!Running.can_become(Waiting));
        for f in [Done, Failed, Cancelled] {
            assert!(f.is_final());
            for t in [Waiting, Running, Done, Failed, Cancelled] {
                assert!(!f.can_become(t), "{f} -> {t}");
            }
        }
    }

    #[test]
    fn round_trip() {
        for s in [Waiting, Running, Done, Failed, Cancelled] {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskStatus::parse("paused"), None);
    }
}
