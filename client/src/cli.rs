//! The command line, as clap sees it.
//!
//! Roles, names, addresses and day counts are taken as text and validated by the commands
//! themselves, so that a bad value gets one clear line from `shardctl` rather than clap's usage
//! dump; clap only rejects what is not a command line at all.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// shardctl: the one command people run to operate and use the shard custodians.
///
/// Passwords and invitation codes are never taken as arguments: they are read from the
/// terminal without echo, or from the files named by SHARDCTL_PASSWORD_FILE and
/// SHARDCTL_INVITATION_FILE (the first line); a TOTP code from the terminal or
/// SHARDCTL_TOTP_CODE.
#[derive(Debug, Parser)]
#[command(name = "shardctl", version, propagate_version = true)]
pub struct Cli {
    /// The configuration file [default: $XDG_CONFIG_HOME/shardctl/config.toml].
    #[arg(long, global = true, value_name = "FILE", env = "SHARDCTL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text (errors too).
    #[arg(long, global = true)]
    pub json: bool,
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

    /// Administer the enroller's users (needs an admin certificate).
    #[command(subcommand)]
    Admin(AdminCommand),

    /// Register NAME with a one-time invitation code and a new password.
    Register {
        /// The user name the invitation was made for.
        name: String,
        /// Also set up a TOTP second factor (prints an otpauth:// URI and a QR code once).
        #[arg(long)]
        totp: bool,
    },

    /// Log in as NAME: a key made here, a certificate from the enroller valid for minutes,
    /// both stored in $XDG_CONFIG_HOME/shardctl/login/<trust-domain>.pem (mode 0600).
    Login {
        /// Your user name.
        name: String,
    },

    /// Escrow a secret (a new P-256 key, or a file), or make a signing key (--kind).
    ///
    /// A secret is split into shards and recovered with `shardctl recover`. A
    /// threshold-signing key (--kind ed25519, secp256k1-tr or p256-schnorr) is split into
    /// key packages sealed at the custodians and never leaves them: it is used with
    /// `shardctl sign`.
    Enroll {
        /// Escrow this file's bytes (1 byte to 64 KiB) instead of a new P-256 key.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["kind", "import"])]
        secret_file: Option<PathBuf>,
        /// p256 (a key to escrow and recover, the default), or a threshold-signing kind:
        /// ed25519, secp256k1-tr (BIP340) or p256-schnorr (FROST Schnorr over P-256, not
        /// ECDSA). A signing key is split into key packages sealed at the custodians and is
        /// only ever used through `shardctl sign`.
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// Split this existing private key instead of a new one (with a signing --kind):
        /// PKCS#8 PEM for ed25519 and p256-schnorr, or the 32 bytes (raw or 64 hex digits).
        #[arg(long, value_name = "FILE", requires = "kind")]
        import: Option<PathBuf>,
        /// With a signing --kind: the custodians make the key among themselves (FROST's
        /// distributed key generation); no machine, the enroller included, ever holds it.
        #[arg(long, requires = "kind", conflicts_with_all = ["import", "secret_file"])]
        dkg: bool,
    },

    /// List your escrowed secrets.
    Secrets,

    /// Recover a secret from its custodians into a new file (mode 0600): a P-256 key as
    /// PKCS#8 PEM, any other secret as its raw bytes.
    Recover {
        /// The secret id `shardctl enroll` printed.
        secret_id: String,
        /// The file to create; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// How long each custodian may take to answer, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = crate::outcome::DEFAULT_DEADLINE_MS)]
        deadline_ms: u64,
        /// Wait for every custodian's answer (up to the deadline) instead of stopping once
        /// enough shards verified, so that every bad or refusing custodian is named.
        #[arg(long)]
        wait_all: bool,
    },

