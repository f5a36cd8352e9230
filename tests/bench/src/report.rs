//! What a scenario found: named figures with their unit, the target and the
//! comparison number beside each, notes on how they were measured, and where the CPU
//! went. Printed for people, or as one JSON document (`--json`).

use serde::Serialize;

use crate::cpu::Usage;
use crate::machine::Machine;

/// How a figure compares to its target.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// The value must be at least this.
    AtLeast(f64),
    /// The value must be below this.
    Below(f64),
    /// The value must be at most this.
    AtMost(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(t) => value >= t,
            Goal::Below(t) => value < t,
            Goal::AtMost(t) => value <= t,
        }
    }
}

/// One measured number.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable machine-readable key (e.g. `single.deliveries_per_sec`).
    pub key: String,
    /// What it is, for people.
    pub label: String,
    /// The number.
    pub value: f64,
    /// Its unit (`/s`, `ms`, `MiB`, `%`, ...).
    pub unit: String,
    /// The target, if it sets one.
    pub goal: Option<Goal>,
    /// Whether the target is met.
    pub met: Option<bool>,
    /// The comparison number (the leading webhook server), as text.
    pub reference: Option<String>,
}

/// The result of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Its parameters, for people.
    pub title: String,
    /// The numbers.
    pub figures: Vec<Figure>,
    /// How they were measured, and anything odd.
    pub notes: Vec<String>,
    /// CPU used during the measurement, by owner, per unit of work when given.
    pub cpu: Vec<CpuSection>,
}

/// CPU use during one measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct CpuSection {
    /// Which phase.
    pub phase: String,
    /// Units of work done in it and their name (for CPU per unit).
    pub units: Option<(u64, String)>,
    /// The usage.
    pub usage: Usage,
}

impl Report {
    /// An empty report.
    pub fn new(scenario: &str, title: impl Into<String>) -> Self {
        Self {
            scenario: scenario.into(),
            title: title.into(),
            figures: Vec::new(),
            notes: Vec::new(),
            cpu: Vec::new(),
        }
    }

    /// Adds a figure without a target.
    pub fn fig(&mut self, key: &str, label: &str, value: f64, unit: &str) -> &mut Figure {
        self.figures.push(Figure {
            key: key.into(),
            label: label.into(),
            value,
            unit: unit.into(),
            goal: None,
            met: None,
            reference: None,
        });
        self.figures.last_mut().expect("just pushed")
    }

    /// Adds a note.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Adds a CPU section.
    pub fn cpu(&mut self, phase: &str, units: Option<(u64, &str)>, usage: Usage) {
        self.cpu.push(CpuSection {
            phase: phase.into(),
            units: units.map(|(n, u)| (n, u.to_owned())),
            usage,
        });
    }

    /// A figure's value by key.
    pub fn value(&self, key: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.key == key).map(|f| f.value)
    }

    /// Human text.
    pub fn render(&self) -> String {
        let mut out = format!("\n== {}: {} ==\n", self.scenario, self.title);
        for f in &self.figures {
            let mut line = format!(
                "  {:<58} {:>12} {:<9}",
                f.label,
                format_value(f.value),
                f.unit
            );
            if let Some(goal) = f.goal {
                let target = match goal {
                    Goal::AtLeast(t) => format!(">= {}", format_value(t)),
                    Goal::Below(t) => format!("< {}", format_value(t)),
                    Goal::AtMost(t) => format!("<= {}", format_value(t)),
                };
                let verdict = if f.met == Some(true) {
                    "met"
                } else {
                    "NOT met"
                };
                line.push_str(&format!(" target {target} ({verdict})"));
            }
            if let Some(r) = &f.reference {
                line.push_str(&format!("; {r}"));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for section in &self.cpu {
            out.push_str(&format!("  CPU during {}: ", section.phase));
            let per = section.units.as_ref().map(|(n, u)| (*n, u.as_str()));
            let lines = section.usage.lines(per);
            for (i, l) in lines.iter().enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                out.push_str(l);
                out.push('\n');
            }
        }
        for n in &self.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        out
    }
}

impl Figure {
    /// Sets the target and whether it is met.
    pub fn goal(&mut self, goal: Goal) -> &mut Self {
        self.goal = Some(goal);
        self.met = Some(goal.met(self.value));
        self
    }

    /// Sets the comparison text.
    pub fn reference(&mut self, text: &str) -> &mut Self {
        self.reference = Some(text.into());
        self
    }
}

/// A number with thousands separators, or a few decimals when small.
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v.abs() >= 1000.0 {
        let n = v.round() as i64;
        let digits = n.abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 { format!("-{out}") } else { out }
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The whole run: the command, the machine and every scenario's report.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The command line.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// Whether the bench started the system (and from which binaries) or used a running one.
    pub system: String,
    /// One report per scenario.
    pub reports: Vec<Report>,
}
