//! The command line, as clap sees it.
//!
//! Roles, names, addresses and day counts are taken as text and validated by the commands
//! themselves, so that a bad value gets one clear line from `shardctl` rather than clap's usage
//! dump; clap only rejects what is not a command line at all.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// shardctl: the one command people run to operate and use the shard custodians.
#[derive(Debug, Parser)]
#[command(name = "shardctl", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the trust domain's certificate authority and certificates.
    #[command(subcommand)]
    Pki(PkiCommand),
}

/// `shardctl pki ...`
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a trust domain: a new CA certificate (DIR/ca.pem, mode 0644) and key
    /// (DIR/ca.key, mode 0600). Refuses if either file exists.
    Init {
        /// The trust domain, a lowercase DNS-like name such as prod.example.org.
        #[arg(long, value_name = "DOMAIN")]
        trust_domain: String,
        #[command(flatten)]
        dir: PkiDir,
    },

    /// Issue a certificate and key for spiffe://<trust-domain>/<ROLE>/<NAME>, written to
    /// DIR/<ROLE>-<NAME>.pem (0644) and DIR/<ROLE>-<NAME>.key (0600). Never overwrites.
    Issue {
        /// custodian or enroller (services: TLS server and client), admin or user (client only).
        role: String,
        /// 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit.
        name: String,
        /// A DNS name clients use to reach this service (repeatable; services only).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// An IP address clients use to reach this service (repeatable; services only).
        #[arg(long = "ip", value_name = "ADDR")]
        ip: Vec<String>,
        /// Validity in days, 1 to 3650 [default: 365 for custodian and enroller, 30 for admin,
        /// 1 for user: user certificates normally come from the enroller at login and live
        /// minutes]
        #[arg(long, value_name = "N")]
        days: Option<u32>,
        #[command(flatten)]
        dir: PkiDir,
    },

    /// Issue the enroller's user CA: an intermediate certificate (path length 0) for the
    /// public key `enroller init` wrote, which the enroller's token uses to sign users'
    /// short-lived login certificates. Written to DIR/user-ca.pem; never overwrites.
    IssueUserCa {
        /// The enroller's user-CA public key (PEM), e.g. enroller-user-ca.pub.pem.
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// Validity in days, 1 to 3650.
        #[arg(long, value_name = "N", default_value_t = 365)]
        days: u32,
        #[command(flatten)]
        dir: PkiDir,
    },

    /// Print a summary of a certificate: subject, issuer, serial, validity, SPIFFE id, SANs, CA
    /// flag and SHA-256 fingerprint.
    Show {
        /// The certificate file (PEM).
        cert: PathBuf,
    },
}

/// Where the CA and issued files live.
#[derive(Debug, Args)]
pub struct PkiDir {
    /// Directory holding ca.pem, ca.key and issued certificates.
    #[arg(
        long,
        value_name = "DIR",
        env = "SHARDCTL_PKI_DIR",
        default_value = "pki"
    )]
    pub dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
