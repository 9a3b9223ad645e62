//! `shardctl`: the one command people run (today: the PKI verbs).
//!
//! This binary owns every word a user reads; the libraries it calls never print.

#![forbid(unsafe_code)]

mod cli;
mod error;
mod pki;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// What a successful command has to say: text for stdout, and warnings for stderr.
#[derive(Debug, Default)]
pub struct Report {
    /// Printed to stdout as is.
    pub text: String,
    /// Printed to stderr, one `shardctl: warning: ...` line each.
    pub warnings: Vec<String>,
}

impl Report {
    fn new(text: String) -> Self {
        Self {
            text,
            warnings: Vec::new(),
        }
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Pki(command) => pki::run(command),
    };
    match result {
        Ok(report) => {
            for warning in &report.warnings {
                let _ = writeln!(std::io::stderr(), "shardctl: warning: {warning}");
            }
            // A closed pipe (`shardctl pki show x | head -1`) is not worth a panic or an error;
            // `println!` and `eprintln!` would panic on one.
            let _ = std::io::stdout().lock().write_all(report.text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "shardctl: {e}");
            ExitCode::FAILURE
        }
    }
}
