//! Exact parsing of Kubernetes resource quantities (`500m`, `1.5Gi`, `1e3`).
//!
//! Written here rather than taken from `kube_quantity`: that crate reads the
//! number through an `f64` (so long mantissas lose digits) and accepts a bare
//! suffix such as `Ki` as zero, which the API server rejects. Here the value is
//! kept as an integer mantissa times powers of ten and 1024, and every conversion
//! rounds explicitly, the way `resource.Quantity` does.
//!
//! The grammar is the one in `k8s.io/apimachinery/pkg/api/resource`:
//!
//! ```text
//! quantity        ::= signedNumber suffix
//! signedNumber    ::= number | sign number
//! number          ::= digits | digits "." digits | digits "." | "." digits
//! suffix          ::= binarySI | decimalExponent | decimalSI | ""
//! binarySI        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! decimalSI       ::= n | u | m | k | M | G | T | P | E
//! decimalExponent ::= ("e" | "E") signedInteger
//! ```

use std::fmt;
use std::str::FromStr;

/// Why a string is not a usable quantity. The `Display` form reads as a predicate
/// after the offending value: `"abc" is not a quantity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityError {
    /// Does not follow the quantity grammar.
    Malformed,
    /// A valid quantity, but below zero where only non-negative amounts make sense.
    Negative,
    /// Must be a whole number (device counts) but has a fraction.
    NotInteger,
    /// Too large for a `u64` in the requested unit (or for exact 128-bit arithmetic).
    OutOfRange,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuantityError::Malformed => "is not a quantity",
            QuantityError::Negative => "is negative",
            QuantityError::NotInteger => "is not a whole number",
            QuantityError::OutOfRange => "is out of range",
        })
    }
}

impl std::error::Error for QuantityError {}

/// How a conversion treats a remainder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Towards zero: capacities, so a node never looks bigger than it is.
    Down,
    /// Away from zero: requests, as `Quantity.Value()`/`MilliValue()` do.
    Up,
    /// A remainder is an error: device counts.
    Exact,
}

/// A parsed quantity: `(-1)^negative · mantissa · 10^exp10 · 1024^pow1024`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    pow1024: u32,
}

/// Exponents beyond this are refused outright; anything that large is out of
/// range for every unit, and it keeps the exponent arithmetic overflow-free.
const MAX_EXPONENT: i32 = 1_000;

