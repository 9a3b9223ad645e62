//! What one custodian contributed to a recovery, and how long each may take. A leaf
//! module: errors, the CLI definition and `status` use it without importing recovery.

use serde::Serialize;

/// The default per-request deadline at each custodian.
pub const DEFAULT_DEADLINE_MS: u64 = 3000;
/// The longest `--deadline-ms` accepted.
pub const MAX_DEADLINE_MS: u64 = 600_000;

/// What one custodian contributed to a recovery.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Custodian name.
    pub name: String,
    /// `verified`, `bad_shard`, `refused`, `unreachable`, `timeout`, `tls`, `bad_answer`,
    /// `not_configured` or `not_needed`.
    pub result: &'static str,
    /// Why, in words (empty for `verified`).
    pub detail: String,
    /// How long its answer took, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
}

impl Outcome {
    /// "c2: did not answer within 3000 ms".
    pub fn line(&self) -> String {
        match self.result {
            "verified" => format!("{}: shard verified", self.name),
            _ => format!("{}: {}", self.name, self.detail),
        }
    }
}
