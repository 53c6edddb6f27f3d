"""Request parameters several routes share, validated one way with one wording of errors."""

from __future__ import annotations

from datetime import datetime

from addon_server.api.errors import ApiError
from addon_server.config import CAMERA_ID
from addon_server.store import LEVEL_RANK


def bad(message: str) -> ApiError:
    return ApiError(400, "bad_parameter", message)


def camera_id(value: str) -> str:
    if not CAMERA_ID.match(value):
        raise bad(f"camera must be 1-64 of a-z, 0-9 and _, got {value!r}")
    return value


def aware_datetime(name: str, raw: str) -> datetime:
    """An ISO 8601 time with a UTC offset (a naive time would be read in the wrong zone)."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise bad(f"{name} must be ISO 8601, got {raw!r}") from None
    if value.tzinfo is None:
        raise bad(f"{name} must include a UTC offset, got {raw!r}")
    return value


def risk_level(name: str, raw: str) -> str:
    level = raw.strip().lower()
    if level not in LEVEL_RANK:
        raise bad(f"{name} must be low, medium, high or critical, got {raw!r}")
    return level
