//! `shardctl admin invite | unlock | users`: the enroller's administration, with an admin
//! certificate.

use std::path::PathBuf;

use certs::Name;
use serde_json::json;
use wire::enroller::{Invite, InviteResponse, Unlock, UserInfo, Users};

use crate::cli::{AdminCommand, AdminCredentials};
use crate::config::Config;
use crate::error::CliError;
use crate::net::{self, Caller, Failure};
use crate::reasons::Site;
use crate::session::rfc3339_unix;
use crate::{Ctx, Report};

/// Runs one `admin` subcommand.
pub fn run(ctx: &Ctx, command: AdminCommand) -> Result<Report, CliError> {
    match command {
        AdminCommand::Invite {
            name,
            valid_hours,
            credentials,
        } => invite(ctx, &name, valid_hours, &credentials),
        AdminCommand::Unlock { name, credentials } => unlock(ctx, &name, &credentials),
        AdminCommand::Users { credentials } => users(ctx, &credentials),
    }
}

/// The admin client for the enroller.
fn enroller(config: &Config, credentials: &AdminCredentials) -> Result<mtls::Client, CliError> {
    let (cert, key): (PathBuf, PathBuf) = match (&credentials.admin_cert, &credentials.admin_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => config
            .admin
            .clone()
            .ok_or_else(|| CliError::NoAdmin(config.path.clone()))?,
        _ => return Err(CliError::AdminFlags),
    };
    let tls = net::tls(
        config,
        &Caller::Admin {
            cert: &cert,
            key: &key,
        },
    )?;
    net::client(&config.enroller, tls, net::ENROLLER_DEADLINE)
}

fn invite(
    ctx: &Ctx,
    name: &str,
    ttl_hours: Option<u32>,
    credentials: &AdminCredentials,
) -> Result<Report, CliError> {
    let name = Name::new(name).map_err(CliError::InvalidArgument)?;
    if let Some(h) = ttl_hours {
        if !(1..=720).contains(&h) {
            return Err(CliError::InvalidTtl(h));
        }
    }
    let config = ctx.config()?;
    let client = enroller(&config, credentials)?;
    let request = Invite {
        name: name.as_str().to_owned(),
        ttl_seconds: ttl_hours.map(|h| i64::from(h) * 3600),
    };
    let answer: InviteResponse = ctx
        .block_on(net::call(&client, &request))?
        .map_err(|f| admin_error(&config, f))?;
    let expires = rfc3339_unix(answer.expires_at);
    if ctx.json {
        return Ok(Report::json(&json!({
            "name": answer.name,
            "code": answer.code.as_str(),
            "expires_at": expires,
            "expires_at_unix": answer.expires_at,
        })));
    }
    Ok(Report::new(format!(
        "invitation for {} (one use, until {expires}):\n  {}\nGive the code to {} over a \
         trusted channel; they run `shardctl register {}`.\n",
        answer.name,
        answer.code.as_str(),
        answer.name,
        answer.name
    )))
}

fn unlock(ctx: &Ctx, name: &str, credentials: &AdminCredentials) -> Result<Report, CliError> {
    let name = Name::new(name).map_err(CliError::InvalidArgument)?;
    let config = ctx.config()?;
    let client = enroller(&config, credentials)?;
    let request = Unlock {
        name: name.as_str().to_owned(),
    };
    ctx.block_on(net::call(&client, &request))?.map_err(|f| {
        admin_error_at(
            &config,
            &Site::Unlock {
                name: name.as_str(),
            },
            f,
        )
    })?;
    if ctx.json {
        return Ok(Report::json(
            &json!({ "name": name.as_str(), "locked": false }),
        ));
    }
    Ok(Report::new(format!(
        "unlocked {name}; they can log in again (`shardctl login {name}`)\n"
    )))
}

fn users(ctx: &Ctx, credentials: &AdminCredentials) -> Result<Report, CliError> {
    let config = ctx.config()?;
    let client = enroller(&config, credentials)?;
    let list: Vec<UserInfo> = ctx
        .block_on(net::call(&client, &Users))?
        .map_err(|f| admin_error(&config, f))?;
    if ctx.json {
        return Ok(Report::json(&list));
    }
    if list.is_empty() {
        return Ok(Report::new(
            "no users yet; invite one with `shardctl admin invite <name>`\n".into(),
        ));
    }
    let width = list.iter().map(|u| u.name.len()).max().unwrap_or(4).max(4);
    let mut text = format!(
        "{:width$}  {:8}  {:>8}  TOTP\n",
        "USER", "STATE", "FAILURES"
    );
    for u in &list {
        text.push_str(&format!(
            "{:width$}  {:8}  {:>8}  {}\n",
            u.name,
            if u.locked { "locked" } else { "active" },
            u.failures,
            if u.totp { "yes" } else { "no" }
        ));
    }
    Ok(Report::new(text))
}

fn admin_error(config: &Config, f: Failure) -> CliError {
    admin_error_at(
        config,
        &Site::Admin {
            config: &config.path,
        },
        f,
    )
}

fn admin_error_at(config: &Config, site: &Site<'_>, f: Failure) -> CliError {
    let Failure::Refused { reason, .. } = &f else {
        return net::failure_error(config, &config.enroller, None, f);
    };
    // An unlock refused for the admin's certificate gets the admin's words.
    let hint = crate::reasons::hint(*reason, site).or_else(|| {
        crate::reasons::hint(
            *reason,
            &Site::Admin {
                config: &config.path,
            },
        )
    });
    match hint {
        Some(hint) => CliError::Refused {
            service: "the enroller".into(),
            reason: reason.to_string(),
            status: None,
            hint: Some(hint),
        },
        None => net::failure_error(config, &config.enroller, None, f),
    }
}
