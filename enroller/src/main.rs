//! `enroller`: init (provision the token keys), serve.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use enroller::config::Config;
use enroller::routes::AppState;
use enroller::token::{public_key_pem, Token};
use hsm::Profile;

#[derive(Parser)]
#[command(
    name = "enroller",
    version,
    about = "Authenticates users, issues login certificates, splits and deposits secrets."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Configuration file (TOML) [default: $ENROLLER_CONFIG, else enroller.toml]; scalar keys
    /// can be overridden by ENROLLER_* variables.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Create the token keys that are missing (idempotent) and write their public keys:
    /// DIR/enroller-manifest.pub.pem (clients verify manifests with it) and
    /// DIR/enroller-user-ca.pub.pem (for `shardctl pki issue-user-ca`).
    Init {
        /// Where to write the public keys.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// When the profile's token does not exist yet, initialise it on a free slot
        /// (SoftHSM2 offers one) with the security-officer PIN read from FILE and the
        /// profile's user PIN. An existing token is never touched.
        #[arg(long, value_name = "FILE")]
        create_token_so_pin_file: Option<PathBuf>,
    },
    /// Serve until SIGTERM or Ctrl-C, then drain.
    Serve,
    /// Ask the running enroller's loopback health port (`health_listen`) whether it is
    /// ready; exit status 0 when it is. The container image's HEALTHCHECK.
    Health,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Ok(cfg) = Config::load(cli.config.as_deref()).map_err(|e| eprintln!("enroller: {e}"))
    else {
        return ExitCode::from(2);
    };
    svc::init_logging(&cfg.log.format, &cfg.log.level);
    let result = match cli.command {
        Command::Init {
            out_dir,
            create_token_so_pin_file,
        } => init(&cfg, &out_dir, create_token_so_pin_file.as_deref()),
        Command::Serve => serve(cfg),
        Command::Health => health(&cfg),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("enroller: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn pkcs11_profile(cfg: &Config) -> Result<hsm::profile::Pkcs11Profile, String> {
    match Profile::load(&cfg.profile).map_err(|e| e.to_string())? {
        Profile::Pkcs11(p) => Ok(p),
        Profile::Tpm(_) => Err(format!(
            "{}: the enroller needs a PKCS#11 profile",
            cfg.profile.display()
        )),
    }
}

fn init(
    cfg: &Config,
    out_dir: &std::path::Path,
    create_token_so_pin_file: Option<&std::path::Path>,
) -> Result<(), String> {
    let profile = pkcs11_profile(cfg)?;
    if let Some(so_pin_file) = create_token_so_pin_file {
        if hsm::pkcs11::ensure_token(&profile, so_pin_file).map_err(|e| format!("token: {e}"))? {
            println!(
                "enroller {}: token {:?} initialised",
                cfg.name, profile.token_label
            );
        }
    }
    let info = Token::provision(&profile).map_err(|e| format!("provisioning failed: {e}"))?;
    enroller::users::Db::open(&cfg.database)
        .map_err(|e| format!("{}: {e}", cfg.database.display()))?;
    for (file, key) in [
        ("enroller-manifest.pub.pem", &info.manifest_key),
        ("enroller-user-ca.pub.pem", &info.user_ca_key),
    ] {
        let path = out_dir.join(file);
        let pem = public_key_pem(key);
        match std::fs::read_to_string(&path) {
            Ok(existing) if existing == pem => {}
            Ok(_) => {
                return Err(format!(
                    "{} exists and holds another key; move it away first",
                    path.display()
                ))
            }
            Err(_) => certs::write_new_public(&path, pem.as_bytes()).map_err(|e| e.to_string())?,
        }
    }
    println!(
        "enroller {}: token {} ready; public keys in {} (enroller-manifest.pub.pem, enroller-user-ca.pub.pem)",
        cfg.name,
        info.token,
        out_dir.display()
    );
    Ok(())
}

fn health(cfg: &Config) -> Result<(), String> {
    println!("{}", svc::probe::ask(cfg.health_listen)?);
    Ok(())
}

/// Keeps secrets out of swap and core dumps where the OS allows. The binary's one FFI call.
#[allow(unsafe_code)]
fn harden_memory() {
    // SAFETY: plain system calls with constant arguments; they touch no Rust-owned memory.
    let (locked, undumpable) = unsafe {
        (
            libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) == 0,
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) == 0,
        )
    };
    if locked {
        tracing::info!("memory locked (no swap)");
    } else {
        tracing::warn!(
            "mlockall refused (raise RLIMIT_MEMLOCK or grant CAP_IPC_LOCK); secrets may reach swap"
        );
    }
    if !undumpable {
        tracing::warn!("could not disable core dumps");
    }
}

struct Hooks;

impl svc::Hooks for Hooks {
    async fn refused(&self, _remote: std::net::SocketAddr, _reason: svc::RefusalReason) {}
}

