//! The value parsers of every `fastagentic run` option, in one family.
//!
//! Each error is only the "accepted: ..." part; [`crate::config::parse_cli`] turns it into one
//! line naming the flag, its `FASTAGENTIC_*` variable and the value. Where clap's own parsers
//! fit they are used: switches and the server kind are `ValueEnum`s (aliases included), so
//! clap lists what is accepted. Numbers are parsed here rather than with clap's ranged
//! parsers, whose errors for a non-number (`invalid digit found in string`) do not say what
//! is accepted.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use clap::builder::{EnumValueParser, TypedValueParser};

/// Longest accepted timeout or period, seconds (one day); larger values are almost always a
/// typo for milliseconds.
pub const MAX_SECONDS: f64 = 86_400.0;

/// A switch as written: `true`/`false`, or `1`/`0`, `yes`/`no`, `y`/`n`, `on`/`off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    #[value(alias = "1", alias = "yes", alias = "y", alias = "on")]
    True,
    #[value(alias = "0", alias = "no", alias = "n", alias = "off")]
    False,
}

/// Parser of switches (use with `ignore_case = true`): clap's enum parser, so a bad value
/// lists `true, false`.
pub fn switch() -> impl TypedValueParser<Value = bool> {
    EnumValueParser::<Switch>::new().map(|s| s == Switch::True)
}

/// An integer from `lo` to `hi`; `what` says what it counts.
pub fn int_in<T>(s: &str, lo: T, hi: T, what: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    match s.trim().parse::<T>() {
        Ok(v) if v >= lo && v <= hi => Ok(v),
        _ => Err(format!("accepted: {what}, an integer from {lo} to {hi}")),
    }
}

/// Seconds as a float: `> 0` (or `>= 0` with `allow_zero`), at most `max`.
pub fn seconds_f64(s: &str, allow_zero: bool, max: f64) -> Result<f64, String> {
    let low = if allow_zero { ">= 0" } else { "> 0" };
    let accepted = || format!("accepted: a number of seconds {low} and <= {max} (e.g. 5 or 0.5)");
    let v: f64 = s.trim().parse().map_err(|_| accepted())?;
    if !v.is_finite() || v < 0.0 || (!allow_zero && v == 0.0) || v > max {
        return Err(accepted());
    }
    Ok(v)
}

/// Largest byte size accepted (`--memory-store-max-bytes`): 64 GiB.
const MAX_BYTE_SIZE: u64 = 64 << 30;

/// A size in bytes, plain or with a Kubernetes quantity suffix: `4194304`, `4Mi`, `512Ki`,
/// `1Gi`, `8M`, `500k`; from 0 to 64Gi.
pub fn byte_size(s: &str) -> Result<u64, String> {
    let accepted = || {
        "accepted: a size in bytes from 0 to 64Gi, plain or with a suffix Ki, Mi, Gi, k, M or G \
         (e.g. 4Mi)"
            .to_owned()
    };
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits);
    let factor: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(accepted()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|&n| n <= MAX_BYTE_SIZE)
        .ok_or_else(accepted)
}

/// `--port`.
pub fn port(s: &str) -> Result<u16, String> {
    int_in(s, 1, u16::MAX, "a TCP port")
}

/// `--workers`.
pub fn workers(s: &str) -> Result<u32, String> {
    int_in(
        s,
        1,
        crate::config::MAX_WORKERS,
        "a number of worker processes",
    )
}

/// `--redis-pool-size`, `--db-pool-size`.
pub fn pool_size(s: &str) -> Result<u32, String> {
    int_in(s, 1, 10_000, "a pool size")
}

/// `--db-max-overflow`.
pub fn overflow(s: &str) -> Result<u32, String> {
    int_in(s, 0, 10_000, "a number of overflow connections")
}

/// `--max-requests`, `--max-requests-jitter`.
pub fn count(s: &str) -> Result<u64, String> {
    int_in(s, 0, u64::MAX, "a number of requests (0 = never)")
}

/// `--max-body-size`.
pub fn body_size(s: &str) -> Result<usize, String> {
    int_in(s, 1, 1 << 32, "a size in bytes")
}

/// `--echo-delay-ms`.
pub fn delay_ms(s: &str) -> Result<u64, String> {
    int_in(s, 0, 600_000, "milliseconds")
}

/// Seconds `>= 0`, at most a day (`--timeout-graceful`).
pub fn seconds(s: &str) -> Result<Duration, String> {
    seconds_f64(s, true, MAX_SECONDS).map(Duration::from_secs_f64)
}

/// Seconds `> 0`, at most a day (timeouts, `--db-pool-recycle`).
pub fn positive_seconds(s: &str) -> Result<Duration, String> {
    seconds_f64(s, false, MAX_SECONDS).map(Duration::from_secs_f64)
}

/// Seconds `> 0`, at most a day, as a float (`--agent-timeout` and the waits it defaults).
pub fn positive_seconds_f64(s: &str) -> Result<f64, String> {
    seconds_f64(s, false, MAX_SECONDS)
}

