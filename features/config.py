"""profile_config.yaml: typed definitions, validation and loading.

Every section has defaults, so a file with only the feature sections of FEATURES.md §8 is a
complete config. Unknown keys, wrong types and impossible values are refused with the key path.

The same concept as deploy/cli/config.py, its command layer.
"""
from __future__ import annotations

import operator
import os
import re
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_WINDOW_DAYS = 30
METRIC_NAMES = ("actions", "active_days", "actions_per_active_day", "unique_items",
                "unique_item_ratio", "avg_dwell_time", "sessions", "avg_session_duration")
# The comparison a preference rule or an alert rule names (`op`), and what it computes.
Comparison = Literal[">", ">=", "<", "<="]
COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}

# Environment variables that override deployment settings (never feature definitions).
ENV_OVERRIDES = {
    "PROFILES_BROKER_URL": ("kafka", "broker"),
    "PROFILES_DATA_DIR": ("worker", "data_dir"),
    "PROFILES_WEB_PORT": ("worker", "web_port"),
    "PROFILES_WEB_HOST": ("worker", "web_host"),
    "PROFILES_ADVERTISED_HOST": ("worker", "advertised_host"),
    "PROFILES_RUN_DIR": ("embedded_broker", "run_dir"),
    "PROFILES_BROKER_PORT": ("embedded_broker", "port"),
    "PROFILES_WORKER_AUTH": ("worker", "auth"),
}


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and key path."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- features (FEATURES.md §8)

class EventsConfig(Section):
    timestamp_unit: Literal["s", "ms", "auto"] = "auto"
    tz_offset_hours: float = Field(0, ge=-12, le=14)
    max_future_skew_seconds: int = Field(300, ge=0)
    session_gap_seconds: int = Field(3600, gt=0)
    action_types: dict[str, int] = Field(
        default_factory=lambda: {"exposure": 0, "click": 1, "conversion": 2})
    event_types: dict[str, int] = Field(default_factory=lambda: {
        "impression": 0, "view": 0, "click": 1, "purchase": 2, "conversion": 2})

    @field_validator("action_types")
    @classmethod
    def _actions(cls, v: dict[str, int]) -> dict[str, int]:
        if not v:
            raise ValueError("at least one action type is needed")
        for name, code in v.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"action name {name!r} must be an identifier "
                                 f"(it names rate_{name})")
            if not 0 <= code <= 255:
                raise ValueError(f"action code {code} for {name!r} must be within 0..255")
        if len(set(v.values())) != len(v):
            raise ValueError("two action names share one code")
        return v

    @model_validator(mode="after")
    def _event_types_known(self) -> "EventsConfig":
        known = set(self.action_types.values())
        for name, code in self.event_types.items():
            if code not in known:
                raise ValueError(f"event_types.{name}: action_type {code} is not one of "
                                 f"action_types {sorted(known)}")
        return self

    @property
    def tz_offset_seconds(self) -> int:
        return round(self.tz_offset_hours * 3600)


CategoryRule = Union[list[Union[int, str]], dict[Union[int, str], list[Any]]]


def _default_categories() -> dict[str, CategoryRule]:
    return {"entertainment": [100, 101, 102], "technology": [111, 112, 113]}


class InterestTagsConfig(Section):
    max_tags: int = Field(10, ge=1)
    min_frequency: int = Field(3, ge=1)
    decay_factor: float = Field(0.95, gt=0, le=1)
    window_days: int = Field(30, ge=1, le=MAX_WINDOW_DAYS)
    action_weights: dict[int, float] = Field(default_factory=dict)
    categories: dict[str, CategoryRule] = Field(default_factory=_default_categories)

    @field_validator("action_weights")
    @classmethod
    def _weights(cls, v: dict[int, float]) -> dict[int, float]:
        for code, w in v.items():
            if not (w >= 0 and w < float("inf")):
                raise ValueError(f"weight of action {code} must be a finite number >= 0")
        return v

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: dict[str, CategoryRule]) -> dict[str, CategoryRule]:
        if not v:
            raise ValueError("at least one category is needed")
        for name, rule in v.items():
            if not rule:
                raise ValueError(f"category {name!r} lists no feature ids")
            ids = rule if isinstance(rule, list) else list(rule)
            for fid in ids:
                if not re.fullmatch(r"\d+", str(fid)):
                    raise ValueError(f"category {name!r}: feature id {fid!r} is not a decimal id")
            if isinstance(rule, dict):
                for fid, values in rule.items():
                    if not values:
                        raise ValueError(f"category {name!r}: feature {fid} accepts no values")
        return v


