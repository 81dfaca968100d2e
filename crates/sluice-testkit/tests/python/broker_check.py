"""A broker the test kit started, checked with confluent-kafka: a topic created, one
transaction committed and one aborted, then a read_committed consumer sees exactly the
committed records. Usage: broker_check.py BOOTSTRAP TOPIC. Raises (exit non-zero) on a failure."""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, topic = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": bootstrap})
for f in admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)]).values():
    f.result(15)

p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-tx", "enable.idempotence": True})
p.init_transactions(15)
p.begin_transaction()
for i in range(50):
    p.produce(topic, key=f"k{i % 7}", value=f"committed-{i}")
p.commit_transaction(15)
p.begin_transaction()
for i in range(10):
    p.produce(topic, key="x", value=f"aborted-{i}")
p.abort_transaction(15)

c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-check", "isolation.level": "read_committed",
              "enable.auto.commit": False})
c.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
seen = []
deadline = time.time() + 30
while len(seen) < 50 and time.time() < deadline:
    m = c.poll(0.5)
    if m is None:
        continue
    assert m.error() is None, m.error()
    seen.append(m.value().decode())
# Anything more (an aborted record) would arrive right behind.
extra = c.poll(2.0)
c.close()
assert sorted(seen) == sorted(f"committed-{i}" for i in range(50)), seen
assert extra is None or extra.error() is not None, f"an aborted record was delivered: {extra.value()}"
print(json.dumps({"committed": len(seen)}))
