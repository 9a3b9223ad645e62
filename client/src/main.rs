//! `shardctl`: the one command people run: the PKI, administration, registration, login,
//! enrollment, recovery and a status check.
//!
//! This binary owns every word a user reads; the libraries it calls never print.

#![forbid(unsafe_code)]

mod account;
mod admin;
mod cli;
mod config;
mod error;
mod files;
mod import;
mod manifests;
mod net;
mod outcome;
mod pki;
mod prompt;
mod reasons;
mod recover;
mod refresh;
mod secrets;
mod session;
mod sign;
mod status;
mod verify;

use std::cell::OnceCell;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::config::Config;
use crate::error::CliError;

/// What a command has to say: text for stdout, warnings for stderr, and possibly a failure to
/// report after the text (a `status` that found services down).
#[derive(Debug, Default)]
pub struct Report {
    /// Printed to stdout as is.
    pub text: String,
    /// Printed to stderr, one `shardctl: warning: ...` line each.
    pub warnings: Vec<String>,
    /// Printed to stderr after the text; the exit status is then 1.
    pub failure: Option<CliError>,
}

impl Report {
    fn new(text: String) -> Self {
        Self {
            text,
            ..Self::default()
        }
    }

    /// A report whose text is `value` as one line of JSON.
    fn json(value: &impl serde::Serialize) -> Self {
        let mut text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
        text.push('\n');
        Self::new(text)
    }
}

/// What every command shares: the output mode, where the configuration is, and the runtime for
/// network calls (made on first use: `pki` needs none).
pub struct Ctx {
    /// `--json`.
    pub json: bool,
    config: Option<PathBuf>,
    runtime: OnceCell<tokio::runtime::Runtime>,
}

impl Ctx {
    /// Reads the configuration.
    pub fn config(&self) -> Result<Config, CliError> {
        Config::load(self.config.as_deref())
    }

    /// Runs `future` to completion. A current-thread runtime: a command only waits on a few
    /// sockets at once, and it starts faster than a pool of threads.
    pub fn block_on<F: Future>(&self, future: F) -> Result<F::Output, CliError> {
        if self.runtime.get().is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(CliError::Runtime)?;
            let _ = self.runtime.set(rt);
        }
        match self.runtime.get() {
            Some(rt) => Ok(rt.block_on(future)),
            // Invariant: set just above when it was empty.
            None => Err(CliError::Runtime(std::io::Error::other("no runtime"))),
        }
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let ctx = Ctx {
        json: cli.json,
        config: cli.config,
        runtime: OnceCell::new(),
    };
    let result = match cli.command {
        cli::Command::Pki(_) if ctx.json => Err(CliError::NoJson("pki")),
        cli::Command::Pki(command) => pki::run(command),
        cli::Command::Admin(command) => admin::run(&ctx, command),
        cli::Command::Register { name, totp } => account::register(&ctx, &name, totp),
        cli::Command::Login { name } => account::login(&ctx, &name),
        cli::Command::Enroll {
            secret_file,
            kind,
            import,
            dkg,
        } => secrets::enroll(
            &ctx,
            secret_file.as_deref(),
            kind.as_deref(),
            import.as_deref(),
            dkg,
        ),
        cli::Command::Sign {
            secret_id,
            input,
            out,
            deadline_ms,
        } => sign::sign(&ctx, &secret_id, &input, out.as_deref(), deadline_ms),
        cli::Command::Pubkey { secret_id } => sign::pubkey(&ctx, &secret_id),
        cli::Command::Refresh { secret_id } => refresh::refresh(&ctx, &secret_id),
        cli::Command::Reshare {
            secret_id,
            custodians,
            threshold,
        } => refresh::reshare(&ctx, &secret_id, &custodians, threshold),
        cli::Command::Verify {
            secret_id,
            deadline_ms,
        } => verify::verify(&ctx, &secret_id, deadline_ms),
        cli::Command::Secrets => secrets::list(&ctx),
        cli::Command::Recover {
            secret_id,
            out,
            deadline_ms,
            wait_all,
        } => recover::recover(&ctx, &secret_id, &out, deadline_ms, wait_all),
        cli::Command::Status { deadline_ms } => status::status(&ctx, deadline_ms),
    };
    // Whatever is still waiting on a hung service is abandoned, not awaited.
    if let Some(rt) = ctx.runtime.into_inner() {
        rt.shutdown_background();
    }
    let mut stderr = std::io::stderr();
    match result {
        Ok(report) => {
            for warning in &report.warnings {
                let _ = writeln!(stderr, "shardctl: warning: {warning}");
            }
            // A closed pipe (`shardctl pki show x | head -1`) is not worth a panic or an error;
            // `println!` and `eprintln!` would panic on one.
            let _ = std::io::stdout().lock().write_all(report.text.as_bytes());
            match report.failure {
                Some(e) => {
                    let _ = writeln!(stderr, "shardctl: {e}");
                    ExitCode::FAILURE
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            let _ = writeln!(stderr, "shardctl: {e}");
            if cli.json {
                let _ = writeln!(std::io::stdout().lock(), "{}", e.json());
            }
            ExitCode::FAILURE
        }
    }
}
