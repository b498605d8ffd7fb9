-- The publication cdc-bridge reads. Creating it needs ownership of the tables, which is why a
-- DBA creates it here (cdc-bridge creates a missing publication itself only when its role owns
-- the tables). List your own tables instead of the demo's. Safe to run again.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'cdc_bridge_demo') THEN
    CREATE PUBLICATION cdc_bridge_demo FOR TABLE public.customers, public.orders;
  END IF;
END
$$;

-- Optional: full before-images for updates and deletes (more WAL); without it, `before` holds
-- the key only, for deletes and key changes.
-- ALTER TABLE public.orders REPLICA IDENTITY FULL;
