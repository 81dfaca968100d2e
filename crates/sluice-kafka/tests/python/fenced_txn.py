"""What a broker does with a transaction left open by a producer that went away, once a new
producer with the same transactional.id fences it: Kafka aborts it. Prints how many of its
records a read_committed consumer sees while it is open and after the fencing, as JSON.

Usage: fenced_txn.py BOOTSTRAP TOPIC
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, topic = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": bootstrap})
admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
zombie = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-tx"})
zombie.init_transactions(10)
zombie.begin_transaction()
for i in range(5):
    zombie.produce(topic, value=f"open-{i}")
zombie.flush(10)


def visible():
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader", "isolation.level": "read_committed",
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, 0, 0)])
    n, end = 0, time.time() + 5
    while time.time() < end:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            break
        n += 1
    c.close()
    return n


while_open = visible()
fencer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-tx"})
fencer.init_transactions(10)
print(json.dumps({"while_open": while_open, "after_fencing": visible()}))
