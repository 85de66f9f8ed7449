//! `quantrac-mqtt-auth`: writes Mosquitto's password file and ACL from the
//! station registry (see `quantrac_ingest::broker_auth`), and with
//! `--watch` again whenever the registry or the service accounts change.
//! Files are replaced atomically and only when their text changes; then
//! Mosquitto (the pid in `--pid-file`) is sent SIGHUP to reload them.
//! Run it beside the broker.
//!
//! With `--dynsec-file` it writes the dynamic-security plugin's
//! configuration instead, which also refuses a station's SUBSCRIBE (the
//! ACL file does not check it). The plugin reads that file only at start:
//! `--on-change` names the command that restarts the broker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Mosquitto password file and ACL from the station registry"
)]
struct Args {
    /// The station registry (deploy/registry.toml).
    #[arg(long, env = "QUANTRAC_REGISTRY")]
    registry: PathBuf,
    /// Service accounts (ingest's), a Mosquitto password file made with
    /// `mosquitto_passwd`.
    #[arg(long)]
    accounts: PathBuf,
    /// Service accounts that read every station's readings (ingest).
    #[arg(long = "reader", default_value = "ingest")]
    readers: Vec<String>,
    /// The password file Mosquitto reads (`password_file`).
    #[arg(long, required_unless_present = "dynsec_file", requires = "acl_file")]
    password_file: Option<PathBuf>,
    /// The ACL file Mosquitto reads (`acl_file`).
    #[arg(long, requires = "password_file")]
    acl_file: Option<PathBuf>,
    /// Instead of the two files: the dynamic-security plugin's JSON file
    /// (`plugin_opt_config_file`).
    #[arg(long, conflicts_with_all = ["password_file", "acl_file"])]
    dynsec_file: Option<PathBuf>,
    /// A command run (`sh -c`) after the files changed, e.g.
    /// `systemctl restart mosquitto` for the dynamic-security file.
    #[arg(long)]
    on_change: Option<String>,
    /// Mosquitto's pid file: it is sent SIGHUP after a change.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Keep running and regenerate on change, checking this often.
    #[arg(long, value_parser = humantime::parse_duration)]
    watch: Option<Duration>,
}

/// Writes `text` to `path` through a temporary file and a rename, so the
/// broker never reads half a file; `false` when it was already that.
fn replace(path: &Path, text: &str) -> Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        // Hashes only, but still nobody else's business.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(true)
}

fn once(args: &Args) -> Result<()> {
    let registry = quantrac_proto::registry::Registry::load(&args.registry)?;
    let accounts = std::fs::read_to_string(&args.accounts)
        .with_context(|| format!("reading {}", args.accounts.display()))?;
    let changed = match (&args.dynsec_file, &args.password_file, &args.acl_file) {
        (Some(path), _, _) => {
            let (text, stations) =
                quantrac_ingest::broker_auth::generate_dynsec(&registry, &accounts, &args.readers)?;
            let changed = replace(path, &text)?;
            if changed {
                tracing::info!(stations, dynsec_file = %path.display(), "dynamic-security configuration written");
            }
            changed
        }
        (None, Some(passwd), Some(acl)) => {
            let files =
                quantrac_ingest::broker_auth::generate(&registry, &accounts, &args.readers)?;
            let changed = replace(passwd, &files.passwd)? | replace(acl, &files.acl)?;
            if changed {
                tracing::info!(stations = files.stations, password_file = %passwd.display(), acl_file = %acl.display(), "broker files written");
            }
            changed
        }
        _ => anyhow::bail!("give --password-file and --acl-file, or --dynsec-file"),
    };
    if !changed {
        return Ok(());
    }
    if let Some(command) = &args.on_change {
        let status = std::process::Command::new("sh")
            .args(["-c", command])
            .status()
            .context("running --on-change")?;
        anyhow::ensure!(status.success(), "--on-change {command:?} failed: {status}");
        tracing::info!(command, "--on-change ran");
    }
    if let Some(pid_file) = &args.pid_file {
        let Ok(pid) = std::fs::read_to_string(pid_file) else {
            // Not running yet: it reads the files when it starts.
            tracing::info!(pid_file = %pid_file.display(), "no broker pid; nothing to reload");
            return Ok(());
        };
        let pid = pid.trim();
        anyhow::ensure!(
            pid.chars().all(|c| c.is_ascii_digit()) && !pid.is_empty(),
            "{}: not a pid",
            pid_file.display()
        );
        let status = std::process::Command::new("kill")
            .args(["-HUP", pid])
            .status()
            .context("running kill")?;
        anyhow::ensure!(status.success(), "kill -HUP {pid} failed");
        tracing::info!(pid, "mosquitto told to reload");
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    quantrac_plumbing::process::init_tracing(false, "info");
    let Some(every) = args.watch else {
        return once(&args);
    };
    // A bad registry edit keeps the files the broker has (and says so)
    // rather than locking every station out.
    loop {
        if let Err(e) = once(&args) {
            tracing::error!(
                error = format!("{e:#}"),
                "registry not applied to the broker; the previous files stay"
            );
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
    }
}
