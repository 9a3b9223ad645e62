//! The one error type of the shard core.

/// Everything the pure core can refuse. No variant carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An identifier (secret id, custodian name) has the wrong shape.
    #[error("invalid identifier: {0}")]
    InvalidId(&'static str),
    /// Placeholder while the core is being written.
    #[error("not yet implemented")]
    Unimplemented,
}
