//! `shardctl admin invite | unlock | users`: the enroller's administration, with an admin
//! certificate.

use std::path::PathBuf;

use certs::Name;
use custodian::client::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::{AdminCommand, AdminCredentials};
use crate::config::Config;
use crate::error::CliError;
use crate::net::{self, Caller, Failure};
use crate::session::rfc3339_unix;
use crate::{Ctx, Report};

#[derive(Serialize)]
struct InviteRequest<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_seconds: Option<i64>,
}

#[derive(Deserialize)]
struct InviteResponse {
    name: String,
    code: String,
    expires_at: i64,
}

#[derive(Deserialize, Serialize)]
struct UserInfo {
    name: String,
    locked: bool,
    failures: i64,
    totp: bool,
}

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
fn enroller(
    config: &Config,
    credentials: &AdminCredentials,
) -> Result<custodian::client::CustodianClient, CliError> {
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
    let request = InviteRequest {
        name: name.as_str(),
        ttl_seconds: ttl_hours.map(|h| i64::from(h) * 3600),
    };
    let answer: InviteResponse = ctx
        .block_on(net::call(
            &client,
            Method::POST,
            "/v1/admin/invitations",
            Some(&request),
        ))?
        .map_err(|f| admin_error(&config, f))?;
    let expires = rfc3339_unix(answer.expires_at);
    if ctx.json {
        return Ok(Report::json(&json!({
            "name": answer.name,
            "code": answer.code,
            "expires_at": expires,
            "expires_at_unix": answer.expires_at,
        })));
    }
    Ok(Report::new(format!(
        "invitation for {} (one use, until {expires}):\n  {}\nGive the code to {} over a \
         trusted channel; they run `shardctl register {}`.\n",
        answer.name, answer.code, answer.name, answer.name
    )))
}

fn unlock(ctx: &Ctx, name: &str, credentials: &AdminCredentials) -> Result<Report, CliError> {
    let name = Name::new(name).map_err(CliError::InvalidArgument)?;
    let config = ctx.config()?;
    let client = enroller(&config, credentials)?;
    let path = format!("/v1/admin/users/{name}/unlock");
    ctx.block_on(net::call::<serde_json::Value>(
        &client,
        Method::POST,
        &path,
        None::<&()>,
    ))?
    .map_err(|f| match &f {
        Failure::Refused { reason, .. } if reason == "no_such_user" => CliError::Refused {
            service: "the enroller".into(),
            reason: reason.clone(),
            hint: Some(format!(
                "there is no user {name}; see `shardctl admin users`"
            )),
        },
        _ => admin_error(&config, f),
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
        .block_on(net::call(
            &client,
            Method::GET,
            "/v1/admin/users",
            None::<&()>,
        ))?
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
    match &f {
        Failure::Refused { reason, .. }
            if reason == "role_not_allowed" || reason == "client_certificate_required" =>
        {
            CliError::Refused {
                service: "the enroller".into(),
                reason: reason.clone(),
                hint: Some(format!(
                    "this needs an admin certificate (`shardctl pki issue admin <name>`), named \
                     under [admin] in {} or with --admin-cert and --admin-key",
                    config.path.display()
                )),
            }
        }
        _ => net::failure_error(config, &config.enroller, None, f),
    }
}
