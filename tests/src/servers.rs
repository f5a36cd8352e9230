//! Private PostgreSQL and NATS servers for the tests that stop, kill and restart them
//! (readiness, chaos): a test must never restart the servers other tests share. Each
//! listens on a free loopback port with its data in a temporary directory, and is
//! stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::wait_for;

/// A free TCP port on 127.0.0.1 (the OS picks it; a race with another process is
/// possible but harmless: the server then fails to start and the test says so).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_listening(port: u16, what: &str) -> anyhow::Result<()> {
    let addr = format!("127.0.0.1:{port}");
    wait_for(Duration::from_secs(30), || {
        let addr = addr.clone();
        async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
    })
    .await
    .with_context(|| format!("{what} did not start listening on {port}"))
}

/// A nats-server with JetStream, its store kept across restarts. Its log (every start
/// appends to it) is removed with the store unless [`PrivateNats::keep_log`] was called.
pub struct PrivateNats {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    store: PathBuf,
    log: PathBuf,
    keep_log: bool,
}

impl PrivateNats {
    /// Starts a server on a free port with a fresh store.
    pub async fn start() -> anyhow::Result<Self> {
        let store =
            std::env::temp_dir().join(format!("portico-nats-{}", uuid::Uuid::new_v4().simple()));
        let mut nats = Self {
            child: None,
            port: free_port()?,
            log: store.with_extension("log"),
            store,
            keep_log: false,
        };
        nats.restart().await?;
        Ok(nats)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Keeps the log file when the server is dropped (a failed test points at it).
    pub fn keep_log(&mut self) {
        self.keep_log = true;
    }

    /// Kills the server at once (SIGKILL): what a crash looks like to its clients.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and store (killing it first if it runs).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .arg("-l")
            .arg(&self.log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (Debian package nats-server)")?;
        self.child = Some(child);
        wait_listening(self.port, "nats-server").await
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
        if !self.keep_log {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A PostgreSQL cluster of its own (initdb, trust authentication, loopback only).
pub struct PrivatePostgres {
    /// Its port.
    pub port: u16,
    data: PathBuf,
    bin: PathBuf,
}

/// Where Debian installs PostgreSQL's server binaries (`/usr/lib/postgresql/<n>/bin`),
/// or the directory of `pg_ctl` on the PATH.
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.join("pg_ctl").exists());
    versions.sort();
    if let Some(bin) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|p| p.join("pg_ctl").exists())
        .context("no PostgreSQL server binaries (Debian package postgresql)")
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (PostgreSQL refuses
/// to run as root), as ourselves otherwise.
fn pg_command(tool: &Path) -> Command {
    let root = std::env::var("USER").is_ok_and(|u| u == "root")
        || std::fs::metadata("/proc/self").is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == 0
        });
    if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(tool);
        cmd
    } else {
        Command::new(tool)
    }
}

impl PrivatePostgres {
    /// Creates and starts a cluster on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = postgres_bin()?;
        let data =
            std::env::temp_dir().join(format!("portico-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data)?;
        // The cluster's files must belong to the user that runs it.
        let chown = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&data)
            .status()
            .await;
        let _ = chown;
        let status = pg_command(&bin.join("initdb"))
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("running initdb")?;
        if !status.success() {
            bail!("initdb failed: {status}");
        }
        let pg = Self {
            port: free_port()?,
            data,
            bin,
        };
        pg.start_server().await?;
        Ok(pg)
    }

    /// The server's log file (in its data directory, removed with it by
    /// [`PrivatePostgres::remove`]).
    pub fn log_path(&self) -> PathBuf {
        self.data.join("server.log")
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn start_server(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200",
            self.port
        );
        let status = pg_command(&self.bin.join("pg_ctl"))
            .args(["-D"])
            .arg(&self.data)
            .args(["-o", &options, "-l"])
            .arg(self.data.join("server.log"))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("running pg_ctl start")?;
        if !status.success() {
            bail!(
                "pg_ctl start failed: {status}; see {}",
                self.data.join("server.log").display()
            );
        }
        wait_listening(self.port, "postgres").await
    }

    /// Stops the server the way a crash does (`pg_ctl stop -m immediate`: no checkpoint,
    /// crash recovery at the next start) and starts it again after `down`.
    pub async fn crash_and_restart(&self, down: Duration) -> anyhow::Result<()> {
        self.stop("immediate").await?;
        tokio::time::sleep(down).await;
        self.start_server().await
    }

    async fn stop(&self, mode: &str) -> anyhow::Result<()> {
        let status = pg_command(&self.bin.join("pg_ctl"))
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", mode, "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await?;
        if !status.success() {
            bail!("pg_ctl stop failed: {status}");
        }
        Ok(())
    }

