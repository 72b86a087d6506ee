//! Progress events the page can draw: stage, records and bytes done out of the total,
//! percentage and an ETA computed from the upload rate so far. Pure arithmetic over a clock
//! reading passed in.

use serde::Serialize;

/// The stages of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify), tsify(missing_as_null))]
pub enum Stage {
    /// Reading localStorage and sorting keys by kind.
    Inspect,
    /// Sealing and storing the backup (before anything is parsed or sent).
    Backup,
    /// Parsing and validating records.
    Validate,
    /// Sending batches.
    Upload,
    /// Comparing the server's tallies with ours.
    Verify,
    /// Finished.
    Done,
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify), tsify(missing_as_null))]
pub struct Progress {
    /// The current stage.
    pub stage: Stage,
    /// Records acknowledged by the server.
    pub records_done: u64,
    /// Records to send in this migration.
    pub records_total: u64,
    /// Batch bytes acknowledged.
    pub bytes_done: u64,
    /// Batch bytes to send.
    pub bytes_total: u64,
    /// 0 to 100.
    pub percent: f64,
    /// Estimated milliseconds left, once there is a rate to go by.
    pub eta_ms: Option<u64>,
}

/// Turns counters into [`Progress`] events.
#[derive(Debug, Clone)]
pub struct Meter {
    records_total: u64,
    bytes_total: u64,
    /// When the upload (re)started and how many bytes were already done then: the rate only
    /// counts bytes sent by this run, so a resumed run does not look infinitely fast.
    upload_start: Option<(i64, u64)>,
}

/// Share of the bar given to the stages before the upload, and to verification.
const BEFORE_UPLOAD: f64 = 10.0;
const VERIFY: f64 = 5.0;

impl Meter {
    /// A meter for a migration of this size.
    pub fn new(records_total: u64, bytes_total: u64) -> Self {
        Self {
            records_total,
            bytes_total,
            upload_start: None,
        }
    }

    /// The event for `stage` at `now_ms` with these counters.
    pub fn at(
        &mut self,
        stage: Stage,
        now_ms: i64,
        records_done: u64,
        bytes_done: u64,
    ) -> Progress {
        let fraction = if self.bytes_total == 0 {
            1.0
        } else {
            (bytes_done as f64 / self.bytes_total as f64).min(1.0)
        };
        let percent = match stage {
            Stage::Inspect => 0.0,
            Stage::Backup => 3.0,
            Stage::Validate => 6.0,
            Stage::Upload => BEFORE_UPLOAD + fraction * (100.0 - BEFORE_UPLOAD - VERIFY),
            Stage::Verify => 100.0 - VERIFY,
            Stage::Done => 100.0,
        };
        let eta_ms = match stage {
            Stage::Upload => {
                let (t0, b0) = *self.upload_start.get_or_insert((now_ms, bytes_done));
                let elapsed = now_ms.saturating_sub(t0).max(0) as f64;
                let sent = bytes_done.saturating_sub(b0) as f64;
                (sent > 0.0 && elapsed > 0.0).then(|| {
                    let left = self.bytes_total.saturating_sub(bytes_done) as f64;
                    (left * elapsed / sent) as u64
                })
            }
            Stage::Verify | Stage::Done => Some(0),
            _ => None,
        };
        Progress {
            stage,
            records_done,
            records_total: self.records_total,
            bytes_done,
            bytes_total: self.bytes_total,
            percent,
            eta_ms,
        }
    }
}

#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod tests {
    use super::*;

    #[test]
    fn eta_follows_the_rate_of_this_run() {
        let mut m = Meter::new(100, 1000);
        // Resumed with 400 bytes already done: the first event has no rate yet.
        let p = m.at(Stage::Upload, 10_000, 40, 400);
        assert_eq!(p.eta_ms, None);
        assert!((p.percent - (10.0 + 0.4 * 85.0)).abs() < 1e-9);
        // 200 bytes in 2 s: 100 B/s, 400 bytes left: 4 s.
        let p = m.at(Stage::Upload, 12_000, 60, 600);
        assert_eq!(p.eta_ms, Some(4000));
        assert_eq!(m.at(Stage::Done, 13_000, 100, 1000).percent, 100.0);
    }

    #[test]
    fn an_empty_migration_is_complete() {
        let mut m = Meter::new(0, 0);
        assert_eq!(m.at(Stage::Upload, 0, 0, 0).percent, 95.0);
    }
}
