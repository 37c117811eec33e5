//! The user-side pipeline alone: runs the criterion benchmark `oomtrace/benches/pipeline.rs`
//! and reads its throughput (events per second of one core's CPU time).

use anyhow::{Context as _, Result, bail};

/// Criterion's `thrpt: [low mid high]` line: the middle estimate, in events per second.
pub fn parse_throughput(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("thrpt:"))?;
    let inside = line.split('[').nth(1)?.split(']').next()?;
    let words: Vec<&str> = inside.split_whitespace().collect();
    // [a unit b unit c unit]
    let (value, unit) = (words.get(2)?, words.get(3)?);
    let scale = match *unit {
        "elem/s" => 1.0,
        "Kelem/s" => 1e3,
        "Melem/s" => 1e6,
        "Gelem/s" => 1e9,
        _ => return None,
    };
    Some(value.parse::<f64>().ok()? * scale)
}

/// `cargo bench -p oomtrace --bench pipeline`: events per second per core.
pub fn run() -> Result<f64> {
    let out = crate::cargo()
        .args(["bench", "-p", "oomtrace", "--bench", "pipeline"])
        .output()
        .context("cannot run cargo bench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the pipeline benchmark failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_throughput(&text)
        .with_context(|| format!("the pipeline benchmark printed no throughput: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_middle_estimate() {
        let text = "pipeline/decode+model   time:   [103.39 ms 120.75 ms 145.45 ms]\n                        thrpt:  [6.8751 Melem/s 8.2816 Melem/s 9.6725 Melem/s]\n";
        let got = parse_throughput(text).unwrap();
        assert!((got - 8.2816e6).abs() < 1.0, "{got}");
        assert_eq!(parse_throughput("no figures"), None);
    }
}
