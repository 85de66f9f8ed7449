//! Mosquitto's password file and ACL, generated from the station registry,
//! so that the registry is the one place a station's MQTT credential lives.
//!
//! - Every station with an `mqtt_hash` gets an account (`mqtt_username`,
//!   else its id) that may only **publish** to `stations/<name>/readings`,
//!   for its id and each alias. It can subscribe to nothing: no station
//!   reads, or acknowledges away, another's data.
//! - Every station has those grants in the ACL, with or without a hash: on
//!   a listener that takes client certificates (`require_certificate`,
//!   `use_identity_as_username`) a certificate whose CN is the station's
//!   name logs it in without a password, and the same grants apply.
//! - Service accounts (ingest's, made with `mosquitto_passwd`) come from a
//!   file of their own; the `readers` among them may only **subscribe** to
//!   `stations/+/readings`, and publish nothing.
//! - Anything else is denied: with an ACL file, Mosquitto refuses every
//!   topic no line grants.
//!
//! `quantrac-mqtt-auth` writes both files (atomically, only when they
//! change) and signals Mosquitto to reload them (SIGHUP).
//!
//! Or, with [`generate_dynsec`], the same accounts and grants as the
//! configuration of Mosquitto's dynamic-security plugin. Mosquitto 2.0's
//! ACL file does not check SUBSCRIBE, so a station account could join
//! ingest's shared subscription and take a share of every station's
//! messages, which the ACL then drops at delivery (SECURITY.md measured
//! it); the plugin refuses that SUBSCRIBE. It reads its file only at start,
//! so a change needs a broker restart (`--on-change`).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use quantrac_proto::registry::Registry;

#[derive(Debug, thiserror::Error)]
pub enum BrokerAuthError {
    #[error("station {station}: {problem}")]
    Station { station: String, problem: String },
    #[error("service accounts, line {line}: {problem}")]
    Account { line: usize, problem: String },
}

/// The two files, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerFiles {
    pub passwd: String,
    pub acl: String,
    /// Station accounts written.
    pub stations: usize,
}

/// Characters that would make a name a topic filter or break a file line.
fn unsafe_name(name: &str) -> bool {
    name.is_empty()
        || name.chars().any(|c| {
            matches!(c, '+' | '#' | '/' | ':' | '$') || c.is_whitespace() || c.is_control()
        })
}

/// Who may connect, and what each may do.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    /// Service accounts: user, `$7$` hash, reads the readings.
    services: Vec<(String, String, bool)>,
    /// Station accounts: user, `$7$` hash (none: a client certificate
    /// only), the topic names it publishes as.
    stations: Vec<(String, Option<String>, Vec<String>)>,
}

/// Checks and gathers the accounts. `accounts` is a Mosquitto password
/// file of service accounts (`user:$7$...` lines); `readers` are those of
/// them that read every station's readings.
fn plan(registry: &Registry, accounts: &str, readers: &[String]) -> Result<Plan, BrokerAuthError> {
    let mut users = BTreeSet::new();
    let mut plan = Plan {
        services: Vec::new(),
        stations: Vec::new(),
    };
    for (i, line) in accounts.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |problem: &str| BrokerAuthError::Account {
            line: i + 1,
            problem: problem.to_owned(),
        };
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| bad("expected user:hash"))?;
        if unsafe_name(user) {
            return Err(bad("a user name without spaces, colons or + # / $"));
        }
        quantrac_plumbing::secret::check_mosquitto_hash(hash).map_err(|e| bad(&e.to_string()))?;
        if !users.insert(user.to_owned()) {
            return Err(bad("the user appears twice"));
        }
        plan.services.push((
            user.to_owned(),
            hash.to_owned(),
            readers.iter().any(|r| r == user),
        ));
    }
    for reader in readers {
        if !users.contains(reader) {
            return Err(BrokerAuthError::Account {
                line: 0,
                problem: format!("reader {reader:?} has no account in the service accounts file"),
            });
        }
    }
    for station in registry.stations() {
        let hash = &station.mqtt_hash;
        let user = station.mqtt_username.as_deref().unwrap_or(&station.id);
        let problem = |problem: String| BrokerAuthError::Station {
            station: station.id.clone(),
            problem,
        };
        for name in std::iter::once(&station.id).chain(&station.aliases) {
            if unsafe_name(name) {
                return Err(problem(format!(
                    "{name:?} cannot be an MQTT topic level (no + # / $ : or spaces)"
                )));
            }
        }
        if unsafe_name(user) {
            return Err(problem(format!(
                "mqtt_username {user:?}: no + # / $ : or spaces"
            )));
        }
        if let Some(hash) = hash {
            quantrac_plumbing::secret::check_mosquitto_hash(hash)
                .map_err(|e| problem(format!("mqtt_hash: {e}")))?;
        }
        if !users.insert(user.to_owned()) {
            return Err(problem(format!("MQTT user {user:?} is already taken")));
        }
        let names = std::iter::once(&station.id)
            .chain(&station.aliases)
            .cloned()
            .collect();
        plan.stations.push((user.to_owned(), hash.clone(), names));
    }
    Ok(plan)
}

