//! The label contract every component follows (ARCHITECTURE.md, "Labels"): which label
//! carries the service and the cluster, in the order alertpipe reads them. Alerts and log
//! streams use the same lists, so an alert and the logs behind it name the same service.

/// The service: `service` (the contract's label), then `service_name` (Grafana/OTel name,
/// equal to `service` in this system's Promtail config), then `job`, for senders that follow
/// other conventions.
pub const SERVICE_LABELS: [&str; 3] = ["service", "service_name", "job"];

/// The deployment: `cluster` (the contract's label), then `env` (older Promtail configs).
pub const CLUSTER_LABELS: [&str; 2] = ["cluster", "env"];

/// The service name when none of [`SERVICE_LABELS`] is set.
pub const UNKNOWN_SERVICE: &str = "unknown";

/// The first non-empty (trimmed) value of `keys` found by `get`.
pub fn first_of<'a>(keys: &[&str], get: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| get(k).map(str::trim).filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn first_non_empty_wins_in_contract_order() {
        let m = BTreeMap::from([("service_name", " "), ("job", "payment-service")]);
        let get = |k: &str| m.get(k).copied();
        assert_eq!(first_of(&SERVICE_LABELS, get), Some("payment-service"));
        let m = BTreeMap::from([("service", "payment"), ("service_name", "pay")]);
        assert_eq!(
            first_of(&SERVICE_LABELS, |k| m.get(k).copied()),
            Some("payment")
        );
        assert_eq!(first_of(&CLUSTER_LABELS, |_| None), None);
    }
}
