//! `custodian`: init (provision the device key), serve, audit verify, rotate, reseal.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use custodian::config::Config;
use custodian::journal::Journal;
use custodian::metrics::Metrics;
use custodian::ratelimit::RateLimiter;
use custodian::routes::AppState;
use custodian::server::{serve, TlsFiles};
use custodian::store::{AuditEvent, AuditVerdict, Store};
use hsm::{Profile, SealContext};

#[derive(Parser)]
#[command(
    name = "custodian",
    version,
    about = "Holds sealed shards; releases each only to its owner over mutual TLS."
)]
struct Cli {
    /// Configuration file (TOML) [default: $CUSTODIAN_CONFIG, else custodian.toml]; every key
    /// can be overridden by CUSTODIAN_* variables.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Provision the sealing key on the device named by the profile (idempotent) and create the database.
    Init {
        /// Device profile; defaults to the configured one.
        #[arg(long)]
        profile: Option<PathBuf>,
        /// PKCS#11 only: when the profile's token does not exist yet, initialise it on a free
        /// slot (SoftHSM2 offers one) with the security-officer PIN read from FILE and the
        /// profile's user PIN. An existing token is never touched.
        #[arg(long, value_name = "FILE")]
        create_token_so_pin_file: Option<PathBuf>,
    },
    /// Serve the API over mutual TLS until SIGTERM or Ctrl-C, then drain.
    Serve,
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Create the next sealing key version; new deposits use it, old blobs still unseal.
    Rotate,
    /// Re-seal every stored shard under the current key version.
    Reseal,
    /// Ask the running custodian's loopback health port (`health_listen`) whether it is
    /// ready; exit status 0 when it is. The container image's HEALTHCHECK.
    Health,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain and report the first broken row.
    Verify,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let profile = match &cli.command {
        Command::Init { profile, .. } => profile.as_deref(),
        _ => None,
    };
    let loaded = Config::load(cli.config.as_deref(), profile);
    let Ok(cfg) = loaded.map_err(|e| eprintln!("custodian: {e}")) else {
        return ExitCode::from(2);
    };
    // The TPM stack prints its own ERROR lines for every refused command (a tampered
    // blob, say) to stderr, our log stream; keep them out unless asked for.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+NONE");
    }
    svc::init_logging(&cfg.log.format, &cfg.log.level);
    let result = match cli.command {
        Command::Init {
            create_token_so_pin_file,
            ..
        } => init(&cfg, create_token_so_pin_file),
        Command::Serve => run_serve(cfg),
        Command::Audit {
            command: AuditCommand::Verify,
        } => audit_verify(&cfg),
        Command::Rotate => rotate(&cfg),
        Command::Reseal => reseal(&cfg),
        Command::Health => health(&cfg),
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("custodian: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn open_sealer(cfg: &Config) -> Result<Arc<dyn hsm::Sealer>, String> {
    let profile = Profile::load(&cfg.profile).map_err(|e| e.to_string())?;
    hsm::open(&profile)
        .map(Arc::from)
        .map_err(|e| format!("device: {e}"))
}

fn open_store(cfg: &Config) -> Result<Arc<Store>, String> {
    Store::open(&cfg.database)
        .map(Arc::new)
        .map_err(|e| format!("{}: {e}", cfg.database.display()))
}

fn init(cfg: &Config, create_token_so_pin_file: Option<PathBuf>) -> Result<ExitCode, String> {
    if let Some(so_pin_file) = create_token_so_pin_file {
        let path = &cfg.profile;
        match Profile::load(path).map_err(|e| e.to_string())? {
            Profile::Pkcs11(p) => {
                if hsm::pkcs11::ensure_token(&p, &so_pin_file).map_err(|e| format!("token: {e}"))? {
                    println!(
                        "custodian {}: token {:?} initialised",
                        cfg.name, p.token_label
                    );
                }
            }
            Profile::Tpm(_) => {
                return Err(format!(
                    "{}: --create-token-so-pin-file applies to PKCS#11 profiles only",
                    path.display()
                ))
            }
        }
    }
    let sealer = open_sealer(cfg)?;
    let info = sealer
        .provision()
        .map_err(|e| format!("provisioning failed: {e}"))?;
    let store = open_store(cfg)?;
    check_device(&store, &info)?;
    println!(
        "custodian {}: device ready ({} {}, key {} version {}, {}, device id {}); database {}",
        cfg.name,
        info.backend,
        info.device,
        info.key_label,
        info.key_version,
        info.mechanism,
        info.device_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        cfg.database.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_serve(cfg: Config) -> Result<ExitCode, String> {
    let sealer = open_sealer(&cfg)?;
    let info = sealer
        .describe()
        .map_err(|e| format!("device not ready (run `custodian init`): {e}"))?;
    let store = open_store(&cfg)?;
    check_device(&store, &info)?;
    let td = certs::TrustDomain::new(&cfg.trust_domain).map_err(|e| e.to_string())?;
    let name = shard::CustodianId::new(&cfg.name).map_err(|e| e.to_string())?;
    let me = certs::SpiffeId::new(
        td.clone(),
        certs::Role::Custodian,
        certs::Name::new(&cfg.name).map_err(|e| e.to_string())?,
    );
    tracing::info!(backend = info.backend, device = %info.device, key = %info.key_label, key_version = info.key_version, mechanism = %info.mechanism, "device ready");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let state = Arc::new(AppState {
            name,
            me,
            trust_domain: td,
            sealer,
            journal: Journal::start(store.clone()),
            store,
            limiter: RateLimiter::new(cfg.limits.release_per_second, cfg.limits.release_burst),
            metrics: Arc::new(Metrics::default()),
            sessions: Default::default(),
            dkgs: Default::default(),
            reshares: Default::default(),
            tls: TlsFiles {
                ca: cfg.tls.ca.clone(),
                cert: cfg.tls.cert.clone(),
                key: cfg.tls.key.clone(),
                client_auth: svc::ClientAuth::Required,
            },
        });
        #[cfg(feature = "fault-injection")]
        tracing::warn!(
            "built with fault injection (tests only): CUSTODIAN_FAULT can make this custodian lie"
        );
        // Expired signing sessions lose their nonces on time even when no request comes.
        let sweeper = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(2));
            loop {
                every.tick().await;
                sweeper.sessions.sweep();
                sweeper.dkgs.sweep();
                sweeper.reshares.sweep();
            }
        });
        let files = state.tls.clone();
        serve(
            state,
            cfg.listen,
            cfg.health_listen,
            files,
            Duration::from_secs(cfg.tls.reload_seconds),
            &cfg.limits,
            svc::shutdown_signal(),
        )
        .await
        .map_err(|e| e.to_string())
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Binds the database to the device whose keys seal its shards, and refuses a
/// different device while shards are stored: a replaced token or a TPM whose state was
/// lost would otherwise come up healthy with every stored shard unreadable.
fn check_device(store: &Store, info: &hsm::DeviceInfo) -> Result<(), String> {
    let hex = |id: &[u8; 16]| id.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let db = |e: custodian::store::StoreError| format!("database: {e}");
    match store.bound_device().map_err(db)? {
        Some(bound) if bound == info.device_id => Ok(()),
        Some(bound) => {
            let shards = store.count().map_err(db)?;
            if shards > 0 {
                return Err(format!(
                    "the database holds {shards} shards sealed by device {}, but the configured \
                     device is {} (replaced, or its state was lost): restore that device, or move \
                     the database away to start empty",
                    hex(&bound),
                    hex(&info.device_id)
                ));
            }
            tracing::warn!(old = %hex(&bound), new = %hex(&info.device_id), "no shards stored: database bound to the new device");
            store.bind_device(&info.device_id).map_err(db)
        }
        // A database from before devices were recorded: bind it only when every stored
        // blob names this device.
        None => {
            let ids = store.stored_device_ids().map_err(db)?;
            if let Some(other) = ids.iter().find(|id| **id != info.device_id) {
                return Err(format!(
                    "the database holds shards sealed by device {}, but the configured device \
                     is {} (replaced, or its state was lost): restore that device, or move the \
                     database away to start empty",
                    hex(other),
                    hex(&info.device_id)
                ));
            }
            store.bind_device(&info.device_id).map_err(db)
        }
    }
}

fn health(cfg: &Config) -> Result<ExitCode, String> {
    println!("{}", svc::probe::ask(cfg.health_listen)?);
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(cfg: &Config) -> Result<ExitCode, String> {
    let store = open_store(cfg)?;
    match store.verify_audit().map_err(|e| e.to_string())? {
        AuditVerdict::Intact { rows } => {
            println!("audit log intact: {rows} rows");
            Ok(ExitCode::SUCCESS)
        }
        AuditVerdict::Broken { seq, problem } => {
            println!("audit log BROKEN at row {seq}: {problem}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn rotate(cfg: &Config) -> Result<ExitCode, String> {
    let sealer = open_sealer(cfg)?;
    let v = sealer
        .rotate()
        .map_err(|e| format!("rotation failed: {e}"))?;
    println!("sealing key version {v} is now used for new deposits; run `custodian reseal` to move stored shards");
    Ok(ExitCode::SUCCESS)
}

fn reseal(cfg: &Config) -> Result<ExitCode, String> {
    let sealer = open_sealer(cfg)?;
    let store = open_store(cfg)?;
    let (mut moved, mut current, mut failed) = (0u64, 0u64, 0u64);
    let mut after = None;
    loop {
        let page = store.list(after.as_ref(), 500).map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        after = Some(
            last.secret_id
                .parse::<shard::SecretId>()
                .map_err(|e| e.to_string())?,
        );
        for meta in &page {
            let id: shard::SecretId = meta
                .secret_id
                .parse()
                .map_err(|e: shard::Error| e.to_string())?;
            let Some(row) = store
                .fetch(&id, Some(meta.epoch))
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            let ctx = SealContext {
                custodian_id: cfg.name.clone(),
                secret_id: id,
                index: row.index,
                epoch: row.epoch,
            };
            match sealer.reseal(&ctx, &row.blob) {
                Ok(None) => current += 1,
                Ok(Some(blob)) => {
                    let version = hsm::BlobHeader::decode(&blob)
                        .map(|(h, _)| h.key_version)
                        .unwrap_or(0);
                    let audit = AuditEvent {
                        event: "reseal",
                        peer: "local:custodian-reseal".into(),
                        secret_id: meta.secret_id.clone(),
                        index: i64::from(row.index),
                        outcome: "ok",
                        reason: String::new(),
                        detail: String::new(),
                    };
                    store
                        .replace_blob(&id, row.epoch, &blob, version, audit)
                        .map_err(|e| e.to_string())?;
                    moved += 1;
                }
                Err(e) => {
                    tracing::error!(secret_id = %meta.secret_id, error = %e, "reseal failed");
                    failed += 1;
                }
            }
        }
    }
    println!("resealed {moved}, already current {current}, failed {failed}");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
