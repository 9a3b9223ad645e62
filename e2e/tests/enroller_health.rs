//! The enroller's container health check: `enroller health` asks the loopback-only
//! plain health port (`health_listen`) and exits 0 only while the service is ready.

use e2e::{free_port, Backend, Bins, Cluster};

#[test]
fn health_answers_zero_only_while_serving() {
    let bins = Bins::locate().expect("binaries (cargo build --workspace --bins)");
    let mut cluster =
        Cluster::start(bins, &[Backend::SoftHsm, Backend::SoftHsm], &|_| {}).expect("cluster");
    let health = free_port("127.0.0.1").expect("free port").to_string();
    cluster
        .start_enroller_with(2, &[("ENROLLER_HEALTH_LISTEN", health.as_str())], &|_| {})
        .expect("enroller");
    let enroller = cluster.enroller.as_mut().expect("enroller");

    let up = enroller.run(&cluster.bins, &["health"]).expect("run");
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(stdout.contains("\"status\":\"ok\""), "{stdout}");

    enroller.stop().expect("stop");
    let down = enroller.run(&cluster.bins, &["health"]).expect("run");
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(
        !down.status.success(),
        "health succeeded with the enroller stopped"
    );
    assert!(stderr.contains("health port"), "{stderr}");
}

#[test]
fn the_health_port_must_be_loopback() {
    let bins = Bins::locate().expect("binaries (cargo build --workspace --bins)");
    let mut cluster =
        Cluster::start(bins, &[Backend::SoftHsm, Backend::SoftHsm], &|_| {}).expect("cluster");
    let err = cluster
        .start_enroller_with(2, &[("ENROLLER_HEALTH_LISTEN", "0.0.0.0:7100")], &|_| {})
        .expect_err("a non-loopback health port was accepted");
    assert!(err.contains("health_listen"), "{err}");
    assert!(err.contains("loopback"), "{err}");
}
