//! Harnesses that start real devices for tests and benchmarks: a private SoftHSM2
//! token ([`softhsm::SoftHsm`]) and a private swtpm ([`swtpm::Swtpm`]). Each owns a
//! temporary state directory and tears its device down on drop. There is no mock.

#[cfg(feature = "pkcs11")]
pub mod softhsm;
pub mod swtpm;
