"""A read_committed consumer that is already reading when a transaction is left open by a
producer that went away, and then aborted by a new producer with the same transactional.id:
Kafka delivers the records committed after the abort to it. noida-db 0.2.3 does not (only a
consumer started afterwards gets them); prints what each consumer saw.

Usage: live_reader_after_abort.py BOOTSTRAP TOPIC
"""
import sys, time
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap, topic = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": bootstrap}); admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "t1"})
p.init_transactions(10); p.begin_transaction(); p.produce(topic, value=b"a"); p.commit_transaction(10)
z = Producer({"bootstrap.servers": bootstrap, "transactional.id": "t1"})
z.init_transactions(10); z.begin_transaction(); z.produce(topic, value=b"open"); z.flush(10)
# live consumer, read_committed, from offset 0, while the transaction is open
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "g", "isolation.level": "read_committed"})
c.assign([TopicPartition(topic, 0, 0)])
got = []
end = time.time() + 3
while time.time() < end:
    m = c.poll(0.2)
    if m and not m.error(): got.append(m.value())
print("while open:", got, flush=True)
n = Producer({"bootstrap.servers": bootstrap, "transactional.id": "t1"})
n.init_transactions(10); n.begin_transaction(); n.produce(topic, value=b"after"); n.commit_transaction(10)
end = time.time() + 10
while time.time() < end:
    m = c.poll(0.2)
    if m and not m.error(): got.append(m.value())
print("live consumer after fencing:", got, flush=True)
c2 = Consumer({"bootstrap.servers": bootstrap, "group.id": "g2", "isolation.level": "read_committed"})
c2.assign([TopicPartition(topic, 0, 0)])
got2 = []
end = time.time() + 5
while time.time() < end:
    m = c2.poll(0.2)
    if m and not m.error(): got2.append(m.value())
print("fresh consumer:", got2, flush=True)
