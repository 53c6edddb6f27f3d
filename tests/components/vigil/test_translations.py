"""Every translation key the integration uses exists, in strings.json and translations/en.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from custom_components.vigil.binary_sensor import CONNECTIVITY, THREAT
from custom_components.vigil.const import ISSUE_CODES, RISK_LEVELS
from custom_components.vigil.event import RISK_EVENT
from custom_components.vigil.image import SNAPSHOT
from custom_components.vigil.sensor import (
    CAMERA_SENSORS,
    SERVER_SENSORS,
    gpu_sensors,
    zoo_sensors,
)
from custom_components.vigil.services import MODEL_ERRORS

INTEGRATION = Path(__file__).parents[3] / "custom_components" / "vigil"
STRINGS = json.loads((INTEGRATION / "strings.json").read_text())


def source_keys(pattern: str) -> set[str]:
    """Return the string literals matching pattern in the integration's code."""
    found: set[str] = set()
    for file in INTEGRATION.glob("*.py"):
        found |= set(re.findall(pattern, file.read_text()))
    return found


def test_en_matches_strings() -> None:
    """translations/en.json is strings.json (custom integrations ship it as is)."""
    assert json.loads((INTEGRATION / "translations" / "en.json").read_text()) == STRINGS


def test_exception_keys() -> None:
    """Every translation_key raised in code has a message."""
    used = source_keys(r'translation_domain=DOMAIN,\s*translation_key="([a-z_]+)"')
    assert used
    assert used <= set(STRINGS["exceptions"])
    # The add-on's model error codes are translation keys themselves (services.py).
    assert set(MODEL_ERRORS) <= set(STRINGS["exceptions"])


def test_flow_keys() -> None:
    """Every error and abort reason of the flows is translated."""
    errors = source_keys(r'errors\[[^\]]+\] = "([a-z_]+)"')
    aborts = source_keys(r'reason="([a-z_]+)"')
    assert errors <= set(STRINGS["config"]["error"]) | set(
        STRINGS["config_subentries"]["camera"]["error"]
    ) | set(STRINGS["options"]["error"])
    assert aborts <= set(STRINGS["config"]["abort"])
    assert set(STRINGS["selector"]["notify_level"]["options"]) == set(RISK_LEVELS)


def test_issue_keys() -> None:
    """Each repair issue code the add-on reports has a title and description."""
    for code in (*ISSUE_CODES, "addon_issue"):
        assert {"title", "description"} <= set(STRINGS["issues"][code])


def test_entity_keys() -> None:
    """Every entity's translation key has a name."""
    platforms = {
        "binary_sensor": [CONNECTIVITY, THREAT],
        "event": [RISK_EVENT],
        "image": [SNAPSHOT],
        "sensor": [
            *SERVER_SENSORS,
            *CAMERA_SENSORS,
            *gpu_sensors("cuda:0"),
            *zoo_sensors("cpu"),
        ],
    }
    for platform, descriptions in platforms.items():
        for description in descriptions:
            if description.translation_key is None:
                continue  # named by its device class
            assert "name" in STRINGS["entity"][platform][description.translation_key]
    assert set(
        STRINGS["entity"]["event"]["risk_event"]["state_attributes"]["event_type"]["state"]
    ) == set(RISK_LEVELS)


def test_services_documented() -> None:
    """Each action in services.yaml has a name, a description and its fields translated."""
    services = yaml.safe_load((INTEGRATION / "services.yaml").read_text())
    icons = json.loads((INTEGRATION / "icons.json").read_text())
    for name, spec in services.items():
        assert {"name", "description"} <= set(STRINGS["services"][name])
        assert name in icons["services"]
        for field in (spec or {}).get("fields", {}):
            assert field in STRINGS["services"][name]["fields"]


def test_quality_scale_complete() -> None:
    """Every quality-scale rule up to Platinum is done, or exempt with a reason."""
    rules = yaml.safe_load((INTEGRATION / "quality_scale.yaml").read_text())["rules"]
    assert len(rules) == 54  # 20 Bronze, 10 Silver, 21 Gold, 3 Platinum
    for name, rule in rules.items():
        status = rule if isinstance(rule, str) else rule["status"]
        assert status in ("done", "exempt"), name
        if status == "exempt":
            assert rule["comment"].strip(), name


def test_brand_images() -> None:
    """The brand images Home Assistant serves for custom integrations are there."""
    from PIL import Image

    for prefix in ("", "dark_"):
        for name, size in (("icon", 256), ("logo", 128)):
            for suffix, scale in (("", 1), ("@2x", 2)):
                with Image.open(INTEGRATION / "brand" / f"{prefix}{name}{suffix}.png") as img:
                    assert img.format == "PNG"
                    assert min(img.size) == size * scale
