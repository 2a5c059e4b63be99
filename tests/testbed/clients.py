"""Produce, consume and administer one broker with confluent-kafka (librdkafka): a client
we did not write, to check what kbackup wrote and restored."""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterable, Optional

from testbed.procs import TestbedError, wait_until


class Record:
    """One consumed record with everything kbackup must keep."""

    __slots__ = ("topic", "partition", "offset", "timestamp", "timestamp_type", "key", "value",
                 "headers")

    def __init__(self, topic, partition, offset, timestamp, timestamp_type, key, value, headers):
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.timestamp_type = timestamp_type  # "CreateTime" | "LogAppendTime" | None
        self.key = key
        self.value = value
        self.headers = headers  # list of (str, bytes|None), in order

    def as_tuple(self):
        return (self.topic, self.partition, self.offset, self.timestamp, self.timestamp_type,
                self.key, self.value, tuple(self.headers))

    def __eq__(self, other):
        return isinstance(other, Record) and self.as_tuple() == other.as_tuple()

    def __repr__(self):
        def short(b):
            return b if b is None or len(b) <= 40 else b[:40] + b"...(%d bytes)" % len(b)
        return (f"Record({self.topic}/{self.partition}@{self.offset} ts={self.timestamp} "
                f"{self.timestamp_type} key={short(self.key)!r} value={short(self.value)!r} "
                f"headers={[(k, short(v)) for k, v in self.headers]!r})")


def _ts_type_name(t: int) -> Optional[str]:
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME

    return {TIMESTAMP_CREATE_TIME: "CreateTime", TIMESTAMP_LOG_APPEND_TIME: "LogAppendTime"}.get(t)


