"""``vigil-addon gpu-config``: the Compose GPU override and its human-readable reference.

The devices config (``devices:`` in the add-on's config) says which GPU hosts which service with
which budget. The container on the GPU host must be given those GPUs: this module turns the
config into the seeds' ``docker-compose.gpu-override.yml`` (merged over
``deploy/docker-compose.yml`` with ``docker compose -f ... -f ...``) and a text reference of the
assignment. Both are pure renderings of :class:`~addon_server.config.Settings`, so the add-on
writes them too when Home Assistant applies a new assignment (:func:`apply`, behind
``PUT /v1/gpu-assignment``), together with the ``devices.yaml`` it reads at its next start.

Device numbering: Docker hands the container the GPUs listed in ``device_ids`` renumbered from 0.
So that ``cuda:1`` in the config means the same card inside the container as on the host, the
override exposes every GPU from 0 to the highest one the config uses (a Compose reservation is not
exclusive: a GPU exposed but hosting nothing costs nothing) and pins CUDA's order to the PCI bus
order that ``nvidia-smi`` and Docker number by.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from addon_server.config import (
    SERVICES,
    DeviceSettings,
    Settings,
    device_entries_document,
    read_devices_file,
)

OVERRIDE_FILE = "docker-compose.gpu-override.yml"
REFERENCE_FILE = "GPU_ASSIGNMENT.md"
COMPOSE_SERVICE = "vigil"
"""The service name in deploy/docker-compose.yml that the override adjusts."""
HEADER = "# auto-generated — do not edit"


class GpuConfigError(Exception):
    """The devices config cannot be turned into a GPU assignment; the message says why."""


@dataclass(frozen=True, slots=True)
class GpuAssignment:
    """One GPU as the override exposes it."""

    index: int
    services: tuple[str, ...]
    budget_gb: float | None
    """None: no cap beyond the card's own memory."""


def _gpu_index(device_id: str) -> int | None:
    return int(device_id.split(":", 1)[1]) if device_id.startswith("cuda:") else None


def assignments(settings: Settings, host_gpus: int | None = None) -> list[GpuAssignment]:
    """Every GPU the container gets, lowest first, with what the config places on it.

    ``host_gpus`` (the number of GPUs on the host, when known) turns a config naming a card the
    host lacks into an error instead of an override Docker would refuse at start.
    """
    devices = settings.devices
    configured = {
        index: entry
        for entry in devices.devices
        if (index := _gpu_index(entry.device_id)) is not None
    }
    hosting = sorted(i for i, entry in configured.items() if entry.services)
    if not hosting:
        raise GpuConfigError(
            "devices: no GPU hosts a service (give a cuda:N entry a 'services' list of "
            f"{', '.join(SERVICES)}); without one the container needs no GPU"
        )
    if host_gpus is not None:
        missing = [i for i in hosting if i >= host_gpus]
        if missing:
            have = f"cuda:0 to cuda:{host_gpus - 1}" if host_gpus else "none"
            raise GpuConfigError(
                f"devices.cuda:{missing[0]}: this host has {host_gpus} GPU(s) ({have}); "
                "the GPU the config places services on is not present"
            )
    result = []
    for index in range(hosting[-1] + 1):
        entry = configured.get(index)
        budget = entry.budget_gb if entry and entry.budget_gb is not None else None
        if budget is None:
            budget = devices.default_vram_budget_gb
        result.append(GpuAssignment(index, entry.services if entry else (), budget))
    return result


def render_override(settings: Settings, host_gpus: int | None = None) -> str:
    """The Compose override file's text: the vigil service's GPU reservation and CUDA env only.

    ``!override`` makes Compose (2.24.4 and later) replace the base file's device list instead
    of appending to it, which it does for sequences by default.
    """
    gpus = assignments(settings, host_gpus)
    ids = [str(g.index) for g in gpus]
    devices = [{"driver": "nvidia", "device_ids": ids, "capabilities": ["gpu"]}]
    body = yaml.safe_dump(devices, default_flow_style=False, sort_keys=False)
    device_lines = "".join(f"            {line}\n" for line in body.splitlines())
    hosted = "; ".join(
        f"cuda:{g.index}: {', '.join(g.services) or 'nothing (exposed for numbering)'}"
        for g in gpus
    )
    return (
        f"{HEADER}\n"
        "# Written by `vigil-addon gpu-config` from the devices config; see "
        f"{REFERENCE_FILE} beside it.\n"
        f"# {hosted}\n"
        "services:\n"
        f"  {COMPOSE_SERVICE}:\n"
        "    environment:\n"
        "      CUDA_DEVICE_ORDER: PCI_BUS_ID\n"
        f'      CUDA_VISIBLE_DEVICES: "{",".join(ids)}"\n'
        "    deploy:\n"
        "      resources:\n"
        "        reservations:\n"
        "          devices: !override\n"
        f"{device_lines}"
    )


def _budget_text(budget_gb: float | None) -> str:
    return "the whole card" if budget_gb is None else f"{budget_gb:g} GB"


