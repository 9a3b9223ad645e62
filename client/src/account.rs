//! `shardctl register` and `shardctl login`: the two calls made without a certificate.

use std::io::IsTerminal;

use certs::Name;
use custodian::client::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::CliError;
use crate::net::{self, Caller, Failure};
use crate::session::{self, Login};
use crate::{prompt, Ctx, Report};

#[derive(Serialize)]
struct RegisterRequest<'a> {
    name: &'a str,
    invitation: &'a str,
    password: &'a str,
    totp: bool,
}

#[derive(Deserialize)]
struct RegisterResponse {
    name: String,
    totp_uri: Option<String>,
}

#[derive(Serialize)]
struct LoginRequest<'a> {
    name: &'a str,
    password: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    totp_code: Option<&'a str>,
    csr: &'a str,
}

#[derive(Deserialize)]
struct LoginResponse {
    certificate: String,
    not_after: i64,
    identity: String,
}

/// `shardctl register NAME [--totp]`.
pub fn register(ctx: &Ctx, name: &str, totp: bool) -> Result<Report, CliError> {
    let name = Name::new(name).map_err(CliError::InvalidArgument)?;
    let config = ctx.config()?;
    let invitation = prompt::read(prompt::INVITATION, false)?;
    let password = prompt::read(prompt::PASSWORD, true)?;
    let tls = net::tls(&config, &Caller::Anonymous)?;
    let enroller = net::client(&config.enroller, tls, net::ENROLLER_DEADLINE)?;
    let request = RegisterRequest {
        name: name.as_str(),
        invitation: invitation.trim(),
        password: &password,
        totp,
    };
    let answer: RegisterResponse = ctx
        .block_on(net::call(
            &enroller,
            Method::POST,
            "/v1/register",
            Some(&request),
        ))?
        .map_err(|f| register_error(&config, name.as_str(), f))?;
    if ctx.json {
        return Ok(Report::json(&json!({
            "name": answer.name,
            "identity": format!("spiffe://{}/user/{}", config.trust_domain, answer.name),
            "totp_uri": answer.totp_uri,
        })));
    }
    let mut text = format!(
        "registered {} in {}; next: `shardctl login {}`\n",
        answer.name, config.trust_domain, answer.name
    );
    if let Some(uri) = answer.totp_uri {
        text.push_str(
            "\nAdd this second factor to your authenticator app now; it is shown only once:\n",
        );
        if std::io::stdout().is_terminal() {
            if let Some(qr) = qr_text(&uri) {
                text.push_str(&qr);
            }
        }
        text.push_str(&format!("  {uri}\n"));
    }
    Ok(Report::new(text))
}

/// The URI as a QR code of half-height blocks, for a terminal.
fn qr_text(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build()
            + "\n",
    )
}

fn register_error(config: &Config, name: &str, f: Failure) -> CliError {
    let Failure::Refused { reason, .. } = &f else {
        return net::failure_error(config, &config.enroller, None, f);
    };
    let hint = match reason.as_str() {
        "invitation_unknown" => format!(
            "the invitation code is not valid for {name}; check it, or ask an administrator \
             for a new one (`shardctl admin invite {name}`)"
        ),
        "invitation_expired" => format!(
            "the invitation for {name} has expired; ask an administrator for a new one \
             (`shardctl admin invite {name}`)"
        ),
        "invitation_used" => format!(
            "the invitation for {name} was already used; if that was you, run \
             `shardctl login {name}`, else ask an administrator for a new one"
        ),
        "user_exists" => format!("{name} is already registered; run `shardctl login {name}`"),
        "password_too_short" => "the password is too short; use at least 12 characters".into(),
        "password_too_long" => "the password is too long; use at most 256 characters".into(),
        "password_contains_name" => {
            "the password contains the user name; choose another one".into()
        }
        "password_guessable" => {
            "the password is too easy to guess; choose a longer, less regular one".into()
        }
        "invalid_name" => format!("{name:?} is not a valid user name"),
        _ => return net::failure_error(config, &config.enroller, None, f),
    };
    CliError::Refused {
        service: "the enroller".into(),
        reason: reason.clone(),
        hint: Some(hint),
    }
}

