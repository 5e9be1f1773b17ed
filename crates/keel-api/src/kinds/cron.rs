//! Checking a CronJob's schedule as the cron library Kubernetes uses parses it: five fields (minute,
//! hour, day of month, month, day of week) of lists, ranges and steps, or a descriptor (`@daily`,
//! `@every 1h30m`), with that library's error messages.

struct Bounds {
    min: u64,
    max: u64,
    names: &'static [&'static str],
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const FIELDS: [Bounds; 5] = [
    Bounds { min: 0, max: 59, names: &[] },
    Bounds { min: 0, max: 23, names: &[] },
    Bounds { min: 1, max: 31, names: &[] },
    Bounds { min: 1, max: 12, names: &MONTHS },
    Bounds { min: 0, max: 6, names: &DAYS },
];

/// `Ok` when `spec` is a schedule Kubernetes accepts; otherwise the parser's message.
pub fn parse(spec: &str) -> Result<(), String> {
    if spec.is_empty() {
        return Err("empty spec string".to_string());
    }
    let spec = match spec.split_once(' ') {
        Some((tz, rest)) if tz.starts_with("TZ=") || tz.starts_with("CRON_TZ=") => rest.trim(),
        _ => spec,
    };
    if let Some(descriptor) = spec.strip_prefix('@') {
        return parse_descriptor(descriptor);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: [{}]", fields.len(), fields.join(" ")));
    }
    for (field, bounds) in fields.iter().zip(FIELDS.iter()) {
        for expr in field.split(',').filter(|e| !e.is_empty()) {
            range(expr, bounds)?;
        }
    }
    Ok(())
}

fn parse_descriptor(d: &str) -> Result<(), String> {
    match d {
        "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => Ok(()),
        _ => match d.strip_prefix("every ") {
            Some(duration) if go_duration(duration) => Ok(()),
            Some(duration) => Err(format!("failed to parse duration @{d}: time: invalid duration \"{duration}\"")),
            None => Err(format!("unrecognized descriptor: @{d}")),
        },
    }
}

/// Whether `s` is a Go duration (`1h30m`, `90s`, `1.5h`).
fn go_duration(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if n == 0 || rest[..n] == *"." {
            return false;
        }
        rest = &rest[n..];
        let Some(unit) = ["ns", "us", "µs", "μs", "ms", "s", "m", "h"].iter().find(|u| rest.starts_with(*u)) else {
            return false;
        };
        // "ms" before "m", "ns"/"us" before "s": the list is ordered so.
        rest = &rest[unit.len()..];
    }
    true
}

fn range(expr: &str, b: &Bounds) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let (start, mut end) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        (b.min, b.max)
    } else {
        let start = int_or_name(low_and_high[0], b.names)?;
        match low_and_high.len() {
            1 => (start, start),
            2 => (start, int_or_name(low_and_high[1], b.names)?),
            _ => return Err(format!("too many hyphens: {expr}")),
        }
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            if low_and_high.len() == 1 {
                end = b.max;
            }
            int(range_and_step[1])?
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!("beginning of range ({start}) below minimum ({}): {expr}", b.min));
    }
    if end > b.max {
        return Err(format!("end of range ({end}) above maximum ({}): {expr}", b.max));
    }
    if start > end {
        return Err(format!("beginning of range ({start}) beyond end of range ({end}): {expr}"));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

fn int_or_name(expr: &str, names: &[&str]) -> Result<u64, String> {
    let lower = expr.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        // Months count from 1, days of the week from 0.
        return Ok(i as u64 + u64::from(names.len() == 12));
    }
    int(expr)
}

fn int(expr: &str) -> Result<u64, String> {
    match expr.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {expr}")),
        Ok(n) => Ok(n as u64),
        Err(_) => Err(format!("failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: invalid syntax")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_kubernetes_accepts() {
        for ok in [
            "* * * * *",
            "*/5 * * * *",
            "0 0 1 1 *",
            "0 9-17/2 * * mon-fri",
            "30 2 * JAN,jul SUN",
            "0 0 ? * 0",
            "5/15 * * * *",
            "@hourly",
            "@every 1h30m",
            "CRON_TZ=UTC 0 * * * *",
        ] {
            assert_eq!(parse(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_with_the_parser_messages() {
        assert_eq!(parse("foo").unwrap_err(), "expected exactly 5 fields, found 1: [foo]");
        assert_eq!(parse("60 * * * *").unwrap_err(), "end of range (60) above maximum (59): 60");
        assert_eq!(parse("* * 0 * *").unwrap_err(), "beginning of range (0) below minimum (1): 0");
        assert_eq!(parse("5-1 * * * *").unwrap_err(), "beginning of range (5) beyond end of range (1): 5-1");
        assert_eq!(parse("*/0 * * * *").unwrap_err(), "step of range should be a positive number: */0");
        assert_eq!(parse("1-2-3 * * * *").unwrap_err(), "too many hyphens: 1-2-3");
        assert_eq!(parse("* * * * 7").unwrap_err(), "end of range (7) above maximum (6): 7");
        assert!(parse("x * * * *").unwrap_err().starts_with("failed to parse int from x"));
        assert_eq!(parse("@sometimes").unwrap_err(), "unrecognized descriptor: @sometimes");
        assert!(parse("@every soon").is_err());
        assert_eq!(parse("").unwrap_err(), "empty spec string");
    }
}
