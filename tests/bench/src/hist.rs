//! A log-linear latency histogram, HDR-style: 64 linear sub-buckets per power of two,
//! so every recorded value is kept within about 1.6 % of its true value, from 1 ns to
//! centuries, in a fixed array of atomics. The sink's threads and the load client
//! record into it concurrently without a lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-bucket bits: 2^6 = 64 linear steps per power of two.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets needed to cover every u64.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// Concurrent histogram of u64 values (nanoseconds, by convention).
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
    min: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .finish()
    }
}

fn index_of(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let shift = exp - SUB_BITS;
    let mantissa = v >> shift;
    ((shift as u64 + 1) * SUB + (mantissa - SUB)) as usize
}

/// The middle of bucket `i`: what a quantile falling into it reports.
fn value_of(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let mantissa = i % SUB + SUB;
    (mantissa << shift) + ((1u64 << shift) >> 1)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
        }
    }

    /// Records one value.
    pub fn record(&self, v: u64) {
        self.buckets[index_of(v)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
        self.max.fetch_max(v, Ordering::Relaxed);
        self.min.fetch_min(v, Ordering::Relaxed);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Largest value recorded (exact), 0 when empty.
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// Smallest value recorded (exact), 0 when empty.
    pub fn min(&self) -> u64 {
        match self.min.load(Ordering::Relaxed) {
            u64::MAX => 0,
            v => v,
        }
    }

    /// Arithmetic mean, 0 when empty.
    pub fn mean(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            0.0
        } else {
            self.sum.load(Ordering::Relaxed) as f64 / n as f64
        }
    }

    /// The value below which a fraction `q` (0..=1) of the recorded values lie, within
    /// the bucket precision; never above the exact maximum.
    pub fn quantile(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return value_of(i).min(self.max()).max(self.min());
            }
        }
        self.max()
    }

    /// The usual summary, in the histogram's unit.
    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count(),
            min: self.min(),
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p95: self.quantile(0.95),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: self.max(),
            mean: self.mean(),
        }
    }
}

/// Quantiles of a histogram, in its unit.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value lands in a bucket whose reported value is within 1.6 % of it.
    #[test]
    fn buckets_are_precise_and_contiguous() {
        let mut last = 0;
        for v in (0..5000u64).chain([1 << 20, 123_456_789, u64::MAX / 3, u64::MAX]) {
            let i = index_of(v);
            assert!(i < BUCKETS);
            assert!(i >= last || v > 5000);
            last = i;
            let back = value_of(i) as f64;
            assert!(
                (back - v as f64).abs() <= v as f64 * 0.016 + 1.0,
                "{v} -> {back}"
            );
        }
    }

    /// Quantiles of 1..=1000 come out where a reader expects them.
    #[test]
    fn quantiles_of_a_uniform_range() {
        let h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50 as f64 - 500_000.0).abs() < 10_000.0, "{}", s.p50);
        assert!((s.p99 as f64 - 990_000.0).abs() < 20_000.0, "{}", s.p99);
        assert_eq!(s.max, 1_000_000);
        assert_eq!(s.min, 1000);
    }
}
