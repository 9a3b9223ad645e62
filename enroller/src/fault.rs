//! Fault injection for the end-to-end tests: an enroller that dies (as under `kill -9`)
//! at a named step, so that the tests can show every step survives it. Built only with
//! the `fault-injection` feature, which the test suite enables and no release build or
//! package does; even then it acts only when `ENROLLER_FAULT` names the step.
//!
//! | `ENROLLER_FAULT` | the process exits, with nothing flushed or cleaned up |
//! |---|---|
//! | `refresh-after-begin` | after a refresh's job row is written, before the custodians are asked |
//! | `refresh-before-manifest` | after every custodian stored its pending row, before the new manifest is |
//! | `refresh-after-manifest` | after the new manifest is stored, before any custodian commits it |
//! | `reshare-after-begin` | after a reshare's job row is written, before any custodian is asked |
//! | `reshare-after-deal` | after every dealer dealt its sub-shares, before the new holders finish |
//! | `reshare-before-manifest` | after every new holder stored its pending row, before the new manifest is |
//! | `reshare-after-manifest` | after the new manifest is stored, before any custodian commits it |
//! | `enroll-after-deposit` | a dealer-mode enrollment: after every custodian took its share, before the enrollment is stored |
//! | `enroll-after-dkg` | a `--dkg` enrollment: after every custodian stored its key package, before the enrollment is stored |

/// Exits the process at once (status 137, as a `kill -9` would leave it) when
/// `ENROLLER_FAULT` names `step`.
pub fn at(step: &str) {
    if std::env::var("ENROLLER_FAULT").is_ok_and(|v| v.split(',').any(|f| f == step)) {
        tracing::warn!(step, "fault injection: the enroller dies here");
        std::process::exit(137);
    }
}
