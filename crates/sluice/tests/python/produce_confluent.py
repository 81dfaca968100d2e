"""Writes records with confluent-kafka's own serializers, for Sluice's Kafka source to read.

usage: produce_confluent.py BOOTSTRAP REGISTRY AVRO_TOPIC JSON_TOPIC

AVRO_TOPIC: AvroSerializer keys and values (record shop.orders, logical types), an update of
id 1, and a delete of id 3 (its key without a value).
JSON_TOPIC: JSONSerializer keys and values (Confluent-framed JSON, JSON Schemas registered in
Sluice's registry).
"""
import datetime
import decimal
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, registry_url, avro_topic, json_topic = sys.argv[1:5]
registry = SchemaRegistryClient({"url": registry_url})

key_schema = '{"type": "record", "name": "OrderKey", "namespace": "shop", "fields": [{"name": "id", "type": "int"}]}'
value_schema = """{"type": "record", "name": "orders", "namespace": "shop", "fields": [
  {"name": "id", "type": "int"},
  {"name": "name", "type": "string"},
  {"name": "price", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}], "default": null},
  {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}], "default": null},
  {"name": "at", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}], "default": null},
  {"name": "flag", "type": "boolean"}
]}"""
keys = AvroSerializer(registry, key_schema)
values = AvroSerializer(registry, value_schema)
p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})


def avro(key, value):
    k = keys(key, SerializationContext(avro_topic, MessageField.KEY))
    v = None if value is None else values(value, SerializationContext(avro_topic, MessageField.VALUE))
    p.produce(avro_topic, key=k, value=v)


at = datetime.datetime(2024, 2, 29, 12, 0, 0, 123456, tzinfo=datetime.timezone.utc)
avro({"id": 1}, {"id": 1, "name": "widget", "price": decimal.Decimal("10.00"), "day": datetime.date(2024, 2, 29), "at": at, "flag": True})
avro({"id": 2}, {"id": 2, "name": "gadget", "price": None, "day": None, "at": None, "flag": False})
avro({"id": 3}, {"id": 3, "name": "gone", "price": None, "day": None, "at": None, "flag": True})
avro({"id": 1}, {"id": 1, "name": "widget", "price": decimal.Decimal("12.50"), "day": datetime.date(2024, 2, 29), "at": at, "flag": True})
avro({"id": 3}, None)

event_key = '{"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}'
event_value = """{"type": "object", "properties": {"id": {"type": "integer"}, "kind": {"type": "string"},
  "n": {"type": ["integer", "null"]}, "meta": {"type": ["object", "null"]}}, "required": ["id", "kind"]}"""
jkeys = JSONSerializer(event_key, registry)
jvalues = JSONSerializer(event_value, registry)
for key, value in [({"id": 1}, {"id": 1, "kind": "click", "n": 3, "meta": {"x": 1}}), ({"id": 2}, {"id": 2, "kind": "view", "n": None, "meta": None})]:
    p.produce(
        json_topic,
        key=jkeys(key, SerializationContext(json_topic, MessageField.KEY)),
        value=jvalues(value, SerializationContext(json_topic, MessageField.VALUE)),
    )
if p.flush(30) != 0:
    sys.exit("records not delivered")
