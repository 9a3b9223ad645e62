//! Keys born distributed: the DKG the enroller coordinates among the custodians, and the
//! peer channel that carries its secret round-2 packages custodian to custodian.
//!
//! | request | method and path | who | answer |
//! |---|---|---|---|
//! | [`DkgRound1`] | `POST /v1/dkg/{id}/round1` | enroller | 200 with this custodian's public round-1 package |
//! | [`DkgRound2`] | `POST /v1/dkg/{id}/round2` | enroller | 200 once every peer took its round-2 package |
//! | [`DkgFinish`] | `POST /v1/dkg/{id}/finish` | enroller | 201 stored, 200 already stored, with the public key package |
//! | [`PeerDkg`] | `PUT /v1/peer/dkg/{id}` | the custodian named for the sending holder | 201 taken, 200 already taken |
//!
//! The enroller only ever sees public values (round-1 packages, public key packages). A
//! round-2 package is secret and goes from one custodian straight to another over mutual
//! TLS: the sender checks that the answering certificate names the custodian it meant,
//! the receiver that the calling certificate names the custodian given for that holder.
//! Every step is idempotent: a repeated step with the same inputs answers the same.
//! Abort: `DELETE /v1/shards/{id}` drops a DKG's state as well as any stored package.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{json_answers, json_body, Method, Request};

/// One holder of a DKG: its number, custodian name and where its peers reach it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DkgPeer {
    /// Holder number, `1..=n`.
    pub holder: u16,
    /// Custodian name: the peer channel accepts only `spiffe://<td>/custodian/<name>`.
    pub name: String,
    /// Address (`ip:port`).
    pub address: String,
    /// A DNS or IP name in its certificate.
    pub server_name: String,
}

/// Round 1: the custodian draws its secret polynomial (memory only, until the DKG
/// finishes or its deadline passes) and answers its public round-1 package.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DkgRound1 {
    /// Key id (hex); in the path, not the body.
    #[serde(skip)]
    pub secret_id: String,
    /// SPIFFE id of the user who will own the key.
    pub owner: String,
    /// `ed25519`, `secp256k1-tr` or `p256-schnorr`.
    pub kind: String,
    /// Threshold.
    pub t: u16,
    /// Holders.
    pub n: u16,
    /// Epoch of the key (1 for a new key).
    pub epoch: u32,
    /// Every holder, this custodian included, in holder order.
    pub peers: Vec<DkgPeer>,
    /// A refresh instead of a new key: the epoch of the stored key package to refresh
    /// (`epoch` must be the next one). Each holder then deals a sharing of zero, and the
    /// new key package is stored pending until [`crate::custodian::CommitEpoch`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshes: Option<u32>,
}

/// Round 1's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgRound1Response {
    /// This custodian's holder number.
    pub holder: u16,
    /// Base64 of its round-1 package (FROST's encoding; public).
    pub package: String,
    /// Milliseconds left until the DKG's state is dropped.
    pub deadline_ms: u64,
}

/// One holder's public round-1 package, as relayed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DkgPackage {
    /// Holder number.
    pub holder: u16,
    /// Base64 of the package.
    pub package: String,
}

/// Round 2: the custodian checks every other holder's round-1 package (its proof of
/// knowledge), then sends each other holder its secret round-2 package over the peer
/// channel. Answers once every peer acknowledged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DkgRound2 {
    /// Key id (hex); in the path, not the body.
    #[serde(skip)]
    pub secret_id: String,
    /// Every holder's round-1 package (this custodian's own included), in holder order.
    pub round1: Vec<DkgPackage>,
}

/// Round 2's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgRound2Response {
    /// This custodian's holder number.
    pub holder: u16,
    /// Base64 of SHA-256 over the round-1 packages it used (every holder checks the same).
    pub transcript: String,
}

/// Finish: the custodian checks every received share against its sender's commitment,
/// makes its key package, checks it against the group's commitment, seals and stores it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DkgFinish {
    /// Key id (hex); in the path, not the body.
    #[serde(skip)]
    pub secret_id: String,
}

/// Finish's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkgFinishResponse {
    /// This custodian's holder number.
    pub holder: u16,
    /// Epoch of the stored key package.
    pub epoch: u32,
    /// Base64 of the group's public key package (FROST's encoding); every holder answers
    /// the same bytes.
    pub public: String,
    /// The sealing key version.
    pub key_version: u32,
    /// True when a repeated finish found the package already stored.
    pub already_stored: bool,
}

/// The peer channel: one holder's secret round-2 package for the receiving holder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerDkg {
    /// Key id (hex); in the path, not the body.
    #[serde(skip)]
    pub secret_id: String,
    /// The sending holder's number.
    pub from: u16,
    /// The receiving holder's number.
    pub to: u16,
    /// Base64 of SHA-256 over the round-1 packages the sender used; the receiver refuses
    /// a package from a sender that was shown other round-1 packages than itself.
    pub transcript: String,
    /// Base64 of the round-2 package (secret). Wiped on drop.
    pub package: Zeroizing<String>,
}

/// The peer channel's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerDkgResponse {
    /// The receiving holder's number.
    pub holder: u16,
    /// True when the same package had already been taken.
    pub already_taken: bool,
}

macro_rules! post_on_id {
    ($t:ty, $route:expr, $answer:ty, $method:ident, $fmt:expr) => {
        impl Request for $t {
            const METHOD: Method = Method::$method;
            const ROUTE: &'static str = $route;
            type Response = $answer;
            fn path(&self) -> String {
                format!($fmt, self.secret_id)
            }
            fn body(&self) -> Result<Option<Vec<u8>>, serde_json::Error> {
                json_body(self)
            }
        }
    };
}

post_on_id!(
    DkgRound1,
    "/v1/dkg/{id}/round1",
    DkgRound1Response,
    Post,
    "/v1/dkg/{}/round1"
);
post_on_id!(
    DkgRound2,
    "/v1/dkg/{id}/round2",
    DkgRound2Response,
    Post,
    "/v1/dkg/{}/round2"
);
post_on_id!(
    DkgFinish,
    "/v1/dkg/{id}/finish",
    DkgFinishResponse,
    Post,
    "/v1/dkg/{}/finish"
);
post_on_id!(
    PeerDkg,
    "/v1/peer/dkg/{id}",
    PeerDkgResponse,
    Put,
    "/v1/peer/dkg/{}"
);

json_answers!(
    DkgRound1Response,
    DkgRound2Response,
    DkgFinishResponse,
    PeerDkgResponse
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_bodies() {
        let id = "ab".repeat(16);
        let finish = DkgFinish {
            secret_id: id.clone(),
        };
        assert_eq!(finish.path(), format!("/v1/dkg/{id}/finish"));
        assert_eq!(finish.body().unwrap().unwrap(), b"{}");
        let peer = PeerDkg {
            secret_id: id.clone(),
            from: 1,
            to: 2,
            transcript: "t".into(),
            package: Zeroizing::new("p".into()),
        };
        assert_eq!(peer.path(), format!("/v1/peer/dkg/{id}"));
        assert_eq!(PeerDkg::METHOD, Method::Put);
        let body = String::from_utf8(peer.body().unwrap().unwrap()).unwrap();
        assert!(!body.contains("secret_id"), "{body}");
    }
}
