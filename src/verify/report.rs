//! Output of `wanmirror diff`: lines for people, JSON for programs, and the progress
//! bar shown on a terminal.

use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::diff::{PartitionDiff, Progress};

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub source_cluster: String,
    pub dest_cluster: String,
    pub leaf_offsets: i64,
    pub identical: bool,
    pub partitions: Vec<PartitionDiff>,
    /// Through a peer: the UDP bytes the comparison moved over the WAN, both ways,
    /// QUIC and TLS included (hashes, node requests, narrowed records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_bytes: Option<u64>,
}

impl Report {
    pub fn new(
        source_cluster: &str,
        dest_cluster: &str,
        leaf_offsets: i64,
        partitions: Vec<PartitionDiff>,
    ) -> Report {
        Report {
            source_cluster: source_cluster.to_string(),
            dest_cluster: dest_cluster.to_string(),
            leaf_offsets,
            identical: partitions.iter().all(|p| p.identical),
            partitions,
            peer_bytes: None,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for p in &self.partitions {
            let verdict = if p.identical {
                "identical".to_string()
            } else if p.ranges.is_empty() {
                "records identical, log bounds differ".to_string()
            } else {
                format!("{} range(s) differ", p.ranges.len())
            };
            out.push_str(&format!(
                "{}:{}/{} vs {}:{}/{}  offsets {}..{} ({} leaves): {verdict}\n",
                self.source_cluster,
                p.source_topic,
                p.partition,
                self.dest_cluster,
                p.dest_topic,
                p.partition,
                p.from,
                p.to,
                p.leaves
            ));
            for r in &p.ranges {
                out.push_str(&format!(
                    "  offsets {}..{}: first difference at {}, last at {}; {} records in the source, {} in the destination\n",
                    r.from, r.to, r.first, r.last, r.source_records, r.dest_records
                ));
            }
            for n in &p.notes {
                out.push_str(&format!("  note: {n}\n"));
            }
        }
        let differ = self.partitions.iter().filter(|p| !p.identical).count();
        out.push_str(&format!(
            "{} partition(s) compared, {} identical, {} differ\n",
            self.partitions.len(),
            self.partitions.len() - differ,
            differ
        ));
        if let Some(b) = self.peer_bytes {
            out.push_str(&format!(
                "through the peer: {b} bytes crossed the WAN (hashes, requests, narrowed records)\n"
            ));
        }
        out
    }
}

/// A progress bar over offsets read (both sides), or nothing when not on a terminal.
pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn new(show: bool) -> Arc<Bar> {
        Arc::new(Bar(show.then(|| {
            let b = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} reading {pos}/{len} offsets ({per_sec}, eta {eta}) {wide_bar}",
            ) {
                b.set_style(style);
            }
            b
        })))
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn add_total(&self, offsets: u64) {
        if let Some(b) = &self.0 {
            b.inc_length(offsets);
        }
    }

    fn advance(&self, offsets: u64) {
        if let Some(b) = &self.0 {
            b.inc(offsets);
        }
    }
}
