-- Prepares a database for cdc-bridge. Run as a superuser, in the database to capture:
--   psql -v ON_ERROR_STOP=1 -d app -f migrations/postgres/001_prepare_database.sql
-- Safe to run again. Change the password (or set it later with ALTER ROLE ... PASSWORD).
--
-- Server settings (postgresql.conf; wal_level needs a restart):
--   wal_level = logical            -- logical decoding
--   max_replication_slots = 10     -- one per cdc-bridge pipeline, plus your other consumers
--   max_wal_senders = 10           -- one per running pipeline
--   max_slot_wal_keep_size = 10GB  -- optional: cap WAL kept for a stopped pipeline (the slot
--                                  -- is invalidated beyond it; cdc-bridge then says so)

-- The role cdc-bridge connects as: it may log in and stream logical replication.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cdc_bridge') THEN
    CREATE ROLE cdc_bridge WITH LOGIN REPLICATION PASSWORD 'change-me';
  ELSE
    ALTER ROLE cdc_bridge WITH LOGIN REPLICATION;
  END IF;
END
$$;

-- Read access for the initial snapshot, now and for tables created later.
DO $$
BEGIN
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO cdc_bridge', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO cdc_bridge;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO cdc_bridge;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO cdc_bridge;