class PreferenceRule(Section):
    name: str = Field(min_length=1)
    metric: str
    window_days: int = Field(ge=1, le=MAX_WINDOW_DAYS)
    op: Comparison
    threshold: float
    min_actions: int = Field(0, ge=0)


def _default_rules() -> list[PreferenceRule]:
    return [
        PreferenceRule(name="click_frequency", metric="actions_per_active_day", window_days=7,
                       op=">", threshold=5),
        PreferenceRule(name="interaction_pattern", metric="unique_item_ratio", window_days=30,
                       op=">", threshold=0.7, min_actions=5),
        PreferenceRule(name="dwell_time", metric="avg_dwell_time", window_days=7, op=">",
                       threshold=60),
    ]


class BehaviorPreferencesConfig(Section):
    max_preferences: int = Field(8, ge=1)
    time_windows: list[int] = Field(default_factory=lambda: [1, 7, 30])
    preference_types: dict[str, str] = Field(default_factory=dict)  # seed: descriptive labels
    rules: list[PreferenceRule] = Field(default_factory=_default_rules)

    @field_validator("time_windows")
    @classmethod
    def _windows(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("at least one time window is needed")
        for w in v:
            if not 1 <= w <= MAX_WINDOW_DAYS:
                raise ValueError(f"window {w} must be within 1..{MAX_WINDOW_DAYS} days")
        if sorted(set(v)) != v:
            raise ValueError("time windows must be ascending and distinct")
        return v

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, v: list[PreferenceRule]) -> list[PreferenceRule]:
        names = [r.name for r in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique: {', '.join(dupes)}")
        return v


def _ascending(v: list[float]) -> list[float]:
    if any(b <= a for a, b in zip(v, v[1:])):
        raise ValueError(f"thresholds must be strictly ascending, got {v}")
    return v


def _floats(*xs: float) -> list[float]:
    return list(xs)


class ActivityMetricsConfig(Section):
    # (ints: the defaults are not validated, and the feature fingerprint reads them as they are)
    daily_actions: list[float] = Field(default_factory=lambda: _floats(0, 5, 15, 30))
    session_duration: list[float] = Field(default_factory=lambda: _floats(0, 300, 900, 1800))

    @field_validator("daily_actions", "session_duration")
    @classmethod
    def _check(cls, v: list[float]) -> list[float]:
        return _ascending(v)


class ActivityLevelsConfig(Section):
    levels: int = Field(4, ge=1, le=10_000_000)
    window_days: int = Field(7, ge=1, le=MAX_WINDOW_DAYS)
    combine: Literal["actions", "min", "max", "mean_floor"] = "actions"
    metrics: ActivityMetricsConfig = Field(default_factory=ActivityMetricsConfig)


class Type0Criteria(Section):
    min_sessions: int = Field(1, ge=0)
    max_actions: int = Field(10, ge=0)


class Type1Criteria(Section):
    min_sessions: int = Field(5, ge=0)
    min_actions: int = Field(20, ge=0)


class UserTypeCriteria(Section):
    type_0: Type0Criteria = Field(default_factory=Type0Criteria)
    type_1: Type1Criteria = Field(default_factory=Type1Criteria)


class UserTypesConfig(Section):
    types: Literal[2] = 2
    window_days: int = Field(30, ge=1, le=MAX_WINDOW_DAYS)
    criteria: UserTypeCriteria = Field(default_factory=UserTypeCriteria)


class ExtraFeatureConfig(Section):
    """A feature added by config plus one extractor (the seed's 扩展开发; docs/EXTENDING.md)."""
    extractor: str = Field(min_length=1)
    max_values: int = Field(1, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)
    # metrics windows (days) the extractor reads beyond those the features use (30 among them)
    windows: list[Annotated[int, Field(ge=1, le=MAX_WINDOW_DAYS)]] = Field(default_factory=list)


class ItemSourceConfig(Section):
    """A pluggable item-feature source: 'module:Class' with fetch_item_features(item_id)."""
    class_path: str = Field(alias="class", pattern=r"^[\w.]+:[\w]+$")
    options: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------- deployment (the seed + Kafka)

class TopicNames(Section):
    user_events: str = "user-events"
    item_features: str = "item-features"
    profile_updates: str = "profile-updates"
    profile_aggregates: str = "profile-aggregates"
    dlq: str = "user-events-dlq"
    alerts: str = "profile-alerts"


class KafkaSecurityConfig(Section):
    """Passed to every Kafka client (the workers' Faust app and all aiokafka clients)."""
    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    # The password is never written in the config: it is read from this environment variable.
    sasl_password_env: str = Field("PROFILES_KAFKA_PASSWORD", pattern=r"^[A-Z_][A-Z0-9_]*$")
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _complete(self) -> "KafkaSecurityConfig":
        if self.protocol.startswith("SASL") and not self.sasl_username:
            raise ValueError(f"sasl_username is required with protocol {self.protocol}")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        return self


class KafkaClientConfig(Section):
    """Client settings of the workers and of the `profiles` command's own producers, with the
    trade-off each one makes (defaults measured on Apache Kafka: docs/BROKER.md, "Client
    settings")."""
    # A worker that stops heartbeating loses its partitions after this long: a shorter session
    # moves a dead worker's users sooner; too short, and a worker starved of CPU is expired
    # while alive (a rebalance, and a fence: streams/pipeline/fencing.py)
    session_timeout_seconds: float = Field(10.0, ge=1, le=300)
    heartbeat_interval_seconds: float = Field(1.0, gt=0)
    # How long the broker may hold a fetch that has no data yet (data is answered at once). It
    # also bounds how long a quiet partition fetched alone (a standby's changelog) holds up the
    # next fetch of the events: aiokafka has one fetch at a time in flight to a broker
    fetch_max_wait_ms: int = Field(100, ge=0, le=30000)
    # How long a producer waits to fill a batch: each record's latency against fewer, larger
    # requests (the changelog, the output topics, `profiles produce`)
    linger_ms: float = Field(5.0, ge=0, le=1000)
    # "all": a write is acknowledged once every in-sync replica has it; 1: the leader alone
    # (a leader lost right after may lose acknowledged records)
    acks: Literal["all", 1] = "all"
    # How long the output producer (librdkafka) may hold a record before it gives up on it (the
    # checkpoint then fails and its events come again). Below the time a frozen worker's
    # partitions take to move (the session timeout less a heartbeat), so a record it held
    # through the freeze is dropped when it thaws, never published after the new owner's. A
    # longer timeout waits out longer outages without a redo. Default (None): the session
    # timeout less a heartbeat less 2 s, at least half of the session timeout less a heartbeat.
    delivery_timeout_seconds: float | None = Field(None, gt=0)
    # exactly_once_v2: how long the broker keeps a worker's transaction open before it aborts
    # it. A worker that dies mid-commit holds read_committed readers of the partitions it wrote
    # back (their last stable offset) until then, or until its restart fences it sooner.
    transaction_timeout_seconds: float = Field(10.0, ge=1, le=900)

    @model_validator(mode="after")
    def _heartbeat(self) -> "KafkaClientConfig":
        if self.heartbeat_interval_seconds * 3 > self.session_timeout_seconds:
            raise ValueError("heartbeat_interval_seconds must be at most a third of "
                             "session_timeout_seconds")
        bound = self.session_timeout_seconds - self.heartbeat_interval_seconds
        if self.delivery_timeout_seconds is not None and self.delivery_timeout_seconds >= bound:
            raise ValueError(
                f"delivery_timeout_seconds must be below session_timeout_seconds less "
                f"heartbeat_interval_seconds ({bound:g} s): a record a frozen worker held "
                "longer could be published after its partition's next owner's")
        if self.delivery_timeout_ms() <= self.linger_ms:
            raise ValueError(f"the delivery timeout ({self.delivery_timeout_ms()} ms) must be "
                             f"above linger_ms ({self.linger_ms:g}): librdkafka refuses it")
        return self

    def delivery_timeout_ms(self) -> int:
        """The output producer's delivery timeout (`delivery_timeout_seconds` or its default)."""
        if self.delivery_timeout_seconds is not None:
            return max(1, int(self.delivery_timeout_seconds * 1000))
        bound = self.session_timeout_seconds - self.heartbeat_interval_seconds
        return int(max(bound / 2, bound - 2.0) * 1000)


class KafkaConfig(Section):
    broker: str = "kafka://127.0.0.1:19092"
    partitions: int = Field(8, ge=1, le=1024)
    replication: int = Field(1, ge=1)
    topics: TopicNames = Field(default_factory=TopicNames)
    security: KafkaSecurityConfig = Field(default_factory=KafkaSecurityConfig)
    # The producers' key partitioner (features.partitioners): the query API routes a user to
    # the worker of the partition it gives, and the workers count events it does not explain.
    partitioner: Literal["murmur2", "crc32", "fnv1a"] = "murmur2"
    # the client that writes profile-updates, profile-aggregates, the DLQ and alerts
    # (streams.io.publisher; the table changelog is always Faust's)
    output_client: Literal["librdkafka", "aiokafka"] = "librdkafka"
    # exactly_once_v2 (the default): each commit is also one Kafka
    # transaction (changelog, outputs, offsets; Kafka Streams' processing.guarantee), so a
    # fenced worker's writes never show to read_committed readers; needs output_client
    # librdkafka and brokers with transactions (Kafka 2.5+). at_least_once: exactly-once by
    # the application alone (states carry their source offsets, a redelivered event is
    # skipped). docs/RELIABILITY.md; the cost of each: BENCHMARKS.md, "at_least_once against
    # exactly_once_v2".
    processing_guarantee: Literal["at_least_once", "exactly_once_v2"] = "exactly_once_v2"
    client: KafkaClientConfig = Field(default_factory=KafkaClientConfig)

    @field_validator("partitioner", mode="before")
    @classmethod
    def _partitioner(cls, v: Any) -> Any:
        clients = {"murmur2_random": "murmur2", "consistent": "crc32",
                   "consistent_random": "crc32", "fnv1a_random": "fnv1a"}
        if v in clients:
            raise ValueError(f"{v!r} is librdkafka's name; its hash is {clients[v]!r}")
        if v == "random":
            raise ValueError("'random' ignores keys: a user's events must all reach one "
                             "partition (murmur2, crc32 or fnv1a)")
        return v

    @model_validator(mode="after")
    def _transactions_need_librdkafka(self) -> "KafkaConfig":
        if self.processing_guarantee == "exactly_once_v2" and self.output_client != "librdkafka":
            raise ValueError("processing_guarantee exactly_once_v2 (the default) commits through "
                             "librdkafka's transactions: output_client must be librdkafka, or "
                             "set processing_guarantee: at_least_once")
        if self.processing_guarantee == "exactly_once_v2" and self.client.acks != "all":
            raise ValueError("processing_guarantee exactly_once_v2 (the default) needs "
                             "kafka.client.acks 'all' (transactional producers are idempotent), "
                             "or set processing_guarantee: at_least_once")
        return self

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once_v2"

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str) -> str:
        for part in v.split(";"):
            if not re.fullmatch(r"(kafka://)?[\w.\-\[\]:]+:\d+", part.strip()):
                raise ValueError(f"broker {v!r} is not host:port or kafka://host:port")
        return v

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(p.strip().removeprefix("kafka://") for p in self.broker.split(";"))


