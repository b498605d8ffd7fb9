-- The demo's tables, the MySQL twins of migrations/postgres/002_demo_tables.sql. Skip this
-- file for your own tables. Safe to run again.
CREATE TABLE IF NOT EXISTS customers (
  id         BIGINT PRIMARY KEY,
  email      VARCHAR(255) NOT NULL,
  name       VARCHAR(255),
  created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
);

CREATE TABLE IF NOT EXISTS orders (
  id          BIGINT PRIMARY KEY,
  customer_id BIGINT NOT NULL,
  amount      DECIMAL(12, 2) NOT NULL,
  status      VARCHAR(32) NOT NULL DEFAULT 'new',
  details     JSON,
  updated_at  TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
  FOREIGN KEY (customer_id) REFERENCES customers (id)
);
