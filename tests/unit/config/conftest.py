from __future__ import annotations

import copy
from typing import Any

import pytest

MINIMAL: dict[str, Any] = {
    "listen": {
        "c2s": [
            {"port": 5222, "tls": {"certfile": "certs/server.pem", "keyfile": "certs/server.key"}},
        ]
    }
}


@pytest.fixture
def minimal() -> dict[str, Any]:
    """A fresh minimal valid config dict (one listener)."""
    return copy.deepcopy(MINIMAL)
