//! Where the CPU went during a measurement: per-process CPU time from `/proc`, split
//! into Portico's services, PostgreSQL, nats-server, the bench itself (its sink
//! threads apart) and everything else on the machine, plus the machine's total busy
//! time from `/proc/stat`. On a shared 2-core machine this is what shows whether a
//! rate is limited by Portico, by its dependencies, by the load generator or by a
//! neighbour.

use std::collections::HashMap;
use std::time::Instant;

/// Kernel clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// Who a process belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// `portico-gateway`.
    Gateway,
    /// `portico-webhook-dispatcher`.
    Dispatcher,
    /// `portico-batch-processor`.
    BatchProcessor,
    /// PostgreSQL backends serving this run's databases (all backends when the
    /// bench did not start the system and cannot tell Portico's database apart).
    Postgres,
    /// PostgreSQL's background processes (WAL writer, checkpointer, autovacuum, ...),
    /// shared by every database on the server.
    PostgresBackground,
    /// `nats-server`.
    Nats,
    /// This bench process, without its sink threads.
    BenchLoad,
    /// The bench's HTTP sink threads.
    BenchSink,
    /// Anything else running on the machine.
    Other,
}

impl Owner {
    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            Owner::Gateway => "gateway",
            Owner::Dispatcher => "webhook-dispatcher",
            Owner::BatchProcessor => "batch-processor",
            Owner::Postgres => "postgres (this run)",
            Owner::PostgresBackground => "postgres background",
            Owner::Nats => "nats-server",
            Owner::BenchLoad => "bench load",
            Owner::BenchSink => "bench sink",
            Owner::Other => "other (neighbours)",
        }
    }
}

/// Which pids are Portico's services (known when the bench started them), and how to
/// tell this run's PostgreSQL backends from a neighbour's.
#[derive(Debug, Clone, Default)]
pub struct Pids {
    /// pid -> service.
    pub services: HashMap<u32, Owner>,
    /// A backend whose process title names a database containing this text serves
    /// this run; `None` counts every backend as this run's.
    pub database_marker: Option<String>,
}

/// Who a `postgres` process works for, from its process title
/// (`postgres: <user> <database> <host> <state>` for a backend).
fn postgres_owner(pid: &str, marker: Option<&str>) -> Owner {
    let title = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    let words: Vec<&str> = title.split_whitespace().collect();
    // A backend's title: "postgres: [cluster:] user database host(port) state"; the
    // database is the word before the client address.
    let database = words
        .iter()
        .position(|w| w.contains('(') || *w == "[local]")
        .filter(|i| *i >= 2 && words[0] == "postgres:")
        .map(|i| words[i - 1]);
    match (database, marker) {
        (None, _) => Owner::PostgresBackground,
        (Some(_), None) => Owner::Postgres,
        (Some(db), Some(m)) if db.contains(m) => Owner::Postgres,
        (Some(_), Some(_)) => Owner::Other,
    }
}

/// CPU counters at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    /// pid -> (owner, ticks).
    processes: HashMap<u32, (Owner, u64)>,
    /// Machine busy and total ticks.
    machine: MachineTicks,
    /// The sink threads' own CPU time, nanoseconds.
    sink_ns: u64,
}

fn read_proc_stat(pid: &str) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let rest: Vec<&str> = text[close + 2..].split(' ').collect();
    // After the comm: state(0) ppid(1) ... utime(11) stime(12). Children's time
    // (cutime) is left out: the postmaster reaps every database's backends, and a
    // neighbour's long session ending would land in this run's window.
    let ticks = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    Some((comm, ticks))
}

/// The machine's CPU ticks (all cores) from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
struct MachineTicks {
    /// Not idle (user, nice, system, irq, softirq, steal).
    busy: u64,
    /// Everything.
    total: u64,
    /// Interrupt and softirq work (loopback networking runs here), charged to no process.
    irq: u64,
    /// Taken by the hypervisor.
    steal: u64,
}

