//! How every service reads its configuration: the defaults, then a TOML file
//! (if given), then `QUANTRAC_<SERVICE>__<SECTION>__<FIELD>` environment
//! variables; errors name the field. Each service validates the result.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
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
        .merge(Env::prefixed(env_prefix).split("__"))
        .extract()
        .map_err(Box::new)?)
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
