-- Redshift streaming ingestion from the Kafka topics cdc-bridge writes on Amazon MSK (sink
-- kind = "kafka", topics "<pipeline>.<schema>.<table>"). Run in your Redshift database.
-- Replace the cluster ARN and the topic with yours; the IAM role needs kafka-cluster:Connect,
-- kafka-cluster:DescribeTopic and kafka-cluster:ReadData on the cluster and topics.

CREATE EXTERNAL SCHEMA cdc_msk
FROM MSK
IAM_ROLE default
AUTHENTICATION iam
CLUSTER_ARN 'arn:aws:kafka:us-east-1:123456789012:cluster/cdc-bridge-demo/00000000-0000-0000-0000-000000000000-1';

CREATE SCHEMA IF NOT EXISTS cdc;

-- One row per Kafka record; tombstones (null value, after deletes) are left out.
CREATE MATERIALIZED VIEW cdc.msk_order_events AUTO REFRESH YES AS
SELECT
  kafka_partition,
  kafka_offset,
  kafka_timestamp,
  kafka_key,
  JSON_PARSE(kafka_value) AS payload
FROM cdc_msk."postgres-kafka.public.orders"
WHERE kafka_value IS NOT NULL AND CAN_JSON_PARSE(kafka_value);
