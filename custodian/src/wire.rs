//! JSON bodies of the custodian API (`/v1/...`), shared with its clients.
//!
//! | method and path                  | who            | answer |
//! |----------------------------------|----------------|--------|
//! | `PUT /v1/shards`                 | enroller       | 201 stored, 200 already stored, 409 another shard |
//! | `GET /v1/shards/{id}[?epoch=N]`  | the owner      | 200 with the envelope |
//! | `DELETE /v1/shards/{id}[?epoch=N]` | enroller, admin | 200 with the count |
//! | `GET /v1/shards[?after=ID&limit=N]` | admin       | 200 with metadata, never bytes |
//! | `GET /v1/health`                 | any peer       | 200 or 503 |
//! | `GET /v1/metrics`                | admin          | Prometheus text |
//!
//! Every refusal is `{"error": "<class>", "reason": "<machine-readable reason>"}`.

use serde::{Deserialize, Serialize};

/// Deposit request: the owner and the encoded envelope (base64, standard alphabet).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    /// SPIFFE id of the user who may release this shard.
    pub owner: String,
    /// Base64 of the encoded `ShardEnvelope`.
    pub envelope: String,
}

/// Deposit answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DepositResponse {
    /// Secret id (hex).
    pub secret_id: String,
    /// Epoch.
    pub epoch: u32,
    /// Shard index.
    pub index: u8,
    /// Key version that sealed it.
    pub key_version: u32,
    /// True when the identical deposit was already stored.
    pub already_stored: bool,
}

/// Release answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseResponse {
    /// Secret id (hex).
    pub secret_id: String,
    /// Epoch.
    pub epoch: u32,
    /// Shard index.
    pub index: u8,
    /// Base64 of the encoded `ShardEnvelope`.
    pub envelope: String,
}

/// Delete answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteResponse {
    /// Rows deleted.
    pub deleted: usize,
}

/// Admin listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListResponse {
    /// Shard metadata.
    pub shards: Vec<ShardInfo>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// Metadata of one stored shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Secret id (hex).
    pub secret_id: String,
    /// Epoch.
    pub epoch: u32,
    /// Index.
    pub index: u8,
    /// Owner identity.
    pub owner: String,
    /// Envelope size.
    pub size: u32,
    /// Sealed blob size.
    pub sealed_size: u32,
    /// Key version.
    pub key_version: u32,
    /// Unix seconds.
    pub created_at: i64,
}

/// Health answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok` or `degraded`.
    pub status: String,
    /// This custodian's SPIFFE id.
    pub custodian: String,
    /// Build version.
    pub version: String,
    /// `ok` or the device error class.
    pub device: String,
    /// `ok` or the database error class.
    pub database: String,
    /// Device description (backend, key label, version, mechanism).
    pub device_info: Option<String>,
}

/// Every refusal's body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// Class: `bad_request`, `forbidden`, `not_found`, `conflict`, `payload_too_large`,
    /// `rate_limited`, `internal`, `unavailable`.
    pub error: String,
    /// Machine-readable reason, e.g. `role_not_allowed`.
    pub reason: String,
}