    /// Sign a file with a threshold-signing key: t custodians sign with their sealed shares.
    ///
    /// The signature is verified against the group key, then printed as hex or written raw
    /// to --out (64 bytes for ed25519 and secp256k1-tr, 65 for p256-schnorr).
    Sign {
        /// The key's id, as `shardctl enroll` printed it.
        secret_id: String,
        /// The message to sign (up to 64 KiB).
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Write the raw signature to this new file (mode 0600) instead of printing hex.
        #[arg(long, value_name = "SIG")]
        out: Option<PathBuf>,
        /// How long each custodian may take to answer each round, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = crate::outcome::DEFAULT_DEADLINE_MS)]
        deadline_ms: u64,
    },

    /// Refresh a signing key's shares (proactive refresh): same key, new shares.
    ///
    /// Every custodian deals a sharing of zero to the others over mutual TLS and adds
    /// what it receives to its share; the enroller relays only public values and signs the
    /// manifest of the next epoch. Shares of the old epoch (a leaked one, say) no longer
    /// combine with the new ones.
    Refresh {
        /// The key's id.
        secret_id: String,
    },

    /// Move a signing key to another set of custodians or another threshold.
    ///
    /// A quorum of the key's current custodians (the first `t` that answer) deal
    /// Lagrange-weighted sub-shares of their shares to the new custodians over mutual
    /// TLS; each new custodian checks what it receives against the dealers' commitments.
    /// The key is never rebuilt and its public key does not change. Replaces a lost or
    /// retired custodian, adds or removes one, or changes `t`.
    Reshare {
        /// The key's id.
        secret_id: String,
        /// The new custodians, in order, comma-separated (each must be configured at the
        /// enroller, and under [[custodians]] here to be used afterwards).
        #[arg(long, value_name = "NAMES", value_delimiter = ',', required = true)]
        custodians: Vec<String>,
        /// How many of the new custodians must take part to sign.
        #[arg(long, value_name = "T")]
        threshold: u8,
    },

    /// Check every custodian's share of a secret (or key) without recovering it.
    ///
    /// Each custodian unseals its share inside, checks it against the signed manifest's
    /// commitment for it (salted commitment of a shard, Feldman's check and the holder
    /// digest of a signing key) and answers ok or bad; the share never leaves it. Exits 0
    /// only when every custodian's share checks.
    Verify {
        /// The secret id `shardctl enroll` printed.
        secret_id: String,
        /// How long each custodian may take to answer, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = crate::outcome::DEFAULT_DEADLINE_MS)]
        deadline_ms: u64,
    },

    /// Print a signing key's group public key.
    ///
    /// PEM (SubjectPublicKeyInfo) for ed25519, x-only hex (BIP340) for secp256k1-tr, SEC1
    /// compressed hex for p256-schnorr.
    Pubkey {
        /// The key's id.
        secret_id: String,
    },

    /// Show which services answer, their verified identities and versions, and your login.
    Status {
        /// How long each service may take to answer, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = crate::status::DEFAULT_DEADLINE_MS)]
        deadline_ms: u64,
    },
}

/// `shardctl admin ...`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a one-time invitation for NAME and print its code.
    Invite {
        /// The user name to invite.
        name: String,
        /// How long the invitation stays valid, in hours (1 to 720) [default: the enroller's].
        #[arg(long, value_name = "N")]
        valid_hours: Option<u32>,
        #[command(flatten)]
        credentials: AdminCredentials,
    },
    /// Unlock NAME after too many failed logins.
    Unlock {
        /// The user name.
        name: String,
        #[command(flatten)]
        credentials: AdminCredentials,
    },
    /// List users, their lock state and whether they have TOTP.
    Users {
        #[command(flatten)]
        credentials: AdminCredentials,
    },
}

/// The admin certificate, when not the one under [admin] in the configuration.
#[derive(Debug, Args)]
pub struct AdminCredentials {
    /// Admin certificate (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "SHARDCTL_ADMIN_CERT",
        requires = "admin_key"
    )]
    pub admin_cert: Option<PathBuf>,
    /// Admin private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "SHARDCTL_ADMIN_KEY",
        requires = "admin_cert"
    )]
    pub admin_key: Option<PathBuf>,
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
