//! Environment overrides for the services' TOML configuration: every listed key can
//! be set by `<PREFIX>_` plus the key path in capitals with `_` for `.`
//! (`tls.cert` -> `CUSTODIAN_TLS_CERT`).

/// The TOML type of an overridable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    /// A string (also addresses and paths).
    Str,
    /// A whole number.
    Int,
    /// A number.
    Float,
}

/// The environment variable that overrides `key` under `prefix`.
pub fn env_name(prefix: &str, key: &str) -> String {
    format!("{prefix}_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Applies the overrides `env` knows of to `table`. On a bad value returns the key
/// and the problem, naming the variable.
pub fn apply_env_overrides(
    table: &mut toml::Table,
    prefix: &str,
    keys: &[(&'static str, EnvKind)],
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), (&'static str, String)> {
    for &(key, kind) in keys {
        let var = env_name(prefix, key);
        let Some(raw) = env(&var) else { continue };
        let value = match kind {
            EnvKind::Str => toml::Value::String(raw),
            EnvKind::Int => toml::Value::Integer(
                raw.trim()
                    .parse()
                    .map_err(|_| (key, format!("{var} must be a whole number")))?,
            ),
            EnvKind::Float => toml::Value::Float(
                raw.trim()
                    .parse()
                    .map_err(|_| (key, format!("{var} must be a number")))?,
            ),
        };
        let parts: Vec<&str> = key.split('.').collect();
        let mut t = &mut *table;
        for p in &parts[..parts.len() - 1] {
            let entry = t
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = entry
                .as_table_mut()
                .ok_or((key, format!("{p} must be a table")))?;
        }
        t.insert(parts[parts.len() - 1].to_owned(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_keys_and_bad_numbers() {
        let mut t: toml::Table = toml::from_str("[tls]\ncert = \"a\"\n").unwrap();
        let keys = [
            ("tls.cert", EnvKind::Str),
            ("limits.n", EnvKind::Int),
            ("rate", EnvKind::Float),
        ];
        apply_env_overrides(&mut t, "X", &keys, |k| match k {
            "X_TLS_CERT" => Some("b".into()),
            "X_LIMITS_N" => Some("7".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(t["tls"]["cert"].as_str(), Some("b"));
        assert_eq!(t["limits"]["n"].as_integer(), Some(7));
        let e = apply_env_overrides(&mut t, "X", &keys, |k| {
            (k == "X_RATE").then(|| "fast".into())
        })
        .unwrap_err();
        assert_eq!(e.0, "rate");
        assert!(e.1.contains("X_RATE"));
    }
}
