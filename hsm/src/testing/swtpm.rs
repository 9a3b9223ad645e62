//! A private `swtpm` (TPM 2.0 emulator) for tests and benchmarks.
//!
//! ```no_run
//! # #[cfg(feature = "tpm")]
//! # fn main() {
//! use hsm::testing::swtpm::Swtpm;
//! use hsm::Sealer;
//!
//! let tpm = Swtpm::start().unwrap();
//! let sealer = hsm::tpm::TpmSealer::open(&tpm.profile()).unwrap();
//! sealer.provision().unwrap();
//! // ... tpm.restart(), tpm.kill9() + tpm.start_again(): same state directory ...
//! drop(tpm); // kills swtpm and removes its state directory
//! # }
//! # #[cfg(not(feature = "tpm"))]
//! # fn main() {}
//! ```
//!
//! The harness needs no TSS (it speaks to swtpm's control port itself), so it is here
//! without the `tpm` feature too, for PKCS#11 modules that run over a TPM.
//!
//! Each [`Swtpm`] is one `swtpm socket --tpm2` process on two free loopback ports
//! (the TPM port `P` and the control port `P + 1`, which is where the `swtpm` TCTI
//! looks for it), with its own state directory. Tests in one process run on
//! parallel threads, so each test starts its own. Ports are handed out by a
//! process-wide counter, checked free before use, and a start whose `swtpm`
//! exits early (port taken meanwhile) is retried on other ports.
//!
//! The process is killed and the directory removed on drop, also when a test
//! panics (drop runs during unwinding).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::profile::TpmProfile;

/// Persistent handle the harness profile uses for key version 1.
pub const PRIMARY_HANDLE: u32 = 0x8100_0100;

const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const START_TRIES: usize = 8;

/// swtpm control channel command: orderly shutdown, then the process exits.
const CMD_SHUTDOWN: u32 = 3;
/// TPM2_GetRandom(8): the readiness probe (any well-formed response will do).
const GET_RANDOM_8: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8];
/// TPM2_Shutdown(TPM_SU_CLEAR), sent before a graceful stop.
const SHUTDOWN_CLEAR: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x45, 0, 0];

/// A running `swtpm` with a private state directory.
#[derive(Debug)]
pub struct Swtpm {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    startup: bool,
}

impl Swtpm {
    /// Starts a fresh swtpm that needs no `TPM2_Startup` (it sends
    /// `Startup(CLEAR)` itself, as firmware would) and waits until it answers.
    pub fn start() -> io::Result<Swtpm> {
        Swtpm::start_with(true)
    }

    /// Starts a fresh swtpm that, like a TPM after power-on without firmware, answers
    /// `TPM_RC_INITIALIZE` until a client sends `TPM2_Startup`.
    pub fn start_uninitialized() -> io::Result<Swtpm> {
        Swtpm::start_with(false)
    }

    fn start_with(startup: bool) -> io::Result<Swtpm> {
        let dir = private_dir()?;
        let mut tpm = Swtpm {
            dir,
            port: 0,
            child: None,
            startup,
        };
        let mut last = None;
        for _ in 0..START_TRIES {
            tpm.port = free_port_pair()?;
            match tpm.spawn() {
                Ok(()) => return Ok(tpm),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("swtpm did not start")))
    }

