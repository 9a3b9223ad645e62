//! Where the project's binaries are.
//!
//! Cargo puts every binary of the workspace in one directory (`target/debug` for
//! `cargo test`, `target/release` for `cargo bench`), and a test executable in its `deps/`
//! subdirectory, so the binaries are found next to whatever runs this code.
//! `cargo test --workspace` (and a plain `cargo test` at the root) builds them all before
//! any test runs; `cargo build --workspace --bins` does it for a single package's tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variable naming another directory of binaries (e.g. a release build).
pub const BIN_DIR_ENV: &str = "SHARD_BIN_DIR";

/// The directory holding `shardctl`, `custodian` and `enroller`.
#[derive(Debug, Clone)]
pub struct Bins {
    dir: PathBuf,
}

impl Bins {
    /// `$SHARD_BIN_DIR`, else the directory of the running executable (or its parent when
    /// that is cargo's `deps/`).
    pub fn locate() -> Result<Bins, String> {
        if let Some(d) = std::env::var_os(BIN_DIR_ENV) {
            return Ok(Bins {
                dir: PathBuf::from(d),
            });
        }
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.ends_with("deps") {
            dir.pop();
        }
        Ok(Bins { dir })
    }

    /// Path of `shardctl`.
    pub fn shardctl(&self) -> PathBuf {
        self.dir.join("shardctl")
    }

    /// Path of `custodian`.
    pub fn custodian(&self) -> PathBuf {
        self.dir.join("custodian")
    }

    /// Path of `enroller`.
    pub fn enroller(&self) -> PathBuf {
        self.dir.join("enroller")
    }

    /// `path` if it exists, else an error that says how to build it.
    pub fn require(path: PathBuf) -> Result<PathBuf, String> {
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{} is not built: run `cargo build --workspace --bins` (or `cargo test --workspace`)",
                path.display()
            ))
        }
    }
}

/// Runs `shardctl ARGS` with `SHARDCTL_PKI_DIR=dir`, which must succeed; returns stdout.
pub fn run_shardctl(bins: &Bins, dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(Bins::require(bins.shardctl())?)
        .args(args)
        .env("SHARDCTL_PKI_DIR", dir)
        .output()
        .map_err(|e| format!("cannot run shardctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "shardctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