impl Quantity {
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let (negative, rest) = match input.as_bytes().first() {
            Some(b'-') => (true, &input[1..]),
            Some(b'+') => (false, &input[1..]),
            _ => (false, input),
        };
        let int_len = digit_prefix_len(rest);
        let (int_digits, rest) = rest.split_at(int_len);
        let (frac_digits, suffix) = match rest.strip_prefix('.') {
            Some(after_dot) => after_dot.split_at(digit_prefix_len(after_dot)),
            None => ("", rest),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(QuantityError::Malformed);
        }
        // Trailing zeros of the fraction carry no value; dropping them keeps
        // "1.000000000000000000000000000000000000000" within 128 bits.
        let frac_digits = frac_digits.trim_end_matches('0');
        let mantissa = accumulate_digits(int_digits, frac_digits)?;
        let (suffix_exp10, pow1024) = parse_suffix(suffix)?;
        let frac_len = i32::try_from(frac_digits.len()).map_err(|_| QuantityError::OutOfRange)?;
        Ok(Quantity {
            negative,
            mantissa,
            exp10: suffix_exp10
                .checked_sub(frac_len)
                .ok_or(QuantityError::OutOfRange)?,
            pow1024,
        })
    }

    /// True for values below zero (`-0` is zero).
    pub fn is_negative(&self) -> bool {
        self.negative && self.mantissa != 0
    }

    /// `value · mul / div`, rounded as asked; negative values are refused.
    pub fn scaled(&self, mul: u64, div: u64, rounding: Rounding) -> Result<u64, QuantityError> {
        if self.is_negative() {
            return Err(QuantityError::Negative);
        }
        if self.mantissa == 0 {
            return Ok(0);
        }
        let mut num = self
            .mantissa
            .checked_mul(u128::from(mul))
            .and_then(|n| n.checked_mul(1024u128.checked_pow(self.pow1024)?))
            .ok_or(QuantityError::OutOfRange)?;
        let mut den = u128::from(div.max(1));
        let ten_pow = 10u128.checked_pow(self.exp10.unsigned_abs());
        if self.exp10 >= 0 {
            num = ten_pow
                .and_then(|p| num.checked_mul(p))
                .ok_or(QuantityError::OutOfRange)?;
        } else {
            match ten_pow.and_then(|p| den.checked_mul(p)) {
                Some(d) => den = d,
                // The denominator exceeds 2^128 > num: a nonzero value below one unit.
                None => return round_fraction_below_one(rounding),
            }
        }
        let (quotient, remainder) = (num / den, num % den);
        let rounded = match rounding {
            Rounding::Down => quotient,
            Rounding::Up => quotient + u128::from(remainder != 0),
            Rounding::Exact if remainder != 0 => return Err(QuantityError::NotInteger),
            Rounding::Exact => quotient,
        };
        u64::try_from(rounded).map_err(|_| QuantityError::OutOfRange)
    }

    /// Thousandths, rounded up (`MilliValue()`): CPU requests.
    pub fn milli_up(&self) -> Result<u64, QuantityError> {
        self.scaled(1000, 1, Rounding::Up)
    }

    /// Whole units, rounded up (`Value()`): memory requests in bytes.
    pub fn value_up(&self) -> Result<u64, QuantityError> {
        self.scaled(1, 1, Rounding::Up)
    }

    /// Whole units; a fraction is an error: device counts.
    pub fn value_exact(&self) -> Result<u64, QuantityError> {
        self.scaled(1, 1, Rounding::Exact)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

fn round_fraction_below_one(rounding: Rounding) -> Result<u64, QuantityError> {
    match rounding {
        Rounding::Down => Ok(0),
        Rounding::Up => Ok(1),
        Rounding::Exact => Err(QuantityError::NotInteger),
    }
}

fn digit_prefix_len(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

fn accumulate_digits(int_digits: &str, frac_digits: &str) -> Result<u128, QuantityError> {
    int_digits
        .bytes()
        .chain(frac_digits.bytes())
        .try_fold(0u128, |acc, d| {
            acc.checked_mul(10)?.checked_add(u128::from(d - b'0'))
        })
        .ok_or(QuantityError::OutOfRange)
}

/// `(power of ten, power of 1024)` a suffix stands for.
fn parse_suffix(suffix: &str) -> Result<(i32, u32), QuantityError> {
    let scale = match suffix {
        "" => (0, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        // A lone "E" is exa; "E" followed by an integer is an exponent.
        "E" => (18, 0),
        _ => (parse_exponent(suffix)?, 0),
    };
    Ok(scale)
}

fn parse_exponent(suffix: &str) -> Result<i32, QuantityError> {
    let digits = suffix
        .strip_prefix(['e', 'E'])
        .ok_or(QuantityError::Malformed)?;
    let (negative, digits) = match digits.as_bytes().first() {
        Some(b'-') => (true, &digits[1..]),
        Some(b'+') => (false, &digits[1..]),
        _ => (false, digits),
    };
    if digits.is_empty() || digit_prefix_len(digits) != digits.len() {
        return Err(QuantityError::Malformed);
    }
    // Every byte is a digit, so the only parse failure left is overflow.
    let magnitude = digits
        .parse::<i32>()
        .ok()
        .filter(|m| *m <= MAX_EXPONENT)
        .ok_or(QuantityError::OutOfRange)?;
    Ok(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s:?} {e}"))
    }

    #[test]
    fn plain_and_fractional_numbers() {
        assert_eq!(q("0").value_exact(), Ok(0));
        assert_eq!(q("8").value_exact(), Ok(8));
        assert_eq!(q("+8").value_exact(), Ok(8));
        assert_eq!(q("007").value_exact(), Ok(7));
        assert_eq!(q("0.5").milli_up(), Ok(500));
        assert_eq!(q(".5").milli_up(), Ok(500));
        assert_eq!(q("2.").milli_up(), Ok(2000));
        assert_eq!(q("1.000").value_exact(), Ok(1));
        assert_eq!(q("-0").value_exact(), Ok(0), "minus zero is zero");
    }

    #[test]
    fn decimal_si_suffixes() {
        assert_eq!(q("500m").milli_up(), Ok(500));
        assert_eq!(q("1500m").milli_up(), Ok(1500));
        assert_eq!(q("250000u").milli_up(), Ok(250));
        assert_eq!(q("1n").milli_up(), Ok(1), "rounded up to a milli");
        assert_eq!(q("1n").scaled(1000, 1, Rounding::Down), Ok(0));
        assert_eq!(q("2k").value_exact(), Ok(2_000));
        assert_eq!(q("3M").value_exact(), Ok(3_000_000));
        assert_eq!(q("1G").value_exact(), Ok(1_000_000_000));
        assert_eq!(q("1T").value_exact(), Ok(1_000_000_000_000));
        assert_eq!(q("1P").value_exact(), Ok(1_000_000_000_000_000));
        assert_eq!(q("1E").value_exact(), Ok(1_000_000_000_000_000_000));
        assert_eq!(q("1.5G").value_exact(), Ok(1_500_000_000));
    }

    #[test]
    fn binary_si_suffixes() {
        assert_eq!(q("1Ki").value_exact(), Ok(1024));
        assert_eq!(q("1Mi").value_exact(), Ok(1 << 20));
        assert_eq!(q("1.5Gi").value_exact(), Ok(3 << 29));
        assert_eq!(q("1Ti").value_exact(), Ok(1 << 40));
        assert_eq!(q("1Pi").value_exact(), Ok(1 << 50));
        assert_eq!(q("1Ei").value_exact(), Ok(1 << 60));
        assert_eq!(q("0.5Ki").value_exact(), Ok(512));
        assert_eq!(q("0.1Ki").value_up(), Ok(103), "102.4 rounds up");
        assert_eq!(q("0.1Ki").scaled(1, 1, Rounding::Down), Ok(102));
        assert_eq!(q("0.1Ki").value_exact(), Err(QuantityError::NotInteger));
    }

    #[test]
    fn exponents() {
        assert_eq!(q("1e3").value_exact(), Ok(1000));
        assert_eq!(q("1E3").value_exact(), Ok(1000));
        assert_eq!(q("1e+3").value_exact(), Ok(1000));
        assert_eq!(q("12e-1").milli_up(), Ok(1200));
        assert_eq!(q("1.5e2").value_exact(), Ok(150));
        assert_eq!(q("1e-3").milli_up(), Ok(1));
        assert_eq!(q("1e-300").milli_up(), Ok(1), "tiny but nonzero");
        assert_eq!(q("1e-300").scaled(1000, 1, Rounding::Down), Ok(0));
        assert_eq!(q("1e-300").value_exact(), Err(QuantityError::NotInteger));
        assert_eq!(q("0e999").value_exact(), Ok(0));
    }

    #[test]
    fn unit_conversions_round_as_asked() {
        let mi = 1u64 << 20;
        assert_eq!(q("1Gi").scaled(1, mi, Rounding::Down), Ok(1024));
        assert_eq!(q("1G").scaled(1, mi, Rounding::Down), Ok(953));
        assert_eq!(q("1G").scaled(1, mi, Rounding::Up), Ok(954));
        assert_eq!(
            q("1G").scaled(1, mi, Rounding::Exact),
            Err(QuantityError::NotInteger)
        );
        assert_eq!(q("1.1").milli_up(), Ok(1100));
        assert_eq!(q("0.0001").milli_up(), Ok(1));
        assert_eq!(q("0.0015").milli_up(), Ok(2));
    }

    #[test]
    fn long_mantissas_stay_exact() {
        // 2^53 + 1 is where an f64 would start to drop digits.
        assert_eq!(
            q("9007199254740993").value_exact(),
            Ok(9_007_199_254_740_993)
        );
        assert_eq!(
            q("18446744073709551615").value_exact(),
            Ok(u64::MAX),
            "u64::MAX itself fits"
        );
        assert_eq!(
            q("1.0000000000000000000000000000000000000000000").value_exact(),
            Ok(1)
        );
    }

    #[test]
    fn malformed_strings_are_refused() {
        for bad in [
            "", "abc", "-", "+", ".", "Ki", "m", "1.2.3", "1 ", " 1", "1KiB", "1ki", "1e", "1e+",
            "1e1.5", "1e3m", "1x", "--1", "1,5", "0x10", "1Mi2", "١",
        ] {
            assert_eq!(
                Quantity::parse(bad),
                Err(QuantityError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn negative_and_oversized_values_are_refused() {
        assert_eq!(q("-1").value_exact(), Err(QuantityError::Negative));
        assert_eq!(q("-500m").milli_up(), Err(QuantityError::Negative));
        assert!(q("-1").is_negative());
        assert!(!q("-0").is_negative());
        assert_eq!(
            q("18446744073709551616").value_exact(),
            Err(QuantityError::OutOfRange)
        );
        assert_eq!(q("16Ei").value_exact(), Err(QuantityError::OutOfRange));
        assert_eq!(q("1e30").value_exact(), Err(QuantityError::OutOfRange));
        assert_eq!(
            Quantity::parse("1e99999999999"),
            Err(QuantityError::OutOfRange)
        );
        assert_eq!(
            Quantity::parse("123456789012345678901234567890123456789012345"),
            Err(QuantityError::OutOfRange)
        );
    }

    #[test]
    fn errors_read_as_predicates() {
        assert_eq!(QuantityError::Malformed.to_string(), "is not a quantity");
        assert_eq!("2".parse::<Quantity>().map(|q| q.value_exact()), Ok(Ok(2)));
    }
}
