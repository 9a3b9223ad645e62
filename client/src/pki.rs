//! `shardctl pki init | issue | show`.

use std::fs;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use certs::{Ca, Name, Role, TrustDomain};
use zeroize::Zeroizing;

use crate::cli::PkiCommand;
use crate::error::CliError;
use crate::Report;

/// The CA certificate's file name inside the PKI directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA key's file name inside the PKI directory.
pub const CA_KEY: &str = "ca.key";
/// The longest `--days` accepted (the CA itself lives ten years).
pub const MAX_DAYS: u32 = 3650;
/// Files larger than this are not certificates (and reading them whole would be unwise).
const MAX_PEM_BYTES: u64 = 1 << 20;

/// The default validity of a certificate for `role`, in days.
///
/// Services are re-issued yearly. Admin certificates are a standing credential, so a month.
/// User certificates normally come from the enroller at login and live minutes; one issued by
/// hand is for bootstrapping and tests, so a day.
pub fn default_days(role: Role) -> u32 {
    match role {
        Role::Custodian | Role::Enroller => 365,
        Role::Admin => 30,
        Role::User => 1,
    }
}

/// Runs one `pki` subcommand.
pub fn run(command: PkiCommand) -> Result<Report, CliError> {
    match command {
        PkiCommand::Init { trust_domain, dir } => init(&trust_domain, &dir.dir),
        PkiCommand::Issue {
            role,
            name,
            dns,
            ip,
            days,
            dir,
        } => issue(&role, &name, dns, &ip, days, &dir.dir),
        PkiCommand::IssueUserCa {
            public_key,
            days,
            dir,
        } => issue_user_ca(&public_key, days, &dir.dir),
        PkiCommand::Show { cert } => show(&cert),
    }
}

fn issue_user_ca(public_key: &Path, days: u32, dir: &Path) -> Result<Report, CliError> {
    if !(1..=3650).contains(&days) {
        return Err(CliError::InvalidDays(days));
    }
    let cert_path = dir.join("user-ca.pem");
    refuse_existing(&[&cert_path])?;
    let pem = read_limited(public_key).map_err(|source| CliError::ReadCert {
        path: public_key.to_owned(),
        source,
    })?;
    let pem = String::from_utf8(pem)
        .map_err(|_| CliError::InvalidArgument(certs::Error::UnsupportedKey))?;
    let ca = load_ca(dir)?;
    let cert = ca
        .issue_user_ca(
            &pem,
            std::time::Duration::from_secs(u64::from(days) * 86_400),
        )
        .map_err(CliError::Issue)?;
    certs::write_new_public(&cert_path, cert.as_bytes()).map_err(CliError::Issue)?;
    Ok(Report::new(format!(
        "issued the user CA of {} for the key in {}\n  certificate: {}\n",
        ca.trust_domain(),
        public_key.display(),
        cert_path.display()
    )))
}

fn init(trust_domain: &str, dir: &Path) -> Result<Report, CliError> {
    let trust_domain = TrustDomain::new(trust_domain).map_err(CliError::InvalidArgument)?;
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    refuse_existing(&[&cert_path, &key_path])?;
    create_private_dir(dir)?;

    let ca = Ca::init(&trust_domain).map_err(CliError::Issue)?;
    let key_pem = ca.key_pem();
    write_pair(
        &cert_path,
        ca.cert_pem().as_bytes(),
        &key_path,
        key_pem.as_bytes(),
    )?;

    Ok(Report::new(format!(
        "created trust domain {trust_domain}\n  \
         CA certificate: {} (give this to every service and client)\n  \
         CA private key: {} (mode 0600; keep it offline once services are issued)\n",
        cert_path.display(),
        key_path.display(),
    )))
}