fn machine_ticks() -> MachineTicks {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return MachineTicks::default();
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let total: u64 = v.iter().take(8).sum();
    MachineTicks {
        busy: total.saturating_sub(at(3) + at(4)),
        total,
        irq: at(5) + at(6),
        steal: at(7),
    }
}

/// CPU time (ns) a thread of this process has used, from its schedstat.
pub fn thread_cpu_ns(tid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The calling thread's id (from the `/proc/thread-self` link).
pub fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Every process with its owner and CPU ticks.
fn processes(pids: &Pids) -> Vec<(u32, Owner, u64)> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        let Some((comm, ticks)) = read_proc_stat(name) else {
            continue;
        };
        let by_name = pids.services.is_empty();
        let owner = if pid == me {
            Owner::BenchLoad
        } else if let Some(o) = pids.services.get(&pid) {
            *o
        } else if by_name && comm == "portico-gateway" {
            Owner::Gateway
        } else if by_name && comm.starts_with("portico-webhook") {
            Owner::Dispatcher
        } else if by_name && comm.starts_with("portico-batch") {
            Owner::BatchProcessor
        } else if comm == "postgres" || comm == "postmaster" {
            postgres_owner(name, pids.database_marker.as_deref())
        } else if comm == "nats-server" {
            Owner::Nats
        } else {
            Owner::Other
        };
        out.push((pid, owner, ticks));
    }
    out
}

/// The pids of one owner now (e.g. this run's PostgreSQL backends, for a profiler).
pub fn pids_of(owner: Owner, pids: &Pids) -> Vec<u32> {
    processes(pids)
        .into_iter()
        .filter(|(_, o, _)| *o == owner)
        .map(|(pid, _, _)| pid)
        .collect()
}

impl Snapshot {
    /// Reads every process's counters now.
    pub fn take(pids: &Pids, sink_threads: &[u32]) -> Self {
        Self {
            at: Instant::now(),
            processes: processes(pids)
                .into_iter()
                .map(|(pid, owner, ticks)| (pid, (owner, ticks)))
                .collect(),
            machine: machine_ticks(),
            sink_ns: sink_threads.iter().map(|t| thread_cpu_ns(*t)).sum(),
        }
    }
}

/// CPU used between two snapshots.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Usage {
    /// Wall-clock seconds between the snapshots.
    pub wall_secs: f64,
    /// CPU seconds by owner (sorted by owner).
    pub by_owner: Vec<(Owner, f64)>,
    /// Machine busy fraction (0..=1 of all cores).
    pub machine_busy: f64,
    /// CPU seconds of interrupt and softirq work (loopback TCP is processed there).
    pub irq_secs: f64,
    /// CPU seconds taken by the hypervisor.
    pub steal_secs: f64,
    /// Cores of the machine.
    pub cores: usize,
}

