//! The custodian's API, behind mutual TLS.
//!
//! | request | method and path | who | answer |
//! |---|---|---|---|
//! | [`Deposit`] | `PUT /v1/shards` | enroller | 201 stored, 200 already stored, 409 another shard |
//! | [`Release`] | `GET /v1/shards/{id}[?epoch=N]` | the owner | 200 with the envelope |
//! | [`Delete`] | `DELETE /v1/shards/{id}[?epoch=N]` | enroller, admin | 200 with the count |
//! | [`List`] | `GET /v1/shards[?after=ID&limit=N]` | admin | 200 with metadata, never bytes |
//! | [`Verify`] | `POST /v1/shards/{id}/verify` | the owner, the enroller | 200 with the verdict, never the share |
//! | [`CommitEpoch`] | `POST /v1/shards/{id}/commit` | enroller | 200: a refresh's next epoch is current |
//! | [`Commit`] | `POST /v1/keys/{id}/commit` | the owner | 200 with round 1's commitments |
//! | [`Sign`] | `POST /v1/keys/{id}/sign` | the owner | 200 with round 2's signature share |
//! | [`Health`] | `GET /v1/health` | any peer | 200 or 503 |
//! | [`Metrics`] | `GET /v1/metrics` | admin | Prometheus text |
//!
//! Every refusal is a [`crate::Refusal`].

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{json_answers, request, Request, Text};

/// Deposit request: the owner and the encoded envelope (base64, standard alphabet).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deposit {
    /// SPIFFE id of the user who may release this shard.
    pub owner: String,
    /// Base64 of the encoded `ShardEnvelope`. Wiped on drop.
    pub envelope: Zeroizing<String>,
}

request!(Deposit, Put, "/v1/shards", DepositResponse, json);

impl crate::Request for Commit {
    const METHOD: crate::Method = crate::Method::Post;
    const ROUTE: &'static str = "/v1/keys/{id}/commit";
    type Response = CommitResponse;
    fn path(&self) -> String {
        format!("/v1/keys/{}/commit", self.secret_id)
    }
    fn body(&self) -> Result<Option<Vec<u8>>, serde_json::Error> {
        crate::json_body(self)
    }
}

impl crate::Request for Sign {
    const METHOD: crate::Method = crate::Method::Post;
    const ROUTE: &'static str = "/v1/keys/{id}/sign";
    type Response = SignResponse;
    fn path(&self) -> String {
        format!("/v1/keys/{}/sign", self.secret_id)
    }
    fn body(&self) -> Result<Option<Vec<u8>>, serde_json::Error> {
        crate::json_body(self)
    }
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

/// The query of [`Release`] and [`Delete`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochQuery {
    /// One epoch only; all epochs (delete) or the newest (release) when absent.
    pub epoch: Option<u32>,
}

fn shard_path(secret_id: &str, epoch: Option<u32>) -> String {
    match epoch {
        Some(e) => format!("/v1/shards/{secret_id}?epoch={e}"),
        None => format!("/v1/shards/{secret_id}"),
    }
}

/// Release the caller's shard of a secret (the owner's certificate).
#[derive(Debug, Clone)]
pub struct Release {
    /// Secret id (hex).
    pub secret_id: String,
    /// The epoch; the newest when absent.
    pub epoch: Option<u32>,
}

request!(
    Release,
    Get,
    "/v1/shards/{id}",
    ReleaseResponse,
    path | r | shard_path(&r.secret_id, r.epoch)
);

/// Release answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseResponse {
    /// Secret id (hex).
    pub secret_id: String,
    /// Epoch.
    pub epoch: u32,
    /// Shard index.
    pub index: u8,
    /// Base64 of the encoded `ShardEnvelope`. Wiped on drop.
    pub envelope: Zeroizing<String>,
}

/// Delete the shard(s) of a secret (enroller or admin certificate).
#[derive(Debug, Clone)]
pub struct Delete {
    /// Secret id (hex).
    pub secret_id: String,
    /// One epoch only; every epoch when absent.
    pub epoch: Option<u32>,
}

