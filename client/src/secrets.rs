//! `shardctl enroll` and `shardctl secrets`: escrow a secret, list what is escrowed.

use std::path::Path;

use base64::Engine;
use p256::pkcs8::DecodePublicKey;
use serde_json::json;
use shard::{SecretId, SecretKind, SignedManifest};
use wire::enroller::{Enroll, EnrollResponse, EnrollmentInfo, Enrollments};
use wire::Reason;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::CliError;
use crate::net::{self, Caller, Failure};
use crate::session::{rfc3339_unix, Login};
use crate::{manifests, Ctx, Report};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The user's login, checked fresh, and a client for the enroller with it.
pub fn user_enroller(config: &Config) -> Result<(Login, mtls::Client), CliError> {
    let login = Login::load(config)?;
    login.require_fresh()?;
    let tls = net::tls(config, &Caller::User(&login))?;
    let client = net::client(&config.enroller, tls, net::ENROLLER_DEADLINE)?;
    Ok((login, client))
}

/// `shardctl enroll [--secret-file F | --kind K [--import F | --dkg]]`.
pub fn enroll(
    ctx: &Ctx,
    secret_file: Option<&Path>,
    kind: Option<&str>,
    import: Option<&Path>,
    dkg: bool,
) -> Result<Report, CliError> {
    let signing = match kind {
        None | Some("p256") => None,
        Some(name) => Some(
            name.parse::<threshold::Kind>()
                .map_err(|_| CliError::InvalidKind(name.to_owned()))?,
        ),
    };
    if import.is_some() && signing.is_none() {
        return Err(CliError::ImportNeedsKind);
    }
    if dkg && signing.is_none() {
        return Err(CliError::DkgNeedsKind);
    }
    let config = ctx.config()?;
    let key = manifests::pinned_key(&config)?;
    let secret_b64 = match (secret_file, import) {
        (Some(path), _) => Some(read_secret_file(path)?),
        (None, Some(path)) => Some(crate::import::read_private_key(path, signing)?),
        (None, None) => None,
    };
    // What the imported key's public key is, to hold the enroller's answer to.
    let imported_key = match (signing, import, &secret_b64) {
        (Some(kind), Some(path), Some(b64)) => Some(
            crate::import::public_key(kind, b64).ok_or_else(|| CliError::BadImport {
                path: path.to_owned(),
                kind: kind.as_str(),
            })?,
        ),
        _ => None,
    };
    let (login, client) = user_enroller(&config)?;
    let request = Enroll {
        kind: match (signing, secret_file) {
            (Some(kind), _) => kind.as_str(),
            (None, Some(_)) => "secret",
            (None, None) => "p256",
        }
        .to_owned(),
        secret: secret_b64,
        dkg,
    };
    let answer: EnrollResponse = ctx
        .block_on(net::call(&client, &request))?
        .map_err(|f| enroll_error(&config, &login, f))?;
    drop(request);

    let secret_id: SecretId = answer.secret_id.parse().map_err(|_| CliError::Unreadable {
        service: "the enroller".into(),
        reason: format!("{:?} is not a secret id", answer.secret_id),
    })?;
    let bytes = B64
        .decode(answer.manifest.as_bytes())
        .map_err(|e| CliError::BadManifest {
            secret_id: secret_id.to_string(),
            why: format!("it is not base64 ({e})"),
        })?;
    let signed = manifests::verify(&key, &bytes, &secret_id, &login.id)?;
    let manifest = signed.unverified();
    // What the enroller said in the clear must be what it signed.
    let consistent = match (&manifest.kind, &answer.public_key, secret_file) {
        (SecretKind::P256(pk), Some(pem), None) => {
            p256::PublicKey::from_public_key_pem(pem).is_ok_and(|k| k == *pk)
        }
        (SecretKind::Opaque, None, Some(_)) => true,
        (SecretKind::Signing { kind, group_key }, Some(text), None) => {
            signing.is_some_and(|k| k.as_str() == *kind)
                && threshold::GroupKey::from_text(signing.unwrap_or(threshold::Kind::Ed25519), text)
                    .is_ok_and(|k| k.as_bytes() == group_key.as_slice())
                && imported_key
                    .as_ref()
                    .is_none_or(|k| k.as_bytes() == group_key.as_slice())
        }
        _ => false,
    };
    if !consistent {
        return Err(CliError::BadManifest {
            secret_id: secret_id.to_string(),
            why: "it does not describe the secret the enroller says it enrolled".into(),
        });
    }
    let cached = manifests::store(&config, &signed)?;
    let custodians: Vec<&str> = manifest.custodians.iter().map(|c| c.as_str()).collect();
    let (t, n) = (manifest.threshold.t(), manifest.threshold.n());
    if ctx.json {
        return Ok(Report::json(&json!({
            "secret_id": secret_id.to_string(),
            "kind": kind_word(&manifest.kind),
            "public_key": answer.public_key,
            "threshold": t,
            "custodians": custodians,
            "manifest": cached,
        })));
    }
    let what = match (secret_file, signing, import) {
        (Some(p), _, _) => format!("the contents of {}", p.display()),
        (None, Some(kind), Some(p)) => format!("the {kind} key of {}", p.display()),
        (None, Some(kind), None) => format!("a new {kind} signing key"),
        (None, None, _) => "a new P-256 key".into(),
    };
    let mut text = format!(
        "enrolled {what} as secret {secret_id}\n  shards: any {t} of {n} at {}\n  \
         manifest: verified with the pinned enroller key, cached in {}\n",
        custodians.join(", "),
        cached.display()
    );
    if let Some(pem) = &answer.public_key {
        text.push_str("  public key:\n");
        text.push_str(pem);
        if !pem.ends_with('\n') {
            text.push('\n');
        }
    }
    if signing.is_some() {
        text.push_str(&format!(
            "it never leaves its custodians: sign with `shardctl sign {secret_id} --in <file>`\n"
        ));
    } else {
        text.push_str(&format!(
            "recover it with `shardctl recover {secret_id} --out <file>`\n"
        ));
    }
    Ok(Report::new(text))
}