class EmbeddedBrokerConfig(Section):
    port: int = Field(19092, ge=1, le=65535)
    run_dir: str = "run"
    # the JVM's start; a first start also resolves the jars through Maven
    start_timeout_seconds: float = Field(60, gt=0)


class WorkerConfig(Section):
    app_id: str = Field("user-profiles", pattern=r"^[A-Za-z0-9._-]+$")
    data_dir: str = "data"
    web_host: str = "127.0.0.1"
    # The host other workers reach this one at (query routing); default web_host. Set it when
    # web_host is 0.0.0.0, e.g. to the pod's DNS name on Kubernetes.
    advertised_host: str | None = None
    web_port: int = Field(6066, ge=1, le=65535)
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "info"
    log_max_bytes: int = Field(50 * 2 ** 20, ge=1024)   # per log file (--log-file), rotated
    log_backups: int = Field(5, ge=0)                    # rotated files kept
    # Bearer token for endpoints that change state (job triggers). $PROFILES_API_TOKEN wins;
    # else this file, created with a random token on first use (default: <run_dir>/api-token).
    api_token_file: str | None = None
    # Which endpoints need that token: `writes` (job triggers, restarts, the cluster relay) or
    # `all` (every endpoint but /health and /metrics: profiles are personal data; set it
    # wherever web_host is reachable beyond this machine).
    auth: Literal["writes", "all"] = "writes"
    # Standby copies of each partition's states kept on other workers (Faust's
    # table_standby_replicas): a new owner starts from its copy instead of the whole changelog.
    # Off by default until more chaos runs back them: copies once lacked records (the cause, a
    # restore that ended early, is fixed; docs/RELIABILITY.md, "Guarantees").
    standby_replicas: int = Field(0, ge=0, le=3)


