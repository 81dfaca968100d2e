"""Checks Sluice's schema registry with Confluent's own Python client (confluent-kafka).

Usage: registry_check.py URL first|again. `first` registers, evolves and tests schemas and
prints the ids as JSON; `again` (after a restart of the registry) checks what survived.
Any failed check raises, which exits non-zero with the traceback.
"""
import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

url, phase = sys.argv[1], sys.argv[2]
SUBJECT = "app.orders-value"


def record(*fields):
    return json.dumps({"type": "record", "name": "orders", "namespace": "app", "fields": list(fields)})


ID = {"name": "id", "type": "long"}
NOTE = {"name": "note", "type": ["null", "string"], "default": None}
BAD = {"name": "qty", "type": "int"}  # added without a default: not BACKWARD compatible


def expect_error(code, fn):
    try:
        fn()
    except SchemaRegistryError as e:
        assert e.error_code == code, f"expected error {code}, got {e.error_code}: {e.error_message}"
        return e
    raise AssertionError(f"expected error {code}, got success")


def first():
    c = SchemaRegistryClient({"url": url})
    v1 = record(ID)
    id1 = c.register_schema(SUBJECT, Schema(v1, "AVRO"))
    # The same schema spaced differently is the same schema (a fresh client: no cache).
    c2 = SchemaRegistryClient({"url": url})
    assert c2.register_schema(SUBJECT, Schema(json.dumps(json.loads(v1), indent=4), "AVRO")) == id1
    assert json.loads(c2.get_schema(id1).schema_str) == json.loads(v1)
    v2 = record(ID, NOTE)
    id2 = c2.register_schema(SUBJECT, Schema(v2, "AVRO"))
    assert id2 != id1
    assert c2.get_versions(SUBJECT) == [1, 2]
    latest = c2.get_latest_version(SUBJECT)
    assert (latest.version, latest.schema_id) == (2, id2), latest
    assert c2.get_version(SUBJECT, 1).schema_id == id1
    found = c2.lookup_schema(SUBJECT, Schema(v1, "AVRO"))
    assert (found.version, found.schema_id) == (1, id1), found
    # Compatibility: BACKWARD by default; a field added without a default is refused.
    assert c2.get_compatibility() == "BACKWARD"
    v3 = record(ID, NOTE, BAD)
    assert c2.test_compatibility(SUBJECT, Schema(v3, "AVRO")) is False
    assert c2.test_compatibility(SUBJECT, Schema(record(ID, NOTE, {**BAD, "default": 0}), "AVRO")) is True
    expect_error(409, lambda: c2.register_schema(SUBJECT, Schema(v3, "AVRO")))
    expect_error(40408, lambda: c2.get_compatibility(SUBJECT))
    c2.set_compatibility(SUBJECT, "NONE")
    assert c2.get_compatibility(SUBJECT) == "NONE"
    id3 = c2.register_schema(SUBJECT, Schema(v3, "AVRO"))
    assert c2.get_versions(SUBJECT) == [1, 2, 3]
    # Errors as Confluent codes them.
    expect_error(40403, lambda: c2.get_schema(99999))
    expect_error(40401, lambda: c2.get_versions("no-such-subject"))
    expect_error(42201, lambda: c2.register_schema("bad-value", Schema('{"type": "record"}', "AVRO")))
    # The Avro serializer registers on first use and the deserializer finds the schema by the
    # id in the message (magic byte 0, 4-byte id): logical types survive the round trip.
    typed = json.dumps({
        "type": "record", "name": "typed", "namespace": "app", "fields": [
            {"name": "id", "type": "long"},
            {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        ]})
    ser = AvroSerializer(c2, typed)
    ctx = SerializationContext("app.typed", MessageField.VALUE)
    import datetime, decimal
    value = {"id": 7, "amount": decimal.Decimal("1234.50"), "day": datetime.date(2024, 2, 29),
             "at": datetime.datetime(2024, 2, 29, 12, 30, 0, 123456, tzinfo=datetime.timezone.utc)}
    wire = ser(value, ctx)
    assert wire[0] == 0, wire[:5]
    typed_id = int.from_bytes(wire[1:5], "big")
    back = AvroDeserializer(SchemaRegistryClient({"url": url}))(wire, ctx)
    assert back == value, back
    assert "app.typed-value" in c2.get_subjects()
    # Deleting: soft, then permanent.
    c2.register_schema("scratch-value", Schema(record(ID), "AVRO"))
    assert c2.delete_subject("scratch-value") == [1]
    assert "scratch-value" not in c2.get_subjects()
    assert c2.delete_subject("scratch-value", permanent=True) == [1]
    print(json.dumps({"ids": [id1, id2, id3], "typed": typed_id}))


def again():
    c = SchemaRegistryClient({"url": url})
    assert c.get_versions(SUBJECT) == [1, 2, 3]
    assert c.get_compatibility(SUBJECT) == "NONE"
    ids = [c.get_version(SUBJECT, v).schema_id for v in (1, 2, 3)]
    assert json.loads(c.get_schema(ids[1]).schema_str)["fields"][1]["name"] == "note"
    # New ids continue after the old ones.
    new = c.register_schema("after-restart-value", Schema(record(ID, {"name": "x", "type": "int"}), "AVRO"))
    assert new > max(ids), (new, ids)
    print(json.dumps({"ids": ids}))


{"first": first, "again": again}[phase]()
