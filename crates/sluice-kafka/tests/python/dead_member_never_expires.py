"""Two consumers of one group share a 4-partition topic; one is killed with SIGKILL. Kafka drops
the dead member once its session times out (10 s here) and gives its partitions to the other.
noida-db 0.2.3 never does: the survivor keeps its own two partitions (seen for 90 s). Prints
what the survivor held and when.

Usage: dead_member_never_expires.py BOOTSTRAP
"""
import signal, subprocess, sys, time
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = sys.argv[1]
conf = {"bootstrap.servers": bootstrap, "group.id": "g", "session.timeout.ms": 10000, "heartbeat.interval.ms": 3000}
AdminClient({"bootstrap.servers": bootstrap}).create_topics([NewTopic("g4", 4, 1)])["g4"].result(10)
p = Producer({"bootstrap.servers": bootstrap})
for i in range(40):
    p.produce("g4", value=b"x", partition=i % 4)
p.flush(10)
other = subprocess.Popen([sys.executable, "-c", (
    "from confluent_kafka import Consumer\n"
    f"c = Consumer({conf!r}); c.subscribe(['g4'])\n"
    "while True: c.poll(0.5)\n")])
t0, held = time.time(), set()


def assigned(_, parts):
    held.update(x.partition for x in parts)
    print(f"{time.time() - t0:.1f}s assigned {[x.partition for x in parts]}", flush=True)


def revoked(_, parts):
    held.difference_update(x.partition for x in parts)
    print(f"{time.time() - t0:.1f}s revoked {[x.partition for x in parts]}", flush=True)


c = Consumer(conf)
c.subscribe(["g4"], on_assign=assigned, on_revoke=revoked)
killed = None
while time.time() - t0 < 90:
    c.poll(0.5)
    if killed is None and 0 < len(held) < 4 and time.time() - t0 > 5:
        other.send_signal(signal.SIGKILL)
        killed = time.time()
        print(f"{killed - t0:.1f}s killed the other member", flush=True)
    if killed and len(held) == 4:
        print(f"took every partition over {time.time() - killed:.1f}s after the kill")
        sys.exit(0)
print(f"never took the dead member's partitions over; held {sorted(held)}")
sys.exit(1)
