//! `shardctl status`: which services answer, with which verified identity and version, and the
//! state of the stored login.

use std::time::{Duration, Instant};

use mtls::Client as CustodianClient;
use p256::pkcs8::DecodePublicKey;
use serde::Serialize;
use serde_json::json;
use wire::Request as _;

use crate::config::Service;
use crate::error::CliError;
use crate::net::{self, Caller};
use crate::session::{rfc3339, Login};
use crate::{manifests, Ctx, Report};

/// The default per-service deadline.
pub const DEFAULT_DEADLINE_MS: u64 = 2000;

/// One service's answer.
#[derive(Debug, Serialize)]
struct Row {
    service: String,
    name: String,
    address: String,
    identity: String,
    answered: bool,
    status: String,
    version: Option<String>,
    detail: Option<String>,
    ms: Option<u64>,
}

/// `shardctl status`.
pub fn status(ctx: &Ctx, deadline_ms: u64) -> Result<Report, CliError> {
    if !(1..=crate::outcome::MAX_DEADLINE_MS).contains(&deadline_ms) {
        return Err(CliError::InvalidDeadline(deadline_ms));
    }
    let deadline = Duration::from_millis(deadline_ms);
    let config = ctx.config()?;
    let login = Login::load(&config);
    let (login_line, login_json) = match &login {
        Ok(l) if l.expired() => (
            format!(
                "login: {} expired at {}; run `shardctl login {}`",
                l.id,
                rfc3339(l.not_after),
                l.user()
            ),
            json!({"identity": l.id.to_string(), "not_after": rfc3339(l.not_after), "valid": false}),
        ),
        Ok(l) => (
            format!(
                "login: {} until {} ({})",
                l.id,
                rfc3339(l.not_after),
                l.path.display()
            ),
            json!({"identity": l.id.to_string(), "not_after": rfc3339(l.not_after), "valid": true, "file": l.path}),
        ),
        Err(e) => (format!("login: {e}"), json!(null)),
    };
    // The best certificate at hand: custodians answer nothing without one.
    let fresh = login.as_ref().ok().filter(|l| !l.expired());
    let caller = match (fresh, &config.admin) {
        (Some(l), _) => Caller::User(l),
        (None, Some((cert, key))) => Caller::Admin { cert, key },
        (None, None) => Caller::Anonymous,
    };
    let anonymous = matches!(caller, Caller::Anonymous);
    let tls = net::tls(&config, &caller)?;
    let client = |svc: &Service| net::client(svc, tls.clone(), deadline);
    let enroller = client(&config.enroller);
    let custodians: Vec<_> = config.custodians.iter().map(|c| (c, client(c))).collect();
    let pinned = manifests::pinned_key(&config).ok();

    let (enroller_row, key_check, custodian_rows) = ctx.block_on(async {
        let e = async {
            match &enroller {
                Ok(c) => {
                    let row = enroller_health(&config.enroller, c).await;
                    let key = match (&pinned, row.answered && !anonymous) {
                        (Some(pinned), true) => {
                            match net::call(c, &wire::enroller::ManifestKey).await {
                                Ok(wire::Text(pem)) => Some(
                                    p256::ecdsa::VerifyingKey::from_public_key_pem(&pem)
                                        .is_ok_and(|k| k == *pinned),
                                ),
                                Err(_) => None,
                            }
                        }
                        _ => None,
                    };
                    (row, key)
                }
                Err(err) => (unanswered(&config.enroller, err.to_string(), None), None),
            }
        };
        let cs = futures_util::future::join_all(custodians.iter().map(|(svc, c)| async move {
            match c {
                Ok(c) => custodian_health(svc, c, anonymous).await,
                Err(err) => unanswered(svc, err.to_string(), None),
            }
        }));
        let ((row, key), cs) = futures_util::future::join(e, cs).await;
        (row, key, cs)
    })?;

    let rows: Vec<&Row> = std::iter::once(&enroller_row)
        .chain(custodian_rows.iter())
        .collect();
    let down = rows.iter().filter(|r| r.status != "ok").count();
    let key_word = match (pinned.is_some(), key_check) {
        (false, _) => "not pinned",
        (true, Some(true)) => "matches the pinned key",
        (true, Some(false)) => "DIFFERS from the pinned key",
        (true, None) => "not checked (needs the enroller and a certificate)",
    };
    let mut report = Report::default();
    if ctx.json {
        report.text = format!(
            "{}\n",
            json!({
                "config": config.path,
                "trust_domain": config.trust_domain.to_string(),
                "login": login_json,
                "services": rows,
                "manifest_key": key_word,
            })
        );
    } else {
        let mut text = format!(
            "config: {} (trust domain {})\n{login_line}\n",
            config.path.display(),
            config.trust_domain
        );
        let width = rows.iter().map(|r| r.address.len()).max().unwrap_or(0);
        for r in &rows {
            let what = format!("{} {}", r.service, r.name);
            let state = if r.answered {
                format!(
                    "{:8} {}  version {}",
                    r.status,
                    r.identity,
                    r.version.as_deref().unwrap_or("?")
                )
            } else {
                "down    ".to_owned()
            };
            text.push_str(&format!(
                "{what:<14} {:<width$}  {state}{}\n",
                r.address,
                r.detail
                    .as_ref()
                    .map(|d| format!("  ({d})"))
                    .unwrap_or_default()
            ));
        }
        text.push_str(&format!("manifest key: {key_word}\n"));
        report.text = text;
    }
    if key_check == Some(false) {
        report.warnings.push(format!(
            "the enroller signs manifests with another key than `manifest_key` in {}; recovery \
             will refuse its manifests until the operator explains why",
            config.path.display()
        ));
    }
    if down > 0 {
        report.failure = Some(CliError::ServicesDown {
            down,
            total: rows.len(),
        });
    }
    Ok(report)
}