/// The file's bytes in base64, for the request (both zeroized on drop).
fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, CliError> {
    let bytes = Zeroizing::new(
        crate::files::read_limited(path, shard::MAX_SECRET_LEN as u64).map_err(|source| {
            match source.kind() {
                std::io::ErrorKind::FileTooLarge => CliError::SecretFileSize(path.to_owned()),
                _ => CliError::ReadFile {
                    what: "--secret-file",
                    path: path.to_owned(),
                    source,
                },
            }
        })?,
    );
    if bytes.is_empty() {
        return Err(CliError::SecretFileSize(path.to_owned()));
    }
    Ok(Zeroizing::new(B64.encode(&*bytes)))
}

fn enroll_error(config: &Config, login: &Login, f: Failure) -> CliError {
    let Failure::Refused {
        reason, custodians, ..
    } = &f
    else {
        return net::failure_error(config, &config.enroller, Some(login), f);
    };
    match reason {
        Reason::CustodiansFailed | Reason::CustodiansFailedCleanupIncomplete => {
            CliError::EnrollFailed {
                custodians: custodians
                    .iter()
                    .map(|c| (c.name.clone(), c.reason.to_string()))
                    .collect(),
                cleanup_incomplete: *reason == Reason::CustodiansFailedCleanupIncomplete,
            }
        }
        _ => match crate::reasons::hint(*reason, &crate::reasons::Site::Enroll) {
            Some(hint) => CliError::Refused {
                service: "the enroller".into(),
                reason: reason.to_string(),
                status: None,
                hint: Some(hint),
            },
            None => net::failure_error(config, &config.enroller, Some(login), f),
        },
    }
}

fn kind_word(kind: &SecretKind) -> &'static str {
    kind.name()
}

/// `shardctl secrets`: the user's enrollments, each manifest verified with the pinned key (and
/// cached, so that recovery does not need the enroller).
pub fn list(ctx: &Ctx) -> Result<Report, CliError> {
    let config = ctx.config()?;
    let key = manifests::pinned_key(&config)?;
    let (login, client) = user_enroller(&config)?;
    let list: Vec<EnrollmentInfo> = ctx
        .block_on(net::call(&client, &Enrollments))?
        .map_err(|f| net::failure_error(&config, &config.enroller, Some(&login), f))?;
    let mut rows = Vec::with_capacity(list.len());
    for e in &list {
        let verified = e.secret_id.parse::<SecretId>().ok().and_then(|id| {
            let bytes = B64.decode(e.manifest.as_bytes()).ok()?;
            manifests::verify(&key, &bytes, &id, &login.id).ok()
        });
        if let Some(signed) = &verified {
            let id = signed.unverified().secret_id;
            if manifests::cached(&config, &id)?.is_none() {
                manifests::store(&config, signed)?;
            }
        }
        rows.push((e, verified));
    }
    if ctx.json {
        let items: Vec<_> = rows
            .iter()
            .map(|(e, v)| {
                let m = v.as_ref().map(SignedManifest::unverified);
                json!({
                    "secret_id": e.secret_id,
                    "kind": e.kind,
                    "public_key": e.public_key,
                    "created_at": rfc3339_unix(e.created_at),
                    "manifest_verified": v.is_some(),
                    "threshold": m.map(|m| m.threshold.t()),
                    "custodians": m.map(|m| m.custodians.iter().map(|c| c.as_str()).collect::<Vec<_>>()),
                })
            })
            .collect();
        return Ok(Report::json(&items));
    }
    if rows.is_empty() {
        return Ok(Report::new(format!(
            "{} has no secrets yet; escrow one with `shardctl enroll`\n",
            login.id
        )));
    }
    let mut text = format!(
        "{:32}  {:12}  {:20}  {:6}  CUSTODIANS\n",
        "SECRET", "KIND", "CREATED", "SHARDS"
    );
    let mut report = Report::default();
    for (e, v) in &rows {
        let (shards, custodians) = match v.as_ref().map(SignedManifest::unverified) {
            Some(m) => (
                format!("{}/{}", m.threshold.t(), m.threshold.n()),
                m.custodians
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            None => {
                report.warnings.push(format!(
                    "the manifest of {} does not verify with the pinned key; do not rely on it",
                    e.secret_id
                ));
                ("?".into(), "(manifest does not verify)".into())
            }
        };
        text.push_str(&format!(
            "{:32}  {:12}  {:20}  {:6}  {custodians}\n",
            e.secret_id,
            e.kind,
            rfc3339_unix(e.created_at),
            shards
        ));
    }
    report.text = text;
    Ok(report)
}
