//! Durations as ContainerSSH takes them: Go duration strings ("60s", "1m30s", "250ms") and
//! integer nanoseconds (how Go's time.Duration is written in JSON, so config servers built with
//! ContainerSSH's Go library send `60000000000`). Written back as human-readable strings.
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Nanoseconds(u64),
    Text(String),
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match Raw::deserialize(d).map_err(|_| {
        serde::de::Error::custom(
            "expected a duration: a string such as \"60s\", \"1m30s\" or \"250ms\", or integer nanoseconds",
        )
    })? {
        Raw::Nanoseconds(n) => Ok(Duration::from_nanos(n)),
        Raw::Text(s) => parse(&s).map_err(serde::de::Error::custom),
    }
}

pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*value).to_string())
}

/// Go's `time.ParseDuration` forms (also "1h30m", "1.5s", "0") and humantime's ("1min").
fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if let Ok(d) = humantime::parse_duration(t) {
        return Ok(d);
    }
    parse_go(t).ok_or_else(|| {
        format!("invalid duration {text:?}: expected e.g. \"60s\", \"1m30s\", \"250ms\" or integer nanoseconds")
    })
}

/// Go's syntax: a sequence of decimal numbers (fractions allowed) each with a unit of ns, us,
/// µs, ms, s, m or h, e.g. "1.5s", "2h45m".
fn parse_go(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, serde::Serialize)]
    struct T {
        #[serde(with = "super")]
        d: Duration,
    }

    fn read(json: &str) -> Result<Duration, String> {
        serde_json::from_str::<T>(json)
            .map(|t| t.d)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn go_strings_and_nanoseconds_are_durations() {
        assert_eq!(read(r#"{"d": 60000000000}"#), Ok(Duration::from_secs(60)));
        assert_eq!(read(r#"{"d": "60s"}"#), Ok(Duration::from_secs(60)));
        assert_eq!(read(r#"{"d": "1m30s"}"#), Ok(Duration::from_secs(90)));
        assert_eq!(read(r#"{"d": "1.5s"}"#), Ok(Duration::from_millis(1500)));
        assert_eq!(read(r#"{"d": "2h45m"}"#), Ok(Duration::from_secs(9900)));
        assert_eq!(read(r#"{"d": "250ms"}"#), Ok(Duration::from_millis(250)));
        assert_eq!(read(r#"{"d": "0"}"#), Ok(Duration::ZERO));
        assert_eq!(read(r#"{"d": 0}"#), Ok(Duration::ZERO));
    }

    #[test]
    fn nonsense_is_a_clear_error() {
        let e = read(r#"{"d": "soon"}"#).unwrap_err();
        assert!(e.contains("invalid duration \"soon\""), "{e}");
        let e = read(r#"{"d": -5}"#).unwrap_err();
        assert!(e.contains("expected a duration"), "{e}");
        let e = read(r#"{"d": true}"#).unwrap_err();
        assert!(e.contains("expected a duration"), "{e}");
    }

    #[test]
    fn written_back_as_text() {
        let t = T {
            d: Duration::from_secs(90),
        };
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"d":"1m 30s"}"#);
    }
}
