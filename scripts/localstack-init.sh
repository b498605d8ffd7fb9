#!/bin/sh
# LocalStack "ready" hook for docker-compose.yml: creates what the demo's pipelines write to
# and read from. LocalStack runs it once its services are up; the compose health check waits
# for it to complete.
set -eu
awslocal kinesis create-stream --stream-name cdc-bridge-demo --shard-count 2
awslocal kinesis wait stream-exists --stream-name cdc-bridge-demo
awslocal dynamodb create-table --table-name cdc-bridge-demo-items \
  --attribute-definitions AttributeName=pk,AttributeType=S \
  --key-schema AttributeName=pk,KeyType=HASH \
  --billing-mode PAY_PER_REQUEST \
  --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES
echo "cdc-bridge demo resources ready"
