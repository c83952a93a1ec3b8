//! Per-topic progress: what the periodic progress shows for each mirrored topic, from
//! two snapshots of the partition counters (pure), and how it is shown: lines that
//! update in place on a terminal, log lines otherwise.

use std::collections::BTreeMap;
use std::time::Duration;

use super::latency::Summary;
use super::partition::Job;
use super::{PartState, PartStats};

/// One topic's figures over an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicLine {
    pub topic: String,
    pub partitions: usize,
    /// Partitions at the source's end (tailing).
    pub tailing: usize,
    /// Partitions stopped by an error.
    pub stopped: usize,
    /// Offsets still to copy, all partitions.
    pub lag: i64,
    pub records_per_sec: f64,
    pub bytes_per_sec: f64,
    /// Replication latency over the interval, when batches were written.
    pub latency: Option<Summary>,
}

impl TopicLine {
    /// The line as the terminal shows it.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{}: {}/{} partitions at the end, lag {} offsets, {:.0} records/s, {:.2} MB/s",
            self.topic,
            self.tailing,
            self.partitions,
            self.lag,
            self.records_per_sec,
            self.bytes_per_sec / 1e6
        );
        if let Some(l) = &self.latency {
            s += &format!(", latency p50 {} ms p99 {} ms", l.p50_ms, l.p99_ms);
        }
        if self.stopped > 0 {
            s += &format!(", {} STOPPED (see the log)", self.stopped);
        }
        s
    }
}

/// Counters per topic at the last snapshot: (records, bytes).
#[derive(Debug, Default)]
pub struct Progress {
    last: BTreeMap<String, (u64, u64)>,
}

impl Progress {
    /// The lines for `parts` (every partition's counters now) after `over` since the
    /// last call; `latency` is each topic's summary over the same interval.
    pub fn lines(
        &mut self,
        parts: &[(Job, PartStats)],
        latency: &BTreeMap<String, Summary>,
        over: Duration,
    ) -> Vec<TopicLine> {
        let mut by_topic: BTreeMap<&str, Vec<&PartStats>> = BTreeMap::new();
        for (job, s) in parts {
            by_topic.entry(&job.source_topic).or_default().push(s);
        }
        let secs = over.as_secs_f64().max(1e-3);
        let mut out = Vec::new();
        for (topic, ps) in by_topic {
            let records: u64 = ps.iter().map(|s| s.records).sum();
            let bytes: u64 = ps.iter().map(|s| s.bytes).sum();
            let (r0, b0) = self
                .last
                .insert(topic.to_string(), (records, bytes))
                .unwrap_or((0, 0));
            out.push(TopicLine {
                topic: topic.to_string(),
                partitions: ps.len(),
                tailing: ps.iter().filter(|s| s.state == PartState::Tailing).count(),
                stopped: ps.iter().filter(|s| s.state == PartState::Stopped).count(),
                lag: ps.iter().map(|s| (s.high_watermark - s.end).max(0)).sum(),
                records_per_sec: records.saturating_sub(r0) as f64 / secs,
                bytes_per_sec: bytes.saturating_sub(b0) as f64 / secs,
                latency: latency.get(topic).copied(),
            });
        }
        out
    }
}

/// The in-place lines of a terminal, and the log lines drawn above them.
static TERMINAL: std::sync::OnceLock<indicatif::MultiProgress> = std::sync::OnceLock::new();

/// Claims stderr for in-place progress lines: from now on, write log lines through
/// [`LogWriter`] so they scroll above the progress lines instead of tearing them.
pub fn use_terminal() {
    TERMINAL.get_or_init(|| {
        indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())
    });
}

/// Writes log output to stderr, above the progress lines when they are shown.
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match TERMINAL.get() {
            Some(t) => t.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Where progress goes: lines in place on a terminal (after [`use_terminal`]), else
/// one log line per topic.
#[derive(Default)]
pub struct Shown {
    bars: BTreeMap<String, indicatif::ProgressBar>,
}

impl Shown {
    /// Whether progress is drawn in place.
    pub fn on_terminal() -> bool {
        TERMINAL.get().is_some()
    }

    pub fn show(&mut self, lines: &[TopicLine]) {
        let Some(term) = TERMINAL.get() else {
            log(lines);
            return;
        };
        for l in lines {
            let bar = self.bars.entry(l.topic.clone()).or_insert_with(|| {
                let b = term.add(indicatif::ProgressBar::new_spinner());
                b.set_style(
                    indicatif::ProgressStyle::with_template("{msg}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                b
            });
            bar.set_message(l.text());
        }
    }
}

/// One log line per topic.
pub fn log(lines: &[TopicLine]) {
    for l in lines {
        tracing::info!(
            topic = %l.topic,
            partitions = l.partitions,
            at_end = l.tailing,
            stopped = l.stopped,
            lag = l.lag,
            records_per_sec = l.records_per_sec as u64,
            mb_per_sec = format!("{:.2}", l.bytes_per_sec / 1e6),
            latency = l.latency.map(|s| s.to_string()).unwrap_or_default(),
            "progress"
        );
    }
}

impl Drop for Shown {
    /// The last figures stay on screen when the mirror stops.
    fn drop(&mut self) {
        for b in self.bars.values() {
            b.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(
        topic: &str,
        p: i32,
        end: i64,
        hw: i64,
        records: u64,
        state: PartState,
    ) -> (Job, PartStats) {
        (
            Job {
                source_topic: topic.into(),
                dest_topic: format!("dc-a.{topic}"),
                partition: p,
            },
            PartStats {
                end,
                high_watermark: hw,
                records,
                bytes: records * 100,
                state,
                ..PartStats::default()
            },
        )
    }

    #[test]
    fn lines_sum_partitions_and_rates_count_from_the_last_snapshot() {
        let mut p = Progress::default();
        let first = [
            part("orders", 0, 50, 100, 50, PartState::CatchingUp),
            part("orders", 1, 80, 80, 80, PartState::Tailing),
            part("pay", 0, 0, 0, 0, PartState::Stopped),
        ];
        let l = p.lines(&first, &BTreeMap::new(), Duration::from_secs(10));
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].partitions, l[0].tailing, l[0].lag), (2, 1, 50));
        assert_eq!(l[0].records_per_sec, 13.0);
        assert_eq!(l[0].bytes_per_sec, 1300.0);
        assert_eq!(l[1].stopped, 1);
        assert!(l[1].text().contains("1 STOPPED"), "{}", l[1].text());
        let second = [
            part("orders", 0, 100, 100, 100, PartState::Tailing),
            part("orders", 1, 90, 90, 90, PartState::Tailing),
        ];
        let lat = BTreeMap::from([(
            "orders".to_string(),
            Summary {
                batches: 3,
                p50_ms: 12,
                p99_ms: 40,
                p999_ms: 40,
                max_ms: 40,
            },
        )]);
        let l = p.lines(&second, &lat, Duration::from_secs(5));
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].tailing, l[0].lag), (2, 0));
        assert_eq!(l[0].records_per_sec, 12.0);
        let t = l[0].text();
        assert!(
            t.starts_with("orders: 2/2 partitions at the end, lag 0 offsets, 12 records/s"),
            "{t}"
        );
        assert!(t.contains("latency p50 12 ms p99 40 ms"), "{t}");
    }
}
