"""Pure feature computation for 106/107/108/110 (FEATURES.md); no Kafka in here."""
from typing import Any


def __getattr__(name: str) -> Any:  # lazy, so `import features.x` stays cheap
    if name == "UserProfileSystem":
        from features.seed_api import UserProfileSystem
        return UserProfileSystem
    raise AttributeError(name)
