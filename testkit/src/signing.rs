//! The custodian's threshold-signing rounds spoken directly over mutual TLS, for the tests
//! and the signing benchmark: what `shardctl sign` does, without the process.

use std::collections::BTreeMap;

use base64::Engine;
use mtls::{Client, Method};
use serde_json::{json, Value};
use threshold::{
    HolderId, Kind, PublicKeyPackage, Signature, SignatureShare, SigningCommitments, SigningPackage,
};

use crate::cluster::TRUST_DOMAIN;
use crate::shardctl::{User, World};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Mutual-TLS clients of every custodian with `user`'s login certificate.
pub fn clients_of(w: &World, user: &User) -> Vec<Client> {
    let login = user.path(&format!("config/shardctl/login/{TRUST_DOMAIN}.pem"));
    let tls = w.cluster.client_tls(&login, &login).unwrap();
    w.cluster.clients(&tls)
}

/// A JSON request; answers the status and the JSON body (`null` when it is none).
pub async fn call(c: &Client, method: Method, path: &str, body: Value) -> (u16, Value) {
    let (status, bytes) = c
        .request(method, path, Some(serde_json::to_vec(&body).unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    (
        status.as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A request that must be refused with `status` and `reason`.
pub async fn refused(
    c: &Client,
    method: Method,
    path: &str,
    body: Value,
    status: u16,
    reason: &str,
) {
    let (st, b) = call(c, method, path, body).await;
    assert_eq!(
        (st, b["reason"].as_str()),
        (status, Some(reason)),
        "{path}: {b}"
    );
}

/// A session id of 32 hex digits made from `n`.
pub fn session(n: u8) -> String {
    hex::encode([n; 16])
}

/// Round 1 at one custodian, answering its holder and commitments.
pub async fn commit(
    c: &Client,
    kind: Kind,
    id: &str,
    session: &str,
) -> (HolderId, SigningCommitments, PublicKeyPackage) {
    commit_at(c, kind, id, session, None).await
}

/// Round 1 at one custodian with the key package of `epoch` (the newest committed one
/// when `None`).
pub async fn commit_at(
    c: &Client,
    kind: Kind,
    id: &str,
    session: &str,
    epoch: Option<u32>,
) -> (HolderId, SigningCommitments, PublicKeyPackage) {
    let mut body = json!({ "session": session });
    if let Some(e) = epoch {
        body["epoch"] = e.into();
    }
    let (st, body) = call(c, Method::POST, &format!("/v1/keys/{id}/commit"), body).await;
    assert_eq!(st, 200, "{body}");
    let holder = HolderId::new(body["holder"].as_u64().unwrap() as u16).unwrap();
    let commitments = SigningCommitments::decode(
        kind,
        &B64.decode(body["commitments"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let public =
        PublicKeyPackage::decode(kind, &B64.decode(body["public"].as_str().unwrap()).unwrap())
            .unwrap();
    (holder, commitments, public)
}

/// Round 2 at one custodian: its status and body.
pub async fn sign_round(
    c: &Client,
    id: &str,
    session: &str,
    package: &SigningPackage,
) -> (u16, Value) {
    call(
        c,
        Method::POST,
        &format!("/v1/keys/{id}/sign"),
        json!({ "session": session, "package": B64.encode(package.as_bytes()) }),
    )
    .await
}

/// A whole signing spoken directly to the custodians `chosen` (indices into `cs`): round
/// 1, the package, round 2, aggregation. Answers the signature, the commitments and the
/// package.
pub async fn sign_directly(
    cs: &[Client],
    chosen: &[usize],
    kind: Kind,
    id: &str,
    session: &str,
    message: &[u8],
) -> (
    Signature,
    BTreeMap<HolderId, SigningCommitments>,
    SigningPackage,
) {
    let mut commitments = BTreeMap::new();
    let mut public = None;
    for &i in chosen {
        let (holder, commitment, p) = commit(&cs[i], kind, id, session).await;
        assert_eq!(usize::from(holder.get()), i + 1);
        commitments.insert(holder, commitment);
        public = Some(p);
    }
    let package = SigningPackage::new(kind, &commitments, message).unwrap();
    let mut shares = BTreeMap::new();
    for &i in chosen {
        let (st, body) = sign_round(&cs[i], id, session, &package).await;
        assert_eq!(st, 200, "{body}");
        let bytes = B64.decode(body["share"].as_str().unwrap()).unwrap();
        let share = SignatureShare::decode(kind, &bytes).unwrap();
        shares.insert(HolderId::new(i as u16 + 1).unwrap(), share);
    }
    let signature = threshold::aggregate(&public.unwrap(), &package, &shares).unwrap();
    (signature, commitments, package)
}
