"""The plain boto3 reader of bench/dynamodb.rs.

Reads every shard of the stream STREAM_ARN on the DynamoDB Local endpoint in
CDC_BRIDGE_DYNAMODB_ENDPOINT from TRIM_HORIZON with GetRecords in a loop (the shards the
emulator lists when it starts: one per table there), deserializes each record's keys and images into Python
values, and stops once RECORDS records were read. Prints the number read.

    python dynamodb_boto3.py STREAM_ARN RECORDS
"""

import os
import sys

import boto3
from boto3.dynamodb.types import TypeDeserializer


def main():
    stream_arn, wanted = sys.argv[1], int(sys.argv[2])
    streams = boto3.client(
        "dynamodbstreams",
        endpoint_url=os.environ["CDC_BRIDGE_DYNAMODB_ENDPOINT"],
        region_name="us-east-1",
    )
    deserializer = TypeDeserializer()
    shards = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    iterators = {}
    for shard in shards:
        iterators[shard["ShardId"]] = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
    read = 0
    while read < wanted and iterators:
        for shard_id, iterator in list(iterators.items()):
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            for record in page["Records"]:
                change = record["dynamodb"]
                for part in ("Keys", "NewImage", "OldImage"):
                    if part in change:
                        {k: deserializer.deserialize(v) for k, v in change[part].items()}
                read += 1
            if page.get("NextShardIterator"):
                iterators[shard_id] = page["NextShardIterator"]
            else:
                del iterators[shard_id]
    print(read)


if __name__ == "__main__":
    main()
