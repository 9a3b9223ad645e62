//! The one configuration loader of the custodian, the enroller, `shardctl` and the device
//! profiles: one TOML file read into the caller's typed sections, with overrides from the
//! environment and the command line.
//!
//! # Precedence
//!
//! A key takes its value from the first of these that sets it:
//!
//! 1. a command-line flag ([`Loader::flag`], [`Loader::path_flag`]);
//! 2. an environment variable `<PREFIX>_<KEY>` ([`Loader::env`]);
//! 3. the file;
//! 4. the built-in default (the section's `#[serde(default)]`).
//!
//! That is: **built-in defaults < file < environment < flags**. The file itself is found by
//! the same rule ([`locate`]): `--config FILE`, else the variable `<PREFIX>_CONFIG`, else the
//! default name.
//!
//! # Environment variables
//!
//! A key is overridden by `<PREFIX>_` and its dotted path in capitals with `_` for `.`
//! ([`env_name`]: `tls.cert` under `CUSTODIAN` is `CUSTODIAN_TLS_CERT`,
//! `limits.release_per_second` is `CUSTODIAN_LIMITS_RELEASE_PER_SECOND`). Only the keys the
//! caller lists are read, each with its TOML type ([`Kind`]); a whole number or a number is
//! read with surrounding blanks ignored, a string as it is. Arrays of tables (an enroller's
//! `[[custodians]]`) come from the file only.
//!
//! # Paths
//!
//! The keys a section names in [`Section::paths`] hold paths. A relative one from the file or
//! the environment is taken from the file's folder; one from a flag is left as given, that is,
//! from the working directory, as on any command line.
//!
//! # The file
//!
//! A regular file (not a directory, device, pipe or socket) of at most [`MAX_BYTES`] of UTF-8
//! TOML. A section refuses keys it does not know where it says `#[serde(deny_unknown_fields)]`.
//! Nothing else is read: no other file, no network.
//!
//! # Errors
//!
//! An [`Error`] names the file and, where there is one, the dotted key (and the variable or
//! flag the value came from, when not the file). It never holds a value: values may be
//! secrets. Type errors say which type was found and which was expected; out-of-range values
//! and unknown names say what the key takes.
//!
//! ```
//! # fn main() -> Result<(), conf::Error> {
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Service {
//!     listen: String,
//!     #[serde(default = "workers")]
//!     workers: i64,
//! }
//! fn workers() -> i64 { 4 }
//! impl conf::Section for Service {}
//!
//! let env = |var: &str| (var == "SVC_WORKERS").then(|| "8".to_owned());
//! let s: Service = conf::Loader::new("svc.toml".as_ref())
//!     .text("listen = \"127.0.0.1:80\"\nworkers = 2\n")
//!     .env("SVC", &[("listen", conf::Kind::Str), ("workers", conf::Kind::Int)])
//!     .env_source(env)
//!     .flag("listen", Some("127.0.0.1:81"))
//!     .load()?;
//! assert_eq!((s.listen.as_str(), s.workers), ("127.0.0.1:81", 8));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod de;
mod error;
mod file;
pub mod service;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::{Table, Value};

pub use error::{Error, ErrorKind, Origin, Problem};
pub use file::MAX_BYTES;

/// A section: the typed configuration a caller reads from a file.
pub trait Section: DeserializeOwned {
    /// The keys that hold paths, each with its value: the relative ones are taken from the
    /// file's folder unless a flag set them.
    fn paths(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
        Vec::new()
    }

    /// Checks each value against its domain, once every source is applied.
    fn check(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// A value outside its key's domain, as found by [`Section::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The dotted key path.
    pub key: String,
    /// What is wrong, in words that quote no value.
    pub problem: String,
}

impl Invalid {
    /// The value of `key` is wrong: `problem`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// The TOML type of a key an environment variable may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string (also addresses and paths), taken as it is.
    Str,
    /// A whole number.
    Int,
    /// A number.
    Float,
}

impl Kind {
    fn parse(self, raw: &str) -> Option<Value> {
        match self {
            Kind::Str => Some(Value::String(raw.to_owned())),
            Kind::Int => raw.trim().parse().ok().map(Value::Integer),
            Kind::Float => raw.trim().parse().ok().map(Value::Float),
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Int => "a whole number",
            Kind::Float => "a number",
        }
    }
}

/// The environment variable that overrides `key` under `prefix`: `<PREFIX>_` and the key path
/// in capitals with `_` for `.`.
pub fn env_name(prefix: &str, key: &str) -> String {
    format!("{prefix}_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// The configuration file to read: `flag` (from `--config`) when given, else the path the
/// environment variable `var` holds when it is set and not empty, else `default`.
pub fn locate(flag: Option<&Path>, var: &str, default: &str) -> PathBuf {
    locate_with(flag, std::env::var_os(var), default)
}

fn locate_with(flag: Option<&Path>, env: Option<OsString>, default: &str) -> PathBuf {
    match (flag, env) {
        (Some(p), _) => p.to_owned(),
        (None, Some(v)) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(default),
    }
}

type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Reads one configuration file into a [`Section`], with overrides applied in the order of
/// the crate's precedence.
pub struct Loader<'a> {
    path: &'a Path,
    text: Option<&'a str>,
    env: Vec<(&'a str, &'a [(&'a str, Kind)])>,
    lookup: Lookup<'a>,
    flags: Vec<(&'a str, Option<Value>)>,
}

impl<'a> Loader<'a> {
    /// A loader of the file at `path`, with no overrides.
    pub fn new(path: &'a Path) -> Self {
        Loader {
            path,
            text: None,
            env: Vec::new(),
            lookup: Box::new(|var| std::env::var(var).ok()),
            flags: Vec::new(),
        }
    }

    /// Parses `text` instead of reading the file; the path still names the source in errors
    /// and its folder is still the base of relative paths.
    pub fn text(mut self, text: &'a str) -> Self {
        self.text = Some(text);
        self
    }

    /// Lets the variables `<prefix>_<KEY>` override `keys`, each read as its [`Kind`]; a
    /// second call adds more keys (e.g. [`service::KEYS`] and a service's own).
    pub fn env(mut self, prefix: &'a str, keys: &'a [(&'a str, Kind)]) -> Self {
        self.env.push((prefix, keys));
        self
    }

    /// Reads the variables from `lookup` instead of the process environment. A variable
    /// that is not set (or, from the process, not UTF-8) overrides nothing.
    pub fn env_source(mut self, lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        self.lookup = Box::new(lookup);
        self
    }

    /// Sets `key` from a command-line flag, when it was given.
    pub fn flag(mut self, key: &'a str, value: Option<impl Into<Value>>) -> Self {
        if let Some(v) = value {
            self.flags.push((key, Some(v.into())));
        }
        self
    }

    /// Sets the path `key` from a command-line flag, when it was given. The path is kept as
    /// given (not taken from the file's folder); one that is not UTF-8 fails the load.
    pub fn path_flag(mut self, key: &'a str, value: Option<&Path>) -> Self {
        if let Some(p) = value {
            let v = p.to_str().map(|s| Value::String(s.to_owned()));
            self.flags.push((key, v));
        }
        self
    }

    /// Reads, parses and overrides, deserializes into `T`, resolves its relative paths and
    /// checks it.
    pub fn load<T: Section>(self) -> Result<T, Error> {
        let fail = |kind| Error {
            path: self.path.to_owned(),
            kind,
        };
        let read;
        let text = match self.text {
            Some(t) => t,
            None => {
                read = file::read(self.path).map_err(fail)?;
                read.as_str()
            }
        };
        let mut table: Table = toml::from_str(text).map_err(|e| fail(syntax(text, &e)))?;

        let mut origins: Vec<(&str, Origin)> = Vec::new();
        for (prefix, keys) in self.env {
            for &(key, kind) in keys {
                let var = env_name(prefix, key);
                let Some(raw) = (self.lookup)(&var) else {
                    continue;
                };
                let origin = Origin::Env(var);
                let Some(value) = kind.parse(&raw) else {
                    let problem = format!("must be {}", kind.expected());
                    return Err(fail(overriding(key, origin, problem)));
                };
                set(&mut table, key, value)
                    .map_err(|p| fail(overriding(key, origin.clone(), p)))?;
                origins.push((key, origin));
            }
        }
        for (key, value) in self.flags {
            let Some(value) = value else {
                return Err(fail(overriding(key, Origin::Flag, "is not UTF-8".into())));
            };
            set(&mut table, key, value).map_err(|p| fail(overriding(key, Origin::Flag, p)))?;
            origins.push((key, Origin::Flag));
        }
        let origin_of = |key: &str| {
            origins
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, o)| o.clone())
        };

        let at = de::At {
            value: Value::Table(table),
            key: String::new(),
        };
        let mut section = T::deserialize(at).map_err(|e| {
            let key = e.key.unwrap_or_default();
            let origin = origin_of(&key);
            fail(ErrorKind::Key {
                key,
                problem: e.problem,
                origin,
            })
        })?;
        let base = self.path.parent().unwrap_or(Path::new("."));
        for (key, p) in section.paths() {
            if p.is_relative() && origin_of(key) != Some(Origin::Flag) {
                *p = base.join(&*p);
            }
        }
        section.check().map_err(|Invalid { key, problem }| {
            let origin = origin_of(&key);
            fail(ErrorKind::Invalid {
                key,
                problem,
                origin,
            })
        })?;
        Ok(section)
    }
}

fn overriding(key: &str, origin: Origin, problem: String) -> ErrorKind {
    ErrorKind::Override {
        key: key.to_owned(),
        origin,
        problem,
    }
}

/// Puts `value` at the dotted `key`, making the tables on the way.
fn set(table: &mut Table, key: &str, value: Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut t = table;
    let mut walked = String::new();
    for p in parts {
        walked = de::join(&walked, p);
        t = t
            .entry(p.to_owned())
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("cannot be applied: `{walked}` is not a table"))?;
    }
    t.insert(last.to_owned(), value);
    Ok(())
}

/// A parse failure with the line it happened at; the message is one line.
fn syntax(text: &str, e: &toml::de::Error) -> ErrorKind {
    let line = e.span().map(|s| {
        let upto = s.start.min(text.len());
        text.as_bytes()[..upto]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    });
    ErrorKind::Syntax {
        line,
        message: e.message().split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// A value a test treats as secret: no error may show it.
    const SECRET: &str = "s3cr3t-value";

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Svc {
        #[serde(default = "default_a")]
        a: i64,
        #[serde(default)]
        b: i64,
        #[serde(default)]
        c: f64,
        #[serde(default)]
        d: String,
        #[serde(default)]
        db: PathBuf,
        #[serde(default)]
        tls: Tls,
        #[serde(default)]
        small: u8,
        #[serde(default)]
        items: Vec<Item>,
    }

    fn default_a() -> i64 {
        1
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tls {
        #[serde(default)]
        cert: PathBuf,
        #[serde(default)]
        key: PathBuf,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        name: String,
    }

    impl Section for Svc {
        fn paths(&mut self) -> Vec<(&'static str, &mut PathBuf)> {
            vec![
                ("db", &mut self.db),
                ("tls.cert", &mut self.tls.cert),
                ("tls.key", &mut self.tls.key),
            ]
        }

        fn check(&self) -> Result<(), Invalid> {
            if self.d == "bad" || self.d == SECRET {
                return Err(Invalid::new("d", "must not be that"));
            }
            Ok(())
        }
    }

    /// The keys the tests' environment may set: two numbers, and strings.
    const NUMBERS: &[(&str, Kind)] = &[("b", Kind::Int), ("c", Kind::Float)];
    const STRINGS: [&str; 4] = ["d", "db", "tls.cert", "tls.key"];

    fn load(
        text: &str,
        env: &[(&str, &str)],
        flags: &[(&'static str, &str)],
    ) -> Result<Svc, Error> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let strings = STRINGS.map(|k| (k, Kind::Str));
        let mut l = Loader::new(Path::new("/etc/svc/svc.toml"))
            .text(text)
            .env("SVC", NUMBERS)
            .env("SVC", &strings)
            .env_source(move |var| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone()));
        for &(k, v) in flags {
            l = if k.starts_with("tls.") || k == "db" {
                l.path_flag(k, Some(Path::new(v)))
            } else {
                l.flag(k, Some(v))
            };
        }
        l.load()
    }

    #[test]
    fn defaults_then_file_then_environment_then_flags() {
        let text = "b = 2\nc = 2.0\nd = \"file\"\n";
        let s = load(
            text,
            &[("SVC_C", " 3.5 "), ("SVC_D", "env")],
            &[("d", "flag")],
        )
        .unwrap();
        assert_eq!(s.a, 1, "built-in default");
        assert_eq!(s.b, 2, "file over default");
        assert_eq!(s.c, 3.5, "environment over file");
        assert_eq!(s.d, "flag", "flag over environment");

        let s = load(text, &[("SVC_D", "env")], &[]).unwrap();
        assert_eq!(s.d, "env");
        let s = load("", &[("SVC_B", "7")], &[]).unwrap();
        assert_eq!((s.a, s.b), (1, 7), "environment over default");
        // An integer in the file serves a float key, as in TOML's own deserializer.
        assert_eq!(load("c = 10\n", &[], &[]).unwrap().c, 10.0);
        let s = load(
            "[[items]]\nname = \"x\"\n[[items]]\nname = \"y\"\n",
            &[],
            &[],
        )
        .unwrap();
        let names: Vec<&str> = s.items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["x", "y"]);
        assert_eq!(load("small = 255\n", &[], &[]).unwrap().small, 255);
    }

    #[test]
    fn relative_paths_from_the_file_and_environment_flags_as_given() {
        let s = load(
            "db = \"state/x.db\"\n[tls]\ncert = \"/abs/c.pem\"\n",
            &[("SVC_TLS_KEY", "k.pem")],
            &[],
        )
        .unwrap();
        assert_eq!(s.db, Path::new("/etc/svc/state/x.db"));
        assert_eq!(s.tls.cert, Path::new("/abs/c.pem"));
        assert_eq!(s.tls.key, Path::new("/etc/svc/k.pem"));
        let s = load("db = \"state/x.db\"\n", &[], &[("db", "here.db")]).unwrap();
        assert_eq!(s.db, Path::new("here.db"));
        // A file named without a folder keeps its relative paths relative.
        let s: Svc = Loader::new(Path::new("svc.toml"))
            .text("db = \"x.db\"\n")
            .load()
            .unwrap();
        assert_eq!(s.db, Path::new("x.db"));
    }

    #[test]
    fn key_errors_name_file_and_key_never_the_value() {
        let cases = [
            (format!("bogus = \"{SECRET}\"\n"), "unknown field `bogus`"),
            (
                format!("[tls]\nbogus = \"{SECRET}\"\n"),
                "unknown field `tls.bogus`",
            ),
            (format!("b = \"{SECRET}\"\n"), "`b`: invalid type: string"),
            (
                "small = 300\n".into(),
                "`small`: invalid value, expected u8",
            ),
            (
                format!("[[items]]\nname = \"x\"\n[[items]]\nname = 5\nz = \"{SECRET}\"\n"),
                "items[1]",
            ),
            ("[[items]]\n".into(), "missing field `items[0].name`"),
        ];
        for (text, want) in cases {
            let e = load(&text, &[], &[]).unwrap_err();
            let shown = e.to_string();
            assert!(shown.starts_with("config /etc/svc/svc.toml: "), "{shown}");
            assert!(shown.contains(want), "{shown} lacks {want}");
            assert!(!shown.contains(SECRET) && !shown.contains("300"), "{shown}");
            assert!(!shown.contains('\n'), "{shown}");
            assert!(e.key().is_some(), "{shown}");
        }
    }

    #[test]
    fn override_errors_name_the_variable_or_flag() {
        let e = load("", &[("SVC_B", SECRET)], &[]).unwrap_err();
        assert_eq!(e.key(), Some("b"));
        assert_eq!(
            e.to_string(),
            "config /etc/svc/svc.toml: `b`: SVC_B must be a whole number"
        );
        let e = load("tls = 3\n", &[("SVC_TLS_CERT", SECRET)], &[]).unwrap_err();
        assert!(e.to_string().contains("`tls` is not a table"), "{e}");
        assert!(!e.to_string().contains(SECRET), "{e}");
        // The deserializer's and the check's refusals say where the value came from.
        let e = load("", &[("SVC_D", SECRET)], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config /etc/svc/svc.toml: `d`: must not be that (set by SVC_D)"
        );
        let e = load("", &[], &[("d", "bad")]).unwrap_err();
        assert!(e.to_string().ends_with("(set on the command line)"), "{e}");
        let e = load("d = \"bad\"\n", &[], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config /etc/svc/svc.toml: `d`: must not be that"
        );
        let e: Error = Loader::new(Path::new("p.toml"))
            .text("")
            .flag("b", Some(SECRET))
            .load::<Svc>()
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("`b`: invalid type: string, expected i64 (set on the command line)"),
            "{e}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let odd = Path::new(std::ffi::OsStr::from_bytes(b"\xff.db"));
            let e = Loader::new(Path::new("p.toml"))
                .text("")
                .path_flag("db", Some(odd))
                .load::<Svc>()
                .unwrap_err();
            assert_eq!(
                e.to_string(),
                "config p.toml: `db`: the command-line value is not UTF-8"
            );
        }
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = load("b = 1\nc = = 2\n", &[], &[]).unwrap_err();
        match &e.kind {
            ErrorKind::Syntax { line, .. } => assert_eq!(*line, Some(2), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        Fast,
        Careful,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Source {
        #[serde(rename = "from_file")]
        File(PathBuf),
        #[serde(rename = "from_env")]
        Env(String),
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Device {
        mode: Mode,
        #[serde(flatten)]
        source: Source,
        #[serde(default)]
        label: Option<String>,
        #[serde(default)]
        on: bool,
    }

    impl Section for Device {}

    fn device(text: &str) -> Result<Device, Error> {
        Loader::new(Path::new("d.toml")).text(text).load()
    }

    #[test]
    fn enums_flattened_sections_options_and_booleans() {
        let d = device("mode = \"careful\"\nfrom_env = \"PIN\"\non = true\n").unwrap();
        assert_eq!(d.mode, Mode::Careful);
        assert_eq!(d.source, Source::Env("PIN".into()));
        assert_eq!((d.label, d.on), (None, true));
        let d = device("mode = \"fast\"\nfrom_file = \"/p\"\nlabel = \"l\"\n").unwrap();
        assert_eq!(d.source, Source::File("/p".into()));
        assert_eq!(d.label.as_deref(), Some("l"));
        let e = device(&format!("mode = \"{SECRET}\"\nfrom_env = \"P\"\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("`mode`: unknown name, expected one of `fast`, `careful`"),
            "{e}"
        );
        assert!(!e.to_string().contains(SECRET), "{e}");
        let e = device("mode = \"fast\"\nfrom_env = \"P\"\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = device("mode = \"fast\"\n").unwrap_err();
        assert!(e.to_string().contains("Source"), "{e}");
    }

    /// A fresh directory under the system's temporary one.
    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("conf-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_file_is_read_bounded_and_must_be_regular_utf8() {
        let dir = scratch("files");
        let read = |p: &Path| Loader::new(p).load::<Svc>().map(|_| ()).map_err(|e| e.kind);

        let ok = dir.join("ok.toml");
        std::fs::write(&ok, "b = 5\n").unwrap();
        assert!(read(&ok).is_ok());
        let big = dir.join("big.toml");
        let mut text = "#".repeat(MAX_BYTES as usize - 1);
        text.push('\n');
        std::fs::write(&big, &text).unwrap();
        assert!(read(&big).is_ok(), "exactly the limit is accepted");
        text.push('\n');
        std::fs::write(&big, &text).unwrap();
        assert!(matches!(
            read(&big),
            Err(ErrorKind::TooLarge { limit: MAX_BYTES })
        ));
        assert!(matches!(read(&dir), Err(ErrorKind::NotRegular)));
        #[cfg(unix)]
        {
            let sock = dir.join("sock");
            let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
            assert!(matches!(read(&sock), Err(ErrorKind::NotRegular)));
        }
        let missing = dir.join("missing.toml");
        match read(&missing) {
            Err(ErrorKind::Read(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
        let latin = dir.join("latin.toml");
        std::fs::write(&latin, b"d = \"\xe9\"\n").unwrap();
        assert!(matches!(read(&latin), Err(ErrorKind::NotUtf8)));
        let e = Loader::new(&missing).load::<Svc>().unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("config {}: cannot be read: ", missing.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_file_is_found_flag_then_environment_then_default() {
        let flag = Path::new("/flag.toml");
        let env = || Some(OsString::from("/env.toml"));
        assert_eq!(locate_with(Some(flag), env(), "d.toml"), flag);
        assert_eq!(locate_with(None, env(), "d.toml"), Path::new("/env.toml"));
        assert_eq!(locate_with(None, None, "d.toml"), Path::new("d.toml"));
        assert_eq!(
            locate_with(None, Some(OsString::new()), "d.toml"),
            Path::new("d.toml")
        );
        assert_eq!(env_name("CUSTODIAN", "tls.cert"), "CUSTODIAN_TLS_CERT");
        assert_eq!(
            env_name("ENROLLER", "limits.login_validity_seconds"),
            "ENROLLER_LIMITS_LOGIN_VALIDITY_SECONDS"
        );
    }
}
