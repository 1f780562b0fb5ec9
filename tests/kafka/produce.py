"""Publishes lines of a JSON Lines event file to a Kafka topic with
confluent-kafka, keyed by each event's model_id: what a Python model service
does. Used by the integration tests as the third-party producer.

    python produce.py BROKERS TOPIC FILE [FIRST_LINE [END_LINE]]

Prints the number of messages delivered; exits non-zero if any failed.
"""

import json
import sys

from confluent_kafka import Producer


def main() -> int:
    brokers, topic, path = sys.argv[1:4]
    first = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    end = int(sys.argv[5]) if len(sys.argv) > 5 else None
    producer = Producer(
        {
            "bootstrap.servers": brokers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
        }
    )
    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    sent = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f):
            if number < first:
                continue
            if end is not None and number >= end:
                break
            line = line.rstrip(b"\n")
            key = json.loads(line)["model_id"]
            while True:
                try:
                    producer.produce(topic, value=line, key=key, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            sent += 1
    producer.flush()
    if failed:
        print(f"{len(failed)} of {sent} messages failed: {failed[0]}", file=sys.stderr)
        return 1
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
