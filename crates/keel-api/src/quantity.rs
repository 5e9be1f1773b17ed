//! Kubernetes resource quantities (`100m`, `0.5`, `128Mi`, `1e3`, `2G`): parsed exactly into billionths, so
//! that validation can refuse malformed ones and the scheduler can add and compare requests (CPU in
//! millicores, memory in bytes, both rounded up as Kubernetes rounds them).

use std::cmp::Ordering;

/// The message Kubernetes gives for a malformed quantity.
pub const QUANTITY_FORMAT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("{QUANTITY_FORMAT}")]
    Format,
    #[error("quantity is too large")]
    TooLarge,
}

/// A quantity, exactly, in units of 10⁻⁹ (finer fractions are rounded up, as Kubernetes rounds up to its
/// nano scale).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Quantity {
    nanos: i128,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let s = s.trim();
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_len);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(QuantityError::Format);
        }
        // The value is digits × 10^exp10 × 2^exp2.
        let digits = format!("{int}{frac}");
        let mut exp10: i32 = -(frac.len() as i32);
        let mut exp2: u32 = 0;
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            e if e.starts_with(['e', 'E']) => {
                let n = &e[1..];
                let unsigned = n.strip_prefix(['+', '-']).unwrap_or(n);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) || unsigned.len() > 3 {
                    return Err(QuantityError::Format);
                }
                exp10 += n.parse::<i32>().map_err(|_| QuantityError::Format)?;
            }
            _ => return Err(QuantityError::Format),
        }
        // Leading zeros do not count against the size limit.
        let digits = digits.trim_start_matches('0');
        if digits.len() > 36 {
            return Err(QuantityError::TooLarge);
        }
        let mantissa: i128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| QuantityError::Format)? };
        let mut nanos = mantissa.checked_shl(exp2).filter(|v| v >> exp2 == mantissa).ok_or(QuantityError::TooLarge)?;
        let scale = exp10 + 9;
        if scale >= 0 {
            let f = 10i128.checked_pow(scale as u32).ok_or(QuantityError::TooLarge)?;
            nanos = nanos.checked_mul(f).ok_or(QuantityError::TooLarge)?;
        } else {
            // Below a nano: round up (away from zero for the magnitude, as Kubernetes does).
            let f = 10i128.checked_pow((-scale) as u32);
            nanos = match f {
                Some(f) => (nanos + f - 1) / f,
                None => i128::from(nanos > 0),
            };
        }
        if nanos > i128::from(i64::MAX) * NANO {
            return Err(QuantityError::TooLarge);
        }
        Ok(Quantity { nanos: if negative { -nanos } else { nanos } })
    }

    /// Whole units, rounded up (memory in bytes, pods).
    pub fn value(&self) -> i64 {
        ceil_div(self.nanos, NANO)
    }

    /// Thousandths, rounded up (CPU in millicores).
    pub fn milli_value(&self) -> i64 {
        ceil_div(self.nanos, 1_000_000)
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }
}

/// How Kubernetes writes a quantity back: with decimal suffixes (`500m`, `2k`) or, for one first written
/// with a binary suffix, with binary ones (`128Mi`) where the value allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Format {
    #[default]
    Decimal,
    Binary,
}

impl Format {
    /// The format of a quantity as written (`1Gi`: binary; anything else decimal).
    pub fn of(text: &str) -> Format {
        if text.trim().ends_with('i') {
            Format::Binary
        } else {
            Format::Decimal
        }
    }
}

impl Quantity {
    /// `n` whole units.
    pub fn from_units(n: i64) -> Quantity {
        Quantity { nanos: i128::from(n) * NANO }
    }

    /// `n` thousandths.
    pub fn from_millis(n: i64) -> Quantity {
        Quantity { nanos: i128::from(n) * 1_000_000 }
    }

