//! Fault injection for the end-to-end tests: a custodian that lies, so that the tests can
//! show a coordinator naming it. Built only with the `fault-injection` feature, which the
//! test suite enables and no release build or package does; even then it acts only when
//! `CUSTODIAN_FAULT` names a fault.
//!
//! | `CUSTODIAN_FAULT` | effect |
//! |---|---|
//! | `bad-signature-share` | every signature share answered is a valid encoding of a wrong share |

use threshold::SignatureShare;

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
