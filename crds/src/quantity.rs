//! Kubernetes quantities (`1Gi`, `1024Mi`, `2G`, `1.5e9`, `500m`) as exact
//! amounts, so that sizes written in different units compare correctly.
//!
//! k8s-openapi's `Quantity` is only the string. This follows the grammar of
//! `k8s.io/apimachinery/pkg/api/resource`:
//!
//! ```text
//! quantity ::= number suffix
//! number   ::= [+] digits [. digits] | [+] . digits
//! suffix   ::= "" | n | u | m | k | M | G | T | P | E     (decimal SI)
//!            | Ki | Mi | Gi | Ti | Pi | Ei                 (binary SI)
//!            | (e | E) [+|-] digits                       (decimal exponent)
//! ```
//!
//! Like Kubernetes, an amount is kept to nano precision (a finer fraction
//! rounds up). Negative quantities are refused: no size is negative.

use std::cmp::Ordering;

/// An exact non-negative amount, in billionths of the unit (bytes for sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount {
    nanos: u128,
}

impl Amount {
    /// The amount in billionths of the unit.
    pub fn nanos(self) -> u128 {
        self.nanos
    }

    /// The amount in whole units, rounded up (bytes, for a size).
    pub fn units(self) -> u128 {
        self.nanos.div_ceil(NANO)
    }
}

/// Why a text is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a quantity: {why}")]
pub struct ParseError {
    text: String,
    why: &'static str,
}

const NANO: u128 = 1_000_000_000;
/// A bound on `e`/`E` exponents: far beyond any amount that fits, and small
/// enough that the arithmetic below never needs more.
const MAX_EXPONENT: i32 = 60;

/// Parses a Kubernetes quantity such as `10Gi`, `1024Mi`, `2G` or `1.5e3`.
pub fn parse(text: &str) -> Result<Amount, ParseError> {
    let fail = |why| ParseError {
        text: text.to_owned(),
        why,
    };
    let unsigned = match text.as_bytes().first() {
        Some(b'-') => return Err(fail("negative")),
        Some(b'+') => &text[1..],
        Some(_) => text,
        None => return Err(fail("empty")),
    };
    let number_len = unsigned
        .bytes()
        .position(|c| !(c.is_ascii_digit() || c == b'.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(fail("no digits"));
    }
    if fraction.contains('.') {
        return Err(fail("more than one decimal point"));
    }
    // Trailing zeros of the fraction add nothing but digits.
    let fraction = fraction.trim_end_matches('0');

    // value = mantissa * 10^(exponent10 - fraction digits) * 2^exponent2
    let (exponent10, exponent2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other => {
            let digits = other
                .strip_prefix(['e', 'E'])
                .ok_or_else(|| fail("unknown suffix"))?;
            let (negative, digits) = match digits.as_bytes().first() {
                Some(b'-') => (true, &digits[1..]),
                Some(b'+') => (false, &digits[1..]),
                _ => (false, digits),
            };
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err(fail("unknown suffix"));
            }
            let value: i32 = digits
                .trim_start_matches('0')
                .parse()
                .ok()
                .filter(|v| *v <= MAX_EXPONENT)
                .or(digits.bytes().all(|c| c == b'0').then_some(0))
                .ok_or_else(|| fail("exponent out of range"))?;
            (if negative { -value } else { value }, 0)
        }
    };

    let too_large = || fail("too large");
    let mut mantissa: u128 = 0;
    for digit in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(digit - b'0')))
            .ok_or_else(too_large)?;
    }
    let fraction_digits = i32::try_from(fraction.len()).map_err(|_| too_large())?;
    let scaled = mantissa
        .checked_mul(1u128 << exponent2)
        .ok_or_else(too_large)?;
    // In nanos: times 10^(9 + exponent10 - fraction digits).
    let shift = 9 + exponent10 - fraction_digits;
    let nanos = if shift >= 0 {
        let factor = 10u128
            .checked_pow(shift.unsigned_abs())
            .ok_or_else(too_large)?;
        scaled.checked_mul(factor).ok_or_else(too_large)?
    } else {
        // Finer than a nano: rounded up, as Kubernetes does.
        match 10u128.checked_pow(shift.unsigned_abs()) {
            Some(divisor) => scaled.div_ceil(divisor),
            // 10^39 and more exceed any u128: a nonzero amount rounds up to 1n.
            None => u128::from(scaled > 0),
        }
    };
    Ok(Amount { nanos })
}

