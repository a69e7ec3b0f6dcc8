"""The embedded broker: Apache Kafka (one KRaft node on 127.0.0.1) for local runs, the tests,
the benchmarks and the chaos runs. Its jars come through Maven (`distribution`), its settings
from `properties`, its process from `process`, what a fresh start reuses from `warm_start`. A
deployment points kafka.broker at its own cluster instead and needs none of this."""
from deploy.broker import warm_start
from deploy.broker.distribution import Distribution, checked_java, distribution, resolve
from deploy.broker.errors import BrokerError
from deploy.broker.ports import free_port, port_is_free
from deploy.broker.process import (
                                   BrokerFiles,
                                   BrokerStatus,
                                   kill,
                                   make_class_archive,
                                   start,
                                   status,
                                   stop,
                                   wait_until_ready,
                                   wipe,
)

__all__ = ["BrokerError", "BrokerFiles", "BrokerStatus", "Distribution", "checked_java",
           "distribution", "free_port", "kill", "make_class_archive", "port_is_free", "resolve",
           "start", "status", "stop", "wait_until_ready", "warm_start", "wipe"]