/// Seconds `>= 0`, at most a day, as a float, where 0 turns the limit off; `zero` says what
/// 0 means in the error.
fn seconds_or_zero_f64(s: &str, zero: &str) -> Result<f64, String> {
    seconds_f64(s, true, MAX_SECONDS).map_err(|_| {
        format!("accepted: a number of seconds > 0 and <= {MAX_SECONDS} (e.g. 5 or 0.5), or 0 for {zero}")
    })
}

/// `--run-max-duration`: seconds, or 0 for unlimited.
pub fn run_max_duration(s: &str) -> Result<f64, String> {
    seconds_or_zero_f64(s, "unlimited")
}

/// `--stream-heartbeat`: seconds, or 0 for off.
pub fn heartbeat(s: &str) -> Result<Duration, String> {
    seconds_or_zero_f64(s, "off").map(Duration::from_secs_f64)
}

/// `--host`: an IP address, or `localhost` (127.0.0.1).
pub fn host(s: &str) -> Result<IpAddr, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    s.parse()
        .map_err(|_| "accepted: an IPv4 or IPv6 address (e.g. 0.0.0.0, ::) or localhost".into())
}

/// `--max-concurrent`: a positive integer, or `unlimited` (`None`).
pub fn limit(s: &str) -> Result<Option<NonZeroU32>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    match t.parse::<u32>().ok().and_then(NonZeroU32::new) {
        Some(n) => Ok(Some(n)),
        None => Err("accepted: a positive integer or 'unlimited'".to_owned()),
    }
}

/// `--title`.
pub fn title(s: &str) -> Result<String, String> {
    if s.trim().is_empty() || s.len() > 200 {
        Err("accepted: a non-empty title of at most 200 bytes".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

/// `--log-level`: a tracing filter.
pub fn log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|_| "accepted: a tracing filter such as info, warn or agent_runtime=debug".into())
}

/// URLs: absolute http(s) URLs only.
pub fn http_url(s: &str) -> Result<reqwest::Url, String> {
    match reqwest::Url::parse(s.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        _ => Err("accepted: an absolute http:// or https:// URL".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_take_quantity_suffixes() {
        assert_eq!(byte_size("4194304"), Ok(4 << 20));
        assert_eq!(byte_size("4Mi"), Ok(4 << 20));
        assert_eq!(byte_size("512Ki"), Ok(512 << 10));
        assert_eq!(byte_size("1Gi"), Ok(1 << 30));
        assert_eq!(byte_size("8M"), Ok(8_000_000));
        assert_eq!(byte_size("500k"), Ok(500_000));
        assert_eq!(byte_size("0"), Ok(0));
        assert_eq!(byte_size("64Gi"), Ok(64 << 30));
        for bad in [
            "",
            "Mi",
            "4MB",
            "4 Mi",
            "-1",
            "1.5Mi",
            "65Gi",
            "99999999999999999999",
        ] {
            let err = byte_size(bad).expect_err(bad);
            assert!(err.contains("from 0 to 64Gi"), "{bad}: {err}");
        }
    }

    #[test]
    fn numbers_say_what_is_accepted() {
        assert_eq!(port("8080"), Ok(8080));
        assert_eq!(port(" 1 "), Ok(1));
        for bad in ["0", "65536", "-1", "x", ""] {
            let err = port(bad);
            assert!(
                matches!(&err, Err(e) if e.starts_with("accepted: a TCP port")),
                "{bad}: {err:?}"
            );
        }
        assert_eq!(overflow("0"), Ok(0));
        assert!(pool_size("0").is_err());
    }

    #[test]
    fn seconds_are_bounded_and_finite() {
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        assert_eq!(positive_seconds("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "NaN", "inf", "1e9", "abc"] {
            let err = positive_seconds(bad);
            assert!(
                matches!(&err, Err(e) if e.contains("> 0")),
                "{bad}: {err:?}"
            );
        }
        assert!(seconds("86400.5").is_err());
        assert_eq!(run_max_duration("0"), Ok(0.0));
        assert_eq!(heartbeat("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["-1", "x", "86401"] {
            let err = run_max_duration(bad);
            assert!(
                matches!(&err, Err(e) if e.ends_with("or 0 for unlimited")),
                "{bad}: {err:?}"
            );
            let err = heartbeat(bad);
            assert!(
                matches!(&err, Err(e) if e.ends_with("or 0 for off")),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn limits_hosts_and_urls() {
        assert_eq!(limit("unlimited"), Ok(None));
        assert_eq!(limit("4"), Ok(NonZeroU32::new(4)));
        assert!(limit("0").is_err());
        assert_eq!(host("localhost"), Ok(IpAddr::from([127, 0, 0, 1])));
        assert!(host("example.com").is_err());
        assert!(http_url("http://a:1/chat").is_ok());
        assert!(http_url("localhost:8080").is_err());
        assert!(http_url("ftp://x").is_err());
    }
}
