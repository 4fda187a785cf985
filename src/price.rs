//! Fixed-point prices: integers in units of 1/10,000, as NASDAQ ITCH Price(4).
//!
//! No floating point touches a price anywhere in tickrelay. JSON shows a price
//! as an exact decimal string (`"189.1200"`) so no client parses it through a
//! float by accident; MessagePack carries the raw integer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Units per whole currency unit.
pub const SCALE: i64 = 10_000;

/// A price in 1/10,000 of a currency unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(pub i64);

impl Price {
    /// The raw fixed-point value (1/10,000 units).
    pub const fn raw(self) -> i64 {
        self.0
    }

    /// Writes the exact decimal form (`-12.3400`) into `out` without allocating
    /// beyond `out`'s own growth.
    pub fn write_decimal(self, out: &mut Vec<u8>) {
        let v = self.0;
        if v < 0 {
            out.push(b'-');
        }
        let abs = v.unsigned_abs();
        let whole = abs / SCALE as u64;
        let frac = abs % SCALE as u64;
        let mut buf = itoa::Buffer::new();
        out.extend_from_slice(buf.format(whole).as_bytes());
        out.push(b'.');
        let digits = [
            (frac / 1000) as u8,
            (frac / 100 % 10) as u8,
            (frac / 10 % 10) as u8,
            (frac % 10) as u8,
        ];
        for d in digits {
            out.push(b'0' + d);
        }
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(24);
        self.write_decimal(&mut out);
        // write_decimal emits ASCII only.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

/// Why a decimal string is not a price.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParsePriceError {
    /// Empty input, a stray character, or no digits.
    #[error("not a decimal number")]
    Syntax,
    /// More than four digits after the point.
    #[error("more than 4 decimal places")]
    TooPrecise,
    /// Does not fit in i64 ten-thousandths.
    #[error("out of range")]
    Overflow,
}

impl FromStr for Price {
    type Err = ParsePriceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (neg, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (whole, frac) = match body.split_once('.') {
            Some((w, f)) => (w, f),
            None => (body, ""),
        };
        if whole.is_empty() && frac.is_empty() {
            return Err(ParsePriceError::Syntax);
        }
        if !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return Err(ParsePriceError::Syntax);
        }
        if frac.len() > 4 {
            return Err(ParsePriceError::TooPrecise);
        }
        // i128 so that the most negative i64 still parses.
        let mut value: i128 = 0;
        for b in whole.bytes() {
            value = value * 10 + i128::from(b - b'0');
            if value > i128::from(i64::MAX) + 1 {
                return Err(ParsePriceError::Overflow);
            }
        }
        value *= i128::from(SCALE);
        let mut scale = i128::from(SCALE / 10);
        for b in frac.bytes() {
            value += i128::from(b - b'0') * scale;
            scale /= 10;
        }
        let value = if neg { -value } else { value };
        i64::try_from(value)
            .map(Price)
            .map_err(|_| ParsePriceError::Overflow)
    }
}

impl Serialize for Price {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let mut out = Vec::with_capacity(24);
            self.write_decimal(&mut out);
            serializer.serialize_str(std::str::from_utf8(&out).unwrap_or("0.0000"))
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            i64::deserialize(deserializer).map(Price)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_exact_decimals() {
        assert_eq!(Price(1_891_200).to_string(), "189.1200");
        assert_eq!(Price(1).to_string(), "0.0001");
        assert_eq!(Price(-15).to_string(), "-0.0015");
        assert_eq!(Price(0).to_string(), "0.0000");
        assert_eq!(
            Price(i64::MIN).to_string(),
            "-922337203685477.5808",
            "the most negative value formats without overflow"
        );
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!("189.12".parse(), Ok(Price(1_891_200)));
        assert_eq!("-0.0015".parse(), Ok(Price(-15)));
        assert_eq!("7".parse(), Ok(Price(70_000)));
        assert_eq!(".5".parse(), Ok(Price(5_000)));
        assert_eq!("1.23456".parse::<Price>(), Err(ParsePriceError::TooPrecise));
        assert_eq!("1e5".parse::<Price>(), Err(ParsePriceError::Syntax));
        assert_eq!("".parse::<Price>(), Err(ParsePriceError::Syntax));
        assert_eq!("-".parse::<Price>(), Err(ParsePriceError::Syntax));
        assert_eq!(
            "99999999999999999999".parse::<Price>(),
            Err(ParsePriceError::Overflow)
        );
    }

    proptest::proptest! {
        #[test]
        fn decimal_round_trip(raw in proptest::num::i64::ANY) {
            let p = Price(raw);
            proptest::prop_assert_eq!(p.to_string().parse::<Price>(), Ok(p));
        }
    }
}