impl Usage {
    /// The CPU time used between `start` and `end`.
    pub fn between(start: &Snapshot, end: &Snapshot) -> Self {
        let mut by: HashMap<Owner, f64> = HashMap::new();
        for (pid, (owner, ticks)) in &end.processes {
            let before = start
                .processes
                .get(pid)
                .filter(|(o, _)| o == owner)
                .map(|(_, t)| *t)
                .unwrap_or(0);
            let secs = ticks.saturating_sub(before) as f64 / TICKS_PER_SEC;
            *by.entry(*owner).or_default() += secs;
        }
        let sink = end.sink_ns.saturating_sub(start.sink_ns) as f64 / 1e9;
        if sink > 0.0 {
            let load = by.entry(Owner::BenchLoad).or_default();
            *load = (*load - sink).max(0.0);
            by.insert(Owner::BenchSink, sink);
        }
        // Processes that ended inside the window (a neighbour's compiler, say) are
        // missing from the end snapshot; the machine's busy time still has them, so
        // "other" is whatever busy time no known owner accounts for.
        let delta = |f: fn(&MachineTicks) -> u64| {
            f(&end.machine).saturating_sub(f(&start.machine)) as f64 / TICKS_PER_SEC
        };
        let irq_secs = delta(|m| m.irq);
        let steal_secs = delta(|m| m.steal);
        let busy_secs = delta(|m| m.busy) - irq_secs - steal_secs;
        let known: f64 = by
            .iter()
            .filter(|(o, _)| **o != Owner::Other)
            .map(|(_, s)| *s)
            .sum();
        let other = by.entry(Owner::Other).or_default();
        *other = other.max(busy_secs - known).max(0.0);
        let mut by_owner: Vec<(Owner, f64)> = by.into_iter().collect();
        by_owner.sort_by_key(|(o, _)| *o);
        let total = end.machine.total.saturating_sub(start.machine.total).max(1);
        Self {
            wall_secs: end.at.duration_since(start.at).as_secs_f64(),
            by_owner,
            machine_busy: end.machine.busy.saturating_sub(start.machine.busy) as f64 / total as f64,
            irq_secs,
            steal_secs,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }

    /// CPU seconds of one owner.
    pub fn secs(&self, owner: Owner) -> f64 {
        self.by_owner
            .iter()
            .find(|(o, _)| *o == owner)
            .map(|(_, s)| *s)
            .unwrap_or(0.0)
    }

    /// CPU seconds of this run: every owner but the neighbours, plus interrupt work
    /// (loopback networking).
    pub fn run_secs(&self) -> f64 {
        self.by_owner
            .iter()
            .filter(|(o, _)| *o != Owner::Other)
            .map(|(_, s)| *s)
            .sum::<f64>()
            + self.irq_secs
    }

    /// Units per second this machine could sustain if it ran nothing but this run:
    /// its cores divided by this run's CPU per unit (a model, not a measurement; it
    /// shows what neighbours took).
    pub fn alone_capacity(&self, units: u64) -> Option<f64> {
        let secs = self.run_secs();
        (secs > 0.0 && units > 0).then(|| self.cores as f64 * units as f64 / secs)
    }

    /// CPU seconds of Portico's three services together.
    pub fn portico_secs(&self) -> f64 {
        self.secs(Owner::Gateway) + self.secs(Owner::Dispatcher) + self.secs(Owner::BatchProcessor)
    }

    /// Human lines: each owner's CPU seconds, share of the machine and, with `per`
    /// units of work, microseconds of CPU per unit.
    pub fn lines(&self, per: Option<(u64, &str)>) -> Vec<String> {
        let capacity = self.wall_secs * self.cores as f64;
        let mut out = vec![format!(
            "machine busy {:.0}% of {} cores over {:.1} s",
            self.machine_busy * 100.0,
            self.cores,
            self.wall_secs
        )];
        for (owner, secs) in self.by_owner.iter().filter(|(_, s)| *s >= 0.005) {
            let mut line = format!(
                "  {:<20} {:>7.2} CPU-s  {:>5.1}% of machine",
                owner.label(),
                secs,
                if capacity > 0.0 {
                    secs / capacity * 100.0
                } else {
                    0.0
                }
            );
            if let Some((n, unit)) = per
                && n > 0
            {
                line.push_str(&format!("  {:>8.1} us/{unit}", secs * 1e6 / n as f64));
            }
            out.push(line);
        }
        for (label, secs) in [
            ("kernel irq/softirq", self.irq_secs),
            ("hypervisor steal", self.steal_secs),
        ] {
            if secs >= 0.005 {
                out.push(format!(
                    "  {label:<20} {secs:>7.2} CPU-s  {:>5.1}% of machine",
                    if capacity > 0.0 {
                        secs / capacity * 100.0
                    } else {
                        0.0
                    }
                ));
            }
        }
        out
    }
}
