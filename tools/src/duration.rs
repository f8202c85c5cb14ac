//! Durations and numbers on the command line (`30s`, `10m`, `1h30m`, `250ms`; counts,
//! values) and durations in output.
//!
//! The duration grammar is one or more `<integer><unit>` terms, units `ms`, `s`, `m`,
//! `h`, `d`; a bare integer means seconds. No fractions, no spaces: what a script writes
//! is what it gets, exactly.
//!
//! Every duration and number a verb takes is bounded here, at parse time, so nothing
//! downstream (an `Instant + Duration`, a lease end, a buffer size) can overflow: a value
//! out of range is a usage error (exit 2) naming the flag (clap adds it), the range and
//! an example. The bounds:
//!
//! | what | range |
//! |------|-------|
//! | timeouts (`wait`, `events --follow`, `snapshot`) | 0 to 1d |
//! | intervals (`stat`, `top`) | 1ms to 1d |
//! | leases (`claim`, `renew`) | 1ms to 30d ([`worknode::LEASE_MAX`]) |
//! | `--value` | finite, within ±1e300 ([`worknode::VALUE_MAX`]) |

use std::time::{Duration, Instant};

/// The longest timeout (`wait`, `events --follow`, `snapshot`): one day.
pub const TIMEOUT_MAX: Duration = Duration::from_secs(86_400);
/// The longest interval (`stat`, `top`): one day.
pub const INTERVAL_MAX: Duration = Duration::from_secs(86_400);
/// The longest lease (`claim`, `renew`): the library's bound, 30 days.
pub const LEASE_MAX: Duration = worknode::LEASE_MAX;

/// Parses a duration such as `30s`, `10m`, `1h30m`, `250ms` or `45` (seconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let bad = |why: &str| format!("invalid duration {text:?}: {why}; write e.g. 30s, 10m, 1h30m or 250ms");
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().map(Duration::from_secs).map_err(|_| bad("too large"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms_per: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(bad("a number inside needs a unit")),
            _ => return Err(bad(&format!("unknown unit {unit:?} (use ms, s, m, h or d)"))),
        };
        let part = n.checked_mul(ms_per).ok_or_else(|| bad("too large"))?;
        total = total.checked_add(Duration::from_millis(part)).ok_or_else(|| bad("too large"))?;
    }
    Ok(total)
}

/// Parses a duration within `min..=max`.
pub fn parse_in(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let range = format!("{} to {}", format_duration(min), format_duration(max));
    let d = parse(text).map_err(|e| format!("{e}; the range is {range}"))?;
    if d < min || d > max {
        let what = if d.is_zero() { "must be longer than zero".to_string() } else { format!("is outside {range}") };
        return Err(format!("duration {text:?} {what}; give one from {range}, e.g. 30s or 10m"));
    }
    Ok(d)
}

/// A timeout: 0 to [`TIMEOUT_MAX`].
pub fn timeout(text: &str) -> Result<Duration, String> {
    parse_in(text, Duration::ZERO, TIMEOUT_MAX)
}

/// An interval: 1ms to [`INTERVAL_MAX`].
pub fn interval(text: &str) -> Result<Duration, String> {
    parse_in(text, Duration::from_millis(1), INTERVAL_MAX)
}

/// A lease: 1ms to [`LEASE_MAX`].
pub fn lease(text: &str) -> Result<Duration, String> {
    parse_in(text, Duration::from_millis(1), LEASE_MAX)
}

/// `d` from now; never overflows (a `d` beyond what an `Instant` can hold, which the
/// parsers above never return, gives the furthest instant a day can reach).
pub fn deadline(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).or_else(|| now.checked_add(TIMEOUT_MAX)).unwrap_or(now)
}

/// A parser of whole numbers in `min..=max` (clap value parser), `what` saying what the
/// number counts.
pub fn number(
    min: u64,
    max: u64,
    what: &'static str,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let t = text.trim();
        let n = if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) { None } else { t.parse::<u64>().ok() };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!("{text:?} is not a whole number from {min} to {max} ({what}); give one in that range")),
        }
    }
}

