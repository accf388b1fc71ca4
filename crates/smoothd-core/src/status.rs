//! Task status and its only legal transitions: waiting → running → done | failed | cancelled,
//! and waiting → cancelled. A final status never changes; [`Final`] is how a run reached one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// How a run ended, as its task records it: a final status and what goes with it. Built where
/// the run ends, written as it is by `Store::finish`.
#[derive(Debug, Clone, PartialEq)]
pub enum Final {
    /// Success, with the task's output.
    Done { output: Value, credits_used: i64 },
    /// Failure, with a message for the user and any partial output.
    Failed {
        error: String,
        output: Option<Value>,
        credits_used: i64,
    },
    /// Stopped at the user's request.
    Cancelled,
}

impl Final {
    /// A failure with nothing to show and nothing spent.
    pub fn failed(error: impl Into<String>) -> Self {
        Final::Failed {
            error: error.into(),
            output: None,
            credits_used: 0,
        }
    }

    /// The final status this end writes.
    pub fn status(&self) -> TaskStatus {
        match self {
            Final::Done { .. } => TaskStatus::Done,
            Final::Failed { .. } => TaskStatus::Failed,
            Final::Cancelled => TaskStatus::Cancelled,
        }
    }

    /// The task's output, if any.
    pub fn output(&self) -> Option<&Value> {
        match self {
            Final::Done { output, .. } => Some(output),
            Final::Failed { output, .. } => output.as_ref(),
            Final::Cancelled => None,
        }
    }

    /// The error shown to the user (failures only).
    pub fn error(&self) -> Option<&str> {
        match self {
            Final::Failed { error, .. } => Some(error),
            Final::Done { .. } | Final::Cancelled => None,
        }
    }

    /// Credits the run spent (a cancelled run is charged nothing).
    pub fn credits_used(&self) -> i64 {
        match self {
            Final::Done { credits_used, .. } | Final::Failed { credits_used, .. } => *credits_used,
            Final::Cancelled => 0,
        }
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

    #[test]
    fn a_final_names_a_final_status_and_its_parts() {
        let done = Final::Done {
            output: Value::from("answer"),
            credits_used: 3,
        };
        assert_eq!(
            (done.status(), done.output(), done.error(), done.credits_used()),
            (Done, Some(&Value::from("answer")), None, 3)
        );
        let failed = Final::failed("boom");
        assert_eq!(
            (failed.status(), failed.output(), failed.error()),
            (Failed, None, Some("boom"))
        );
        assert_eq!(
            (Final::Cancelled.status(), Final::Cancelled.credits_used()),
            (Cancelled, 0)
        );
        for f in [done, failed, Final::Cancelled] {
            assert!(f.status().is_final());
        }
    }
}