class RealTimeUpdateConfig(Section):
    # seconds: a user's profile is published at most once per this many (0: every change);
    # changes within it are held and the latest goes out when it has passed (docs/STREAMING.md)
    update_interval: float = Field(0, ge=0)
    batch_size: int = Field(1000, ge=1)
    queue_size: int = Field(10000, ge=1)
    # the write-back state path (docs/STREAMING.md): a user's state, profile and closed days are
    # written and published once per commit; a commit comes when the worker has caught up, or
    # after this many seconds of backlog (0: after every batch), or at this many dirty users
    commit_interval: float = Field(1.0, ge=0, le=60)
    max_dirty_users: int = Field(20000, ge=1)
    strategy: str = Field("streams.strategy:PublishEveryChange", pattern=r"^[\w.]+:[\w]+$")


_HHMM = r"([01]\d|2[0-3]):[0-5]\d"
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


# `scheduled_update` with no wall-clock runs. Harnesses that compare published profiles with
# the batch path at each user's own T use it: a run firing mid-test (at the top of any hour)
# publishes as of stream time instead, which is right but not what they compare against.
NO_SCHEDULED_RUNS = {"hourly_update": False, "daily_deep_update": None,
                     "weekly_full_update": None}


class ScheduledUpdateConfig(Section):
    hourly_update: bool = True
    daily_deep_update: str | None = Field("02:00", pattern=rf"^{_HHMM}$")
    weekly_full_update: str | None = Field(
        "sunday:03:00", pattern=rf"^({'|'.join(_DAYS)}):{_HHMM}$")
    timezone: str = "UTC"             # IANA name the run times are read in (wall clock)
    backup_retention: int = Field(7, ge=1)     # daily backups kept per worker

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as UTC or "
                             "Asia/Shanghai)") from None
        return v