request!(
    Delete,
    Delete,
    Release::ROUTE,
    DeleteResponse,
    path | r | shard_path(&r.secret_id, r.epoch)
);

/// Delete answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteResponse {
    /// Rows deleted.
    pub deleted: usize,
}

/// The admin listing of shard metadata (admin certificate); also its query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// Start after this secret id (hex): the previous page's `next_after`.
    pub after: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
}

request!(
    List,
    Get,
    Deposit::ROUTE,
    ListResponse,
    path | r | r.query_path()
);

impl List {
    fn query_path(&self) -> String {
        let mut path = Deposit::ROUTE.to_owned();
        let mut sep = '?';
        if let Some(a) = &self.after {
            path.push_str(&format!("{sep}after={a}"));
            sep = '&';
        }
        if let Some(l) = self.limit {
            path.push_str(&format!("{sep}limit={l}"));
        }
        path
    }
}

/// Admin listing answer.
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
    /// `shard`, or the kind of a threshold-signing key's package (`ed25519`, ...).
    #[serde(default = "shard_kind")]
    pub kind: String,
    /// A next epoch's row that its coordinator has not committed yet.
    #[serde(default)]
    pub pending: bool,
}

fn shard_kind() -> String {
    "shard".into()
}

/// Round 1 of threshold signing with the caller's key (the owner's certificate): the
/// custodian makes fresh nonces, keeps them in memory under `session` until the
/// session's deadline, and answers their public commitments.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commit {
    /// Key id (hex); in the path, not the body.
    #[serde(skip)]
    pub secret_id: String,
    /// The session id the coordinator chose: 32 hex digits, fresh for every signature.
    /// The same id goes to every custodian of the session and names it in their audit.
    pub session: String,
    /// The epoch of the signed manifest the coordinator holds; the newest committed one
    /// when absent. A refreshed key's next epoch signs as soon as its manifest exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
}

/// Round 1's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitResponse {
    /// Key id (hex).
    pub secret_id: String,
    /// The epoch of the key package that committed.
    pub epoch: u32,
    /// This custodian's holder number in the key, `1..=n`.
    pub holder: u16,
    /// The key kind (`ed25519`, `secp256k1-tr`, `p256-schnorr`).
    pub kind: String,
    /// Base64 of the signing commitments (FROST's encoding).
    pub commitments: String,
    /// Base64 of the key's public key package, for aggregation; the coordinator checks it
    /// against the signed manifest.
    pub public: String,
    /// Milliseconds left until the session's nonces are dropped.
    pub deadline_ms: u64,
}

/// Round 2 of threshold signing (the owner's certificate): the custodian spends the
/// session's nonces on the signing package and answers its signature share. A session
/// signs at most once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sign {
    /// Key id (hex); in the path, not the body.
    #[serde(skip)]
    pub secret_id: String,
    /// The session id given in round 1.
    pub session: String,
    /// Base64 of the signing package (FROST's encoding): the message and the chosen
    /// holders' commitments.
    pub package: String,
}

/// Round 2's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignResponse {
    /// This custodian's holder number.
    pub holder: u16,
    /// Base64 of the signature share (FROST's encoding).
    pub share: String,
}

/// A share check without recovery (the owner's certificate, or the enroller's for its
/// scheduled checks): the custodian unseals its shard or key package inside, checks it
/// against `commitment` (the signed manifest's entry for this custodian) and answers a
/// verdict; the share never leaves it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// Secret id (hex); in the path, not the body.
    #[serde(skip)]
    pub secret_id: String,
    /// The epoch to check; the newest when absent.
    #[serde(default)]
    pub epoch: Option<u32>,
    /// The manifest's commitment for this custodian, 64 hex digits: the salted commitment
    /// of a shard, or the holder digest of a signing key's verifying share.
    pub commitment: String,
}

