-- Read-only role for Grafana's PostgreSQL datasource (alert history and SLA views).
CREATE ROLE grafana_reader LOGIN PASSWORD 'grafana';
GRANT CONNECT ON DATABASE alertpipe TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE alertpipe IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