class MemoryConfig(Section):
    max_cache_size: int = Field(10000, ge=0)


class RocksDBConfig(Section):
    """Per partition database (Faust's defaults, 64 MiB x 3 write buffers and a 2 GiB block
    cache each, let a worker's memory grow for a long time)."""
    write_buffer_mb: int = Field(8, ge=1)
    max_write_buffers: int = Field(2, ge=1)
    block_cache_mb: int = Field(16, ge=1)

    def table_options(self) -> dict:
        mib = 1024 * 1024
        return {"write_buffer_size": self.write_buffer_mb * mib,
                "max_write_buffer_number": self.max_write_buffers,
                "block_cache_size": self.block_cache_mb * mib,
                "block_cache_compressed_size": self.block_cache_mb * mib}


class GcConfig(Section):
    """The worker's cyclic garbage collector (streams.process.gc_policy). Python's default
    thresholds (700, 10, 10) ran a full collection of the worker's heap (100-140 ms) every
    second or so under load: a fifth of its CPU (BENCHMARKS.md, "The fast path, fourth stop")."""
    thresholds: tuple[int, int, int] = (10000, 50, 10)     # gc.set_threshold (0: never)
    freeze_after_start: bool = True     # gc.freeze() once the agent starts: the start-up heap
                                        # (modules, the app, the catalog) is never scanned again

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 0:
            raise ValueError(f"gc thresholds must be >= 0, got {list(v)}")
        return v


