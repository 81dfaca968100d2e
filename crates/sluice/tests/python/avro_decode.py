"""Decodes Sluice's Avro messages with confluent-kafka's AvroDeserializer (fastavro), which
fetches the writer schema from the registry by the id in each message.

  avro_decode.py register URL SUBJECT SCHEMA_FILE   -> prints the schema id
  avro_decode.py decode URL TOPIC MESSAGES_FILE      -> prints one JSON object per message
                                                        (MESSAGES_FILE: one hex message per line)
"""
import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

cmd, url = sys.argv[1], sys.argv[2]
client = SchemaRegistryClient({"url": url})
if cmd == "register":
    subject, path = sys.argv[3], sys.argv[4]
    print(client.register_schema(subject, Schema(open(path).read(), "AVRO")))
else:
    topic, path = sys.argv[3], sys.argv[4]
    des = AvroDeserializer(client)
    ctx = SerializationContext(topic, MessageField.VALUE)
    for line in open(path):
        value = des(bytes.fromhex(line.strip()), ctx)
        print(json.dumps(value, default=lambda v: v.hex() if isinstance(v, bytes) else str(v), sort_keys=True))
