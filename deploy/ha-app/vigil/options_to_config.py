"""Turn the app's /data/options.json into the Vigil add-on's config file.

Stdlib only: it runs before anything else in the container. Each option names one key of the
add-on's config (OPTIONS below); the add-on validates the result with its own schema, so ranges
and choices have one owner. Options left empty are left out: the add-on's default applies.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Any

OPTIONS: dict[str, tuple[str, str]] = {
    "api_token": ("server", "api_token"),
    "log_level": ("server", "log_level"),
    "detector_backend": ("detector", "backend"),
    "detector_confidence": ("detector", "confidence"),
    "detector_input_size": ("detector", "input_size"),
    "detector_classes": ("detector", "classes"),
    "ray_serve_url": ("ray", "serve_url"),
    "ray_detector_fallback": ("ray", "detector_fallback"),
    "max_batch_size": ("batching", "max_batch_size"),
    "analysis_max_concurrent": ("analysis", "max_concurrent"),
    "llm_mode": ("llm", "mode"),
    "llm_url": ("llm", "url"),
    "llm_model": ("llm", "model"),
    "llm_threads": ("llm", "threads"),
    "llm_timeout_s": ("llm", "timeout_s"),
    "llm_policy": ("reasoning", "llm_policy"),
    "reid_enabled": ("reid", "enabled"),
    "store_max_age_days": ("store", "max_age_days"),
    "blur_unknown_faces": ("privacy", "blur_unknown_faces"),
    "local_only": ("privacy", "local_only"),
}
"""Option name -> (section, key) in the add-on's config."""

FIXED: dict[str, dict[str, Any]] = {
    "server": {"host": "0.0.0.0", "port": 8095, "data_dir": "/data"},
    "reid": {"models_dir": "/share/vigil/models"},
}
"""What the app decides, not the user: Home Assistant reaches the app over its own network."""

TOKEN_FILE = "api_token"  # noqa: S105 - a file name, not a secret


def build_config(options: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """The config document for ``options``; without an ``api_token`` one is generated once
    and kept in ``data_dir`` (the add-on serves only loopback without a token)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s): {', '.join(unknown)}")
    document: dict[str, dict[str, Any]] = {s: dict(keys) for s, keys in FIXED.items()}
    for name, value in options.items():
        if value is None or value == "":
            continue
        section, key = OPTIONS[name]
        document.setdefault(section, {})[key] = value
    if not document["server"].get("api_token"):
        token_path = data_dir / TOKEN_FILE
        if not token_path.is_file():
            token_path.write_text(secrets.token_urlsafe(32), encoding="utf-8")
            token_path.chmod(0o600)
            print(f"generated an API token in {token_path}: enter it in the Vigil integration")
        document["server"]["api_token"] = token_path.read_text(encoding="utf-8").strip()
    return document


def main(argv: list[str]) -> int:
    options_path, config_path = Path(argv[1]), Path(argv[2])
    options = json.loads(options_path.read_text(encoding="utf-8"))
    # JSON is YAML: the add-on reads this file with its YAML loader.
    document = build_config(options, config_path.parent)
    config_path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
