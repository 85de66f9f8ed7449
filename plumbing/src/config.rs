//! How every service reads its configuration: the defaults, then a TOML file
//! (if given), then `QUANTRAC_<SERVICE>__<SECTION>__<FIELD>` environment
//! variables; errors name the field. Each service validates the result.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// A refusal naming the field.
pub fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Defaults, then `path` (if any), then variables starting with
/// `env_prefix` (e.g. `QUANTRAC_INGEST__`; `__` separates the levels).
pub fn load<T: Default + Serialize + DeserializeOwned>(
    path: Option<&Path>,
    env_prefix: &str,
) -> Result<T, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = path {
        if !path.exists() {
            return Err(invalid(
                "--config",
                format!("file {} does not exist", path.display()),
            ));
        }
        figment = figment.merge(Toml::file(path));
    }
    Ok(figment
        .merge(RawEnv(Env::prefixed(env_prefix).split("__")))
        .extract_lossy()
        .map_err(Box::new)?)
}

/// Environment variables as text. Figment's own `Env` guesses a type from
/// each value, so `...__PASSWORDS__X=123456` became a number and a string
/// field refused it. Here a value stays text (an array or table written in
/// figment's syntax is still parsed), and `extract_lossy` reads a numeric or
/// boolean field from that text.
struct RawEnv(Env);

impl Provider for RawEnv {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, raw) in self.0.iter() {
            let value = match raw.parse::<Value>() {
                Ok(v @ (Value::Array(..) | Value::Dict(..))) => v,
                _ => Value::from(raw),
            };
            let path: Vec<&str> = key.as_str().split('.').collect();
            insert(&mut dict, &path, value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Puts `value` at `path` (`section.field`) in `dict`, creating tables.
fn insert(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

/// A TOML text over the defaults, without the environment (for tests).
pub fn from_toml<T: Default + Serialize + DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    Ok(Figment::from(Serialized::defaults(T::default()))
        .merge(Toml::string(text))
        .extract()
        .map_err(Box::new)?)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Section {
        n: u32,
        label: String,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        name: String,
        section: Section,
    }

    impl Default for Section {
        fn default() -> Self {
            Section {
                n: 1,
                label: "default".into(),
            }
        }
    }

    // Jail's closures return figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    #[test]
    fn defaults_then_file_then_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "name = \"from file\"\n[section]\nn = 2\n")?;
            jail.set_env("QUANTRAC_SAMPLE__SECTION__N", "5");
            let c: Sample =
                load(Some(Path::new("c.toml")), "QUANTRAC_SAMPLE__").map_err(|e| e.to_string())?;
            assert_eq!(c.name, "from file");
            assert_eq!(c.section.n, 5, "the environment wins over the file");
            assert_eq!(
                c.section.label, "default",
                "untouched fields keep their default"
            );
            Ok(())
        });
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct WithMap {
        passwords: std::collections::BTreeMap<String, String>,
        flag: bool,
        list: Vec<u32>,
    }

    // An environment override of a text field takes any text, digits too
    // ("found unsigned int, expected a string" before).
    #[allow(clippy::result_large_err)]
    #[test]
    fn environment_text_stays_text_and_numbers_still_parse() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("QUANTRAC_SAMPLE__SECTION__LABEL", "123456");
            jail.set_env("QUANTRAC_SAMPLE__SECTION__N", "7");
            jail.set_env("QUANTRAC_SAMPLE__NAME", "true");
            let c: Sample = load(None, "QUANTRAC_SAMPLE__").map_err(|e| e.to_string())?;
            assert_eq!(c.section.label, "123456");
            assert_eq!(c.section.n, 7);
            assert_eq!(c.name, "true");
            jail.set_env("QUANTRAC_MAP__PASSWORDS__ST01", "123456");
            jail.set_env("QUANTRAC_MAP__FLAG", "true");
            jail.set_env("QUANTRAC_MAP__LIST", "[1, 2]");
            let m: WithMap = load(None, "QUANTRAC_MAP__").map_err(|e| e.to_string())?;
            assert_eq!(m.passwords.get("st01").map(String::as_str), Some("123456"));
            assert!(m.flag);
            assert_eq!(m.list, vec![1, 2]);
            Ok(())
        });
    }

    #[allow(clippy::result_large_err)]
    #[test]
    fn errors_name_the_field_or_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("QUANTRAC_SAMPLE__SECTION__N", "many");
            let e = load::<Sample>(None, "QUANTRAC_SAMPLE__").expect_err("refused");
            let text = e.to_string();
            assert!(text.to_lowercase().contains("section.n"), "{text}");
            assert!(text.contains("QUANTRAC_SAMPLE__"), "{text}");
            let e = load::<Sample>(Some(Path::new("missing.toml")), "QUANTRAC_OTHER__")
                .expect_err("refused");
            assert!(e.to_string().contains("`--config`"), "{e}");
            assert!(e.to_string().contains("missing.toml"), "{e}");
            Ok(())
        });
        let e = from_toml::<Sample>("[section]\nm = 1\n").expect_err("refused");
        assert!(e.to_string().contains("unknown field"), "{e}");
        assert!(e.to_string().contains("`m`"), "{e}");
    }
}
