"""What the embedded broker is started with: one KRaft node (broker and controller) on
127.0.0.1, sized for a 2-core machine, its log dirs on disk so that a restart keeps the data."""
from __future__ import annotations

import base64
import os
from pathlib import Path

# The JVM: a small heap and the serial collector (one node, short-lived runs on 2 cores), and
# the C1 compiler alone: a fresh start (format included) answered after 2.9 s, against 4.4 s with
# C2, and 40 s at 5,000 events/s cost 0.29-0.34 of a core against 0.42-0.45 while C2 compiled
# (docs/BROKER.md, "Start-up and JVM").
JVM_OPTIONS = ("-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true")


NODE_ID = 1


def new_cluster_id() -> str:
    """22 characters of URL-safe base64 of 16 random bytes, as Kafka's own tool makes them."""
    return base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


def server_properties(port: int, controller_port: int, log_dir: Path,
                      advertised_port: int | None = None) -> str:
    """`advertised_port`: where clients are told to connect (a proxy in front of the broker, as
    in the chaos run); the broker's own port by default."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": NODE_ID,
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{advertised_port or port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        # one node: the internal topics' default replication of 3 would never be available
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 1,
        # a transaction past its timeout (a worker that died mid-commit: exactly_once_v2) is
        # aborted within 2 s of it, not up to 10 s later; until then it holds read_committed
        # readers of the partitions it wrote
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": 2000,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        # After a crash the restarted node's broker cannot register until the controller has
        # expired the old registration's session (9 s by default): one process holds both, so
        # the session is kept short
        "broker.session.timeout.ms": 3000,
        "broker.heartbeat.interval.ms": 500,
        # the first member of a group is not kept waiting for others that may join
        "group.initial.rebalance.delay.ms": 0,
        # the workers create the topics they need, as on a real cluster
        "auto.create.topics.enable": "false",
        # 2 cores: fewer threads than the defaults (3 network, 8 io, 10 background)
        "num.network.threads": 2,
        "num.io.threads": 2,
        "background.threads": 2,
        # the cleaner's default 128 MiB dedupe buffer is a waste on a test machine
        "log.cleaner.dedupe.buffer.size": 16 * 2 ** 20,
    }
    return "".join(f"{k}={v}\n" for k, v in settings.items())


LOG4J2 = """\
# The embedded broker logs warnings and errors only (to stdout: broker.log in the run dir),
# plus the line that says it started.
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRefs = stdout
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
"""