    /// The TCTI configuration string for this instance.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The TPM port (the control channel is the next port).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The state directory (NVRAM and log).
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// A profile for this instance: its TCTI, [`PRIMARY_HANDLE`], no parameter
    /// encryption.
    pub fn profile(&self) -> TpmProfile {
        TpmProfile {
            tcti: Some(self.tcti()),
            primary_handle: PRIMARY_HANDLE,
            parameter_encryption: false,
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Graceful restart: `TPM2_Shutdown(CLEAR)`, the control channel's shutdown
    /// command, wait for the process to exit, then start it again on the same
    /// state directory and ports.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// Graceful stop (see [`Swtpm::restart`]); the state directory is kept.
    pub fn stop(&mut self) -> io::Result<()> {
        if !self.is_running() {
            self.child = None;
            return Ok(());
        }
        let _ = self.tpm_command(&SHUTDOWN_CLEAR);
        let _ = self.ctrl_command(CMD_SHUTDOWN);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.is_running() {
            if Instant::now() > deadline {
                // It did not stop in time: do not leave it behind.
                self.kill9()?;
                return Err(io::Error::other("swtpm did not stop gracefully"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = None;
        Ok(())
    }

    /// `kill -9` the process, as a power cut would; the state directory is kept.
    pub fn kill9(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            // Child::kill sends SIGKILL on Unix.
            let _ = child.kill();
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the process again on the same state directory and ports.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        // The ports were ours a moment ago; a socket in TIME_WAIT may delay the bind.
        let mut last = None;
        for _ in 0..START_TRIES {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("swtpm did not start")))
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = File::create(self.dir.join("swtpm.stderr"))?;
        let flags = if self.startup {
            "not-need-init,startup-clear"
        } else {
            "not-need-init"
        };
        let child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", self.dir.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.port))
            .arg("--ctrl")
            .arg(format!(
                "type=tcp,port={},bindaddr=127.0.0.1",
                self.port + 1
            ))
            .arg("--flags")
            .arg(flags)
            .arg("--log")
            .arg(format!(
                "file={},level=1",
                self.dir.join("swtpm.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run swtpm: {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if !self.is_running() {
                self.child = None;
                let err =
                    std::fs::read_to_string(self.dir.join("swtpm.stderr")).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "swtpm exited at start: {}",
                    err.trim()
                )));
            }
            if self.tpm_command(&GET_RANDOM_8).is_ok() {
                // Still ours (not another process that had the port)?
                if self.is_running() {
                    return Ok(());
                }
                continue;
            }
            if Instant::now() > deadline {
                self.kill9()?;
                return Err(io::Error::other("swtpm did not answer in time"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends one raw TPM command and returns the raw response.
    fn tpm_command(&self, cmd: &[u8]) -> io::Result<Vec<u8>> {
        let mut s = connect(self.port)?;
        s.write_all(cmd)?;
        let mut head = [0u8; 10];
        s.read_exact(&mut head)?;
        if head[..2] != [0x80, 0x01] && head[..2] != [0x80, 0x02] {
            return Err(io::Error::other("not a TPM response"));
        }
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let mut rest = vec![0u8; len.saturating_sub(10).min(4096)];
        s.read_exact(&mut rest)?;
        let mut v = head.to_vec();
        v.extend_from_slice(&rest);
        Ok(v)
    }

    /// Sends one control-channel command (no payload) and returns its result code.
    fn ctrl_command(&self, cmd: u32) -> io::Result<u32> {
        let mut s = connect(self.port + 1)?;
        s.write_all(&cmd.to_be_bytes())?;
        let mut r = [0u8; 4];
        s.read_exact(&mut r)?;
        Ok(u32::from_be_bytes(r))
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn connect(port: u16) -> io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// A port `P` such that `P` and `P + 1` are free on loopback now. Ports come from
/// a process-wide counter (so parallel tests never pick the same pair), starting at
/// an offset derived from the process id, and lie below the kernel's ephemeral range:
/// the `swtpm` TCTI opens a connection per command, and the thousands of client
/// sockets it leaves in TIME_WAIT would otherwise make random ports fail to bind.
fn free_port_pair() -> io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u32>().ok())
        })
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(LOW + 2).max(2_000);
    let _ = NEXT.compare_exchange(
        0,
        (std::process::id() % 1_000) * 2 * (span / 2_000).max(1),
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..1_000 {
        let n = NEXT.fetch_add(2, Ordering::SeqCst);
        let Ok(p) = u16::try_from(LOW + (n % span)) else {
            continue;
        };
        let free = |port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
        if free(p) && free(p + 1) {
            return Ok(p);
        }
    }
    Err(io::Error::other("no free loopback port pair"))
}

/// A new directory only this process can read (mode 0700).
fn private_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for _ in 0..100 {
        let dir = std::env::temp_dir().join(format!(
            "hsm-swtpm-{}-{}-{nanos:08x}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("cannot create a private state directory"))
}
