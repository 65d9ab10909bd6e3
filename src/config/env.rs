//! `SCOREGATE__SECTION__KEY=value` environment overrides, applied to the parsed file before it is
//! deserialized, so that an override is checked exactly like the key it replaces.
//!
//! It deliberately does not check values or know the sections' keys: an override of a key that
//! does not exist fails in deserializing, and a bad value in its section's checks, like the
//! file's own.

/// Prefix of environment variables that override file settings (`SCOREGATE__CACHE__FRESH_SECONDS`).
pub const ENV_PREFIX: &str = "SCOREGATE__";

/// Applies `SCOREGATE__SECTION__KEY=value`: the value is read as a TOML value when it is one
/// (`false`, `300`, `["a"]`), otherwise as a string (`0.0.0.0:8080`).
pub(super) fn apply_env_overrides(table: &mut toml::Table, env: &[(String, String)]) {
    for (name, raw) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut parsed| parsed.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        set_path(table, &keys, value);
    }
}

/// Sets `keys` (a path of nested tables) to `value`, creating or replacing tables on the way.
fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) {
    match keys {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [section, rest @ ..] => {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let Some(next) = entry.as_table_mut() {
                set_path(next, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{env, tempdir, write};
    use crate::config::Config;

    #[test]
    fn env_overrides_reach_nested_keys_and_parse_values() {
        let dir = tempdir();
        let path = write(&dir, "a.toml", "[refresh]\nenabled = true\n");
        let config = Config::load_with_env(
            &path,
            env(&[
                ("SCOREGATE__REFRESH__ENABLED", "false"),
                ("SCOREGATE__CACHE__FRESH_SECONDS", "60"),
                ("SCOREGATE__SERVER__BIND", "0.0.0.0:9000"),
                (
                    "SCOREGATE__AUTH__ALLOW_UNAUTHENTICATED_NON_LOOPBACK",
                    "true",
                ),
            ]),
        )
        .unwrap();
        assert!(!config.refresh.enabled);
        assert_eq!(config.cache.fresh_seconds, 60);
        assert_eq!(config.server.bind.port(), 9000);
    }
}