impl crate::Request for Verify {
    const METHOD: crate::Method = crate::Method::Post;
    const ROUTE: &'static str = "/v1/shards/{id}/verify";
    type Response = VerifyResponse;
    fn path(&self) -> String {
        format!("/v1/shards/{}/verify", self.secret_id)
    }
    fn body(&self) -> Result<Option<Vec<u8>>, serde_json::Error> {
        crate::json_body(self)
    }
}

/// Commits a refresh's next epoch (the enroller's certificate, once the manifest of
/// that epoch is stored): the pending row becomes the current one. Idempotent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitEpoch {
    /// Secret id (hex); in the path, not the body.
    #[serde(skip)]
    pub secret_id: String,
    /// The epoch to commit.
    pub epoch: u32,
}

impl crate::Request for CommitEpoch {
    const METHOD: crate::Method = crate::Method::Post;
    const ROUTE: &'static str = "/v1/shards/{id}/commit";
    type Response = CommitEpochResponse;
    fn path(&self) -> String {
        format!("/v1/shards/{}/commit", self.secret_id)
    }
    fn body(&self) -> Result<Option<Vec<u8>>, serde_json::Error> {
        crate::json_body(self)
    }
}

/// The commit's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitEpochResponse {
    /// Secret id (hex).
    pub secret_id: String,
    /// The committed epoch.
    pub epoch: u32,
    /// True when it was committed already.
    pub already_committed: bool,
}

/// A share check's verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyResponse {
    /// Secret id (hex).
    pub secret_id: String,
    /// Epoch of the checked row.
    pub epoch: u32,
    /// Shard index (holder number of a signing key).
    pub index: u8,
    /// `shard`, or the signing key's kind.
    pub kind: String,
    /// `ok`: the stored share unseals and matches the commitment (and, for a signing key,
    /// its key package passes Feldman's check); `bad`: it does not.
    pub verdict: String,
    /// Why a `bad` verdict: `commitment_mismatch`, `stored_envelope_invalid`, or the
    /// sealed blob's failure (`sealed_blob_integrity`, `sealed_blob_context`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Health (any certificate of the trust domain).
#[derive(Debug, Clone, Copy, Default)]
pub struct Health;

request!(Health, Get, "/v1/health", HealthResponse);

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

/// Prometheus metrics (admin certificate).
#[derive(Debug, Clone, Copy, Default)]
pub struct Metrics;

request!(Metrics, Get, "/v1/metrics", Text);

json_answers!(
    CommitEpochResponse,
    VerifyResponse,
    CommitResponse,
    SignResponse,
    DepositResponse,
    ReleaseResponse,
    DeleteResponse,
    ListResponse,
    HealthResponse
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let id = "0".repeat(32);
        let r = Release {
            secret_id: id.clone(),
            epoch: None,
        };
        assert_eq!(r.path(), format!("/v1/shards/{id}"));
        let d = Delete {
            secret_id: id.clone(),
            epoch: Some(2),
        };
        assert_eq!(d.path(), format!("/v1/shards/{id}?epoch=2"));
        assert_eq!(List::default().path(), "/v1/shards");
        let l = List {
            after: Some(id.clone()),
            limit: Some(5),
        };
        assert_eq!(l.path(), format!("/v1/shards?after={id}&limit=5"));
        let l = List {
            after: None,
            limit: Some(5),
        };
        assert_eq!(l.path(), "/v1/shards?limit=5");
    }

    #[test]
    fn deposit_body_is_its_json() {
        let d = Deposit {
            owner: "spiffe://t/user/a".into(),
            envelope: Zeroizing::new("AAAA".into()),
        };
        let body = d.body().unwrap().unwrap();
        assert_eq!(
            body,
            br#"{"owner":"spiffe://t/user/a","envelope":"AAAA"}"#.to_vec()
        );
        assert!(Release {
            secret_id: String::new(),
            epoch: None
        }
        .body()
        .unwrap()
        .is_none());
    }
}
