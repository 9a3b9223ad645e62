//! The enroller (being built): user registry and credential checks, login
//! certificates, key generation, split and deposit to custodians.
//!
//! Done so far: the password policy and peppered Argon2id hashing ([`password`]),
//! TOTP ([`totp`]) and the user database with one-use invitations, one-use TOTP
//! steps, per-user lock and per-source limits ([`users`]). The token keys, the
//! service and login certificates follow.
#![deny(missing_docs)]

pub mod config;
pub mod distribute;
pub mod password;
pub mod routes;
pub mod token;
pub mod totp;
pub mod users;
