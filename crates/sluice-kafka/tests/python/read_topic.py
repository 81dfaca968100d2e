"""Reads a topic to its end with confluent-kafka, read_committed (only committed transactions),
and prints one JSON object per record: partition, offset, key, value (null for a tombstone) and
headers. Without REGISTRY_URL, keys and values are decoded as JSON where they are JSON, else
as text; with it, as Confluent-framed Avro by confluent-kafka's AvroDeserializer, which fetches
each writer schema from the registry by the id in the message. A topic that does not exist
prints nothing.

Usage: read_topic.py BOOTSTRAP TOPIC [REGISTRY_URL]
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

bootstrap, topic = sys.argv[1], sys.argv[2]
registry = sys.argv[3] if len(sys.argv) > 3 else None


def as_json(b, _field):
    """JSON when the bytes are JSON, else their text."""
    try:
        return json.loads(b)
    except ValueError:
        return b.decode("utf-8", "replace")


decode = as_json
if registry:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    avro = AvroDeserializer(SchemaRegistryClient({"url": registry}))
    fields = {"key": MessageField.KEY, "value": MessageField.VALUE}

    def decode(b, field):
        return avro(b, SerializationContext(topic, fields[field]))


c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-test-reader", "enable.auto.commit": False,
              "isolation.level": "read_committed", "enable.partition.eof": True})
md = c.list_topics(topic, timeout=10).topics.get(topic)
if md is None or md.error is not None or not md.partitions:
    sys.exit(0)
parts = sorted(md.partitions)
c.assign([TopicPartition(topic, p, 0) for p in parts])
at_end = set()
out = []
deadline = time.time() + 30
while len(at_end) < len(parts):
    if time.time() > deadline:
        raise SystemExit(f"{topic} was not read to its end within 30 s ({len(at_end)} of {len(parts)} partitions)")
    m = c.poll(0.5)
    if m is None:
        continue
    if m.error():
        if m.error().code() == KafkaError._PARTITION_EOF:
            at_end.add(m.partition())
            continue
        raise SystemExit(f"read {topic}: {m.error()}")
    at_end.discard(m.partition())
    key = None if m.key() is None else decode(m.key(), "key")
    value = None if m.value() is None else decode(m.value(), "value")
    headers = {k: (None if v is None else v.decode("utf-8", "replace")) for k, v in (m.headers() or [])}
    out.append({"partition": m.partition(), "offset": m.offset(), "key": key, "value": value, "headers": headers})
c.close()
for o in out:
    print(json.dumps(o, default=lambda v: v.hex() if isinstance(v, bytes) else str(v), sort_keys=True))
