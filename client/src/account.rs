//! `shardctl register` and `shardctl login`: the two calls made without a certificate.

use std::io::IsTerminal;

use certs::Name;
use serde_json::json;
use wire::enroller::{Login as LoginRequest, LoginResponse, Register, RegisterResponse};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::CliError;
use crate::net::{self, Caller, Failure};
use crate::session::{self, Login};
use crate::{prompt, Ctx, Report};

/// `shardctl register NAME [--totp]`.
pub fn register(ctx: &Ctx, name: &str, totp: bool) -> Result<Report, CliError> {
    let name = Name::new(name).map_err(CliError::InvalidArgument)?;
    let config = ctx.config()?;
    let invitation = prompt::read(prompt::INVITATION, false)?;
    let password = prompt::read(prompt::PASSWORD, true)?;
    let tls = net::tls(&config, &Caller::Anonymous)?;
    let enroller = net::client(&config.enroller, tls, net::ENROLLER_DEADLINE)?;
    let request = Register {
        name: name.as_str().to_owned(),
        invitation: Zeroizing::new(invitation.trim().to_owned()),
        password: Zeroizing::new(password.to_string()),
        totp,
    };
    let answer: RegisterResponse = ctx
        .block_on(net::call(&enroller, &request))?
        .map_err(|f| register_error(&config, name.as_str(), f))?;
    if ctx.json {
        return Ok(Report::json(&json!({
            "name": answer.name,
            "identity": format!("spiffe://{}/user/{}", config.trust_domain, answer.name),
            "totp_uri": answer.totp_uri.as_deref(),
        })));
    }
    let mut text = format!(
        "registered {} in {}; next: `shardctl login {}`\n",
        answer.name, config.trust_domain, answer.name
    );
    if let Some(uri) = &answer.totp_uri {
        text.push_str(
            "\nAdd this second factor to your authenticator app now; it is shown only once:\n",
        );
        if std::io::stdout().is_terminal() {
            if let Some(qr) = qr_text(uri) {
                text.push_str(&qr);
            }
        }
        text.push_str(&format!("  {}\n", uri.as_str()));
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
    refusal_error(config, &crate::reasons::Site::Register { name }, f)
}

/// A refusal that has words of its own at `site`, else the generic failure.
fn refusal_error(config: &Config, site: &crate::reasons::Site<'_>, f: Failure) -> CliError {
    let Failure::Refused { reason, .. } = &f else {
        return net::failure_error(config, &config.enroller, None, f);
    };
    match crate::reasons::hint(*reason, site) {
        Some(hint) => CliError::Refused {
            service: "the enroller".into(),
            reason: reason.to_string(),
            status: None,
            hint: Some(hint),
        },
        None => net::failure_error(config, &config.enroller, None, f),
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
            name: name.as_str().to_owned(),
            password: Zeroizing::new(password.to_string()),
            totp_code: code.clone(),
            csr: csr.to_string(),
        };
        let result = ctx.block_on(net::call(&enroller, &request))?;
        match result {
            Ok(a) => break a,
            Err(Failure::Refused { reason, .. })
                if reason == wire::Reason::TotpRequired && code.is_none() =>
            {
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
    refusal_error(config, &crate::reasons::Site::Login { name }, f)
}
