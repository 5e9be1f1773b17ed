//! Go's JSON forms of `metav1.Time` (RFC 3339, seconds), `metav1.MicroTime` (RFC 3339, microseconds) and
//! `metav1.Duration` (`time.Duration.String()`, such as `1h2m3.5s`).

/// Go's zero `time.Time` (January 1, year 1, UTC) as Unix seconds: it marshals as JSON null.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// `2006-01-02T15:04:05Z`, or None for Go's zero time and times outside what RFC 3339 can write.
pub(crate) fn rfc3339_seconds(seconds: i64, nanos: i32) -> Option<String> {
    let timestamp = instant(seconds, nanos)?;
    Some(timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// `2006-01-02T15:04:05.000000Z`, or None as for [`rfc3339_seconds`].
pub(crate) fn rfc3339_micros(seconds: i64, nanos: i32) -> Option<String> {
    let timestamp = instant(seconds, nanos)?;
    Some(format!("{}.{:06}Z", timestamp.strftime("%Y-%m-%dT%H:%M:%S"), timestamp.subsec_nanosecond() / 1000))
}

fn instant(seconds: i64, nanos: i32) -> Option<jiff::Timestamp> {
    if seconds == GO_ZERO_TIME && nanos == 0 {
        return None;
    }
    let timestamp = jiff::Timestamp::new(seconds, nanos).ok()?;
    (timestamp.to_zoned(jiff::tz::TimeZone::UTC).year() >= 0).then_some(timestamp)
}

/// A duration in nanoseconds as Go's `time.Duration.String()` writes it.
pub(crate) fn go_duration(nanos: i64) -> String {
    let mut magnitude = nanos.unsigned_abs();
    let sign = if nanos < 0 { "-" } else { "" };
    if magnitude < 1_000_000_000 {
        let (digits, unit) = match magnitude {
            0 => return "0s".into(),
            1..=999 => (0, "ns"),
            1_000..=999_999 => (3, "µs"),
            _ => (6, "ms"),
        };
        let (whole, fraction) = split(magnitude, digits);
        return format!("{sign}{whole}{fraction}{unit}");
    }
    let (whole_seconds, fraction) = split(magnitude, 9);
    magnitude = whole_seconds;
    let seconds = magnitude % 60;
    magnitude /= 60;
    let mut text = format!("{seconds}{fraction}s");
    if magnitude > 0 {
        text = format!("{}m{text}", magnitude % 60);
        magnitude /= 60;
        if magnitude > 0 {
            text = format!("{magnitude}h{text}");
        }
    }
    format!("{sign}{text}")
}

/// `value / 10^digits`, and the remainder as `.ddd` without trailing zeros (empty when zero).
fn split(value: u64, digits: u32) -> (u64, String) {
    let scale = 10u64.pow(digits);
    let (whole, rest) = (value / scale, value % scale);
    if rest == 0 {
        return (whole, String::new());
    }
    let fraction = format!("{rest:0width$}", width = digits as usize);
    (whole, format!(".{}", fraction.trim_end_matches('0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_go_does() {
        assert_eq!(rfc3339_seconds(1_700_000_000, 123_456_789).as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(rfc3339_micros(1_700_000_000, 123_456_789).as_deref(), Some("2023-11-14T22:13:20.123456Z"));
        assert_eq!(rfc3339_micros(0, 0).as_deref(), Some("1970-01-01T00:00:00.000000Z"));
        assert_eq!(rfc3339_seconds(GO_ZERO_TIME, 0), None);
    }

    #[test]
    fn durations_format_as_go_does() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (2_000_000, "2ms"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_500_000_000, "1h2m3.5s"),
            (-90_000_000_000, "-1m30s"),
        ];
        for (nanos, text) in cases {
            assert_eq!(go_duration(nanos), text, "{nanos}ns");
        }
    }
}
