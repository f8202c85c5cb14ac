//! Durations on the command line (`30s`, `10m`, `1h30m`, `250ms`) and in output.
//!
//! The grammar is one or more `<integer><unit>` terms, units `ms`, `s`, `m`, `h`, `d`;
//! a bare integer means seconds. No fractions, no spaces: what a script writes is what
//! it gets, exactly.

use std::time::Duration;

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

/// Parses a duration that must be positive (leases).
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    if d.is_zero() {
        return Err(format!("duration {text:?} must be longer than zero"));
    }
    Ok(d)
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
fn coarse(ms: u64) -> String {
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
        assert!(parse_positive("0s").unwrap_err().contains("longer than zero"));
        assert_eq!(parse_positive("1ms").unwrap(), Duration::from_millis(1));
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
