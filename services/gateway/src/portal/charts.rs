//! Delivery charts as inline SVG, rendered on the server from the analytics API's
//! application layer (`crate::app::analytics`), and an integration's calls per day
//! ([`daily`]): no chart library, no script. Colours
//! come from the stylesheet (classes), since the CSP forbids inline styles.

use chrono::{DateTime, Duration, DurationRound, Utc};
use portico_storage::analytics::BucketWidth;
use uuid::Uuid;

use super::html::Html;
use crate::app::analytics::{self, RangeRequest, SeriesRequest, Stats};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

/// Hours shown by the sparklines and charts.
pub const HOURS: i64 = 24;

/// One hour of a webhook's last day.
#[derive(Debug, Clone, Default)]
pub struct Hour {
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed (retrying or final).
    pub failed: u64,
    /// 95th percentile attempt duration, ms.
    pub p95_ms: Option<f64>,
}

/// A webhook's last 24 hours: the totals and one [`Hour`] per hour, oldest first.
#[derive(Debug, Clone)]
pub struct LastDay {
    /// Everything in the range.
    pub totals: Stats,
    /// Hourly figures, oldest first (empty hours included).
    pub hours: Vec<Hour>,
}

/// Reads a webhook's last day through the analytics application layer.
pub async fn last_day(
    state: &AppState,
    caller: &Caller,
    webhook_id: Uuid,
) -> Result<LastDay, ApiError> {
    let now = Utc::now();
    let end = now.duration_trunc(Duration::hours(1)).unwrap_or(now) + Duration::hours(1);
    let start = end - Duration::hours(HOURS);
    let series = analytics::webhook_stats(
        state,
        caller,
        webhook_id,
        SeriesRequest {
            range: RangeRequest {
                from: Some(start),
                to: Some(end),
            },
            bucket: Some(BucketWidth::Hour),
            ..SeriesRequest::default()
        },
    )
    .await?;
    let mut hours = vec![Hour::default(); HOURS as usize];
    for p in &series.points {
        if let Some(i) = slot(start, p.bucket_start) {
            let h = &mut hours[i];
            h.succeeded += p.stats.succeeded;
            h.failed += p.stats.attempts.saturating_sub(p.stats.succeeded);
            h.p95_ms = p.stats.p95_latency_ms.or(h.p95_ms);
        }
    }
    Ok(LastDay {
        totals: series.totals,
        hours,
    })
}

fn slot(start: DateTime<Utc>, at: DateTime<Utc>) -> Option<usize> {
    let i = (at - start).num_hours();
    (0..HOURS).contains(&i).then_some(i as usize)
}

/// The success rate as text (`98.5 %`), or `—` when nothing finished.
pub fn rate(stats: &Stats) -> String {
    stats
        .success_rate
        .map_or_else(|| "—".to_owned(), |r| format!("{:.1} %", r * 100.0))
}

/// A small line of attempts per hour (a sparkline), 120 x 24.
pub fn sparkline(h: &mut Html, day: &LastDay) {
    let max = day
        .hours
        .iter()
        .map(|x| x.succeeded + x.failed)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    h.raw("<svg class=\"chart spark\" role=\"img\" aria-label=\"Attempts per hour, last 24 hours\" viewBox=\"0 0 120 24\" width=\"120\" height=\"24\"><polyline class=\"line\" points=\"");
    for (i, x) in day.hours.iter().enumerate() {
        let y = 22.0 - 20.0 * (x.succeeded + x.failed) as f64 / max;
        h.coord(i as f64 * 5.0).raw(",").coord(y).raw(" ");
    }
    h.raw("\"></polyline></svg>");
}

/// Outcomes per hour as stacked bars (succeeded, then failed on top), with a caption.
pub fn outcomes(h: &mut Html, day: &LastDay) {
    let max = day
        .hours
        .iter()
        .map(|x| x.succeeded + x.failed)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    h.raw("<figure><svg class=\"chart\" role=\"img\" aria-label=\"Attempt outcomes per hour, last 24 hours\" viewBox=\"0 0 480 120\" width=\"100%\">");
    for (i, x) in day.hours.iter().enumerate() {
        let ok = 100.0 * x.succeeded as f64 / max;
        let bad = 100.0 * x.failed as f64 / max;
        let left = i as f64 * 20.0 + 2.0;
        h.raw("<rect class=\"bar\" x=\"")
            .coord(left)
            .raw("\" y=\"")
            .coord(110.0 - ok)
            .raw("\" width=\"16\" height=\"")
            .coord(ok)
            .raw("\"></rect><rect class=\"bar bad\" x=\"")
            .coord(left)
            .raw("\" y=\"")
            .coord(110.0 - ok - bad)
            .raw("\" width=\"16\" height=\"")
            .coord(bad)
            .raw("\"></rect>");
    }
    h.raw("<line x1=\"0\" y1=\"110\" x2=\"480\" y2=\"110\" class=\"axis\"></line></svg><figcaption>Attempts per hour over the last 24 hours: succeeded (blue), failed (red); the tallest bar is ")
        .num(max as u64)
        .raw(".</figcaption></figure>");
}

