//! The machine a run happened on: every report carries it, because a rate without
//! its machine is not a measurement.

use serde::Serialize;

/// What the figures of a run depend on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Logical cores.
    pub cores: usize,
    /// RAM, MiB.
    pub ram_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// PostgreSQL server version, with its durability settings.
    pub postgres: String,
    /// nats-server version.
    pub nats_server: String,
    /// When the run started (UTC, RFC 3339).
    pub date: String,
    /// Git commit of the workspace (with `-dirty` when it has local changes).
    pub git_commit: String,
    /// Build profile of the bench binary.
    pub profile: String,
    /// 1-minute load average when the run started (other work on the machine).
    pub load_average: String,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn ram_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

fn git_commit() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = run(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    if dirty { format!("{head}-dirty") } else { head }
}

/// Reads the machine's description; the server versions come from the live servers.
pub async fn describe(pg_url: &str, nats_url: &str) -> Machine {
    let postgres = match sqlx::PgPool::connect(pg_url).await {
        Ok(pool) => {
            let version: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(&pool)
                .await
                .unwrap_or_else(|_| "?".into());
            let fsync: String = sqlx::query_scalar("SHOW fsync")
                .fetch_one(&pool)
                .await
                .unwrap_or_else(|_| "?".into());
            let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(&pool)
                .await
                .unwrap_or_else(|_| "?".into());
            pool.close().await;
            format!("PostgreSQL {version} (fsync={fsync}, synchronous_commit={sync})")
        }
        Err(e) => format!("unreachable: {e}"),
    };
    let nats_server = match async_nats::connect(nats_url).await {
        Ok(client) => format!("nats-server {}", client.server_info().version),
        Err(e) => format!("unreachable: {e}"),
    };
    Machine {
        cpu_model: cpu_model(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        ram_mib: ram_mib(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        postgres,
        nats_server,
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        git_commit: git_commit(),
        profile: if cfg!(debug_assertions) {
            "debug".into()
        } else {
            "release".into()
        },
        load_average: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default(),
    }
}

impl Machine {
    /// Human lines.
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!(
                "machine: {} ({} cores), {} MiB RAM, Linux {}",
                self.cpu_model, self.cores, self.ram_mib, self.kernel
            ),
            format!("servers: {}; {}", self.postgres, self.nats_server),
            format!(
                "run: {} at commit {}, bench built {}, load average {} at start",
                self.date, self.git_commit, self.profile, self.load_average
            ),
        ]
    }
}
