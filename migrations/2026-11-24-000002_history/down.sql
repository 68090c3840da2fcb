DROP TABLE dead_letters;
DROP INDEX alerts_occurrence; DROP INDEX alerts_service_starts; DROP INDEX alerts_starts; DROP INDEX alerts_open;
ALTER TABLE alerts DROP COLUMN fingerprint, DROP COLUMN alertname, DROP COLUMN cluster,
    DROP COLUMN status, DROP COLUMN starts_at, DROP COLUMN ends_at, DROP COLUMN resolved_at,
    DROP COLUMN labels, DROP COLUMN annotations, DROP COLUMN generator_url,
    DROP COLUMN kafka_partition, DROP COLUMN kafka_offset, DROP COLUMN truncated;
