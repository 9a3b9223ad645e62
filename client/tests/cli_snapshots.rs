//! What `shardctl` prints, kept as data: the `--help` of every verb, usage errors with their
//! exit status, and the `--json` error shape of failures that need no running service.
//!
//! Each case is a `.toml` file in `tests/cmd/` with its expected `.stdout` and `.stderr` beside
//! it. Every case runs with an empty environment apart from the variables it names, so that
//! neither the machine's variables nor its files show in the output. After an intended change,
//! `TRYCMD=overwrite cargo test -p shardctl --test cli_snapshots` rewrites the snapshots; read
//! each changed one before committing it.

#[test]
fn cli_snapshots() {
    trycmd::TestCases::new()
        .register_bin("shardctl", trycmd::cargo::cargo_bin!("shardctl"))
        .case("tests/cmd/*.toml");
}
