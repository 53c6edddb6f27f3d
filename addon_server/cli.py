"""Command line: ``vigil-addon [serve] [--config FILE]`` (also ``python -m addon_server``).

A configuration error — or a data dir that cannot be written — exits with status 2 and one
line naming the key (or the path) and the reason, so a supervisor (systemd, the HA add-on
runner) shows the user what to fix.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from addon_server import __version__
from addon_server.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load
from addon_server.devices import PlacementError
from addon_server.store import StorageError, check_storage

_LOGGER = logging.getLogger("addon_server")
EXIT_CONFIG = 2
LOOPBACK = "127.0.0.1"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil-addon", description="Vigil add-on server: detection and risk reasoning."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    config_help = (
        f"YAML config file (default: ./{DEFAULT_CONFIG_PATH} when present, else built-in "
        "defaults; environment variables override it)"
    )
    parser.add_argument("--config", type=Path, default=None, help=config_help)
    sub = parser.add_subparsers(dest="command")
    for name, text in (
        ("serve", "run the HTTP server (the default)"),
        ("check-config", "validate the configuration and print the result"),
    ):
        cmd = sub.add_parser(name, help=text)
        # SUPPRESS keeps a --config given before the sub-command.
        cmd.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    gpu = sub.add_parser(
        "gpu-config", help="write the Compose GPU override from the devices config"
    )
    gpu.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    gpu.add_argument("--out", type=Path, default=Path(), help="folder to write into (default: .)")
    gpu.add_argument(
        "--host-gpus", type=int, default=None, help="GPUs on the host (default: ask torch)"
    )
    _export_parser(sub, config_help)
    from addon_server.zoo import pull

    pull.add_parser(sub, config_help)
    parser.set_defaults(command="serve")
    return parser


def _export_parser(sub: Any, config_help: str) -> None:
    cmd = sub.add_parser(
        "export", help="export an ultralytics .pt to ONNX, a TensorRT engine or a Triton repository"
    )
    cmd.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    cmd.add_argument("--model", type=Path, required=True, help="ultralytics .pt weights")
    cmd.add_argument("--out", type=Path, required=True, help="output folder")
    cmd.add_argument("--format", choices=("onnx", "engine", "triton"), default="onnx")
    cmd.add_argument("--imgsz", type=int, default=640, help="square input size in pixels")
    cmd.add_argument("--fp16", action="store_true", help="FP16 TensorRT engine")
    cmd.add_argument(
        "--int8-calib", type=Path, default=None, help="folder of calibration images (INT8 engine)"
    )


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from addon_server.export import ExportError, run_export

    try:
        result = run_export(
            args.model,
            args.out,
            args.format,
            imgsz=args.imgsz,
            batching=settings.batching,
            devices=settings.devices,
            fp16=args.fp16,
            int8_calib=args.int8_calib,
        )
    except ExportError as err:
        print(f"vigil-addon: export: {err}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"ONNX: {result.onnx}")
    if result.engine is not None:
        print(f"TensorRT engine: {result.engine}")
    if result.triton_repo is not None:
        print(f"Triton model repository: {result.triton_repo}")
    if result.message is not None:
        print(f"vigil-addon: {result.message}")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secure_bind(settings: Settings) -> Settings:
    """Without a token, only loopback is safe: refuse to listen beyond it and say so."""
    host = settings.server.host
    if settings.server.api_token is None and not _is_loopback(host):
        _LOGGER.warning(
            "no VIGIL_API_TOKEN is set: binding to %s instead of %s; set a token to serve "
            "Home Assistant on another host",
            LOOPBACK,
            host,
        )
        return replace(settings, server=replace(settings.server, host=LOOPBACK))
    if settings.server.api_token is None:
        _LOGGER.warning("no VIGIL_API_TOKEN is set: the API is open to local processes")
    return settings


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load(args.config)
    except ConfigError as err:
        print(f"vigil-addon: invalid configuration: {err}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(
        level=settings.server.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "check-config":
        print(f"configuration OK ({settings.source})")
        return 0
    if args.command == "gpu-config":
        from addon_server.gpu_config import run

        return run(settings, args.out, args.host_gpus)
    if args.command == "export":
        return _export(args, settings)
    if args.command == "models" and args.models_command == "publish":
        from addon_server.zoo.mlflow_source import run_publish

        return run_publish(args, settings.registry.tracking_uri)
    if args.command == "models":
        from addon_server.zoo import pull

        return pull.run(args, settings.reid.models_dir)
    settings = secure_bind(settings)
    try:
        # Before any model loads, so it fails in a second. An existing database on a full
        # disk passes (it opens without writing): the add-on then serves reads and reports it.
        check_storage(settings.store.path)
    except StorageError as err:
        print(f"vigil-addon: {err}", file=sys.stderr)
        return EXIT_CONFIG
    from addon_server.app import create_app
    from addon_server.server import serve

    try:
        app = create_app(settings)
    except (PlacementError, ConfigError) as err:
        print(f"vigil-addon: invalid configuration: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except StorageError as err:  # the instance id could not be written
        print(f"vigil-addon: {err}", file=sys.stderr)
        return EXIT_CONFIG
    _LOGGER.info(
        "Vigil add-on %s listening on http://%s:%d (config: %s)",
        __version__,
        settings.server.host,
        settings.server.port,
        settings.source,
    )
    serve(app, settings.server)
    return 0
