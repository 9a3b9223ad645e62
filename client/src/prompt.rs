//! Passwords, invitation codes and TOTP codes: never on the command line (where `ps` and shell
//! history would show them). Read from the terminal without echo, or, for scripts, from a file
//! or variable named in the environment.

use std::io::IsTerminal;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::error::CliError;

/// A file holding the password (first line).
pub const PASSWORD_FILE: &str = "SHARDCTL_PASSWORD_FILE";
/// A file holding the invitation code (first line).
pub const INVITATION_FILE: &str = "SHARDCTL_INVITATION_FILE";
/// The current TOTP code itself (it is good for one use within 30 seconds).
pub const TOTP_CODE: &str = "SHARDCTL_TOTP_CODE";

/// A secret file holds one short line.
const MAX_SECRET_FILE: u64 = 4096;

/// Something the user is asked for.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    /// How the prompt and messages name it.
    pub what: &'static str,
    /// The environment variable that names a file holding it.
    pub file_env: &'static str,
}

/// The password.
pub const PASSWORD: Ask = Ask {
    what: "password",
    file_env: PASSWORD_FILE,
};

/// The invitation code.
pub const INVITATION: Ask = Ask {
    what: "invitation code",
    file_env: INVITATION_FILE,
};

/// Reads `ask`: from the file its variable names, else from the terminal without echo. With
/// `confirm`, the terminal asks twice and the answers must agree.
pub fn read(ask: Ask, confirm: bool) -> Result<Zeroizing<String>, CliError> {
    if let Some(path) = std::env::var_os(ask.file_env).map(PathBuf::from) {
        return from_file(ask, path);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::NoTerminal {
            what: ask.what,
            how: format!("set {} to a file holding it", ask.file_env),
        });
    }
    let first = hidden(ask.what, &format!("{}: ", capitalize(ask.what)))?;
    if confirm {
        let again = hidden(ask.what, &format!("{} again: ", capitalize(ask.what)))?;
        if *again != *first {
            return Err(CliError::Mismatch(ask.what));
        }
    }
    Ok(first)
}

/// The current TOTP code: `$SHARDCTL_TOTP_CODE`, else asked on the terminal.
pub fn totp_code() -> Result<Zeroizing<String>, CliError> {
    if let Ok(code) = std::env::var(TOTP_CODE) {
        return Ok(Zeroizing::new(code.trim().to_owned()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::NoTerminal {
            what: "TOTP code",
            how: format!("set {TOTP_CODE} to the current code"),
        });
    }
    hidden("TOTP code", "Code from your authenticator app: ")
}

fn hidden(what: &'static str, prompt: &str) -> Result<Zeroizing<String>, CliError> {
    let text = Zeroizing::new(
        rpassword::prompt_password(prompt)
            .map_err(|source| CliError::ReadInput { what, source })?,
    );
    if text.is_empty() {
        return Err(CliError::Empty(what));
    }
    Ok(text)
}

fn from_file(ask: Ask, path: PathBuf) -> Result<Zeroizing<String>, CliError> {
    let bytes = Zeroizing::new(crate::files::read_limited(&path, MAX_SECRET_FILE).map_err(
        |source| CliError::ReadFile {
            what: ask.file_env,
            path: path.clone(),
            source,
        },
    )?);
    let text = std::str::from_utf8(&bytes).map_err(|_| CliError::BadSecretFile {
        env: ask.file_env,
        path: path.clone(),
    })?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(CliError::BadSecretFile {
            env: ask.file_env,
            path,
        });
    }
    Ok(Zeroizing::new(line.to_owned()))
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