    /// Stops the server and removes its files.
    pub async fn remove(self) {
        let _ = self.stop("fast").await;
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The namespaces, bridge and addresses of [`NatsCluster`]: `10.77.0.<n>` for node `n`
/// (each in network namespace `pnats<n>`), `10.77.0.254` for this host on bridge
/// `pnbr0`. The bridge has no uplink and the namespaces no default route, so no packet
/// can leave the machine.
const CLUSTER_SUBNET: &str = "10.77.0";
const CLUSTER_BRIDGE: &str = "pnbr0";

/// Runs `ip` with `args`; an error names the command and its stderr.
async fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes the namespaces, veths and bridge of a cluster (ignoring what is not there),
/// so a test that crashed before its cleanup does not block the next one.
async fn remove_cluster_network(nodes: usize) {
    for n in 1..=nodes {
        let _ = ip(&["netns", "del", &format!("pnats{n}")]).await;
        let _ = ip(&["link", "del", &format!("pnv{n}")]).await;
    }
    let _ = ip(&["link", "del", CLUSTER_BRIDGE]).await;
}

/// A JetStream cluster of three `nats-server`s, each in its own network namespace
/// joined to this host by a veth pair on a private bridge (needs root and iproute2).
/// Portico's processes run on the host and reach the nodes at `10.77.0.1..3`.
pub struct NatsCluster {
    nodes: Vec<Option<Child>>,
    stores: Vec<PathBuf>,
}

impl NatsCluster {
    /// Builds the network and starts the three nodes; returns when every node accepts
    /// clients (the cluster may still be electing its JetStream leader).
    pub async fn start() -> anyhow::Result<Self> {
        const NODES: usize = 3;
        remove_cluster_network(NODES).await;
        ip(&["link", "add", CLUSTER_BRIDGE, "type", "bridge"]).await?;
        ip(&[
            "addr",
            "add",
            &format!("{CLUSTER_SUBNET}.254/24"),
            "dev",
            CLUSTER_BRIDGE,
        ])
        .await?;
        ip(&["link", "set", CLUSTER_BRIDGE, "up"]).await?;
        for n in 1..=NODES {
            let (ns, host_end, ns_end) =
                (format!("pnats{n}"), format!("pnv{n}"), format!("pnp{n}"));
            ip(&["netns", "add", &ns]).await?;
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end,
            ])
            .await?;
            ip(&["link", "set", &ns_end, "netns", &ns]).await?;
            ip(&["link", "set", &host_end, "master", CLUSTER_BRIDGE, "up"]).await?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{CLUSTER_SUBNET}.{n}/24"),
                "dev",
                &ns_end,
            ])
            .await?;
            ip(&["-n", &ns, "link", "set", &ns_end, "up"]).await?;
            ip(&["-n", &ns, "link", "set", "lo", "up"]).await?;
        }
        let run = uuid::Uuid::new_v4().simple().to_string();
        let mut cluster = Self {
            nodes: (0..NODES).map(|_| None).collect(),
            stores: (1..=NODES)
                .map(|n| std::env::temp_dir().join(format!("portico-nats-cluster-{run}-{n}")))
                .collect(),
        };
        for n in 1..=NODES {
            cluster.start_node(n).await?;
        }
        Ok(cluster)
    }

    /// The address of node `n` (1-based).
    pub fn addr(n: usize) -> String {
        format!("{CLUSTER_SUBNET}.{n}")
    }

    /// Every node's client URL, comma separated (what `NATS_URL` takes).
    pub fn url(&self) -> String {
        (1..=self.nodes.len())
            .map(|n| format!("nats://{}:4222", Self::addr(n)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The server name of node `n` (`n1`..`n3`), as JetStream reports leaders.
    pub fn name(n: usize) -> String {
        format!("n{n}")
    }

    /// Starts node `n` (again) in its namespace, with its store.
    pub async fn start_node(&mut self, n: usize) -> anyhow::Result<()> {
        let routes: Vec<String> = (1..=self.nodes.len())
            .filter(|&m| m != n)
            .map(|m| format!("nats://{}:6222", Self::addr(m)))
            .collect();
        let child = Command::new("ip")
            .args(["netns", "exec", &format!("pnats{n}"), "nats-server"])
            .args([
                "-a",
                &Self::addr(n),
                "-p",
                "4222",
                "-n",
                &Self::name(n),
                "-js",
                "-sd",
            ])
            .arg(&self.stores[n - 1])
            .args(["--cluster_name", "portico-e2e"])
            .args(["--cluster", &format!("nats://{}:6222", Self::addr(n))])
            .args(["--routes", &routes.join(",")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server in its namespace")?;
        self.nodes[n - 1] = Some(child);
        let addr = format!("{}:4222", Self::addr(n));
        wait_for(Duration::from_secs(30), || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
        })
        .await
        .with_context(|| format!("cluster node {n} did not start listening"))
    }

    /// Kills node `n` at once (SIGKILL).
    pub async fn kill_node(&mut self, n: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[n - 1].take() {
            child.kill().await?;
        }
        Ok(())
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().flatten() {
            let _ = child.start_kill();
        }
        for store in &self.stores {
            let _ = std::fs::remove_dir_all(store);
        }
        // Synchronous: Drop cannot await.
        for n in 1..=self.nodes.len() {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &format!("pnats{n}")])
                .output();
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &format!("pnv{n}")])
                .output();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", CLUSTER_BRIDGE])
            .output();
    }
}