fn unanswered(svc: &Service, detail: String, ms: Option<u64>) -> Row {
    Row {
        service: svc.id.role().to_string(),
        name: svc.name().to_owned(),
        address: svc.address.clone(),
        identity: svc.id.to_string(),
        answered: false,
        status: "down".into(),
        version: None,
        detail: Some(detail),
        ms,
    }
}

async fn enroller_health(svc: &Service, c: &CustodianClient) -> Row {
    let start = Instant::now();
    let result = c
        .request(
            mtls::method(wire::enroller::Health::METHOD),
            wire::enroller::Health::ROUTE,
            None,
        )
        .await;
    let ms = Some(start.elapsed().as_millis() as u64);
    match result {
        // A degraded enroller answers 503 with the same body.
        Ok((_, body)) => match serde_json::from_slice::<wire::enroller::HealthResponse>(&body) {
            Ok(h) => Row {
                service: "enroller".into(),
                name: svc.name().to_owned(),
                address: svc.address.clone(),
                identity: svc.id.to_string(),
                answered: true,
                detail: (h.status != "ok")
                    .then(|| format!("token {}", h.token.as_deref().unwrap_or("?"))),
                status: h.status,
                version: h.version,
                ms,
            },
            Err(e) => unanswered(svc, format!("unreadable health answer ({e})"), ms),
        },
        Err(e) => unanswered(svc, net::short_reason(&e), ms),
    }
}

async fn custodian_health(svc: &Service, c: &CustodianClient, anonymous: bool) -> Row {
    let start = Instant::now();
    let result = c.health().await;
    let ms = Some(start.elapsed().as_millis() as u64);
    match result {
        Ok(h) => Row {
            service: "custodian".into(),
            name: svc.name().to_owned(),
            address: svc.address.clone(),
            identity: h.custodian,
            answered: true,
            detail: if h.status == "ok" {
                h.device_info
            } else {
                Some(format!("device {}, database {}", h.device, h.database))
            },
            status: h.status,
            version: Some(h.version),
            ms,
        },
        Err(e) if anonymous => unanswered(
            svc,
            format!(
                "{}; custodians answer only a certificate: run `shardctl login <name>`",
                net::short_reason(&e)
            ),
            ms,
        ),
        Err(e) => unanswered(svc, net::short_reason(&e), ms),
    }
}