/// A node value (`--value`): finite and within ±[`worknode::VALUE_MAX`], so no sum over
/// a subtree can overflow into infinity (or NaN, which JSON cannot carry).
pub fn value(text: &str) -> Result<f64, String> {
    let t = text.trim();
    // Rust reads "inf", "NaN" and "infinity"; a value is a number written in digits.
    let digits =
        t.bytes().any(|b| b.is_ascii_digit()) && !t.bytes().any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E');
    match t.parse::<f64>() {
        Ok(v) if digits && worknode::check_value(v).is_ok() => Ok(v),
        _ => Err(format!(
            "{text:?} is not a finite number within ±{:e}; give a decimal number such as 1500 or -2.5",
            worknode::VALUE_MAX
        )),
    }
}

/// A duration as the grammar writes it, largest unit first, exactly (`1d`, `30s`, `0ms`).
fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (size, unit) in [(86_400_000u128, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Formats milliseconds compactly, to the largest two units: `850ms`, `42s`, `9m30s`,
/// `2h5m`, `3d4h`.
pub fn format_ms(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    for (i, (size, name)) in UNITS.iter().enumerate() {
        if ms >= *size {
            let major = ms / size;
            let rest = ms % size;
            return match UNITS.get(i + 1) {
                Some((sub, sub_name)) if rest / sub > 0 && major < 10 => {
                    format!("{major}{name}{}{sub_name}", rest / sub)
                }
                _ => format!("{major}{name}"),
            };
        }
    }
    format!("{ms}ms")
}

/// How long ago `then_ms` was, seen at `now_ms`: `now`, `3s ago`, `5m ago`; a time in the
/// future reads `in 9m`.
pub fn relative(now_ms: u64, then_ms: u64) -> String {
    if then_ms == 0 {
        return "never".into();
    }
    if then_ms > now_ms {
        return format!("in {}", coarse(then_ms - now_ms));
    }
    let d = now_ms - then_ms;
    if d < 1_000 {
        "now".into()
    } else {
        format!("{} ago", coarse(d))
    }
}

/// One unit, rounded down: `3s`, `5m`, `2h`, `4d`.
pub fn coarse(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{}s", ms / 1_000),
        60_000..=3_599_999 => format!("{}m", ms / 60_000),
        3_600_000..=86_399_999 => format!("{}h", ms / 3_600_000),
        _ => format!("{}d", ms / 86_400_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(2 * 86400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1m500ms").unwrap(), Duration::from_millis(60_500));
        assert_eq!(parse("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse(" 5s ").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_what_it_cannot_read_exactly() {
        for bad in ["", "s", "10x", "1.5h", "-3s", "10 m", "5m3", "ms", "99999999999999999999s"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("invalid duration"), "{bad}: {e}");
        }
        assert!(lease("0s").unwrap_err().contains("longer than zero"));
        assert_eq!(lease("1ms").unwrap(), Duration::from_millis(1));
    }

    #[test]
    fn bounds_are_enforced_and_named() {
        assert_eq!(timeout("0s").unwrap(), Duration::ZERO);
        assert_eq!(timeout("1d").unwrap(), TIMEOUT_MAX);
        assert_eq!(timeout("24h").unwrap(), TIMEOUT_MAX);
        let e = timeout("18446744073709551615").unwrap_err();
        assert!(e.contains("0ms to 1d"), "{e}");
        assert!(timeout("1d1ms").unwrap_err().contains("outside 0ms to 1d"));
        assert!(interval("0ms").unwrap_err().contains("longer than zero"));
        assert_eq!(lease("30d").unwrap(), LEASE_MAX);
        assert!(lease("31d").unwrap_err().contains("1ms to 30d"));
        let limit = number(1, 100, "nodes");
        assert_eq!(limit("100"), Ok(100));
        for bad in ["0", "101", "-1", "+5", "", "1e3", "18446744073709551616", "5 5"] {
            let e = limit(bad).unwrap_err();
            assert!(e.contains("from 1 to 100"), "{bad}: {e}");
        }
        assert_eq!(value("-2.5"), Ok(-2.5));
        assert_eq!(value("1e300"), Ok(1e300));
        for bad in ["NaN", "nan", "inf", "-inf", "infinity", "1e309", "-1e301", "", "x", "0x10"] {
            assert!(value(bad).unwrap_err().contains("finite number"), "{bad}");
        }
        let far = deadline(Duration::MAX);
        assert!(far >= Instant::now() - Duration::from_secs(1));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        /// Whatever the text, the parsers return (never panic), and what they accept lies
        /// within their bounds.
        #[test]
        fn parsers_never_panic_and_stay_in_bounds(text in "\\PC{0,40}") {
            if let Ok(d) = timeout(&text) {
                proptest::prop_assert!(d <= TIMEOUT_MAX);
                let _ = deadline(d);
            }
            if let Ok(d) = interval(&text) {
                proptest::prop_assert!(!d.is_zero() && d <= INTERVAL_MAX);
            }
            if let Ok(d) = lease(&text) {
                proptest::prop_assert!(!d.is_zero() && d <= LEASE_MAX);
            }
            if let Ok(n) = number(1, 1000, "things")(&text) {
                proptest::prop_assert!((1..=1000).contains(&n));
            }
            if let Ok(v) = value(&text) {
                proptest::prop_assert!(v.is_finite() && v.abs() <= worknode::VALUE_MAX);
            }
            let _ = parse(&text);
        }

        /// Duration-shaped text (digits and units, any magnitude) is read or refused, and
        /// an accepted timeout is exactly what was written.
        #[test]
        fn duration_shaped_text_is_read_exactly_or_refused(
            terms in proptest::collection::vec((proptest::prop_oneof![0u64..2000, proptest::num::u64::ANY], proptest::sample::select(vec!["ms", "s", "m", "h", "d"])), 1..4)
        ) {
            let text: String = terms.iter().map(|(n, u)| format!("{n}{u}")).collect();
            if let Ok(d) = timeout(&text) {
                proptest::prop_assert!(d <= TIMEOUT_MAX);
                let ms: u128 = terms.iter().map(|(n, u)| *n as u128 * match *u {
                    "ms" => 1, "s" => 1_000, "m" => 60_000, "h" => 3_600_000, _ => 86_400_000,
                }).sum();
                proptest::prop_assert_eq!(d.as_millis(), ms);
            }
        }

        /// Numbers around and far beyond the bounds.
        #[test]
        fn numbers_are_bounded(n in proptest::prop_oneof![0u64..2_000_000, proptest::num::u64::ANY], min in 0u64..10, span in 0u64..1_000_000) {
            let max = min + span;
            let got = number(min, max, "things")(&n.to_string());
            proptest::prop_assert_eq!(got.is_ok(), (min..=max).contains(&n));
        }

        /// Any f64 written out is accepted exactly when it is finite and within bounds.
        #[test]
        fn values_are_finite_and_bounded(v in proptest::num::f64::ANY) {
            let got = value(&v.to_string());
            proptest::prop_assert_eq!(got.is_ok(), v.is_finite() && v.abs() <= worknode::VALUE_MAX);
        }
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_ms(850), "850ms");
        assert_eq!(format_ms(42_000), "42s");
        assert_eq!(format_ms(570_000), "9m30s");
        assert_eq!(format_ms(600_000), "10m");
        assert_eq!(format_ms(7_500_000), "2h5m");
        assert_eq!(format_ms(3 * 86_400_000 + 4 * 3_600_000), "3d4h");
    }

    #[test]
    fn relative_times_read_naturally() {
        let now = 1_000_000_000;
        assert_eq!(relative(now, now - 300), "now");
        assert_eq!(relative(now, now - 3_000), "3s ago");
        assert_eq!(relative(now, now - 5 * 60_000 - 10), "5m ago");
        assert_eq!(relative(now, now - 2 * 3_600_000), "2h ago");
        assert_eq!(relative(now, now - 3 * 86_400_000), "3d ago");
        assert_eq!(relative(now, now + 9 * 60_000 + 5), "in 9m");
        assert_eq!(relative(now, 0), "never");
    }
}