/// Builds Mosquitto's password file and ACL.
pub fn generate(
    registry: &Registry,
    accounts: &str,
    readers: &[String],
) -> Result<BrokerFiles, BrokerAuthError> {
    let plan = plan(registry, accounts, readers)?;
    let mut passwd = String::from(
        "# Generated by quantrac-mqtt-auth from the station registry; edits are overwritten.\n",
    );
    let mut acl = String::from(
        "# Generated by quantrac-mqtt-auth from the station registry; edits are overwritten.\n\
         # Anything not granted here is refused.\n",
    );
    for (user, hash, reads) in &plan.services {
        let _ = writeln!(passwd, "{user}:{hash}");
        if *reads {
            let _ = write!(acl, "\nuser {user}\ntopic read stations/+/readings\n");
        }
    }
    for (user, hash, names) in &plan.stations {
        if let Some(hash) = hash {
            let _ = writeln!(passwd, "{user}:{hash}");
        }
        let _ = write!(acl, "\nuser {user}\n");
        for name in names {
            let _ = writeln!(acl, "topic write stations/{name}/readings");
        }
    }
    Ok(BrokerFiles {
        passwd,
        acl,
        stations: plan.stations.iter().filter(|s| s.1.is_some()).count(),
    })
}

/// The dynamic-security plugin's configuration (its JSON file), with the
/// same accounts and grants as [`generate`]'s files, and SUBSCRIBE checked:
/// readers may subscribe to the readings (alone or in a shared group) and
/// receive them; stations may publish to their own topics and subscribe
/// to nothing. Everything not granted is refused, receiving included. No
/// admin account: the registry stays the one source, nothing edits the
/// accounts through the broker.
pub fn generate_dynsec(
    registry: &Registry,
    accounts: &str,
    readers: &[String],
) -> Result<(String, usize), BrokerAuthError> {
    let plan = plan(registry, accounts, readers)?;
    // `$7$<rounds>$<salt>$<hash>`: the same PBKDF2-HMAC-SHA512 the plugin
    // uses, so a hash moves over unchanged (checked in `plan`).
    let client = |user: &str, hash: &str, role: &str| {
        let parts: Vec<&str> = hash.split('$').collect();
        serde_json::json!({
            "username": user,
            "password": parts.get(4).copied().unwrap_or_default(),
            "salt": parts.get(3).copied().unwrap_or_default(),
            "iterations": parts.get(2).and_then(|r| r.parse::<u64>().ok()).unwrap_or(0),
            "roles": [{"rolename": role}],
        })
    };
    let acl = |kind: &str, topic: String| serde_json::json!({"acltype": kind, "topic": topic, "allow": true});
    let mut clients = Vec::new();
    let mut roles = vec![serde_json::json!({
        "rolename": "quantrac-reader",
        "acls": [
            acl("subscribePattern", "stations/+/readings".into()),
            acl("subscribePattern", "$share/+/stations/+/readings".into()),
            acl("publishClientReceive", "stations/+/readings".into()),
            acl("unsubscribePattern", "#".into()),
        ],
    })];
    roles.push(serde_json::json!({"rolename": "quantrac-service", "acls": []}));
    for (user, hash, reads) in &plan.services {
        let role = if *reads {
            "quantrac-reader"
        } else {
            "quantrac-service"
        };
        clients.push(client(user, hash, role));
    }
    for (user, hash, names) in &plan.stations {
        // The plugin authenticates by password only.
        let Some(hash) = hash else {
            continue;
        };
        let role = format!("station:{user}");
        roles.push(serde_json::json!({
            "rolename": role,
            "acls": names
                .iter()
                .map(|n| acl("publishClientSend", format!("stations/{n}/readings")))
                .collect::<Vec<_>>(),
        }));
        clients.push(client(user, hash, &role));
    }
    let config = serde_json::json!({
        "clients": clients,
        "groups": [],
        "roles": roles,
        "defaultACLAccess": {
            "publishClientSend": false,
            "publishClientReceive": false,
            "subscribe": false,
            "unsubscribe": true,
        },
    });
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    Ok((text, plan.stations.iter().filter(|s| s.1.is_some()).count()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(extra: &str) -> Registry {
        Registry::from_toml(&format!(
            "[[stations]]\nid = \"A1\"\nname = \"x\"\nfacility = \"x\"\nindustrial_zone = \"x\"\nprovince = \"x\"\n\
             latitude = 13.0\nlongitude = 109.0\nkind = \"wastewater\"\naliases = [\"PY_F_A1\"]\n\
             mqtt_hash = \"{}\"\n{extra}\
             parameters = [{{ code = \"COD\", unit = \"mg/L\", range_min = 0, range_max = 1000 }}]\n\n\
             [[stations]]\nid = \"B2\"\nname = \"x\"\nfacility = \"x\"\nindustrial_zone = \"x\"\nprovince = \"x\"\n\
             latitude = 13.0\nlongitude = 109.0\nkind = \"wastewater\"\n\
             parameters = [{{ code = \"COD\", unit = \"mg/L\", range_min = 0, range_max = 1000 }}]\n",
            quantrac_plumbing::secret::mosquitto_hash("a1-secret")
        ))
        .expect("registry")
    }

    const INGEST: &str = "ingest:$7$101$M1jb/yhzG1VGS3Tl$KhMi64fDfZjsp4n2jDtmQ7qoQ3c6ToFIT8HEo77TQwflNmFA0HHU75s9YwK+Whc4ybqC4dJO8jwsPmlcFtUoQA==\n";

    #[test]
    fn stations_publish_their_own_topics_and_readers_only_read() {
        let files = generate(&registry(""), INGEST, &["ingest".into()]).expect("files");
        assert_eq!(
            files.stations, 1,
            "only stations with an mqtt_hash get an account"
        );
        assert!(files.passwd.contains("\ningest:$7$101$"));
        assert!(files.passwd.contains("\nA1:$7$100000$"));
        assert!(!files.passwd.contains("B2:"));
        // B2 has no password, but a client certificate may name it.
        assert!(
            files
                .acl
                .contains("\nuser B2\ntopic write stations/B2/readings\n")
        );
        assert!(files.acl.contains(
            "\nuser A1\ntopic write stations/A1/readings\ntopic write stations/PY_F_A1/readings\n"
        ));
        assert!(
            files
                .acl
                .contains("\nuser ingest\ntopic read stations/+/readings\n")
        );
        assert!(
            !files.acl.contains("readwrite"),
            "no account both reads and writes"
        );
        assert!(
            !files.acl.contains("pattern"),
            "no grant outside a named user"
        );
    }

    #[test]
    fn the_dynamic_security_config_grants_the_same_and_checks_subscriptions() {
        let (text, stations) =
            generate_dynsec(&registry(""), INGEST, &["ingest".into()]).expect("config");
        assert_eq!(stations, 1);
        let c: serde_json::Value = serde_json::from_str(&text).expect("json");
        let client = |name: &str| {
            c["clients"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["username"] == name))
                .cloned()
                .unwrap_or_default()
        };
        // The $7$ hash's parts, unchanged.
        assert_eq!(client("ingest")["iterations"], 101);
        assert_eq!(client("ingest")["salt"], "M1jb/yhzG1VGS3Tl");
        assert_eq!(client("ingest")["roles"][0]["rolename"], "quantrac-reader");
        assert_eq!(client("A1")["iterations"], 100_000);
        assert_eq!(client("B2"), serde_json::Value::Null);
        let role = |name: &str| {
            c["roles"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["rolename"] == name))
                .map(|r| r["acls"].to_string())
                .unwrap_or_default()
        };
        let station = role("station:A1");
        assert!(station.contains("stations/A1/readings"), "{station}");
        assert!(station.contains("stations/PY_F_A1/readings"), "{station}");
        assert!(
            !station.contains("subscribe"),
            "a station subscribes to nothing: {station}"
        );
        assert!(role("quantrac-reader").contains("$share/+/stations/+/readings"));
        assert_eq!(c["defaultACLAccess"]["subscribe"], false);
        assert_eq!(c["defaultACLAccess"]["publishClientSend"], false);
    }

    #[test]
    fn names_that_would_widen_a_grant_are_refused() {
        let err =
            generate(&registry("mqtt_username = \"ingest\"\n"), INGEST, &[]).expect_err("taken");
        assert!(err.to_string().contains("already taken"), "{err}");
        let err = generate(&registry(""), "ingest:plaintext\n", &[]).expect_err("plaintext");
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = generate(&registry(""), INGEST, &["nobody".into()]).expect_err("reader");
        assert!(err.to_string().contains("nobody"), "{err}");
        let r = Registry::from_toml(&format!(
            "[[stations]]\nid = \"A+\"\nname = \"x\"\nfacility = \"x\"\nindustrial_zone = \"x\"\nprovince = \"x\"\n\
             latitude = 13.0\nlongitude = 109.0\nkind = \"wastewater\"\nmqtt_hash = \"{}\"\n\
             parameters = [{{ code = \"COD\", unit = \"mg/L\", range_min = 0, range_max = 1000 }}]\n",
            quantrac_plumbing::secret::mosquitto_hash("x")
        ))
        .expect("registry");
        let err = generate(&r, INGEST, &[]).expect_err("wildcard id");
        assert!(err.to_string().contains("topic level"), "{err}");
    }
}