    /// The quantity written canonically, as Kubernetes' `Quantity.String()` writes it: the largest suffix
    /// that keeps the number whole (`1500m`, `2k`, `1536Mi`); binary only for whole values of at least 1Ki.
    pub fn to_text(&self, format: Format) -> String {
        let (sign, magnitude) = if self.nanos < 0 { ("-", -self.nanos) } else { ("", self.nanos) };
        if format == Format::Binary && magnitude % NANO == 0 && magnitude / NANO >= 1024 {
            let mut units = magnitude / NANO;
            let mut suffix = 0;
            while suffix < 6 && units % 1024 == 0 {
                units /= 1024;
                suffix += 1;
            }
            return format!("{sign}{units}{}", ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][suffix]);
        }
        if magnitude == 0 {
            return "0".to_string();
        }
        // In nanos, the number is magnitude × 10^-9: raise the exponent by threes while it stays whole.
        let mut number = magnitude;
        let mut suffix = 0;
        while suffix < 9 && number % 1000 == 0 {
            number /= 1000;
            suffix += 1;
        }
        format!("{sign}{number}{}", ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"][suffix])
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;
    fn sub(self, o: Quantity) -> Quantity {
        Quantity { nanos: self.nanos.saturating_sub(o.nanos) }
    }
}

fn ceil_div(n: i128, d: i128) -> i64 {
    let q = n.div_euclid(d) + i128::from(n.rem_euclid(d) != 0);
    q.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;
    fn add(self, o: Quantity) -> Quantity {
        Quantity { nanos: self.nanos.saturating_add(o.nanos) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn the_forms_kubernetes_accepts() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("0.5").milli_value(), 500);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("1.").value(), 1);
        assert_eq!(q("2").milli_value(), 2000);
        assert_eq!(q("+2").value(), 2);
        assert_eq!(q("128Mi").value(), 128 << 20);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
        assert_eq!(q("1Ki").value(), 1024);
        assert_eq!(q("2G").value(), 2_000_000_000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E-3").milli_value(), 1);
        assert_eq!(q("1.5e+2").value(), 150);
        assert_eq!(q("500u").milli_value(), 1, "rounded up");
        assert_eq!(q("1n").milli_value(), 1, "rounded up");
        assert_eq!(q("1n").value(), 1, "rounded up");
        assert_eq!(q("0").value(), 0);
        assert_eq!(q("-1").value(), -1);
        assert!(q("-100m").is_negative());
        assert_eq!(q("7Ei").value(), 7 << 60);
        assert_eq!(q("0.1n").milli_value(), 1, "below a nano rounds up to one");
    }

    #[test]
    fn malformed_and_huge_quantities_are_refused() {
        for bad in ["", "m", "1.2.3", "1 Gi", "1gi", "1KiB", "1e", "1e1.5", "1ee3", "abc", "1x", "--1", "1e99999"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Quantity::parse("1z").unwrap_err().to_string(), QUANTITY_FORMAT);
        assert_eq!(Quantity::parse("100000000000000000000").unwrap_err(), QuantityError::TooLarge);
        assert_eq!(Quantity::parse("1e999").unwrap_err(), QuantityError::TooLarge);
        assert_eq!(Quantity::parse("8Ei").unwrap_err(), QuantityError::TooLarge, "2^63 units");
    }

    #[test]
    fn quantities_are_written_back_as_kubernetes_writes_them() {
        let text = |s: &str| q(s).to_text(Format::of(s));
        assert_eq!(text("1000m"), "1");
        assert_eq!(text("1500m"), "1500m");
        assert_eq!(text("0.5"), "500m");
        assert_eq!(text("2000"), "2k");
        assert_eq!(text("1500"), "1500");
        assert_eq!(text("0"), "0");
        assert_eq!(text("1n"), "1n");
        assert_eq!(text("128Mi"), "128Mi");
        assert_eq!(text("1.5Gi"), "1536Mi");
        assert_eq!(text("1Gi"), "1Gi");
        assert_eq!(text("512Ki"), "512Ki");
        assert_eq!(text("0.5Ki"), "512", "below 1Ki: decimal");
        assert_eq!(text("-2k"), "-2k");
        assert_eq!((q("128Mi") + q("128Mi")).to_text(Format::Binary), "256Mi");
        assert_eq!((q("250m") + q("750m")).to_text(Format::Decimal), "1");
        assert_eq!(Quantity::from_units(3).to_text(Format::Decimal), "3");
        assert_eq!(Quantity::from_millis(2500).to_text(Format::Decimal), "2500m");
    }

    #[test]
    fn quantities_compare_and_add_across_suffixes() {
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1Ki"), q("1024"));
        assert!(q("1G") < q("1Gi"));
        assert!(q("999m") < q("1"));
        assert_eq!((q("250m") + q("0.75")).milli_value(), 1000);
    }
}
