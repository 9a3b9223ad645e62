//! The shape of the house, checked: no crate's modules import each other in a ring, the CLI
//! and the enroller build no more than they need, and neither reaches into the custodian.
//! These read the source tree and ask cargo; they start no service.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (this package's folder).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every workspace member with a `src/` folder.
fn crates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(root())
        .expect("workspace root")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file() && p.join("src").is_dir())
        .collect();
    out.sort();
    out
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("source folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file (`routes/mod.rs` is `routes`, `lib.rs` is the root "").
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The paths a file's code (not its comments, not its `#[cfg(test)]` part) names after
/// `crate::` or `super::`, with one level of `{a, b}` expanded, as module paths.
fn imports(text: &str, me: &str) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let parent = me.rsplit_once("::").map(|(p, _)| p).unwrap_or("");
    let mut out = BTreeSet::new();
    for (prefix, base) in [("crate::", ""), ("super::", parent)] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(prefix) {
            rest = &rest[at + prefix.len()..];
            let names: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end].split(',').map(path_head).collect()
            } else {
                vec![path_head(rest)]
            };
            for name in names.into_iter().filter(|n| !n.is_empty()) {
                out.insert(if base.is_empty() {
                    name
                } else {
                    format!("{base}::{name}")
                });
            }
        }
    }
    out
}

/// The leading `a::b::c` of `text` (identifiers and `::` only).
fn path_head(text: &str) -> String {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    text[..end].trim_end_matches(':').to_owned()
}

/// The module graph of one crate: module -> the other modules it imports (its own
/// ancestors and descendants left out, since a module naturally uses both).
fn graph(krate: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let src = krate.join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .into_iter()
        .map(|f| (module_of(&src, &f), f))
        .collect();
    let resolve = |path: &str| -> Option<String> {
        let segs: Vec<&str> = path.split("::").collect();
        (1..=segs.len())
            .rev()
            .map(|k| segs[..k].join("::"))
            .find(|m| modules.contains_key(m))
    };
    modules
        .iter()
        .map(|(me, file)| {
            let text = fs::read_to_string(file).expect("source file");
            let deps = imports(&text, me)
                .iter()
                .filter_map(|p| resolve(p))
                .filter(|m| {
                    !m.is_empty()
                        && m != me
                        && !m.starts_with(&format!("{me}::"))
                        && !me.starts_with(&format!("{m}::"))
                })
                .collect();
            (me.clone(), deps)
        })
        .collect()
}

/// One ring of the graph, if there is any.
fn ring(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some(path[at..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(r) = visit(next, graph, path, done) {
                return Some(r);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_a_module_ring() {
    let mut rings = Vec::new();
    for krate in crates() {
        if let Some(r) = ring(&graph(&krate)) {
            rings.push(format!("{}: {}", krate.display(), r.join(" -> ")));
        }
    }
    assert!(
        rings.is_empty(),
        "modules importing each other in a ring:\n{}",
        rings.join("\n")
    );
}

#[test]
fn the_ring_check_finds_a_ring() {
    // Two modules that import each other, and a third that only imports one of them.
    let mut g = BTreeMap::new();
    g.insert("error".to_owned(), BTreeSet::from(["recover".to_owned()]));
    g.insert("recover".to_owned(), BTreeSet::from(["net".to_owned()]));
    g.insert("net".to_owned(), BTreeSet::from(["error".to_owned()]));
    g.insert("cli".to_owned(), BTreeSet::from(["net".to_owned()]));
    let found = ring(&g).expect("a ring");
    assert_eq!(found.len(), 3, "{found:?}");
    g.insert("net".to_owned(), BTreeSet::new());
    assert_eq!(ring(&g), None);
    let parsed = imports(
        "use crate::{error::Error, net};\nuse super::outcome::Outcome;\n// use crate::gone;\n",
        "client::recover",
    );
    assert_eq!(
        parsed,
        BTreeSet::from([
            "error::Error".to_owned(),
            "net".to_owned(),
            "client::outcome::Outcome".to_owned()
        ])
    );
}

/// `cargo tree ARGS` for this workspace, offline; its stdout, and whether it succeeded.
fn cargo_tree(args: &[&str]) -> (bool, String) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .arg("tree")
        .args(args)
        .args(["--offline", "--prefix", "none"])
        .current_dir(root())
        .output()
        .expect("cargo runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && !text.trim().is_empty(), text)
}

#[test]
fn shardctl_builds_no_server_database_or_device_crate() {
    let (ok, tree) = cargo_tree(&["-p", "shardctl", "-e", "normal"]);
    assert!(ok, "cargo tree -p shardctl failed");
    for heavy in [
        "axum",
        "rusqlite",
        "cryptoki",
        "tss-esapi",
        "custodian",
        "enroller",
    ] {
        assert!(
            !tree.lines().any(|l| l.starts_with(&format!("{heavy} "))),
            "shardctl depends on {heavy}"
        );
    }
}

#[test]
fn the_enroller_builds_no_tpm_stack() {
    let (found, _) = cargo_tree(&["-p", "enroller", "-e", "normal", "-i", "tss-esapi"]);
    assert!(!found, "the enroller depends on tss-esapi");
    let (found, _) = cargo_tree(&["-p", "custodian", "-e", "normal", "-i", "tss-esapi"]);
    assert!(found, "the custodian should build the TPM backend");
}

#[test]
fn neither_client_nor_enroller_reaches_into_the_custodian() {
    let mut found = Vec::new();
    for dir in ["client", "enroller"] {
        let mut files = Vec::new();
        sources(&root().join(dir), &mut files);
        for file in files {
            let text = fs::read_to_string(&file).expect("source file");
            if text.contains("custodian::") {
                found.push(file.display().to_string());
            }
        }
    }
    assert!(found.is_empty(), "`custodian::` in {found:?}");
}