class PerformanceConfig(Section):
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    rocksdb: RocksDBConfig = Field(default_factory=RocksDBConfig)
    gc: GcConfig = Field(default_factory=GcConfig)


# The signals a rule can name (monitoring.alerts[].metric).
SIGNALS = {
    "dlq_rate": "dead letters / events read over monitoring.rate_window_seconds",
    "lag": "records not yet processed, summed over the worker's partitions",
    "events_per_second": "events read per second over the rate window",
    "publishes_per_second": "profile records published per second over the rate window",
    "freshness_seconds": "mean of (stream time - as_of of the last published record) per user",
    "coverage": "fraction of users whose profile is not all default values",
    "coverage_drop": "highest coverage seen in the last hour minus the current coverage",
    "last_event_age_seconds": "wall-clock seconds since the worker last read an event",
    "workers_down": "configured workers that do not answer (evaluated by the supervisor)",
    "partition_mismatch_events": "events over the rate window that arrived on a partition "
                                 "kafka.partitioner does not give for their key",
    "missing_key_events": "user-events messages without a key (dead-lettered as missing_key) "
                          "over the rate window",
}

class AlertRule(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    metric: str                      # one of SIGNALS
    op: Comparison
    threshold: float
    for_seconds: float = Field(0, ge=0, alias="for")   # true this long before it fires
    severity: Literal["info", "warning", "critical"] = "warning"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _default_alerts() -> list[AlertRule]:
    return [
        AlertRule(name="dlq_rate_high", metric="dlq_rate", op=">", threshold=0.01,
                  severity="warning"),
        AlertRule(name="consumer_lag_high", metric="lag", op=">", threshold=100_000,
                  **{"for": 60}, severity="warning"),
        AlertRule(name="profiles_stale", metric="freshness_seconds", op=">",
                  threshold=2 * 86400, **{"for": 300}, severity="warning"),
        AlertRule(name="coverage_drop", metric="coverage_drop", op=">", threshold=0.2,
                  **{"for": 300}, severity="critical"),
        AlertRule(name="worker_down", metric="workers_down", op=">", threshold=0,
                  **{"for": 10}, severity="critical"),
        AlertRule(name="partitioner_mismatch", metric="partition_mismatch_events", op=">",
                  threshold=0, severity="warning"),
        AlertRule(name="unkeyed_events", metric="missing_key_events", op=">", threshold=0,
                  severity="warning"),
    ]


class MonitoringConfig(Section):
    enabled: bool = True
    quality_interval_seconds: float = Field(60, gt=0)   # quality/business scan of local state
    quality_sample_users: int = Field(5000, ge=1)       # users per worker per scan
    trend_hours: float = Field(24, gt=0)                # scans kept per worker (dashboard trends)
    trend_points: int = Field(1440, ge=2, le=100_000)   # at most: wider steps beyond
    rate_window_seconds: float = Field(300, gt=0)       # window of dlq_rate and the rates
    alert_interval_seconds: float = Field(10, gt=0)     # how often rules are evaluated
    alerts: list[AlertRule] = Field(default_factory=_default_alerts)
    webhook_url: str | None = None                      # also POST alerts here (JSON)

    @field_validator("alerts")
    @classmethod
    def _known_signals(cls, rules: list[AlertRule]) -> list[AlertRule]:
        names = set()
        for i, r in enumerate(rules):
            if r.metric not in SIGNALS:
                raise ValueError(f"{i}.metric: unknown signal {r.metric!r}; one of "
                                 f"{', '.join(sorted(SIGNALS))}")
            if r.name in names:
                raise ValueError(f"{i}.name: {r.name!r} is used twice")
            names.add(r.name)
        return rules

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v


class ProfileConfig(Section):
    mapping_index: str = "mapping_index.json"
    events: EventsConfig = Field(default_factory=EventsConfig)
    interest_tags: InterestTagsConfig = Field(default_factory=InterestTagsConfig)
    behavior_preferences: BehaviorPreferencesConfig = Field(
        default_factory=BehaviorPreferencesConfig)
    activity_levels: ActivityLevelsConfig = Field(default_factory=ActivityLevelsConfig)
    user_types: UserTypesConfig = Field(default_factory=UserTypesConfig)
    extra_features: dict[str, ExtraFeatureConfig] = Field(default_factory=dict)
    item_source: ItemSourceConfig | None = None
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    embedded_broker: EmbeddedBrokerConfig = Field(default_factory=EmbeddedBrokerConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    real_time_update: RealTimeUpdateConfig = Field(default_factory=RealTimeUpdateConfig)
    scheduled_update: ScheduledUpdateConfig = Field(default_factory=ScheduledUpdateConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    # Folder that relative paths resolve against (the config file's folder); not a YAML key.
    base_dir: str = Field(".", exclude=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> "ProfileConfig":
        windows = self.behavior_preferences.time_windows
        metric_names = set(METRIC_NAMES) | {f"rate_{a}" for a in self.events.action_types}
        checks = [("interest_tags.window_days", self.interest_tags.window_days),
                  ("activity_levels.window_days", self.activity_levels.window_days),
                  ("user_types.window_days", self.user_types.window_days)]
        for i, rule in enumerate(self.behavior_preferences.rules):
            checks.append((f"behavior_preferences.rules.{i}.window_days", rule.window_days))
            if rule.metric not in metric_names:
                raise ValueError(f"behavior_preferences.rules.{i}.metric: unknown metric "
                                 f"{rule.metric!r}; one of {', '.join(sorted(metric_names))}")
        for path, w in checks:
            if w not in windows:
                raise ValueError(f"{path}: {w} is not one of behavior_preferences.time_windows "
                                 f"{windows}")
        codes = set(self.events.action_types.values())
        for code in self.interest_tags.action_weights:
            if code not in codes:
                raise ValueError(f"interest_tags.action_weights: {code} is not an action type")
        for fid in self.extra_features:
            if not re.fullmatch(r"\d{3}", fid) or fid in ("106", "107", "108", "110"):
                raise ValueError(f"extra_features.{fid}: a new feature id is three digits and "
                                 "not one of 106/107/108/110")
        return self

    # ---- derived values used across the code base
    def path(self, p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else Path(self.base_dir) / q

    @property
    def mapping_index_path(self) -> Path:
        return self.path(self.mapping_index)

    @property
    def data_dir(self) -> Path:
        return self.path(self.worker.data_dir)

    @property
    def run_dir(self) -> Path:
        return self.path(self.embedded_broker.run_dir)

    @property
    def api_token_path(self) -> Path:
        f = self.worker.api_token_file
        return self.path(f) if f else self.run_dir / "api-token"

    def action_weight(self, code: int) -> float:
        return self.interest_tags.action_weights.get(code, 1.0)

    @property
    def uses_embedded_broker(self) -> bool:
        servers = self.kafka.bootstrap_servers.split(",")
        return len(servers) == 1 and servers[0] in (
            f"127.0.0.1:{self.embedded_broker.port}", f"localhost:{self.embedded_broker.port}")


def _format_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{source}: {loc + ': ' if loc else ''}{msg}")
    return "\n".join(lines)


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            raw.setdefault(section, {})
            if not isinstance(raw[section], dict):
                continue  # the section's own type error is reported by validation
            raw[section][key] = env[var]
    return raw


def parse_config(raw: Any, source: str = "<config>", base_dir: str | Path = ".",
                 env: Mapping[str, str] | None = None) -> ProfileConfig:
    """Validate an already-parsed mapping; `env` (default: os.environ) overrides deployment keys."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, "
                          f"got {type(raw).__name__}")
    if "base_dir" in raw:
        raise ConfigError(f"{source}: base_dir: unknown key")
    raw = _apply_env(dict(raw), os.environ if env is None else env)
    try:
        return ProfileConfig.model_validate({**raw, "base_dir": str(base_dir)})
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def load_config(path: str | Path | None = None,
                env: Mapping[str, str] | None = None) -> ProfileConfig:
    """Load a YAML config (safe_load only). None: $PROFILES_CONFIG, else ./profile_config.yaml
    when present, else the built-in defaults."""
    env_map = os.environ if env is None else env
    if path is None:
        path = env_map.get("PROFILES_CONFIG") or (
            "profile_config.yaml" if Path("profile_config.yaml").exists() else None)
    if path is None:
        return parse_config({}, "<defaults>", Path.cwd(), env_map)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read: {e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    return parse_config(raw, str(p), p.resolve().parent, env_map)