/// How `a` compares with `b` as amounts: `1Gi` equals `1024Mi`, `2G` is
/// less than `2Gi`.
pub fn compare(a: &str, b: &str) -> Result<Ordering, ParseError> {
    Ok(parse(a)?.cmp(&parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(s: &str) -> u128 {
        parse(s).unwrap_or_else(|e| panic!("{e}")).units()
    }

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(units("0"), 0);
        assert_eq!(units("1"), 1);
        assert_eq!(units("1Ki"), 1024);
        assert_eq!(units("1Mi"), 1 << 20);
        assert_eq!(units("1Gi"), 1 << 30);
        assert_eq!(units("1Ti"), 1 << 40);
        assert_eq!(units("1Pi"), 1 << 50);
        assert_eq!(units("1Ei"), 1 << 60);
        assert_eq!(units("1k"), 1_000);
        assert_eq!(units("1M"), 1_000_000);
        assert_eq!(units("2G"), 2_000_000_000);
        assert_eq!(units("1T"), 10u128.pow(12));
        assert_eq!(units("1P"), 10u128.pow(15));
        assert_eq!(units("1E"), 10u128.pow(18));
        assert_eq!(units("+10Gi"), 10 << 30);
    }

    #[test]
    fn fractions_exponents_and_small_units() {
        assert_eq!(units("1.5Gi"), 3 << 29);
        assert_eq!(units("1.5G"), 1_500_000_000);
        assert_eq!(units("0.5Ki"), 512);
        assert_eq!(units(".5Ki"), 512);
        assert_eq!(units("1.Ki"), 1024);
        assert_eq!(
            units("1.000000000000000000000000000000000000000000Gi"),
            1 << 30
        );
        assert_eq!(units("1e9"), 1_000_000_000);
        assert_eq!(units("1E9"), 1_000_000_000);
        assert_eq!(units("1e+3"), 1_000);
        assert_eq!(units("15e-1"), 2, "1.5 rounds up to whole units");
        assert_eq!(parse("500m").unwrap().nanos(), 500_000_000);
        assert_eq!(parse("1u").unwrap().nanos(), 1_000);
        assert_eq!(parse("1n").unwrap().nanos(), 1);
        assert_eq!(parse("0.1n").unwrap().nanos(), 1, "finer than 1n rounds up");
        assert_eq!(parse("1e-60").unwrap().nanos(), 1);
        assert_eq!(parse("0e-60").unwrap().nanos(), 0);
        assert_eq!(parse("0.1Ki").unwrap().nanos(), 102_400_000_000);
    }

    #[test]
    fn the_same_size_in_other_units_compares_equal() {
        use Ordering::*;
        for (a, b, order) in [
            ("1Gi", "1024Mi", Equal),
            ("1Gi", "1048576Ki", Equal),
            ("1Gi", "1073741824", Equal),
            ("1G", "1000M", Equal),
            ("1G", "1e9", Equal),
            ("1.5Gi", "1536Mi", Equal),
            ("2G", "2Gi", Less),
            ("1Gi", "2G", Less),
            ("2G", "1Gi", Greater),
            ("1Gi", "1G", Greater),
            ("1023Mi", "1Gi", Less),
            ("10Gi", "9Gi", Greater),
            ("1Ei", "1E", Greater),
        ] {
            assert_eq!(compare(a, b).unwrap(), order, "{a} vs {b}");
        }
    }

    #[test]
    fn what_is_not_a_quantity_is_refused_with_the_reason() {
        for (text, why) in [
            ("", "empty"),
            ("-1Gi", "negative"),
            ("Gi", "no digits"),
            (".", "no digits"),
            ("1.2.3", "more than one decimal point"),
            ("1GB", "unknown suffix"),
            ("1 Gi", "unknown suffix"),
            ("1gi", "unknown suffix"),
            ("1e", "unknown suffix"),
            ("1e1.5", "unknown suffix"),
            ("1e61", "exponent out of range"),
            ("1e99999999999999999999", "exponent out of range"),
            ("999999999999999999999999999999Ei", "too large"),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.why, why, "{text}");
            assert!(
                err.to_string()
                    .starts_with(&format!("{text:?} is not a quantity"))
            );
        }
    }

    #[test]
    fn every_spec_size_parses() {
        for size in ["10Gi", "100M", "1.5G", "0", "7", "3.25Ti"] {
            assert!(crate::validate::is_size(size), "{size}");
            parse(size).unwrap();
        }
    }
}
