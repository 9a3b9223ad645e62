//! SoftHSM2 harness (being written).
