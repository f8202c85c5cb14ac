//! Latency histograms (HdrHistogram, 3 significant digits) and the percentiles reported.
//!
//! Every latency in the harness is recorded in nanoseconds into a [`Recorder`]; warm-up
//! rounds are never recorded. [`Stats`] is what reports, JSON and plots use: sample
//! count, min, mean, p50, p90, p99, p99.9 and max.

use hdrhistogram::Histogram;

/// Largest value recorded (60 s); larger samples are clamped and counted.
const HIGHEST_NS: u64 = 60_000_000_000;

/// Collects latency samples in nanoseconds.
pub struct Recorder {
    h: Histogram<u64>,
    clamped: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty recorder (1 ns .. 60 s, 3 significant digits).
    pub fn new() -> Recorder {
        Recorder { h: Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("valid histogram bounds"), clamped: 0 }
    }

    /// Records one sample.
    pub fn record(&mut self, ns: u64) {
        if ns > HIGHEST_NS {
            self.clamped += 1;
        }
        self.h.saturating_record(ns.clamp(1, HIGHEST_NS));
    }

    /// Adds another recorder's samples.
    pub fn merge(&mut self, other: &Recorder) {
        self.h.add(&other.h).expect("histograms with the same bounds");
        self.clamped += other.clamped;
    }

    /// Samples recorded so far.
    pub fn len(&self) -> u64 {
        self.h.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// The percentiles of what was recorded.
    pub fn stats(&self) -> Stats {
        let q = |p: f64| self.h.value_at_quantile(p);
        Stats {
            samples: self.h.len(),
            min: self.h.min(),
            mean: self.h.mean(),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: self.h.max(),
            clamped: self.clamped,
        }
    }
}

/// Percentiles of one latency measurement, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Samples recorded (warm-up excluded).
    pub samples: u64,
    /// Smallest sample.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample (HdrHistogram's highest equivalent value).
    pub max: u64,
    /// Samples above 60 s, recorded as 60 s.
    pub clamped: u64,
}

impl Stats {
    /// The reported percentiles as (label, value) pairs, in order.
    pub fn percentiles(&self) -> [(&'static str, u64); 5] {
        [("p50", self.p50), ("p90", self.p90), ("p99", self.p99), ("p99.9", self.p999), ("max", self.max)]
    }
}

/// Formats nanoseconds for a table: `850 ns`, `12.3 µs`, `4.56 ms`, `1.20 s`.
pub fn fmt_ns(ns: u64) -> String {
    let f = ns as f64;
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", f / 1e6)
    } else {
        format!("{:.2} s", f / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_samples() {
        let mut r = Recorder::new();
        for v in 1..=1000u64 {
            r.record(v * 100);
        }
        let s = r.stats();
        assert_eq!(s.samples, 1000);
        assert!((50_000..=50_100).contains(&s.p50), "{s:?}");
        assert!((99_900..=100_100).contains(&s.max), "{s:?}");
        assert_eq!(fmt_ns(850), "850 ns");
        assert_eq!(fmt_ns(12_345), "12.3 µs");
    }
}
