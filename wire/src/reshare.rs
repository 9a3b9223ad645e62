//! Reshare: the enroller moves a threshold-signing key from a quorum of its old holders
//! (the *dealers*) to a new set of holders, and the peer channel carries each dealer's
//! secret sub-shares custodian to custodian.
//!
//! | request | method and path | who | answer |
//! |---|---|---|---|
//! | [`ReshareOpen`] | `POST /v1/reshare/{id}/open` | enroller | 200: the roles this custodian takes |
//! | [`ReshareDeal`] | `POST /v1/reshare/{id}/deal` | enroller | 200 once every new holder took its sub-share |
//! | [`ReshareFinish`] | `POST /v1/reshare/{id}/finish` | enroller | 201 stored, 200 already stored ([`crate::dkg::DkgFinishResponse`]) |
//! | [`PeerReshare`] | `PUT /v1/peer/reshare/{id}` | the custodian named for the dealer | 201 taken, 200 already taken |
//!
//! Open goes to every dealer and new holder, deal to the dealers, finish to the new
//! holders. The enroller only sees public values: each dealer's commitment and the old
//! public key package, which it relays to the new holders at finish so that each checks
//! every dealer against the same ones. A new holder stores its key package as a pending
//! row of the new epoch, committed like a refresh's. Abort: `DELETE /v1/shards/{id}`
//! drops a reshare's state as well as any stored package.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::dkg::{DkgFinishResponse, DkgPackage, DkgPeer, PeerDkgResponse};
use crate::{json_answers, json_body, Method, Request};

/// Opens a reshare of the key stored at `from_epoch` into `epoch`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReshareOpen {
    /// Key id (hex); in the path.
    #[serde(skip)]
    pub secret_id: String,
    /// The owner's SPIFFE id.
    pub owner: String,
    /// The key kind.
    pub kind: String,
    /// The new threshold.
    pub t: u16,
    /// The number of new holders.
    pub n: u16,
    /// The epoch made.
    pub epoch: u32,
    /// The epoch whose key packages the dealers deal from.
    pub from_epoch: u32,
    /// Every new holder, in holder order `1..=n`.
    pub peers: Vec<DkgPeer>,
    /// Every dealer, each under its old holder number, in increasing order.
    pub dealers: Vec<DkgPeer>,
}

/// The roles a custodian takes in a reshare.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReshareOpenResponse {
    /// Its new holder number, if it is a new holder.
    pub holder: Option<u16>,
    /// Its old holder number, if it deals.
    pub dealer: Option<u16>,
    /// Milliseconds left before the reshare's state is dropped.
    pub deadline_ms: u64,
}

/// Has a dealer deal its sub-shares to the new holders.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReshareDeal {
    /// Key id (hex); in the path.
    #[serde(skip)]
    pub secret_id: String,
}

/// A dealer's public values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReshareDealResponse {
    /// Its old holder number.
    pub dealer: u16,
    /// Base64 of its commitment (the constant term is its weighted public share).
    pub commitment: String,
    /// Base64 of the old public key package it dealt under.
    pub public: String,
}

/// Has a new holder check and add its sub-shares and store its key package.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReshareFinish {
    /// Key id (hex); in the path.
    #[serde(skip)]
    pub secret_id: String,
    /// Base64 of the old public key package.
    pub public: String,
    /// Every dealer's commitment (base64), by old holder number, in increasing order.
    pub dealings: Vec<DkgPackage>,
}

/// A dealer's sub-share for one new holder, over the peer channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerReshare {
    /// Key id (hex); in the path.
    #[serde(skip)]
    pub secret_id: String,
    /// The dealer's old holder number.
    pub from: u16,
    /// The receiving new holder's number.
    pub to: u16,
    /// Base64 of the sub-share (which carries the dealer's commitment). Secret.
    pub share: Zeroizing<String>,
}

macro_rules! on_id {
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

on_id!(
    ReshareOpen,
    "/v1/reshare/{id}/open",
    ReshareOpenResponse,
    Post,
    "/v1/reshare/{}/open"
);
on_id!(
    ReshareDeal,
    "/v1/reshare/{id}/deal",
    ReshareDealResponse,
    Post,
    "/v1/reshare/{}/deal"
);
on_id!(
    ReshareFinish,
    "/v1/reshare/{id}/finish",
    DkgFinishResponse,
    Post,
    "/v1/reshare/{}/finish"
);
on_id!(
    PeerReshare,
    "/v1/peer/reshare/{id}",
    PeerDkgResponse,
    Put,
    "/v1/peer/reshare/{}"
);

json_answers!(ReshareOpenResponse, ReshareDealResponse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_bodies() {
        let id = "cd".repeat(16);
        let deal = ReshareDeal {
            secret_id: id.clone(),
        };
        assert_eq!(deal.path(), format!("/v1/reshare/{id}/deal"));
        assert_eq!(deal.body().unwrap().unwrap(), b"{}");
        let peer = PeerReshare {
            secret_id: id.clone(),
            from: 1,
            to: 2,
            share: Zeroizing::new("s".into()),
        };
        assert_eq!(peer.path(), format!("/v1/peer/reshare/{id}"));
        assert_eq!(PeerReshare::METHOD, Method::Put);
        let body = String::from_utf8(peer.body().unwrap().unwrap()).unwrap();
        assert!(!body.contains("secret_id"), "{body}");
    }
}
