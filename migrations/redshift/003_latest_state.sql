-- From change events to the current rows. Delivery is at-least-once: after a restart a few
-- events arrive again, always in source order per key. So the newest event of a key is its
-- state, and its op says whether the row still exists.
--
-- "Newest" = the highest source position; events of one transaction share a position (its
-- commit LSN, for PostgreSQL, written "X/Y" in hex), so the record's place in the stream
-- breaks the tie (a key's records are all on one shard or partition, in order).

-- Every change of the demo's orders table from Kinesis, typed.
CREATE VIEW cdc.order_changes AS
SELECT
  payload.op::varchar AS op,
  payload.source."position"::varchar AS source_position,
  STRTOL(SPLIT_PART(payload.source."position"::varchar, '/', 1), 16) * 4294967296
    + STRTOL(SPLIT_PART(payload.source."position"::varchar, '/', 2), 16) AS lsn,
  sequence_number,
  partition_key,
  payload.key.id::bigint AS id,
  payload.after.customer_id::bigint AS customer_id,
  payload.after.amount::varchar::decimal(12, 2) AS amount,
  payload.after.status::varchar AS status,
  payload.after.updated_at::varchar AS updated_at
FROM cdc.kinesis_events
WHERE payload.source."schema"::varchar = 'public'
  AND payload.source."table"::varchar = 'orders';

-- The current orders: the newest event per key, unless it is a delete. A truncate event ends
-- everything before it (rows inserted after it have later positions).
CREATE VIEW cdc.orders_current AS
SELECT id, customer_id, amount, status, updated_at, source_position
FROM (
  SELECT
    c.*,
    ROW_NUMBER() OVER (
      PARTITION BY c.partition_key
      ORDER BY c.lsn DESC, LEN(c.sequence_number) DESC, c.sequence_number DESC
    ) AS newest
  FROM cdc.order_changes c
  WHERE c.op <> 'truncate'
    AND c.lsn > (SELECT COALESCE(MAX(t.lsn), -1) FROM cdc.order_changes t WHERE t.op = 'truncate')
) ranked
WHERE newest = 1
  AND op <> 'delete';
