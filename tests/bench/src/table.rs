//! The one markdown table `make bench` prints.

use std::fmt::Write as _;
use std::time::Duration;

use crate::machine::Machine;

/// Whether a figure meets its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Meets the target.
    Pass,
    /// Misses the target.
    Miss,
    /// A reference figure without a target of its own (the RSA bound, a figure that a ratio or
    /// difference in another row is computed from).
    Info,
    /// Could not be measured (feature missing or the measurement failed).
    None,
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What is measured.
    pub figure: String,
    /// The measured figure, with its unit.
    pub measured: String,
    /// The target from issue 10.
    pub target: String,
    /// Pass, miss or neither.
    pub verdict: Verdict,
    /// How it was measured, or why it could not be.
    pub note: String,
}

impl Row {
    /// A figure compared with its target.
    pub fn check(figure: &str, measured: String, target: &str, pass: bool, note: &str) -> Row {
        Row {
            figure: figure.into(),
            measured,
            target: target.into(),
            verdict: if pass { Verdict::Pass } else { Verdict::Miss },
            note: note.into(),
        }
    }

    /// A reference figure (no pass/miss of its own).
    pub fn info(figure: &str, measured: String, target: &str, note: &str) -> Row {
        Row {
            figure: figure.into(),
            measured,
            target: target.into(),
            verdict: Verdict::Info,
            note: note.into(),
        }
    }

    /// A figure whose feature exists but whose driver (or end-to-end path) is not ready; the
    /// note says what is missing.
    pub fn not_yet(figure: &str, target: &str, note: &str) -> Row {
        Row {
            figure: figure.into(),
            measured: "not measurable yet".into(),
            target: target.into(),
            verdict: Verdict::None,
            note: note.into(),
        }
    }

    /// A measurement that failed; the error goes into the note.
    pub fn failed(figure: &str, error: &str) -> Row {
        Row {
            figure: figure.into(),
            measured: "measurement failed".into(),
            target: String::new(),
            verdict: Verdict::None,
            note: error.replace(['\n', '|'], " "),
        }
    }
}

/// Renders the machine line, the table and the run time as markdown.
pub fn render(machine: &Machine, rows: &[Row], took: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Machine: {}, {} cores, {} · run took {:.0} s\n",
        machine.cpu,
        machine.cores,
        machine.date,
        took.as_secs_f64()
    );
    out.push_str("| # | figure | measured | target | result | how |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for (i, r) in rows.iter().enumerate() {
        let result = match r.verdict {
            Verdict::Pass => "pass",
            Verdict::Miss => "**miss**",
            Verdict::Info => "ref",
            Verdict::None => "—",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            i + 1,
            r.figure,
            r.measured,
            r.target,
            result,
            r.note
        );
    }
    out
}

/// `12345.6` -> `12,346`.
pub fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in the most readable unit (µs below 1 ms, ms below 10 s).
pub fn dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else if us < 10_000_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.1} s", us / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(dur(Duration::from_micros(1500)), "1.50 ms");
        assert_eq!(dur(Duration::from_nanos(2500)), "2.5 µs");
    }
}
