"""Reads a topic of Confluent-framed Avro to its end (read_committed) with confluent-kafka's
AvroDeserializer, which fetches each writer schema from the registry by the id in the message,
and prints one JSON object per record: partition, offset, key, value (null for a tombstone).

Usage: read_avro_topic.py BOOTSTRAP REGISTRY_URL TOPIC
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, registry, topic = sys.argv[1], sys.argv[2], sys.argv[3]
des = AvroDeserializer(SchemaRegistryClient({"url": registry}))
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-avro-reader", "enable.auto.commit": False,
              "isolation.level": "read_committed", "enable.partition.eof": True})
md = c.list_topics(topic, timeout=10).topics.get(topic)
if md is None or md.error is not None or not md.partitions:
    sys.exit(0)
parts = sorted(md.partitions)
c.assign([TopicPartition(topic, p, 0) for p in parts])
at_end, out, deadline = set(), [], time.time() + 30
while len(at_end) < len(parts):
    if time.time() > deadline:
        raise SystemExit(f"{topic} was not read to its end within 30 s")
    m = c.poll(0.5)
    if m is None:
        continue
    if m.error():
        if m.error().code() == KafkaError._PARTITION_EOF:
            at_end.add(m.partition())
            continue
        raise SystemExit(f"read {topic}: {m.error()}")
    at_end.discard(m.partition())
    key = None if m.key() is None else des(m.key(), SerializationContext(topic, MessageField.KEY))
    value = None if m.value() is None else des(m.value(), SerializationContext(topic, MessageField.VALUE))
    out.append({"partition": m.partition(), "offset": m.offset(), "key": key, "value": value})
c.close()
for o in out:
    print(json.dumps(o, default=lambda v: v.hex() if isinstance(v, bytes) else str(v), sort_keys=True))