class KafkaHelper:
    """Produce, consume and administer topics and groups on one broker."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap

    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, name: str, partitions: int = 1, config: Optional[dict[str, Any]] = None,
                     timeout: float = 30) -> None:
        from confluent_kafka.admin import NewTopic

        nt = NewTopic(name, num_partitions=partitions, replication_factor=1,
                      config={k: str(v) for k, v in (config or {}).items()})
        admin = self.admin()  # keep a reference: a collected client fails its futures
        for _, fut in admin.create_topics([nt], operation_timeout=timeout).items():
            fut.result(timeout)
        wait_until(lambda: self._has_leaders(name, partitions), timeout, f"topic {name} leaders")

    def _has_leaders(self, name: str, partitions: int) -> bool:
        md = self.admin().list_topics(name, timeout=5)
        t = md.topics.get(name)
        return bool(t and not t.error and len(t.partitions) == partitions
                    and all(p.leader >= 0 for p in t.partitions.values()))

    def topics(self) -> dict[str, int]:
        """{topic: partition count} for every topic the broker lists."""
        md = self.admin().list_topics(timeout=10)
        return {n: len(t.partitions) for n, t in md.topics.items()}

    def topic_config(self, name: str) -> dict[str, str]:
        from confluent_kafka.admin import ConfigResource, ResourceType

        res = ConfigResource(ResourceType.TOPIC, name)
        admin = self.admin()
        entries = list(admin.describe_configs([res]).values())[0].result(30)
        return {k: e.value for k, e in entries.items()}

    def producer(self, **conf):
        from confluent_kafka import Producer

        base = {"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                "linger.ms": 5, "message.max.bytes": 8 * 1024 * 1024}
        base.update(conf)
        return Producer(base)

    def produce(self, topic: str, records: Iterable[dict], producer=None, **conf) -> list[dict]:
        """Produces records given as dicts with optional keys partition, key, value, headers
        (list of (str, bytes|None)), timestamp (ms). Returns, in order, one dict per record with
        the delivered partition, offset, timestamp and timestamp_type (as the producer saw it)."""
        p = producer or self.producer(**conf)
        results: list[Optional[dict]] = []
        errors: list[str] = []

        def cb(i):
            def on_delivery(err, msg):
                if err is not None:
                    errors.append(f"record {i}: {err}")
                    return
                tt, ts = msg.timestamp()
                results[i] = {"partition": msg.partition(), "offset": msg.offset(),
                              "timestamp": ts, "timestamp_type": _ts_type_name(tt)}
            return on_delivery

        for i, r in enumerate(records):
            results.append(None)
            kwargs: dict[str, Any] = {"on_delivery": cb(i)}
            for k in ("partition", "key", "value", "headers", "timestamp"):
                if k in r:
                    kwargs[k] = r[k]
            while True:
                try:
                    p.produce(topic, **kwargs)
                    break
                except BufferError:
                    p.poll(0.1)
            p.poll(0)
        left = p.flush(60)
        if left or errors:
            raise TestbedError(f"produce to {topic} failed: {left} undelivered; {errors[:5]}")
        return results  # type: ignore[return-value]

    def produce_transaction(self, topic: str, records: Iterable[dict], abort: bool = False,
                            transactional_id: Optional[str] = None) -> list[dict]:
        """Produces `records` (as in `produce`) in ONE transaction, committed or aborted.
        Returns the delivery results (offsets the records took, aborted or not)."""
        p = self.producer(**{"transactional.id": transactional_id or f"tb-tx-{uuid.uuid4().hex}"})
        p.init_transactions(30)
        p.begin_transaction()
        res = self.produce(topic, records, producer=p)
        if abort:
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
        return res

    def group_members(self, group: str) -> list[list[tuple[str, int]]]:
        """Per member of a consumer group, the partitions assigned to it."""
        admin = self.admin()
        desc = list(admin.describe_consumer_groups([group]).values())[0].result(30)
        return [sorted((tp.topic, tp.partition) for tp in m.assignment.topic_partitions)
                for m in desc.members]

    def partition_owners(self, group: str) -> dict[tuple[str, int], str]:
        """Per partition assigned in a consumer group, the client id of the member holding it
        (a Connect sink task's consumer: `connector-consumer-<connector>-<task>`)."""
        admin = self.admin()
        desc = list(admin.describe_consumer_groups([group]).values())[0].result(30)
        return {(tp.topic, tp.partition): m.client_id
                for m in desc.members for tp in m.assignment.topic_partitions}

    def consume_partition(self, topic: str, partition: int,
                          isolation_level: str = "read_committed", start: int = 0,
                          timeout: float = 60) -> list[Record]:
        """Every record of one partition from `start` to the current end (for read_committed,
        the last stable offset), in order."""
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"tb-{uuid.uuid4().hex}",
                      "enable.auto.commit": False, "enable.partition.eof": True,
                      "isolation.level": isolation_level,
                      "fetch.message.max.bytes": 8 * 1024 * 1024,
                      "receive.message.max.bytes": 64 * 1024 * 1024})
        out: list[Record] = []
        try:
            c.assign([TopicPartition(topic, partition, start)])
            deadline = time.monotonic() + timeout
            while True:
                if time.monotonic() > deadline:
                    raise TestbedError(f"consuming {topic}/{partition} did not reach the end in "
                                       f"{timeout}s ({len(out)} records read)")
                msg = c.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        break
                    raise TestbedError(f"consuming {topic}/{partition}: {msg.error()}")
                tt, ts = msg.timestamp()
                out.append(Record(msg.topic(), msg.partition(), msg.offset(), ts, _ts_type_name(tt),
                                  msg.key(), msg.value(), list(msg.headers() or [])))
        finally:
            c.close()
        return out

    def consume_topic(self, topic: str, isolation_level: str = "read_committed") -> dict[int, list[Record]]:
        """{partition: records} for every partition of a topic."""
        n = self.topics()[topic]
        return {p: self.consume_partition(topic, p, isolation_level) for p in range(n)}

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"tb-{uuid.uuid4().hex}"})
        try:
            return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        finally:
            c.close()

    def commit_group_offsets(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        """Commits offsets for a group that has no active members (through a consumer)."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group,
                      "enable.auto.commit": False})
        try:
            c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                     asynchronous=False)
        finally:
            c.close()

    def group_offsets(self, group: str) -> dict[tuple[str, int], int]:
        """{(topic, partition): committed offset} of a consumer group ({} if none)."""
        from confluent_kafka import ConsumerGroupTopicPartitions

        admin = self.admin()
        futs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
        res = list(futs.values())[0].result(30)
        return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions
                if tp.offset >= 0}

    def wait_for_group_offsets(self, group: str, at_least: dict[tuple[str, int], int],
                               timeout: float = 60) -> dict[tuple[str, int], int]:
        """Waits until the group's committed offset of each listed partition is >= the value."""

        def check():
            got = self.group_offsets(group)
            if all(got.get(tp, -1) >= o for tp, o in at_least.items()):
                return got
            return None

        return wait_until(check, timeout, f"group {group} to commit {at_least}", interval=0.5)