/// The 95th percentile latency per hour as a line, with a caption.
pub fn latency(h: &mut Html, day: &LastDay) {
    let max = day
        .hours
        .iter()
        .filter_map(|x| x.p95_ms)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    h.raw("<figure><svg class=\"chart\" role=\"img\" aria-label=\"95th percentile latency per hour, last 24 hours\" viewBox=\"0 0 480 120\" width=\"100%\"><polyline class=\"line\" points=\"");
    for (i, x) in day.hours.iter().enumerate() {
        if let Some(ms) = x.p95_ms {
            h.coord(i as f64 * 20.0 + 10.0)
                .raw(",")
                .coord(110.0 - 100.0 * ms / max)
                .raw(" ");
        }
    }
    h.raw("\"></polyline><line x1=\"0\" y1=\"110\" x2=\"480\" y2=\"110\" class=\"axis\"></line></svg><figcaption>p95 attempt duration per hour over the last 24 hours; the top of the chart is ")
        .num(max.round() as i64)
        .raw(" ms.</figcaption></figure>");
}

/// Calls per day as bars (an integration's usage), oldest on the left, with a caption
/// naming the first and last day and the tallest bar: the same look as [`outcomes`].
pub fn daily(h: &mut Html, days: &[(chrono::NaiveDate, u64)]) {
    let max = days.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1) as f64;
    let slot = 480.0 / days.len().max(1) as f64;
    h.raw("<figure><svg class=\"chart\" role=\"img\" aria-label=\"Calls per day\" viewBox=\"0 0 480 120\" width=\"100%\">");
    for (i, (_, n)) in days.iter().enumerate() {
        let height = 100.0 * *n as f64 / max;
        h.raw("<rect class=\"bar\" x=\"")
            .coord(i as f64 * slot + slot * 0.1)
            .raw("\" y=\"")
            .coord(110.0 - height)
            .raw("\" width=\"")
            .coord(slot * 0.8)
            .raw("\" height=\"")
            .coord(height)
            .raw("\"></rect>");
    }
    h.raw("<line x1=\"0\" y1=\"110\" x2=\"480\" y2=\"110\" class=\"axis\"></line></svg><figcaption>Calls per day (UTC)");
    if let (Some((first, _)), Some((last, _))) = (days.first(), days.last()) {
        h.raw(" from ")
            .text(&first.to_string())
            .raw(" to ")
            .text(&last.to_string());
    }
    h.raw("; the tallest bar is ")
        .num(max as u64)
        .raw(".</figcaption></figure>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(counts: &[(u64, u64)]) -> LastDay {
        let mut hours = vec![Hour::default(); HOURS as usize];
        for (i, (ok, bad)) in counts.iter().enumerate() {
            hours[i] = Hour {
                succeeded: *ok,
                failed: *bad,
                p95_ms: Some(10.0 * (i as f64 + 1.0)),
            };
        }
        LastDay {
            totals: Stats {
                attempts: 0,
                succeeded: 0,
                retrying: 0,
                failed: 0,
                exhausted: 0,
                success_rate: Some(0.985),
                attempt_failure_rate: None,
                mean_latency_ms: None,
                p50_latency_ms: None,
                p95_latency_ms: None,
                p99_latency_ms: None,
            },
            hours,
        }
    }

    /// The charts are SVG with one point or bar pair per hour, scaled to the largest
    /// value, and nothing but numbers inside.
    #[test]
    fn charts_scale_to_the_largest_hour() {
        let d = day(&[(4, 0), (2, 2)]);
        let mut h = Html::new();
        sparkline(&mut h, &d);
        assert!(h.as_str().starts_with("<svg"));
        assert!(
            h.as_str().contains("0.0,2.0 5.0,2.0 10.0,22.0"),
            "{}",
            h.as_str()
        );
        let mut h = Html::new();
        outcomes(&mut h, &d);
        assert_eq!(h.as_str().matches("class=\"bar\"").count(), HOURS as usize);
        assert!(h.as_str().contains("the tallest bar is 4."));
        assert_eq!(rate(&d.totals), "98.5 %");
        let mut h = Html::new();
        latency(&mut h, &d);
        assert!(h.as_str().contains("top of the chart is 20 ms"));
    }

    /// Daily bars: one per day, the busiest at full height, the days named.
    #[test]
    fn daily_bars_scale_to_the_busiest_day() {
        let first = chrono::NaiveDate::from_ymd_opt(2026, 11, 29).unwrap();
        let days: Vec<_> = first.iter_days().take(3).zip([5, 0, 10]).collect();
        let mut h = Html::new();
        daily(&mut h, &days);
        let out = h.as_str();
        assert_eq!(out.matches("class=\"bar\"").count(), 3);
        assert!(
            out.contains("y=\"10.0\" width=\"128.0\" height=\"100.0\""),
            "{out}"
        );
        assert!(
            out.contains("from 2026-11-29 to 2026-12-01; the tallest bar is 10."),
            "{out}"
        );
    }

    /// Buckets outside the day are ignored.
    #[test]
    fn slots_cover_exactly_the_day() {
        let start = Utc::now();
        assert_eq!(slot(start, start), Some(0));
        assert_eq!(slot(start, start + Duration::hours(23)), Some(23));
        assert_eq!(slot(start, start + Duration::hours(24)), None);
        assert_eq!(slot(start, start - Duration::hours(1)), None);
    }
}
