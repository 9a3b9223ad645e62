//! The custodian on a TPM 2.0 (a private swtpm, through the shipped TPM profile).

use hsm::blob::HEADER_LEN;
use hyper::Method;
use testkit::custodian::*;
use testkit::envelope::*;
use testkit::http::*;
use testkit::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposit_then_release_round_trip_tpm() {
    let mut c = Custodian::start(Backend::Tpm);
    let enroller = c.client(&c.pki.enroller);
    let owner = c.pki.alice.id.to_string();

    let h = c.client(&c.pki.alice).health().await.unwrap();
    assert_eq!((h.status.as_str(), h.device.as_str()), ("ok", "ok"));
    let info = h.device_info.unwrap_or_default();
    assert!(
        info.starts_with("tpm ") && info.contains("tpm-seal"),
        "{info}"
    );

    // A shard the TPM seals directly (envelope <= 112 bytes) and one sealed as a
    // software-encrypted envelope under a TPM-sealed data key.
    let small = c.envelope(32, 1);
    let large = c.envelope(2000, 1);
    assert!(small.encode().len() <= hsm::tpm::DIRECT_MAX);
    assert!(large.encode().len() > hsm::tpm::DIRECT_MAX);
    let tampered = c.envelope(32, 1);
    for e in [&small, &large, &tampered] {
        let r = enroller.deposit(&owner, &e.encode()).await.unwrap();
        assert_eq!((r.key_version, r.already_stored), (1, false));
    }
    let alice = c.client(&c.pki.alice);
    for e in [&small, &large] {
        let got = alice.release(&e.secret_id, None).await.unwrap();
        assert_eq!(&got.envelope[..], &e.encode()[..]);
    }
    // Not the owner, not the role.
    assert_refused(
        c.client(&c.pki.bob).release(&small.secret_id, None).await,
        404,
        "not_found",
    );
    assert_refused(
        c.client(&c.pki.admin).release(&small.secret_id, None).await,
        403,
        "role_not_allowed",
    );

    // An edited blob fails cleanly (the TPM refuses it) and the others still release.
    let db = c.db();
    let mut blob: Vec<u8> = db
        .query_row(
            "SELECT blob FROM shards WHERE secret_id = ?1",
            [&tampered.secret_id.as_bytes()[..]],
            |r| r.get(0),
        )
        .unwrap();
    let at = blob.len() - 10;
    blob[at] ^= 0x04;
    db.execute(
        "UPDATE shards SET blob = ?2 WHERE secret_id = ?1",
        rusqlite::params![&tampered.secret_id.as_bytes()[..], blob],
    )
    .unwrap();
    assert!(blob.len() > HEADER_LEN);
    let (status, bytes) = alice
        .request(
            Method::GET,
            &format!("/v1/shards/{}", tampered.secret_id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 500);
    let e = error_body(&bytes);
    assert_eq!(e.error.as_str(), "internal");
    assert!(e.reason.as_str().starts_with("sealed_blob_"), "{e:?}");
    c.wait_audit("tampered TPM blob", |a| {
        a.event == "release" && a.secret_id == sid(&tampered) && a.outcome == "failed"
    });
    let got = alice.release(&large.secret_id, None).await.unwrap();
    assert_eq!(&got.envelope[..], &large.encode()[..]);

    // A restarted custodian (new process, same TPM) still unseals.
    drop(db);
    tokio::task::block_in_place(|| {
        assert!(c.stop().unwrap().success());
        c.start().unwrap();
    });
    let alice = c.client(&c.pki.alice);
    for e in [&small, &large] {
        let got = alice.release(&e.secret_id, None).await.unwrap();
        assert_eq!(&got.envelope[..], &e.encode()[..]);
    }
    let v = tokio::task::block_in_place(|| c.audit_verify());
    assert!(v.status.success(), "{v:?}");
}
