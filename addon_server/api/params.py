"""Request parameters several routes share, validated one way with one wording of errors.

The rules themselves have one owner each (the camera-id rule in ``config.py``, the levels in
``reasoning/levels.py``); this module only turns a broken rule into the API's 400.
"""

from __future__ import annotations

from datetime import datetime

from addon_server.api.errors import ApiError
from addon_server.config import CAMERA_ID_RULE, is_camera_id
from addon_server.reasoning.levels import RiskLevel


def bad(message: str) -> ApiError:
    return ApiError(400, "bad_parameter", message)


def camera_id(value: str) -> str:
    if not is_camera_id(value):
        raise bad(f"camera must be {CAMERA_ID_RULE}, got {value!r}")
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


def risk_level(name: str, raw: str) -> RiskLevel:
    try:
        return RiskLevel(raw.strip().lower())
    except ValueError:
        names = [str(level) for level in RiskLevel]
        raise bad(f"{name} must be {', '.join(names[:-1])} or {names[-1]}, got {raw!r}") from None
