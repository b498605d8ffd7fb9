-- The publication cdc-bridge reads. Creating it needs ownership of the tables, which is why a
-- DBA creates it here (cdc-bridge creates a missing publication itself only when its role owns
-- the tables). List your own tables instead of the demo's. Safe to run again.
-- publish_via_partition_root: a partitioned table's changes are published under its own name,
-- as its snapshot copies it (cdc-bridge refuses a publication that names the partitions).
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'cdc_bridge_demo') THEN
    CREATE PUBLICATION cdc_bridge_demo FOR TABLE public.customers, public.orders
      WITH (publish_via_partition_root = true);
  END IF;
END
$$;

-- Optional: full before-images for updates and deletes (more WAL); without it, `before` holds
-- the key only, for deletes and key changes.
-- ALTER TABLE public.orders REPLICA IDENTITY FULL;
