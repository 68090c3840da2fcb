//! Where a file goes: `<root>/<env>/<service>/<YYYY>/<MM>/<DD>/<HHMMSS>-<4 hex>.snappy.parquet`.
//! env: the contract's cluster label (`cluster`, then `env`), else the configured default;
//! service: `service`, `service_name`, then `job` (crate::domain::labels, as for alerts). The 4 hex digits come from (partition, first offset), so a retried
//! flush of the same rows writes the same name instead of a second file.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};

use crate::domain::labels::{first_of, CLUSTER_LABELS, SERVICE_LABELS, UNKNOWN_SERVICE};

/// A path segment that cannot climb out of its directory or split in two.
pub fn segment(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    match cleaned.trim_matches('.') {
        "" => "_".to_owned(),
        t => t.to_owned(),
    }
}

pub fn env_of(labels: &BTreeMap<String, String>, default_env: &str) -> String {
    let v = first_of(&CLUSTER_LABELS, |k| labels.get(k).map(String::as_str)).unwrap_or(default_env);
    segment(v)
}

pub fn service_of(labels: &BTreeMap<String, String>) -> String {
    let v =
        first_of(&SERVICE_LABELS, |k| labels.get(k).map(String::as_str)).unwrap_or(UNKNOWN_SERVICE);
    segment(v)
}

pub fn day_of(ts_ns: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_nanos(ts_ns).date_naive()
}

/// FNV-1a of (partition, first offset, attempt), folded to 16 bits.
pub fn suffix(partition: i32, first_offset: i64, attempt: u32) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in partition
        .to_le_bytes()
        .iter()
        .chain(first_offset.to_le_bytes().iter())
        .chain(attempt.to_le_bytes().iter())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ((h >> 48) ^ (h >> 32) ^ (h >> 16) ^ h) as u16
}

/// The file's path under the storage root. `first_ts_ns` is its earliest row.
pub fn file_path(
    env: &str,
    service: &str,
    first_ts_ns: i64,
    partition: i32,
    first_offset: i64,
    attempt: u32,
    codec: super::parquet::Codec,
) -> String {
    let t = DateTime::<Utc>::from_timestamp_nanos(first_ts_ns);
    format!(
        "{env}/{service}/{:04}/{:02}/{:02}/{:02}{:02}{:02}-{:04x}.{}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        suffix(partition, first_offset, attempt),
        codec.extension()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coldstore::parquet::Codec;

    #[test]
    fn path_matches_the_seed_layout() {
        // 2025-06-23T16:33:09Z
        let ts = 1_750_696_389_000_000_000;
        let p = file_path("prod", "payment", ts, 0, 42, 0, Codec::Snappy);
        assert!(p.starts_with("prod/payment/2025/06/23/163309-"), "{p}");
        assert!(p.ends_with(".snappy.parquet"));
        assert_eq!(
            p.len(),
            "prod/payment/2025/06/23/163309-1b9d.snappy.parquet".len()
        );
        assert_eq!(
            p,
            file_path("prod", "payment", ts, 0, 42, 0, Codec::Snappy),
            "deterministic"
        );
        assert_ne!(p, file_path("prod", "payment", ts, 1, 42, 0, Codec::Snappy));
    }

    #[test]
    fn env_and_service_fall_back_in_order() {
        let l = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            env_of(&l(&[("env", "e"), ("cluster", "prod")]), "d"),
            "prod"
        );
        assert_eq!(env_of(&l(&[("env", "e")]), "d"), "e");
        assert_eq!(env_of(&l(&[]), "d"), "d");
        let all = l(&[("service_name", "pay"), ("service", "s"), ("job", "j")]);
        assert_eq!(service_of(&all), "s");
        assert_eq!(
            service_of(&l(&[("service_name", "pay"), ("job", "j")])),
            "pay"
        );
        assert_eq!(
            service_of(&l(&[("job", "payment-service")])),
            "payment-service"
        );
        assert_eq!(service_of(&l(&[])), "unknown");
    }

    #[test]
    fn segments_cannot_escape() {
        assert_eq!(segment("../../etc"), "_.._etc");
        assert_eq!(segment(".."), "_");
        assert_eq!(segment("a/b"), "a_b");
        assert_eq!(segment(""), "_");
    }
}
