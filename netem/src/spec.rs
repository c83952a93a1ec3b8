//! Command-line link specification: values per direction, parsing of units.

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::link::Params;

/// Impairments; each takes one value for both directions or `SRC_TO_DST/DST_TO_SRC`.
#[derive(Debug, Clone, Args)]
pub struct LinkSpec {
    /// One-way delay, e.g. 50ms (RTT is the sum of both directions).
    #[arg(long, default_value = "0ms")]
    pub delay: String,
    /// Jitter: each packet's delay varies uniformly by up to ± this; never reorders.
    #[arg(long, default_value = "0ms")]
    pub jitter: String,
    /// Random loss, e.g. 1% or 0.01.
    #[arg(long, default_value = "0%")]
    pub loss: String,
    /// Rate limit, e.g. 200mbit, 1gbit; 0 = unlimited.
    #[arg(long, default_value = "0")]
    pub rate: String,
    /// Bottleneck queue size, e.g. 8MiB.
    #[arg(long, default_value = "8MiB")]
    pub queue: String,
}

fn split(v: &str) -> (&str, &str) {
    match v.split_once('/') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (v.trim(), v.trim()),
    }
}

pub fn parse_duration_ns(s: &str) -> Result<u64> {
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e9)
    } else if s == "0" {
        ("0", 1.0)
    } else {
        bail!("duration {s:?} needs a unit: us, ms or s")
    };
    let v: f64 = num.parse().with_context(|| format!("bad duration {s:?}"))?;
    if v < 0.0 {
        bail!("duration {s:?} is negative");
    }
    Ok((v * mult) as u64)
}

pub fn parse_loss(s: &str) -> Result<f64> {
    let v = match s.strip_suffix('%') {
        Some(n) => n.parse::<f64>().map(|x| x / 100.0),
        None => s.parse::<f64>(),
    }
    .with_context(|| format!("bad loss {s:?}"))?;
    if !(0.0..=1.0).contains(&v) {
        bail!("loss {s:?} must be between 0 and 100%");
    }
    Ok(v)
}

pub fn parse_rate_bps(s: &str) -> Result<u64> {
    let l = s.to_ascii_lowercase();
    let (num, mult) = if let Some(n) = l.strip_suffix("gbit") {
        (n.to_string(), 1e9)
    } else if let Some(n) = l.strip_suffix("mbit") {
        (n.to_string(), 1e6)
    } else if let Some(n) = l.strip_suffix("kbit") {
        (n.to_string(), 1e3)
    } else if let Some(n) = l.strip_suffix("bit") {
        (n.to_string(), 1.0)
    } else if l == "0" {
        ("0".into(), 1.0)
    } else {
        bail!("rate {s:?} needs a unit: bit, kbit, mbit or gbit")
    };
    let v: f64 = num.parse().with_context(|| format!("bad rate {s:?}"))?;
    Ok((v * mult) as u64)
}

pub fn parse_bytes(s: &str) -> Result<u64> {
    let (num, mult) = if let Some(n) = s.strip_suffix("GiB") {
        (n, 1u64 << 30)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = s.strip_suffix("KiB") {
        (n, 1 << 10)
    } else if let Some(n) = s.strip_suffix('B') {
        (n, 1)
    } else {
        (s, 1)
    };
    let v: f64 = num.parse().with_context(|| format!("bad size {s:?}"))?;
    Ok((v * mult as f64) as u64)
}

impl LinkSpec {
    /// Parameters for (source -> destination, destination -> source).
    pub fn params(&self) -> Result<(Params, Params)> {
        let (d1, d2) = split(&self.delay);
        let (j1, j2) = split(&self.jitter);
        let (l1, l2) = split(&self.loss);
        let (r1, r2) = split(&self.rate);
        let (q1, q2) = split(&self.queue);
        let one = |d, j, l, r, q| -> Result<Params> {
            Ok(Params {
                delay_ns: parse_duration_ns(d)?,
                jitter_ns: parse_duration_ns(j)?,
                loss: parse_loss(l)?,
                rate_bps: parse_rate_bps(r)?,
                queue_bytes: parse_bytes(q)?,
            })
        };
        Ok((one(d1, j1, l1, r1, q1)?, one(d2, j2, l2, r2, q2)?))
    }

    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--delay".into(),
            self.delay.clone(),
            "--jitter".into(),
            self.jitter.clone(),
            "--loss".into(),
            self.loss.clone(),
            "--rate".into(),
            self.rate.clone(),
            "--queue".into(),
            self.queue.clone(),
        ]
    }
}

/// The same impairments as `tc qdisc ... netem` arguments.
pub fn netem_args(p: &Params) -> Vec<String> {
    let mut a = vec![
        "delay".into(),
        format!("{}us", p.delay_ns / 1000),
        format!("{}us", p.jitter_ns / 1000),
        "loss".into(),
        format!("{}%", p.loss * 100.0),
    ];
    if p.rate_bps > 0 {
        a.extend(["rate".into(), format!("{}bit", p.rate_bps)]);
    }
    // netem's limit counts packets; assume full-size packets.
    a.extend(["limit".into(), (p.queue_bytes / 1500).max(1).to_string()]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_per_direction_values() {
        let s = LinkSpec {
            delay: "50ms/60ms".into(),
            jitter: "1ms".into(),
            loss: "1%".into(),
            rate: "200mbit".into(),
            queue: "8MiB".into(),
        };
        let (ab, ba) = s.params().unwrap();
        assert_eq!((ab.delay_ns, ba.delay_ns), (50_000_000, 60_000_000));
        assert_eq!(ab.loss, 0.01);
        assert_eq!(ab.rate_bps, 200_000_000);
        assert_eq!(ab.queue_bytes, 8 << 20);
    }

    #[test]
    fn refuses_bad_values_with_the_value_named() {
        assert!(parse_duration_ns("50")
            .unwrap_err()
            .to_string()
            .contains("\"50\""));
        assert!(parse_loss("150%").is_err());
        assert!(parse_rate_bps("fast").is_err());
    }
}
