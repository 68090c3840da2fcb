-- Incidents and SLA as SQL, so Grafana's PostgreSQL datasource charts the same numbers the
-- API serves (/api/v1/incidents, /api/v1/sla).

CREATE VIEW incidents AS
SELECT id, service, severity, alertname, cluster, fingerprint, message, status, resolved,
       COALESCE(starts_at, created_at AT TIME ZONE 'UTC') AS starts_at,
       ends_at, resolved_at, labels, annotations, generator_url,
       EXTRACT(EPOCH FROM (CASE WHEN resolved THEN COALESCE(ends_at, resolved_at) END
                           - COALESCE(starts_at, created_at AT TIME ZONE 'UTC'))) AS resolve_seconds
FROM alerts;

-- Per service and severity, for incidents that started in [from, to):
-- incidents, open now, time to resolve p50/p95/max (seconds), minutes with a critical open
-- (the union of critical incidents' open intervals, clipped to the range).
CREATE FUNCTION alert_sla(range_from TIMESTAMPTZ, range_to TIMESTAMPTZ)
RETURNS TABLE (service TEXT, severity TEXT, incidents BIGINT, open_now BIGINT,
               resolve_p50_s DOUBLE PRECISION, resolve_p95_s DOUBLE PRECISION,
               resolve_max_s DOUBLE PRECISION, critical_open_minutes DOUBLE PRECISION)
LANGUAGE sql STABLE AS $$
WITH scoped AS (
    SELECT * FROM incidents i WHERE i.starts_at >= range_from AND i.starts_at < range_to
),
crit AS (  -- critical open intervals, clipped to the range and to now
    SELECT service, tstzrange(lo, hi) AS r
    FROM (SELECT s.service,
                 GREATEST(s.starts_at, range_from) AS lo,
                 LEAST(COALESCE(CASE WHEN s.resolved THEN COALESCE(s.ends_at, s.resolved_at) END, now()),
                       range_to, now()) AS hi
          FROM scoped s WHERE s.severity = 'critical') b
    WHERE lo < hi
),
crit_minutes AS (
    SELECT c.service,
           EXTRACT(EPOCH FROM SUM(upper(m.r) - lower(m.r))) / 60.0 AS minutes
    FROM (SELECT service, range_agg(r) AS ranges FROM crit GROUP BY service) c,
         LATERAL unnest(c.ranges) AS m(r)
    GROUP BY c.service
)
SELECT s.service::text, s.severity::text,
       COUNT(*)::bigint,
       COUNT(*) FILTER (WHERE NOT s.resolved)::bigint,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY s.resolve_seconds),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY s.resolve_seconds),
       MAX(s.resolve_seconds)::double precision,
       CASE WHEN s.severity = 'critical' THEN COALESCE(MAX(cm.minutes), 0)::double precision ELSE 0 END
FROM scoped s LEFT JOIN crit_minutes cm ON cm.service = s.service
GROUP BY s.service, s.severity
ORDER BY s.service, s.severity
$$;

-- All time, for dashboards that do not pass a range.
CREATE VIEW alert_sla_all AS SELECT * FROM alert_sla('-infinity', 'infinity');