fn serve(cfg: Config) -> Result<(), String> {
    harden_memory();
    let token = Arc::new(Token::open(&pkcs11_profile(&cfg)?).map_err(|e| format!("token: {e}"))?);
    let db = Arc::new(
        enroller::users::Db::open(&cfg.database)
            .map_err(|e| format!("{}: {e}", cfg.database.display()))?,
    );
    let user_ca_pem = std::fs::read_to_string(&cfg.user_ca_cert)
        .map_err(|e| format!("cannot read {}: {e}", cfg.user_ca_cert.display()))?;
    let td = certs::TrustDomain::new(&cfg.trust_domain).map_err(|e| e.to_string())?;
    let read =
        |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let client_tls = Arc::new(
        certs::tls::client_config(
            &read(&cfg.tls.ca)?,
            &read(&cfg.tls.cert)?,
            &zeroize::Zeroizing::new(read(&cfg.tls.key)?),
        )
        .map_err(|e| e.to_string())?,
    );
    let mut known = Vec::new();
    let peers = cfg
        .custodians
        .iter()
        .filter(|c| !c.standby)
        .zip(1u16..)
        .map(|(c, holder)| wire::dkg::DkgPeer {
            holder,
            name: c.name.clone(),
            address: c.address.to_string(),
            server_name: c.server_name.clone(),
        })
        .collect();
    for c in &cfg.custodians {
        let id: certs::SpiffeId = format!("spiffe://{td}/custodian/{}", c.name)
            .parse()
            .map_err(|e: certs::Error| e.to_string())?;
        let client = mtls::Client::new(c.address, &c.server_name, client_tls.clone())
            .map_err(|e| e.to_string())?
            .expect_identity(id)
            .with_deadline(Duration::from_millis(cfg.limits.deposit_timeout_ms));
        known.push(enroller::set::Known {
            name: shard::CustodianId::new(&c.name).map_err(|e| e.to_string())?,
            client: Arc::new(client),
            address: c.address.to_string(),
            server_name: c.server_name.clone(),
        });
    }
    let custodians: Vec<_> = cfg
        .custodians
        .iter()
        .zip(&known)
        .filter(|(c, _)| !c.standby)
        .map(|(_, k)| (k.name.clone(), k.client.clone()))
        .collect();
    // Invariant: Config::validate checked 2 <= t <= n <= 16.
    let threshold =
        shard::Threshold::new(cfg.threshold, custodians.len() as u8).map_err(|e| e.to_string())?;
    let state = Arc::new(AppState {
        trust_domain: td,
        token,
        db,
        user_ca_pem,
        threshold,
        custodians,
        peers,
        known,
        login_validity: Duration::from_secs(cfg.limits.login_validity_seconds),
        invitation_ttl: cfg.limits.invitation_ttl_seconds,
        backoff_max: cfg.limits.backoff_max_seconds,
    });
    let health = cfg
        .health_listen
        .map(|addr| (addr, enroller::routes::health_router(state.clone())));
    let checks = (cfg.checks.interval_seconds > 0).then(|| {
        (
            state.clone(),
            Duration::from_secs(cfg.checks.interval_seconds),
        )
    });
    let redrive = state.clone();
    let refreshes = (cfg.refresh.interval_seconds > 0).then(|| {
        (
            state.clone(),
            Duration::from_secs(cfg.refresh.interval_seconds),
        )
    });
    let router = enroller::routes::router(state, cfg.limits.max_body_bytes);
    let files = svc::TlsFiles {
        ca: cfg.tls.ca.clone(),
        cert: cfg.tls.cert.clone(),
        key: cfg.tls.key.clone(),
        client_auth: svc::ClientAuth::Optional,
    };
    let limits = svc::ConnLimits {
        max_connections: cfg.limits.max_connections,
        handshake_timeout: Duration::from_millis(cfg.limits.handshake_timeout_ms),
        reload: Duration::from_secs(cfg.tls.reload_seconds),
        request_timeout: Duration::from_millis(cfg.limits.request_timeout_ms.max(100)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        if let Some((state, every)) = checks {
            tokio::spawn(enroller::checks::run(state, every));
        }
        tokio::spawn(enroller::refresh::redrive(redrive));
        if let Some((state, every)) = refreshes {
            tokio::spawn(enroller::refresh::scheduled(state, every));
        }
        if let Some((addr, app)) = health {
            svc::serve_plain_health(addr, app)
                .await
                .map_err(|e| e.to_string())?;
        }
        let listener = svc::bind(cfg.listen).await.map_err(|e| e.to_string())?;
        let hooks = Arc::new(Hooks);
        svc::serve(
            router,
            listener,
            files,
            limits,
            hooks,
            svc::shutdown_signal(),
        )
        .await
        .map_err(|e| e.to_string())
    })?;
    tracing::info!("stopped");
    Ok(())
}
