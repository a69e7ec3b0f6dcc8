from __future__ import annotations

import pytest

from offline import spark as spark_engine

MASTER = "local[2]"


@pytest.fixture(scope="session")
def spark_session():
    """One PySpark session on local[2] for every Spark test (a session costs about 10 s to
    start, and its first jobs run on a cold JVM); each module sets the runtime conf it needs."""
    session = spark_engine.session(MASTER)
    yield session
    session.stop()
