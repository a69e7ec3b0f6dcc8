"""The embedded broker: Apache Kafka (one KRaft node on 127.0.0.1) for local runs, the tests,
the benchmarks and the chaos runs. Its jars come through Maven (`distribution`), its settings
from `properties`, its process from `process`. A deployment points kafka.broker at its own
cluster instead and needs none of this."""
from deploy.broker.distribution import Distribution, checked_java, distribution, resolve
from deploy.broker.errors import BrokerError
from deploy.broker.ports import free_port, port_is_free
from deploy.broker.process import (
                                   BrokerFiles,
                                   BrokerStatus,
                                   kill,
                                   start,
                                   status,
                                   stop,
                                   wait_until_ready,
                                   wipe,
)

__all__ = ["BrokerError", "BrokerFiles", "BrokerStatus", "Distribution", "checked_java",
           "distribution", "free_port", "kill", "port_is_free", "resolve", "start", "status",
           "stop", "wait_until_ready", "wipe"]