/// `shardctl login NAME`.
pub fn login(ctx: &Ctx, name: &str) -> Result<Report, CliError> {
    let name = Name::new(name).map_err(CliError::InvalidArgument)?;
    let config = ctx.config()?;
    let password = prompt::read(prompt::PASSWORD, false)?;
    // The key is made here and never leaves this machine; only the CSR does.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CliError::KeyGeneration(e.to_string()))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| CliError::KeyGeneration(e.to_string()))?;
    let key_pem = Zeroizing::new(key.serialize_pem());
    drop(key);

    let tls = net::tls(&config, &Caller::Anonymous)?;
    let enroller = net::client(&config.enroller, tls, net::ENROLLER_DEADLINE)?;
    // A TOTP code given up front saves a round trip; otherwise the enroller says when it
    // wants one.
    let mut code: Option<Zeroizing<String>> = std::env::var(prompt::TOTP_CODE)
        .ok()
        .map(|c| Zeroizing::new(c.trim().to_owned()));
    let answer: LoginResponse = loop {
        let request = LoginRequest {
            name: name.as_str(),
            password: &password,
            totp_code: code.as_deref().map(String::as_str),
            csr: &csr,
        };
        let result = ctx.block_on(net::call(
            &enroller,
            Method::POST,
            "/v1/login",
            Some(&request),
        ))?;
        match result {
            Ok(a) => break a,
            Err(Failure::Refused { reason, .. }) if reason == "totp_required" && code.is_none() => {
                code = Some(prompt::totp_code()?);
            }
            Err(f) => return Err(login_error(&config, name.as_str(), f)),
        }
    };
    let expected = format!("spiffe://{}/user/{}", config.trust_domain, name);
    if answer.identity != expected {
        return Err(CliError::Unreadable {
            service: "the enroller".into(),
            reason: format!(
                "it issued a certificate for {}, not {expected}",
                answer.identity
            ),
        });
    }
    // Check the new pair before it replaces a working one: it must parse, name this user and
    // make a TLS identity (which also checks that the certificate is for our key).
    let mut pem = Zeroizing::new(Vec::with_capacity(key_pem.len() + answer.certificate.len()));
    pem.extend_from_slice(key_pem.as_bytes());
    pem.extend_from_slice(answer.certificate.as_bytes());
    let path = config.login_file()?;
    let stored = Login::parse(path.clone(), pem)?;
    if stored.id.to_string() != expected {
        return Err(CliError::Unreadable {
            service: "the enroller".into(),
            reason: format!("its certificate names {}, not {expected}", stored.id),
        });
    }
    net::tls(&config, &Caller::User(&stored))?;
    Login::store(&config, &key_pem, &answer.certificate)?;
    let until = session::rfc3339_unix(answer.not_after);
    if ctx.json {
        return Ok(Report::json(&json!({
            "identity": stored.id.to_string(),
            "not_after": until,
            "not_after_unix": answer.not_after,
            "credentials": path,
        })));
    }
    let minutes = (answer.not_after - time::OffsetDateTime::now_utc().unix_timestamp()).max(0) / 60;
    Ok(Report::new(format!(
        "logged in as {} until {until} (about {minutes} min); key and certificate in {} (mode 0600)\n",
        stored.id,
        path.display()
    )))
}

fn login_error(config: &Config, name: &str, f: Failure) -> CliError {
    let Failure::Refused { reason, .. } = &f else {
        return net::failure_error(config, &config.enroller, None, f);
    };
    let hint = match reason.as_str() {
        "invalid_credentials" => format!(
            "wrong user name or password for {name}; try again (repeated failures lock the account)"
        ),
        "account_locked" => format!(
            "the account {name} is locked after too many failed logins; ask an administrator \
             to run `shardctl admin unlock {name}`"
        ),
        "retry_later" => "too many failed logins; wait a minute before trying again".into(),
        "too_many_failures_from_source" => {
            "too many failed logins from this address; wait a while before trying again".into()
        }
        "totp_required" => format!(
            "{name} has a second factor: give the current code from your authenticator app \
             (on the terminal, or in {})",
            prompt::TOTP_CODE
        ),
        "invalid_totp" => "the TOTP code is wrong; check your authenticator's clock and try \
                           again with the current code"
            .into(),
        "totp_replayed" => {
            "that TOTP code was already used; wait for the next one and try again".into()
        }
        "invalid_name" => format!("{name:?} is not a valid user name"),
        _ => return net::failure_error(config, &config.enroller, None, f),
    };
    CliError::Refused {
        service: "the enroller".into(),
        reason: reason.clone(),
        hint: Some(hint),
    }
}
