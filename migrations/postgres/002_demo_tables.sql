-- The demo's tables (connectors/postgres-*.toml capture them). Skip this file for your own
-- tables. Safe to run again.
CREATE TABLE IF NOT EXISTS public.customers (
  id         bigint PRIMARY KEY,
  email      text NOT NULL,
  name       text,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.orders (
  id          bigint PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES public.customers (id),
  amount      numeric(12, 2) NOT NULL,
  status      text NOT NULL DEFAULT 'new',
  tags        text[],
  details     jsonb,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT ON public.customers, public.orders TO cdc_bridge;
