"""Decodes records in the AWS Glue Schema Registry wire format with AWS's own Python
deserializer (aws-glue-schema-registry), fetching each record's schema version from the Glue
API at CDC_BRIDGE_GLUE_ENDPOINT (moto in the tests).

stdin: a JSON array of base64 strings (null stays null). stdout: a JSON array of
{"data": the decoded record, "schema": the writer's schema's full name, "version": the
schema version's UUID}; bytes become base64, decimals their text.
"""
import base64
import decimal
import json
import os
import sys

import boto3
from aws_schema_registry import SchemaRegistryClient
from aws_schema_registry.serde import KafkaDeserializer
from aws_schema_registry.codec import decode


def plain(value):
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def main():
    glue = boto3.client(
        "glue",
        endpoint_url=os.environ["CDC_BRIDGE_GLUE_ENDPOINT"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )
    deserializer = KafkaDeserializer(SchemaRegistryClient(glue))
    out = []
    for encoded in json.load(sys.stdin):
        if encoded is None:
            out.append(None)
            continue
        raw = base64.b64decode(encoded)
        data, schema = deserializer.deserialize("unused", raw)
        _, version = decode(raw)
        out.append({"data": plain(data), "schema": schema.fqn, "version": str(version)})
    json.dump(out, sys.stdout)


main()
