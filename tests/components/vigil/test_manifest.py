"""manifest.json and hacs.json hold what hassfest and HACS accept, and nothing else.

hassfest's validator (`script.hassfest`) is not in the Home Assistant wheel, so the check
is built from the parts that are: the keys and their types come from the installed Home
Assistant's own `homeassistant.loader.Manifest`, versions are parsed with the same
`awesomeversion` strategies hassfest uses, and the rules hassfest adds for custom
integrations (required keys, https documentation outside home-assistant.io, the IoT
classes, sorted keys) are the data below. The checker is itself tested against manifests
it must refuse, starting with the one hassfest refused (`homeassistant` belongs in
hacs.json).
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlparse

import pytest
from awesomeversion import AwesomeVersion, AwesomeVersionException, AwesomeVersionStrategy
from homeassistant.const import __version__ as HA_VERSION
from homeassistant.loader import Manifest

REPO = Path(__file__).parents[3]
INTEGRATION = REPO / "custom_components" / "vigil"
MANIFEST: dict[str, Any] = json.loads((INTEGRATION / "manifest.json").read_text())
HACS: dict[str, Any] = json.loads((REPO / "hacs.json").read_text())

# Keys the loader fills in itself at runtime: never written in a manifest.
RUNTIME_KEYS = {"is_built_in", "overwrites_built_in"}
# hassfest, for a custom integration.
REQUIRED_KEYS = {"domain", "name", "documentation", "codeowners", "version", "iot_class"}
IOT_CLASSES = {
    "assumed_state",
    "calculated",
    "cloud_polling",
    "cloud_push",
    "local_polling",
    "local_push",
}
QUALITY_SCALES = {
    "bronze",
    "silver",
    "gold",
    "platinum",
    "custom",
    "no_score",
    "internal",
    "legacy",
}
CORE_DOCS = "https://www.home-assistant.io/integrations"
VERSION_STRATEGIES = [
    AwesomeVersionStrategy.CALVER,
    AwesomeVersionStrategy.SEMVER,
    AwesomeVersionStrategy.SIMPLEVER,
    AwesomeVersionStrategy.BUILDVER,
    AwesomeVersionStrategy.PEP440,
]
# HACS's documented hacs.json keys.
HACS_KEYS = {
    "name",
    "content_in_root",
    "zip_release",
    "filename",
    "hide_default_branch",
    "country",
    "homeassistant",
    "hacs",
    "persistent_directory",
    "render_readme",
}


def conforms(value: Any, hint: Any) -> bool:
    """Return whether a JSON value has the type a TypedDict field declares."""
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin in (Union, types.UnionType):
        return any(conforms(value, arg) for arg in get_args(hint))
    if origin is list:
        (item,) = get_args(hint)
        return isinstance(value, list) and all(conforms(v, item) for v in value)
    if origin is dict:
        key, item = get_args(hint)
        return isinstance(value, dict) and all(
            conforms(k, key) and conforms(v, item) for k, v in value.items()
        )
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, hint) and not isinstance(value, bool)
    return isinstance(value, hint)


def is_version(value: str) -> bool:
    """Return whether hassfest would accept a version string."""
    try:
        AwesomeVersion(value, ensure_strategy=VERSION_STRATEGIES)
    except AwesomeVersionException:
        return False
    return True


def manifest_errors(manifest: Mapping[str, Any], directory: str) -> Iterator[str]:
    """Yield what hassfest would refuse in a custom integration's manifest."""
    fields = get_type_hints(Manifest)
    for key, value in manifest.items():
        if key not in fields or key in RUNTIME_KEYS:
            yield f"not a valid option at {key!r}"
        elif not conforms(value, fields[key]):
            yield f"{key!r}: {value!r} is not a {fields[key]}"
    for key in sorted(REQUIRED_KEYS - set(manifest)):
        yield f"{key!r} is required"
    if manifest.get("domain") != directory:
        yield "domain does not match the directory name"
    docs = str(manifest.get("documentation", ""))
    if urlparse(docs).scheme != "https" or docs.startswith(CORE_DOCS):
        yield "documentation must be an https URL of the integration's own documentation"
    if "issue_tracker" in manifest and not urlparse(manifest["issue_tracker"]).netloc:
        yield "issue_tracker is not a URL"
    if "iot_class" in manifest and manifest["iot_class"] not in IOT_CLASSES:
        yield f"unknown iot_class {manifest['iot_class']!r}"
    if manifest.get("integration_type") == "virtual":
        yield "a custom integration cannot be virtual"
    if "quality_scale" in manifest and manifest["quality_scale"] not in QUALITY_SCALES:
        yield f"unknown quality_scale {manifest['quality_scale']!r}"
    if isinstance(manifest.get("version"), str) and not is_version(manifest["version"]):
        yield f"{manifest['version']!r} is not a valid version"
    keys = list(manifest)
    if keys[:2] != ["domain", "name"] or keys[2:] != sorted(keys[2:]):
        yield "keys are not sorted: domain, name, then alphabetical"


def test_manifest_is_valid() -> None:
    """The integration's manifest passes every check."""
    assert list(manifest_errors(MANIFEST, INTEGRATION.name)) == []


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"homeassistant": "2026.10.4"}, "not a valid option at 'homeassistant'"),
        ({"is_built_in": False}, "not a valid option at 'is_built_in'"),
        ({"version": None}, "'version' is required"),
        ({"version": "one"}, "'one' is not a valid version"),
        ({"config_flow": "yes"}, "'config_flow'"),
        ({"codeowners": "@someone"}, "'codeowners'"),
        ({"integration_type": "gadget"}, "'integration_type'"),
        ({"iot_class": "local_magic"}, "unknown iot_class"),
        ({"documentation": "http://example.com"}, "documentation must be"),
        ({"documentation": f"{CORE_DOCS}/vigil"}, "documentation must be"),
        ({"domain": "vigil2"}, "domain does not match"),
    ],
)
def test_checker_refuses(change: dict[str, Any], error: str) -> None:
    """The checker refuses what hassfest refuses (and so could fail on this manifest)."""
    manifest = {k: v for k, v in MANIFEST.items() if change.get(k, v) is not None}
    manifest |= {k: v for k, v in change.items() if v is not None}
    errors = list(manifest_errors(manifest, INTEGRATION.name))
    assert any(error in e for e in errors), errors


def test_checker_wants_sorted_keys() -> None:
    """Keys out of hassfest's order are refused."""
    reordered = dict(reversed(MANIFEST.items()))
    assert "keys are not sorted: domain, name, then alphabetical" in list(
        manifest_errors(reordered, INTEGRATION.name)
    )


def test_hacs_json() -> None:
    """hacs.json has HACS's keys only; its minimum Home Assistant is the one tested or older."""
    assert set(HACS) <= HACS_KEYS
    assert HACS["name"] == MANIFEST["name"]
    assert AwesomeVersion(HACS["homeassistant"]) <= AwesomeVersion(HA_VERSION)
