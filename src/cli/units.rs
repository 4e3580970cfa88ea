//! Sizes and durations as people type them: `64MiB`, `10GiB`, `7d`. A plain
//! number is still a byte count, so existing scripts and config files keep
//! working. Integers only: a fraction of a byte or a rounding rule nobody
//! asked for would be a surprise.

use std::time::Duration;

/// Byte units, decimal (`KB` = 1000) and binary (`KiB` = 1024), matched
/// without regard to case.
const BYTE_UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kb", 1000),
    ("mb", 1000 * 1000),
    ("gb", 1000 * 1000 * 1000),
    ("tb", 1000 * 1000 * 1000 * 1000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

const DURATION_UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1000),
    ("m", 60 * 1000),
    ("h", 60 * 60 * 1000),
    ("d", 24 * 60 * 60 * 1000),
    ("w", 7 * 24 * 60 * 60 * 1000),
];

/// A byte count: `65536`, `64MiB`, `10GB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "NumberOrText")]
pub struct ByteSize(pub u64);

/// A duration that must carry its unit (`7d`, `12h`, `90s`, `500ms`): the
/// flags that take one replace `*-ms` flags, and a bare `7` would be read
/// as days by one person and milliseconds by another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct HumanDuration(pub Duration);

/// What a TOML value for a size may be: `segment_bytes = 65536` or `"64MiB"`.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<ByteSize, String> {
        let (number, unit) = split_number(text)?;
        if unit.is_empty() {
            return Ok(ByteSize(number));
        }
        let factor = lookup(BYTE_UNITS, unit).ok_or_else(|| {
            format!(
                "unknown size unit `{unit}` in `{text}`; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            )
        })?;
        number
            .checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl TryFrom<NumberOrText> for ByteSize {
    type Error = String;
    fn try_from(value: NumberOrText) -> Result<ByteSize, String> {
        match value {
            NumberOrText::Number(bytes) => Ok(ByteSize(bytes)),
            NumberOrText::Text(text) => text.parse(),
        }
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<HumanDuration, String> {
        let (number, unit) = split_number(text)?;
        if unit.is_empty() {
            return Err(format!(
                "`{text}` needs a unit: ms, s, m, h, d or w (as in 7d)"
            ));
        }
        let factor = lookup(DURATION_UNITS, unit).ok_or_else(|| {
            format!("unknown duration unit `{unit}` in `{text}`; use ms, s, m, h, d or w")
        })?;
        number
            .checked_mul(factor)
            .map(|ms| HumanDuration(Duration::from_millis(ms)))
            .ok_or_else(|| format!("`{text}` is too long"))
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(text: String) -> Result<HumanDuration, String> {
        text.parse()
    }
}

/// `64MiB` -> (64, "MiB"); spaces between the two are allowed.
fn split_number(text: &str) -> Result<(u64, &str), String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "`{text}` does not start with a whole number (as in 64MiB)"
        ));
    }
    let number = number
        .parse::<u64>()
        .map_err(|_| format!("`{text}` is too large"))?;
    Ok((number, unit.trim()))
}

fn lookup(units: &[(&str, u64)], unit: &str) -> Option<u64> {
    units
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
        .map(|&(_, factor)| factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &str) -> Result<u64, String> {
        text.parse::<ByteSize>().map(|size| size.0)
    }

    fn millis(text: &str) -> Result<u128, String> {
        text.parse::<HumanDuration>()
            .map(|duration| duration.0.as_millis())
    }

    #[test]
    fn sizes_take_plain_numbers_and_binary_and_decimal_units() {
        assert_eq!(bytes("4096"), Ok(4096));
        assert_eq!(bytes("64MiB"), Ok(64 << 20));
        assert_eq!(bytes("10GiB"), Ok(10 << 30));
        assert_eq!(bytes("1mib"), Ok(1 << 20));
        assert_eq!(bytes("2 KB"), Ok(2000));
        assert_eq!(bytes("7B"), Ok(7));
    }

    #[test]
    fn bad_sizes_say_what_is_wrong() {
        assert!(bytes("64MB").is_ok());
        let error = bytes("64Mi").unwrap_err();
        assert!(
            error.contains("unknown size unit `Mi`") && error.contains("MiB"),
            "{error}"
        );
        assert!(bytes("MiB").unwrap_err().contains("whole number"));
        assert!(bytes("1.5GiB").unwrap_err().contains("unknown size unit"));
        assert!(bytes("-1").unwrap_err().contains("whole number"));
        assert!(bytes("").is_err());
        assert!(bytes("99999999999TiB").unwrap_err().contains("too large"));
        assert!(bytes("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn durations_need_a_known_unit() {
        assert_eq!(millis("7d"), Ok(7 * 24 * 3600 * 1000));
        assert_eq!(millis("12h"), Ok(12 * 3600 * 1000));
        assert_eq!(millis("90s"), Ok(90_000));
        assert_eq!(millis("500ms"), Ok(500));
        assert_eq!(millis("2w"), Ok(14 * 24 * 3600 * 1000));
        assert!(millis("7").unwrap_err().contains("needs a unit"));
        assert!(millis("7days")
            .unwrap_err()
            .contains("unknown duration unit"));
        assert!(millis("99999999999999999w")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn toml_sizes_may_be_numbers_or_text() {
        #[derive(serde::Deserialize)]
        struct File {
            a: ByteSize,
            b: ByteSize,
            c: HumanDuration,
        }
        let file: File = toml::from_str("a = 4096\nb = \"64MiB\"\nc = \"7d\"\n").unwrap();
        assert_eq!((file.a.0, file.b.0), (4096, 64 << 20));
        assert_eq!(file.c.0, Duration::from_secs(7 * 24 * 3600));
        let error = toml::from_str::<File>("a = \"1XB\"\nb = 1\nc = \"1d\"\n")
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.contains("unknown size unit"), "{error}");
    }
}
