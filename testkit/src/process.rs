//! One service process (`custodian serve`, `enroller serve`) and the one-shot commands of
//! the same binary with the same configuration.
//!
//! A [`Service`] has a mutual-TLS address and a plain loopback health port of its own,
//! given to the process in `<PREFIX>_LISTEN` and `<PREFIX>_HEALTH_LISTEN`, so that several
//! can run side by side. It is ready when its health port answers 200 and its TLS port
//! listens. The process sees none of the test's own `<PREFIX>_*` or device variables,
//! only what the harness gives it. Every run keeps its stdout and stderr in
//! `logs/NN-<what>.stdout` and `.stderr`.

use std::ffi::{OsStr, OsString};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::http;
use crate::net::{free_addr, is_listening};

/// How long a service gets to become ready, and to drain after SIGTERM.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The plain health port's path (both services).
pub const HEALTH_PATH: &str = wire::enroller::PLAIN_HEALTH_PATH;

/// What a service is: its binary, its configuration and what its process is given.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Its name (`c1`, `main`).
    pub name: String,
    /// The binary.
    pub program: PathBuf,
    /// The prefix of its environment overrides (`CUSTODIAN`, `ENROLLER`).
    pub env_prefix: &'static str,
    /// The loopback address it listens on (the port is chosen here).
    pub ip: IpAddr,
    /// Its configuration file.
    pub config: PathBuf,
    /// Environment of every run (device variables, configuration overrides).
    pub env: Vec<(OsString, OsString)>,
    /// Where the logs of its runs go.
    pub logs: PathBuf,
}

/// Output of a one-shot command, kept with the logs.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// A service process; killed (and reaped) on drop.
#[derive(Debug)]
pub struct Service {
    /// Its name (`c1`, `main`).
    pub name: String,
    /// Its mutual-TLS address.
    pub addr: SocketAddr,
    /// Its plain loopback health address.
    pub health: SocketAddr,
    /// Its configuration file.
    pub config: PathBuf,
    spec: Spec,
    runs: u32,
    child: Option<Child>,
    /// Whether its addresses were bound once: from then on they stay, so that clients
    /// configured with them reach it after a restart.
    settled: bool,
}

impl Service {
    /// A service that is not running yet, with free addresses on `spec.ip`. An address in
    /// `spec.env` (`<PREFIX>_LISTEN`, `<PREFIX>_HEALTH_LISTEN`) is taken as given.
    pub fn new(spec: Spec) -> Result<Service, String> {
        let pick = || free_addr(spec.ip).map_err(|e| format!("no free port on {}: {e}", spec.ip));
        let given = |key: &str| {
            let var = format!("{}_{key}", spec.env_prefix);
            spec.env
                .iter()
                .find(|(k, _)| k == var.as_str())
                .and_then(|(_, v)| v.to_str()?.parse().ok())
        };
        let (addr, health) = (given("LISTEN"), given("HEALTH_LISTEN"));
        Ok(Service {
            name: spec.name.clone(),
            addr: addr.map_or_else(pick, Ok)?,
            health: health.map_or_else(pick, Ok)?,
            config: spec.config.clone(),
            settled: addr.is_some() || health.is_some(),
            spec,
            runs: 0,
            child: None,
        })
    }

