//! The one harness of the project's tests, benchmarks and demo: real `custodian` and
//! `enroller` processes on private SoftHSM2 tokens and swtpm instances, with a real PKI, on
//! their own loopback addresses, driven over real mutual TLS and with the real `shardctl`.
//! There is no mock.
//!
//! One module per responsibility:
//!
//! - [`bins`]: where the built binaries are;
//! - [`net`]: free loopback addresses and listening sockets;
//! - [`device`]: the SoftHSM2 tokens and swtpm instances services seal with;
//! - [`pki`]: a trust domain made in this process, its identities and TLS configurations;
//! - [`process`]: one service process (start, wait healthy, stop, kill, pause, logs);
//! - [`custodian`]: a configured custodian with its device, database and log scan;
//! - [`enroller`]: a configured enroller, and the enroller as its clients see it;
//! - [`cluster`]: custodians and an enroller in a trust domain made with `shardctl pki`;
//! - [`shardctl`]: running the CLI against a cluster, as a user at their own machine;
//! - [`http`]: raw HTTP/1.1 requests, over mutual TLS or to a plain health port;
//! - [`handshake`]: one TLS handshake between two configurations, and how each side ended;
//! - [`scan`]: looking for leaked secrets in logs;
//! - [`envelope`]: shard envelopes to deposit;
//! - [`totp`]: the authenticator app's side of TOTP;
//! - [`clock`]: the time as certificates count it.
//!
//! Every process and device is owned by a value that stops it on drop; every file lives in
//! a temporary directory removed on drop. Tests run on parallel threads: nothing here is
//! shared between them.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod bins;
pub mod clock;
pub mod cluster;
pub mod custodian;
pub mod device;
pub mod enroller;
pub mod envelope;
pub mod figures;
pub mod handshake;
pub mod http;
pub mod net;
pub mod pki;
pub mod process;
pub mod scan;
pub mod shardctl;
pub mod signing;
pub mod totp;

pub use bins::Bins;
pub use cluster::Cluster;
pub use device::Backend;