fn issue(
    role: &str,
    name: &str,
    dns: Vec<String>,
    ip: &[String],
    days: Option<u32>,
    dir: &Path,
) -> Result<Report, CliError> {
    let role: Role = role.parse().map_err(CliError::InvalidArgument)?;
    let name = Name::new(name).map_err(CliError::InvalidArgument)?;
    let ips = ip
        .iter()
        .map(|text| {
            text.parse::<IpAddr>()
                .map_err(|_| CliError::InvalidIp(text.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let days = days.unwrap_or_else(|| default_days(role));
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(CliError::InvalidDays(days));
    }
    let cert_path = dir.join(format!("{role}-{name}.pem"));
    let key_path = dir.join(format!("{role}-{name}.key"));
    refuse_existing(&[&cert_path, &key_path])?;

    let mut report = Report::default();
    let ca_key_path = dir.join(CA_KEY);
    if let Some(mode) = loose_mode(&ca_key_path) {
        report.warnings.push(format!(
            "{} is readable by others (mode {mode:03o}); run `chmod 600 {}`",
            ca_key_path.display(),
            ca_key_path.display()
        ));
    }
    let ca = load_ca(dir)?;
    let validity = Duration::from_secs(u64::from(days) * 24 * 60 * 60);
    let issued = ca
        .issue(role, &name, &dns, &ips, validity)
        .map_err(|e| match e {
            certs::Error::InvalidDnsName(_) | certs::Error::ServerNamesForClientRole(_) => {
                CliError::InvalidArgument(e)
            }
            other => CliError::Issue(other),
        })?;
    if role.is_service() && dns.is_empty() && ips.is_empty() {
        report.warnings.push(format!(
            "no --dns or --ip given: clients cannot verify this {role} as a server \
             (it can still act as a client)"
        ));
    }
    write_pair(
        &cert_path,
        issued.cert_pem.as_bytes(),
        &key_path,
        issued.key_pem.as_bytes(),
    )?;

    let not_after = certs::summary(issued.cert_pem.as_bytes())
        .map(|s| format!(", valid until {}", s.not_after.date()))
        .unwrap_or_default();
    report.text = format!(
        "issued {}{not_after}\n  certificate: {}\n  private key: {} (mode 0600)\n",
        issued.spiffe_id,
        cert_path.display(),
        key_path.display(),
    );
    Ok(report)
}

fn show(path: &Path) -> Result<Report, CliError> {
    let pem = read_limited(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::FileTooLarge => CliError::TooLarge(path.to_owned()),
        _ => CliError::ReadCert {
            path: path.to_owned(),
            source,
        },
    })?;
    let summary = certs::summary(&pem).map_err(|source| CliError::BadCert {
        path: path.to_owned(),
        source,
    })?;
    Ok(Report::new(format!("{summary}\n")))
}

fn load_ca(dir: &Path) -> Result<Ca, CliError> {
    let read = |path: PathBuf| {
        read_limited(&path)
            .map(Zeroizing::new)
            .map_err(|source| CliError::ReadCa { path, source })
    };
    let cert = read(dir.join(CA_CERT))?;
    let key = read(dir.join(CA_KEY))?;
    Ca::load(&cert, &key).map_err(|source| CliError::BadCa {
        dir: dir.to_owned(),
        source,
    })
}

/// Reads a whole file of at most [`MAX_PEM_BYTES`], so a mistaken argument such as `/dev/zero`
/// fails instead of filling memory.
fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(std::io::ErrorKind::FileTooLarge.into());
    }
    Ok(bytes)
}

/// Fails, naming every one of `paths` that already exists (or is a dangling symlink), before
/// anything is created.
fn refuse_existing(paths: &[&Path]) -> Result<(), CliError> {
    let existing: Vec<PathBuf> = paths
        .iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .map(|p| p.to_path_buf())
        .collect();
    if existing.is_empty() {
        Ok(())
    } else {
        Err(CliError::AlreadyExists(existing))
    }
}

/// Writes the key first, then the certificate; if the certificate cannot be written, the key
/// this run just created is removed again, so a failed run leaves nothing behind.
fn write_pair(cert_path: &Path, cert: &[u8], key_path: &Path, key: &[u8]) -> Result<(), CliError> {
    certs::write_new_private(key_path, key).map_err(CliError::Write)?;
    if let Err(e) = certs::write_new_public(cert_path, cert) {
        // Created by this run a moment ago with O_EXCL, so it is ours to remove.
        let _ = fs::remove_file(key_path);
        return Err(CliError::Write(e));
    }
    Ok(())
}

/// Creates the PKI directory (mode 0700) and its parents if missing; an existing directory is
/// left as it is.
fn create_private_dir(dir: &Path) -> Result<(), CliError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| CliError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

/// The permission bits of `path` if group or others may read it.
#[cfg(unix)]
fn loose_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_mode(_path: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_validities() {
        assert_eq!(default_days(Role::Custodian), 365);
        assert_eq!(default_days(Role::Enroller), 365);
        assert_eq!(default_days(Role::Admin), 30);
        assert_eq!(default_days(Role::User), 1);
    }

    #[test]
    fn read_limited_refuses_huge_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        fs::write(&path, vec![b'a'; MAX_PEM_BYTES as usize + 1]).unwrap();
        let err = read_limited(&path).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
        fs::write(&path, vec![b'a'; MAX_PEM_BYTES as usize]).unwrap();
        assert_eq!(read_limited(&path).unwrap().len(), MAX_PEM_BYTES as usize);
    }
}
