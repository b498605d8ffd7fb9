-- Redshift streaming ingestion from the Kinesis stream cdc-bridge writes (sink kind =
-- "kinesis", the default JSON format, aggregation off). Run in your Redshift database.
-- The IAM role attached to the cluster (or workgroup) needs kinesis:DescribeStreamSummary,
-- kinesis:GetShardIterator, kinesis:GetRecords, kinesis:ListShards and
-- kinesis:DescribeStream on the stream. Replace the stream name "cdc-bridge-demo" with yours.

CREATE EXTERNAL SCHEMA cdc_kinesis
FROM KINESIS
IAM_ROLE default;

CREATE SCHEMA IF NOT EXISTS cdc;

-- One row per Kinesis record: the record's place in the stream and the change event, parsed.
-- Every record cdc-bridge writes is one UTF-8 JSON object, so none is filtered out here.
CREATE MATERIALIZED VIEW cdc.kinesis_events AUTO REFRESH YES AS
SELECT
  approximate_arrival_timestamp,
  partition_key,
  shard_id,
  sequence_number,
  JSON_PARSE(FROM_VARBYTE(kinesis_data, 'utf-8')) AS payload
FROM cdc_kinesis."cdc-bridge-demo"
WHERE CAN_JSON_PARSE(FROM_VARBYTE(kinesis_data, 'utf-8'));
