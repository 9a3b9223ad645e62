//! What can go wrong in a `shardctl` command, worded for the person who ran it.
//!
//! Every message is one line that says what happened and, where it is not obvious, what to do
//! next. `main` prefixes it with `shardctl: ` and exits with status 1. No message ever contains
//! key material: the library errors wrapped here carry none.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A failed `shardctl` command.
#[derive(Debug)]
pub enum CliError {
    /// An argument was rejected by the PKI library (trust domain, role, name, DNS name, ...).
    InvalidArgument(certs::Error),
    /// `--ip` was not an IPv4 or IPv6 address.
    InvalidIp(String),
    /// `--days` was outside 1..=3650.
    InvalidDays(u32),
    /// Files this command would create exist already; nothing was written.
    AlreadyExists(Vec<PathBuf>),
    /// The CA's files could not be read.
    ReadCa {
        /// The file that could not be read.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The CA's files were read but do not form a usable CA.
    BadCa {
        /// The CA directory.
        dir: PathBuf,
        /// Why.
        source: certs::Error,
    },
    /// Issuing the certificate failed.
    Issue(certs::Error),
    /// A certificate file to show could not be read.
    ReadCert {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file to show is larger than any certificate.
    TooLarge(PathBuf),
    /// A file to show holds no usable certificate.
    BadCert {
        /// The file.
        path: PathBuf,
        /// Why.
        source: certs::Error,
    },
    /// The PKI directory could not be created.
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Writing an output file failed (after which files this run created were removed).
    Write(certs::Error),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::InvalidArgument(e) => write!(f, "{e}"),
            CliError::InvalidIp(ip) => write!(
                f,
                "--ip {ip:?} is not an IP address (use e.g. --ip 10.0.0.5 or --ip ::1)"
            ),
            CliError::InvalidDays(days) => {
                write!(f, "--days {days} is out of range (use 1 to 3650)")
            }
            CliError::AlreadyExists(paths) => write!(
                f,
                "{} already exist{}; refusing to overwrite (move {} away or use another --dir)",
                join(paths),
                if paths.len() == 1 { "s" } else { "" },
                if paths.len() == 1 { "it" } else { "them" },
            ),
            CliError::ReadCa { path, source } if source.kind() == io::ErrorKind::NotFound => {
                write!(
                    f,
                    "no CA at {}: run `shardctl pki init --trust-domain <DOMAIN>` first, \
                     or point --dir or SHARDCTL_PKI_DIR at the CA's directory",
                    path.display()
                )
            }
            CliError::ReadCa { path, source } => {
                write!(f, "cannot read the CA file {}: {source}", path.display())
            }
            CliError::BadCa { dir, source } => write!(
                f,
                "the CA in {} is not usable: {source} (check ca.pem and ca.key there)",
                dir.display()
            ),
            CliError::Issue(e) => write!(f, "cannot issue the certificate: {e}"),
            CliError::ReadCert { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            CliError::TooLarge(path) => write!(
                f,
                "{} is too large to be a certificate; pass a PEM certificate file",
                path.display()
            ),
            CliError::BadCert { path, source } => write!(
                f,
                "{}: {source}; pass a PEM certificate file (a .pem, not a .key)",
                path.display()
            ),
            CliError::CreateDir { path, source } => {
                write!(f, "cannot create directory {}: {source}", path.display())
            }
            CliError::Write(e) => write!(f, "{e}; nothing was written"),
        }
    }
}

impl std::error::Error for CliError {}

fn join(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| Path::display(p).to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}