    /// What it was made from.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Sets (or with `None` removes) an environment variable of the next runs.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.spec.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.spec.env.push((key.into(), v.into()));
        }
    }

    /// The binary, configuration and environment of every run, and nothing inherited
    /// that could change them.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.spec.program);
        cmd.arg("--config").arg(&self.config);
        let own = format!("{}_", self.spec.env_prefix);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with(&own) {
                cmd.env_remove(&k);
            }
        }
        cmd.env_remove("SHARD_HSM_PIN")
            .env_remove("SOFTHSM2_CONF")
            .env_remove("TPM2TOOLS_TCTI")
            .env(format!("{own}LISTEN"), self.addr.to_string())
            .env(format!("{own}HEALTH_LISTEN"), self.health.to_string())
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    /// The value the harness gives this service's processes for `key` (e.g. the
    /// `SOFTHSM2_CONF` of its token).
    pub fn env_var(&self, key: &str) -> Option<&OsStr> {
        self.spec
            .env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_os_str())
    }

    fn log_paths(&mut self, what: &str) -> Result<(PathBuf, PathBuf), String> {
        std::fs::create_dir_all(&self.spec.logs)
            .map_err(|e| format!("{}: {e}", self.spec.logs.display()))?;
        self.runs += 1;
        let stem = format!("{:02}-{what}", self.runs);
        Ok((
            self.spec.logs.join(format!("{stem}.stdout")),
            self.spec.logs.join(format!("{stem}.stderr")),
        ))
    }

    /// Starts `serve` and waits until it is ready. The first start tries other addresses
    /// when one was taken meanwhile; later starts keep the addresses.
    pub fn start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err(format!("{} is already running", self.name));
        }
        let mut last = String::new();
        for _ in 0..5 {
            let (out, err) = self.log_paths("serve")?;
            let file =
                |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
            let child = self
                .command()
                .arg("serve")
                .stdout(file(&out)?)
                .stderr(file(&err)?)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", self.spec.program.display()))?;
            self.child = Some(child);
            match self.wait_started(&err) {
                Ok(()) => {
                    self.settled = true;
                    return Ok(());
                }
                Err(text) if text.contains("cannot listen") && !self.settled => {
                    last = text;
                    self.addr = free_addr(self.spec.ip).map_err(|e| e.to_string())?;
                    self.health = free_addr(self.spec.ip).map_err(|e| e.to_string())?;
                }
                Err(text) => return Err(format!("{} did not start: {text}", self.name)),
            }
        }
        Err(format!("{} could not bind free ports: {last}", self.name))
    }

    /// Waits for readiness; on an exit, the process's stderr.
    fn wait_started(&mut self, stderr: &Path) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                let text = std::fs::read_to_string(stderr).unwrap_or_default();
                return Err(format!("exited ({status}):\n{}", text.trim()));
            }
            if self.is_ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let text = std::fs::read_to_string(stderr).unwrap_or_default();
                return Err(format!("not ready after {PATIENCE:?}:\n{}", text.trim()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the health port answers 200 and the TLS port listens.
    pub fn is_ready(&self) -> bool {
        matches!(http::get_plain(self.health, HEALTH_PATH), Ok(r) if r.status == 200)
            && is_listening(self.addr)
    }

    /// Waits until the running service is ready again (e.g. after [`Service::resume`]).
    pub fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        while !self.is_ready() {
            if Instant::now() > deadline {
                return Err(format!("{} is not ready after {PATIENCE:?}", self.name));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    // The one FFI call of the harness: signals (SIGSTOP, SIGCONT, SIGKILL) that std does
    // not offer.
    #[allow(unsafe_code)]
    fn signal(&self, sig: libc::c_int) -> Result<(), String> {
        let pid = self
            .pid()
            .ok_or_else(|| format!("{} is not running", self.name))?;
        let pid = libc::pid_t::try_from(pid).map_err(|e| e.to_string())?;
        // SAFETY: kill(2) on a child this value spawned and has not reaped yet, so the
        // pid cannot belong to another process.
        if unsafe { libc::kill(pid, sig) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().to_string())
        }
    }

    /// Sends SIGTERM (does not wait).
    pub fn sigterm(&self) -> Result<(), String> {
        self.signal(libc::SIGTERM)
    }

    /// Waits up to `timeout` for the process to exit; `None` while it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM (after SIGCONT, should it be paused) and waits for it to drain and exit;
    /// killed after [`PATIENCE`]. Returns its exit status.
    pub fn stop(&mut self) -> Result<ExitStatus, String> {
        let _ = self.signal(libc::SIGCONT);
        self.sigterm()?;
        if let Some(status) = self.wait_exit(PATIENCE) {
            return Ok(status);
        }
        let mut child = self.child.take().ok_or("not running")?;
        let _ = child.kill();
        child.wait().map_err(|e| e.to_string())
    }

    /// SIGKILL, as a crash would, and reaps the process.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process hangs with its sockets open.
    pub fn pause(&self) -> Result<(), String> {
        self.signal(libc::SIGSTOP)
    }

    /// SIGCONT after [`Service::pause`].
    pub fn resume(&self) -> Result<(), String> {
        self.signal(libc::SIGCONT)
    }

    /// Runs a one-shot subcommand (`init`, `audit verify`, `health`) to completion.
    pub fn run(&mut self, args: &[&str]) -> Result<Output, String> {
        self.run_with_env(args, &[])
    }

    /// Runs a one-shot subcommand with extra environment (e.g. a bad override).
    pub fn run_with_env(&mut self, args: &[&str], env: &[(&str, &str)]) -> Result<Output, String> {
        // Named after the subcommand, without its options (which may hold paths).
        let what: Vec<&str> = args
            .iter()
            .copied()
            .take_while(|a| !a.starts_with('-'))
            .collect();
        let (out_path, err_path) = self.log_paths(&what.join("-"))?;
        let out = self
            .command()
            .args(args)
            .envs(env.iter().copied())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.spec.program.display()))?;
        let keep =
            |p: &Path, b: &[u8]| std::fs::write(p, b).map_err(|e| format!("{}: {e}", p.display()));
        keep(&out_path, &out.stdout)?;
        keep(&err_path, &out.stderr)?;
        Ok(Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Every log its runs wrote so far, in order, with their paths.
    pub fn logs(&self) -> Vec<(PathBuf, String)> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.spec.logs)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect()
            })
            .unwrap_or_default();
        paths.sort();
        paths
            .into_iter()
            .map(|p| {
                let text =
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned();
                (p, text)
            })
            .collect()
    }

    /// All of its logs as one text.
    pub fn log_text(&self) -> String {
        self.logs().into_iter().map(|(_, t)| t).collect()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.signal(libc::SIGCONT);
        self.kill9();
    }
}
