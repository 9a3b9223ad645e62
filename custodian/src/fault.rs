//! Fault injection for the end-to-end tests: a custodian that lies, so that the tests can
//! show a coordinator naming it. Built only with the `fault-injection` feature, which the
//! test suite enables and no release build or package does; even then it acts only when
//! `CUSTODIAN_FAULT` names a fault.
//!
//! | `CUSTODIAN_FAULT` | effect |
//! |---|---|
//! | `bad-signature-share` | every signature share answered is a valid encoding of a wrong share |
//! | `exit-after-pending-store` | the process exits (status 137, as under `kill -9`) right after it stored a refresh's pending row, before answering |
//! | `exit-after-commit-epoch` | the process exits right after it committed an epoch, before answering |
//! | `bad-reshare-share` | every reshare sub-share sent over the peer channel carries a valid encoding of a wrong share |
//! | `bad-dkg-share` | every round-2 package sent over the peer channel (DKG or refresh) carries a valid encoding of a wrong share |

use threshold::dkg::Round2Package;
use threshold::reshare::SubShare;
use threshold::{Kind, SignatureShare, Zeroizing};

fn active(fault: &str) -> bool {
    std::env::var("CUSTODIAN_FAULT").is_ok_and(|v| v.split(',').any(|f| f == fault))
}

/// The share, or under `bad-signature-share` another well-formed share (one bit of the
/// scalar changed), which fails the coordinator's check.
pub fn signature_share(share: SignatureShare) -> SignatureShare {
    if !active("bad-signature-share") {
        return share;
    }
    let bytes = share.as_bytes().to_vec();
    for at in (0..bytes.len()).rev() {
        let mut bent = bytes.clone();
        bent[at] ^= 1;
        if let Ok(bad) = SignatureShare::decode(share.kind(), &bent) {
            if bad != share {
                tracing::warn!("fault injection: answering a wrong signature share");
                return bad;
            }
        }
    }
    share
}

/// The round-2 package's bytes, or under `bad-dkg-share` those of another well-formed
/// package of `kind` (one bit of the share changed), which fails its receiver's check
/// against this holder's commitment.
pub fn round2_package(kind: Kind, bytes: Zeroizing<Vec<u8>>) -> Zeroizing<Vec<u8>> {
    if !active("bad-dkg-share") {
        return bytes;
    }
    for at in (0..bytes.len()).rev() {
        let mut bent = bytes.clone();
        bent[at] ^= 1;
        if Round2Package::decode(kind, &bent).is_ok() {
            tracing::warn!("fault injection: sending a wrong round-2 share");
            return bent;
        }
    }
    bytes
}

/// The sub-share's bytes, or under `bad-reshare-share` those of another well-formed
/// sub-share of `kind` (one bit of the share changed), which fails its receiver's check
/// against this dealer's commitment.
pub fn sub_share(kind: Kind, bytes: Zeroizing<Vec<u8>>) -> Zeroizing<Vec<u8>> {
    if !active("bad-reshare-share") {
        return bytes;
    }
    for at in (0..bytes.len()).rev() {
        let mut bent = bytes.clone();
        bent[at] ^= 1;
        if SubShare::decode(kind, &bent).is_ok() {
            tracing::warn!("fault injection: sending a wrong reshare sub-share");
            return bent;
        }
    }
    bytes
}

/// Exits the process at once (status 137, as a `kill -9` would leave it, nothing flushed)
/// when `CUSTODIAN_FAULT` names `step`.
pub fn exit_at(step: &str) {
    if active(step) {
        tracing::warn!(step, "fault injection: the custodian dies here");
        std::process::exit(137);
    }
}
