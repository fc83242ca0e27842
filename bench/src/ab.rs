//! `wasmvisor-bench --ab KEY=VALUE`: a `[pool]` setting measured against
//! the defaults in one run. Hosts with the defaults (A) and with the setting
//! (B) take turns, round after round, so a noisy machine weighs on both
//! alike; each figure is the median of its rounds.

use crate::report::Report;
use crate::workloads::{self, Options};
use anyhow::{Result, bail};
use serde::Serialize;
use std::fmt::Write;

/// The settings `--ab` accepts, with what each changes: the `[pool]` keys
/// of the config file.
pub const SETTINGS: &[(&str, &str)] = &[
    (
        "keep_resident_kib",
        "N: KiB a freed pool slot keeps resident for the next instance",
    ),
    (
        "stack_kib",
        "N: KiB of native stack each instance's calls run on",
    ),
];

/// The workloads an A/B run measures unless `--only` names others.
const DEFAULT_WORKLOADS: &[&str] = &["spawn", "calls", "calls4", "casts", "crash", "cpu"];

/// One `KEY=VALUE`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    /// The key, from [`SETTINGS`].
    pub key: String,
    /// Its value.
    pub value: String,
}

impl Setting {
    /// Parses `KEY=VALUE`.
    pub fn parse(text: &str) -> Result<Setting> {
        let Some((key, value)) = text.split_once('=') else {
            bail!("--ab takes KEY=VALUE, got {text:?}");
        };
        let setting = Setting {
            key: key.trim().to_string(),
            value: value.trim().to_string(),
        };
        setting.apply(&mut Options::default())?;
        Ok(setting)
    }

    fn apply(&self, opts: &mut Options) -> Result<()> {
        let number = || match self.value.parse::<u32>() {
            Ok(n) => Ok(n),
            Err(_) => bail!("{}={}: expected a number", self.key, self.value),
        };
        match self.key.as_str() {
            "keep_resident_kib" => opts.pool.keep_resident_kib = number()?,
            "stack_kib" => opts.pool.stack_kib = number()?,
            other => {
                let known: Vec<_> = SETTINGS.iter().map(|(k, _)| *k).collect();
                bail!(
                    "unknown --ab setting {other:?}; known: {}",
                    known.join(", ")
                )
            }
        }
        // The same ranges as the config file's.
        let text = format!(
            "[pool]\nstack_kib = {}\nkeep_resident_kib = {}\n",
            opts.pool.stack_kib, opts.pool.keep_resident_kib
        );
        wasmvisor::Config::parse(&text)?;
        Ok(())
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// One figure of one setting: A (defaults) and B (the setting).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The setting, `KEY=VALUE`.
    pub setting: String,
    /// The report key.
    pub metric: &'static str,
    /// Median over the rounds with the defaults.
    pub a: f64,
    /// Median over the rounds with the setting.
    pub b: f64,
}

/// Everything an A/B run measured.
#[derive(Debug, Clone, Serialize)]
pub struct AbReport {
    /// Rounds per side.
    pub rounds: usize,
    /// One row per setting and figure.
    pub rows: Vec<Row>,
}

/// A figure of a report: (workload, report key, how to read it).
type Metric = (&'static str, &'static str, fn(&Report) -> f64);

/// The figures an A/B compares, by workload.
const METRICS: &[Metric] = &[
    ("spawn", "spawn_us", |r| r.spawn_us),
    ("spawn", "rss_per_instance_kib", |r| r.rss_per_instance_kib),
    ("spawn", "kept_per_freed_instance_kib", |r| {
        r.kept_per_freed_instance_kib
    }),
    ("calls", "call_1c_per_s", |r| r.call_1c_per_s),
    ("calls", "call_p50_us", |r| r.call_p50_us),
    ("calls", "call_p99_us", |r| r.call_p99_us),
    ("calls4", "call_4c_per_s", |r| r.call_4c_per_s),
    ("casts", "cast_per_s", |r| r.cast_per_s),
    ("crash", "restart_p50_us", |r| r.restart_p50_us),
    ("crash", "restart_p99_us", |r| r.restart_p99_us),
    ("cpu", "cpu_1e7_ms", |r| r.cpu_1e7_ms),
    ("reload", "reload_1000_ms", |r| r.reload_1000_ms),
];

/// Runs each setting against the defaults, `rounds` times each, alternating.
pub async fn run(base: Options, settings: &[Setting], rounds: usize) -> Result<AbReport> {
    let mut base = base;
    base.native = false;
    if base.only.is_empty() {
        base.only = DEFAULT_WORKLOADS.iter().map(|w| w.to_string()).collect();
    }
    let mut rows = Vec::new();
    for setting in settings {
        let mut with = base.clone();
        setting.apply(&mut with)?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            eprintln!("bench --ab {setting}: round {} of {rounds}", round + 1);
            a.push(workloads::run(base.clone()).await?);
            b.push(workloads::run(with.clone()).await?);
        }
        for (workload, metric, get) in METRICS {
            if base.wants(workload) {
                rows.push(Row {
                    setting: setting.to_string(),
                    metric,
                    a: median(a.iter().map(get).collect()),
                    b: median(b.iter().map(get).collect()),
                });
            }
        }
    }
    Ok(AbReport { rounds, rows })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

impl AbReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "A = the defaults, B = the setting; medians of {} rounds, A and B alternating\n",
            self.rounds
        );
        let _ = writeln!(
            out,
            "{:<26} {:<22} {:>14} {:>14} {:>7}",
            "setting", "figure", "A", "B", "B/A"
        );
        for r in &self.rows {
            let ratio = if r.a > 0.0 {
                format!("{:.2}x", r.b / r.a)
            } else {
                "-".into()
            };
            let _ = writeln!(
                out,
                "{:<26} {:<22} {:>14} {:>14} {:>7}",
                r.setting,
                r.metric,
                format_value(r.metric, r.a),
                format_value(r.metric, r.b),
                ratio
            );
        }
        out
    }
}

fn format_value(metric: &str, v: f64) -> String {
    if metric.ends_with("_per_s") {
        format!("{v:.0}/s")
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_bad_ones_say_what_is_known() {
        assert_eq!(
            Setting::parse("keep_resident_kib=64").unwrap().to_string(),
            "keep_resident_kib=64"
        );
        let err = Setting::parse("keep_resident_kib=lots")
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a number"), "{err}");
        let err = Setting::parse("turbo=true").unwrap_err().to_string();
        assert!(err.contains("known: keep_resident_kib, stack_kib"), "{err}");
        assert!(Setting::parse("keep_resident_kib").is_err());
        assert!(
            Setting::parse("stack_kib=1").is_err(),
            "out of the config's range"
        );
        let mut opts = Options::default();
        Setting::parse("stack_kib=512")
            .unwrap()
            .apply(&mut opts)
            .unwrap();
        assert_eq!(opts.pool.stack_kib, 512);
    }

    #[test]
    fn the_median_of_rounds() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![]), 0.0);
    }
}
