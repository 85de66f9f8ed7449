//! A PostgreSQL cluster of a test's own, which the test may crash (every
//! server process killed with SIGKILL, as a power cut or an OOM kill would
//! leave it) and start again. For what must survive a database crash, not
//! only a clean stop: the shared server of `deploy/services.sh` is never
//! crashed.
//!
//! Debian's server binaries (`/usr/lib/postgresql/<version>/bin`, the
//! newest; or `QUANTRAC_PG_BINDIR`). Run as root, the server runs as the
//! `postgres` user (`runuser`), since PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Settings under which nothing but a session's own synchronous commit
/// writes its WAL out while [`Cluster::pause_wal_writer`] holds: no
/// vacuum, no background writes of dirty pages (each writes the WAL before
/// them), no checkpoint, room in the WAL buffers.
pub const WAL_STAYS_IN_MEMORY: &[&str] = &[
    "autovacuum = off",
    "bgwriter_lru_maxpages = 0",
    "checkpoint_timeout = 1h",
    "wal_buffers = 16MB",
];

/// A running (or crashed) private cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn bindir() -> PathBuf {
    if let Ok(d) = std::env::var("QUANTRAC_PG_BINDIR") {
        return PathBuf::from(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql (deploy/services.sh start postgres installs them), or QUANTRAC_PG_BINDIR")
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version").1
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl Cluster {
    /// `initdb` and start, with `settings` (postgresql.conf lines) added.
    /// Trust authentication, loopback only, a free port.
    pub fn start(settings: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(crate::unique("pgcluster"));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let as_postgres = is_root();
        let c = Self {
            dir,
            bindir: bindir(),
            port: crate::ftp::free_port(),
            as_postgres,
        };
        if as_postgres {
            c.run(Command::new("chown").arg("postgres:postgres").arg(&c.dir));
        }
        let data = c.data();
        c.run(
            c.pg("initdb")
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data),
        );
        let mut conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
            c.port,
            c.dir.display()
        );
        for s in settings {
            conf.push_str(s);
            conf.push('\n');
        }
        let path = data.join("postgresql.conf");
        let mut text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.push_str(&conf);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        c.restart();
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command of the server's binaries, as the server's user.
    fn pg(&self, name: &str) -> Command {
        let bin = self.bindir.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        }
    }

    fn run(&self, cmd: &mut Command) {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (after [`Cluster::crash`]: with crash recovery),
    /// waiting until it accepts connections.
    pub fn restart(&self) {
        self.run(
            self.pg("pg_ctl")
                .args(["-w", "-t", "60", "-D"])
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .arg("start"),
        );
    }

    /// The postmaster's pid and its children's.
    fn processes(&self) -> (String, Vec<String>) {
        let pid_file = self.data().join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).expect("postmaster.pid: the server runs");
        let pid = text.lines().next().unwrap_or_default().trim().to_owned();
        let children = Command::new("pgrep")
            .args(["-P", &pid])
            .output()
            .expect("pgrep");
        let children = String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        (pid, children)
    }

    /// Stops (SIGSTOP) the WAL writer, so that asynchronously committed
    /// WAL stays in the server's memory, as it would in the kernel's page
    /// cache before a power cut: a process crash then loses it. (A
    /// running WAL writer hands full pages to the kernel, which a process
    /// crash does not lose.) Backends still write WAL themselves when they
    /// commit synchronously or their WAL buffers fill.
    pub fn pause_wal_writer(&self) {
        let (_, children) = self.processes();
        let writer = children
            .into_iter()
            .find(|p| {
                std::fs::read(Path::new("/proc").join(p).join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("walwriter"))
            })
            .expect("the server's walwriter process");
        self.run(Command::new("kill").arg("-STOP").arg(writer));
    }

    /// Kills the postmaster and every server process with SIGKILL at once:
    /// nothing is flushed or checkpointed on the way down.
    pub fn crash(&self) {
        let (pid, children) = self.processes();
        let mut pids = vec![pid];
        pids.extend(children);
        self.run(Command::new("kill").arg("-KILL").args(&pids));
        // Gone when no process of the cluster is left.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while pids.iter().any(|p| Path::new("/proc").join(p).exists()) {
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL's processes still alive 30 s after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .pg("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
