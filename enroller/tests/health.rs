//! The enroller's container health check: `enroller health` asks the loopback-only
//! plain health port (`health_listen`) and exits 0 only while the service is ready.

use testkit::enroller::Enroller;

#[test]
fn health_answers_zero_only_while_serving() {
    let mut enroller = Enroller::start(&[]).unwrap_or_else(|e| panic!("{e}"));

    let up = enroller.run(&["health"]).expect("run");
    assert!(up.status.success(), "{}{}", up.stdout, up.stderr);
    assert!(up.stdout.contains("\"status\":\"ok\""), "{}", up.stdout);

    enroller.stop().expect("stop");
    let down = enroller.run(&["health"]).expect("run");
    assert!(
        !down.status.success(),
        "health succeeded with the enroller stopped"
    );
    assert!(down.stderr.contains("health port"), "{}", down.stderr);
}

#[test]
fn the_health_port_must_be_loopback() {
    let err = Enroller::start(&[("ENROLLER_HEALTH_LISTEN", "0.0.0.0:7100")])
        .err()
        .expect("a non-loopback health port was accepted");
    assert!(err.contains("health_listen"), "{err}");
    assert!(err.contains("loopback"), "{err}");
}
