//! PKI (placeholder).
