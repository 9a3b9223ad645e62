//! Why a configuration was refused. Every error names the file and, where there is one, the
//! key; none holds a value, because a value may be a secret.

use std::fmt;
use std::path::PathBuf;

/// A configuration that could not be loaded: the file it came from and what is wrong.
#[derive(Debug)]
#[non_exhaustive]
pub struct Error {
    /// The configuration file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub kind: ErrorKind,
}

impl Error {
    /// The key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::Override { key, .. }
            | ErrorKind::Key { key, .. }
            | ErrorKind::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}: {}", self.path.display(), self.kind)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Read(e) => Some(e),
            _ => None,
        }
    }
}

/// What is wrong with a configuration file; the text never holds the file's name (see
/// [`Error`]), so that a caller may name the file its own way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be opened or read (missing, no permission): retrying helps once
    /// the file is there and readable.
    #[error("cannot be read: {0}")]
    Read(#[source] std::io::Error),
    /// The path names a directory, a device, a pipe or a socket: name the file itself.
    #[error("is not a regular file")]
    NotRegular,
    /// The file is larger than any configuration: retrying does not help.
    #[error("is larger than {limit} bytes")]
    TooLarge {
        /// The largest size accepted, in bytes.
        limit: u64,
    },
    /// The file is not UTF-8 text: retrying does not help.
    #[error("is not UTF-8 text")]
    NotUtf8,
    /// The file is not TOML: the parser's message (which quotes no value), at a line.
    #[error("{}", syntax(*.line, .message))]
    Syntax {
        /// The line the parser stopped at (1 is the first), when it said.
        line: Option<usize>,
        /// What the parser found wrong.
        message: String,
    },
    /// An environment variable or a command-line value could not be applied to its key.
    #[error("`{key}`: {} {problem}", .origin.name())]
    Override {
        /// The key it sets.
        key: String,
        /// Where the value came from.
        origin: Origin,
        /// What is wrong with it, e.g. `must be a whole number`.
        problem: String,
    },
    /// A key is missing, unknown, given twice, or holds a value of the wrong type.
    #[error("{}", key_problem(.key, .problem, .origin.as_ref()))]
    Key {
        /// The key path, dotted (`tls.cert`; `custodians[1].name` inside an array).
        key: String,
        /// What is wrong.
        problem: Problem,
        /// Where the value came from, when not from the file.
        origin: Option<Origin>,
    },
    /// A key's value is outside its domain, as the section's own checks found.
    #[error("`{key}`: {problem}{}", from(.origin.as_ref()))]
    Invalid {
        /// The key path, dotted.
        key: String,
        /// What is wrong, in words that quote no value.
        problem: String,
        /// Where the value came from, when not from the file.
        origin: Option<Origin>,
    },
}

/// What is wrong with one key. None of these keeps the value it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A required key is absent.
    Missing,
    /// The section knows no key of this name.
    Unknown {
        /// The keys it knows.
        expected: &'static [&'static str],
    },
    /// The key is given twice.
    Duplicate,
    /// The value has another TOML type than the key takes.
    Type {
        /// The type found (`string`, `integer`, `table`, ...).
        found: &'static str,
        /// What the key takes.
        expected: String,
    },
    /// The value has the right type but is not one the key takes.
    Value {
        /// What the key takes.
        expected: String,
    },
    /// An array or table with another number of entries than the key takes.
    Length {
        /// How many entries were found.
        found: usize,
        /// What the key takes.
        expected: String,
    },
    /// A name that is not one of those the key takes.
    Variant {
        /// The names it takes.
        expected: &'static [&'static str],
    },
    /// What the key's type said about the value.
    Other(String),
}

/// Where a value that is not the file's came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The environment variable of this name.
    Env(String),
    /// A command-line flag.
    Flag,
}

impl Origin {
    /// The source, as the subject of a sentence.
    fn name(&self) -> &str {
        match self {
            Origin::Env(var) => var,
            Origin::Flag => "the command-line value",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Env(var) => write!(f, "set by {var}"),
            Origin::Flag => f.write_str("set on the command line"),
        }
    }
}

fn syntax(line: Option<usize>, message: &str) -> String {
    match line {
        Some(n) => format!("line {n}: {message}"),
        None => message.to_owned(),
    }
}

fn from(origin: Option<&Origin>) -> String {
    origin.map(|o| format!(" ({o})")).unwrap_or_default()
}

fn one_of(names: &[&str]) -> String {
    match names {
        [] => "there are none".to_owned(),
        [one] => format!("expected `{one}`"),
        _ => {
            let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("expected one of {}", quoted.join(", "))
        }
    }
}

fn key_problem(key: &str, problem: &Problem, origin: Option<&Origin>) -> String {
    let text = match problem {
        Problem::Missing => format!("missing field `{key}`"),
        Problem::Unknown { expected } => format!("unknown field `{key}`, {}", one_of(expected)),
        Problem::Duplicate => format!("duplicate field `{key}`"),
        Problem::Type { found, expected } => {
            format!("`{key}`: invalid type: {found}, expected {expected}")
        }
        Problem::Value { expected } => format!("`{key}`: invalid value, expected {expected}"),
        Problem::Length { found, expected } => {
            format!("`{key}`: {found} entries, expected {expected}")
        }
        Problem::Variant { expected } => format!("`{key}`: unknown name, {}", one_of(expected)),
        Problem::Other(m) if key.is_empty() => m.clone(),
        Problem::Other(m) => format!("`{key}`: {m}"),
    };
    format!("{text}{}", from(origin))
}