def render_reference(
    settings: Settings, host_gpus: int | None = None, override_path: str = OVERRIDE_FILE
) -> str:
    """The assignment in words: which GPU hosts which service with which budget, and the
    command that applies ``override_path``."""
    gpus = assignments(settings, host_gpus)
    placed = {service for g in gpus for service in g.services}
    lines = [
        "# GPU assignment",
        "",
        f"Auto-generated by `vigil-addon gpu-config` or by Home Assistant's options from "
        f"`{settings.source}` — do not edit; change the `devices:` section and run the command "
        f"again, or apply a new assignment in Home Assistant. `{OVERRIDE_FILE}` applies it.",
        "",
        "| GPU | services | budget |",
        "|-----|----------|--------|",
    ]
    for g in gpus:
        services = ", ".join(g.services) or "— (exposed only so that numbering matches the host)"
        lines.append(f"| cuda:{g.index} | {services} | {_budget_text(g.budget_gb)} |")
    on_cpu = [
        service
        for entry in settings.devices.devices
        if entry.device_id == "cpu"
        for service in entry.services
    ]
    rest = [s for s in SERVICES if s not in placed and s not in on_cpu]
    if on_cpu:
        lines += ["", f"On the CPU by the config: {', '.join(on_cpu)}."]
    if rest:
        lines += [
            "",
            f"Not placed by the config: {', '.join(rest)} — these run on cuda:0, the first GPU "
            "the container sees.",
        ]
    lines += [
        "",
        f"The container sees GPUs {', '.join(f'cuda:{g.index}' for g in gpus)} with the host's "
        "numbering (CUDA_DEVICE_ORDER=PCI_BUS_ID, as nvidia-smi counts). Apply with:",
        "",
        f"    docker compose -p vigil -f deploy/docker-compose.yml -f {override_path} up -d",
        "",
        "Restarting the container is your choice: the running one keeps its GPUs until then.",
        "",
    ]
    return "\n".join(lines)


def _write_atomically(files: list[tuple[Path, str]]) -> None:
    """Write each file through a temporary file beside it and a rename, in order: a reader
    (``docker compose``, the add-on at start) sees the old file or the new one, never half."""
    for path, text in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write(settings: Settings, out_dir: Path, host_gpus: int | None = None) -> list[Path]:
    """Write the override and the reference into ``out_dir``; return their paths.

    Both are rendered before either is written, so an invalid config leaves the old pair intact.
    """
    override = render_override(settings, host_gpus)
    reference = render_reference(settings, host_gpus, str(out_dir / OVERRIDE_FILE))
    paths = [out_dir / OVERRIDE_FILE, out_dir / REFERENCE_FILE]
    _write_atomically(list(zip(paths, (override, reference), strict=True)))
    return paths


@dataclass(frozen=True, slots=True)
class OutputPaths:
    """Where the add-on writes an assignment from Home Assistant (``deploy.override_dir``)."""

    override: Path
    reference: Path
    devices: Path

    @classmethod
    def of(cls, settings: Settings) -> OutputPaths:
        folder = settings.deploy.override_dir
        return cls(folder / OVERRIDE_FILE, folder / REFERENCE_FILE, settings.deploy.devices_file)


def render_devices_file(entries: tuple[DeviceSettings, ...]) -> str:
    """``devices.yaml``: the entries in the ``devices:`` section's own shape."""
    body = yaml.safe_dump(
        {"devices": device_entries_document(entries)}, default_flow_style=False, sort_keys=False
    )
    return (
        f"{HEADER}\n"
        "# Written by the Vigil add-on when Home Assistant applied a GPU assignment. Read at the\n"
        "# add-on's start, it replaces the per-device entries of the config's `devices:` section;\n"
        "# delete it to go back to the config.\n"
        f"{body}"
    )


def apply(
    settings: Settings, entries: tuple[DeviceSettings, ...], host_gpus: int | None
) -> Settings:
    """Write the override, the reference and ``devices.yaml`` for ``entries``; return the
    settings the add-on will run with after its restart (the running ones are unchanged).

    All three are rendered first, so an assignment :func:`assignments` refuses writes nothing
    (:class:`GpuConfigError`); ``devices.yaml`` is written last, after the files it explains.
    """
    paths = OutputPaths.of(settings)
    new = replace(
        settings,
        devices=replace(settings.devices, devices=entries),
        source=f"{paths.devices} (applied from Home Assistant)",
    )
    _write_atomically(
        [
            (paths.override, render_override(new, host_gpus)),
            (paths.reference, render_reference(new, host_gpus, str(paths.override))),
            (paths.devices, render_devices_file(entries)),
        ]
    )
    return new


def pending(settings: Settings) -> tuple[DeviceSettings, ...] | None:
    """The entries ``devices.yaml`` holds when they differ from those running now (they
    apply at the next start), else None. Raises ConfigError when the file is unreadable."""
    written = read_devices_file(settings.deploy.devices_file)
    if written is None:
        return None
    running = device_entries_document(settings.devices.devices)
    return None if device_entries_document(written) == running else written


def host_gpu_count() -> int | None:
    """GPUs torch sees on this machine, or None when it sees none (maybe another machine:
    the config is then not checked against the hardware)."""
    from addon_server.devices import discover

    count = sum(1 for d in discover() if d.kind == "cuda")
    return count or None


def run(settings: Settings, out_dir: Path, host_gpus: int | None) -> int:
    """The sub-command: write the pair, or say in one line why not (the CLI's config status)."""
    from addon_server.cli import EXIT_CONFIG

    try:
        paths = write(settings, out_dir, host_gpus if host_gpus is not None else host_gpu_count())
    except GpuConfigError as err:
        print(f"vigil-addon gpu-config: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as err:
        print(f"vigil-addon gpu-config: cannot write {out_dir}: {err.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    for path in paths:
        print(f"wrote {path}")
    return 0
