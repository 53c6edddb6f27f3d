"""Record the integration's test fixtures from the real add-on.

    .venv-addon/bin/python scripts/record_fixtures.py [--models-dir DIR]

(default: ``$VIGIL_MODELS_DIR``, else ``../shared/models``)

Starts ``python -m addon_server serve`` twice on a free loopback port, each time with a fresh
temporary data dir and the LLM off (so the rule engine alone scores and one image always
gives the same event): once as configured for a healthy CPU-only add-on, once degraded (the
detector asked for a missing GPU, no face-embedder files, an unreachable external LLM). It
makes the calls the integration makes, writes each answer to
``tests/components/vigil/fixtures/`` and writes the add-on's ``/openapi.json`` beside them; the
integration's tests validate the fixtures against that document and the add-on's tests check
that the document is the one the add-on builds now (``tests/addon_server/test_contract.py``).

The inputs are fixed: the images (``bus.jpg`` from the fixtures, ultralytics' ``zidane.jpg``,
scikit-image's cat photo in a grey frame), the event times, the camera and person names, and
the instance id (the one the integration's tests use as the config entry's unique id, written
into the data dir before start). Every installed zoo model is loaded, one at a time, before the
analyses, so that none waits for a load within its deadline and each is measured alone; a
model skipped for time (``zoo_busy``) or an add-on degraded by a failed model stops the
recording. What still varies from run to run or machine to machine is normalised, and
nothing else is touched (``recorded.json`` lists it too):

* ``updated_at`` (when a revision was stored) becomes the event's ``timestamp``;
* ids: the random second half (12 hex digits) of every event and person id becomes a counter;
  a person's first half, the enrolment time, becomes that of ``ENROLLED_AT``, as does its
  ``created``; ``snapshot_url`` follows its event id;
* durations: each ``timings_ms`` stage, ``uptime_seconds``, an enrichment result's
  ``inference_time_ms`` and a zoo model's ``load_seconds`` and ``idle_s`` become 1.0 (their
  keys stay, a null stays null);
* the recording machine: the CPU device's ``total_bytes`` (its memory) becomes 16 GiB;
* measured memory (process RSS deltas, which differ from run to run): a model's
  ``measured_bytes`` and ``peak_bytes`` become its registry estimate (``estimated_bytes``),
  or 64 MiB for a model without one (the detector, the face embedder); ``accounted_bytes``
  and ``vram_bytes`` that are not 0 follow. What is summed from them is summed again from
  the normalised figures, as the add-on sums it, so that the fixtures stay consistent: a
  device's ``used_bytes`` (its ledger: every model booked on it) and the zoo status'
  ``zoo_used_mb``, ``cotenants_mb``, ``vram_used_mb``, ``vram_available_mb`` and
  ``vram_utilization_percent``;
* enrichments: ``results``, ``skipped`` and the ``enrich_<model>`` stages of ``timings_ms`` in
  model-name order (the models run at once and finish in any order);
* paths: the models dir becomes ``<models_dir>`` and the add-on venv's site-packages
  ``<site-packages>`` (in the messages naming a missing model file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import ultralytics
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "components" / "vigil" / "fixtures"
DEFAULT_MODELS_DIR = Path(os.environ.get("VIGIL_MODELS_DIR") or REPO.parent / "shared" / "models")

INSTANCE_ID = "9f0c2b7e5d1a4c3b8e6f0a1d2c3b4a59"
"""The integration's tests use it as the config entry's unique id (their conftest)."""
TOKEN = "record-fixtures-token"  # noqa: S105 - a throwaway add-on on loopback
CAMERA = "front_door"
STORED_AT = "2026-11-22T14:15:00+00:00"
"""The earlier, stored event (``events.json``): a cat in daylight."""
ANALYSED_AT = "2026-11-23T04:30:00+00:00"
"""The analysed event (``event.json``): bus.jpg at night, as the test camera serves it."""
ENROLLED_AT = datetime.fromisoformat("2026-11-20T09:00:00+00:00").timestamp()
PERSON = "Alex"
MISSING_MODELS_DIR = "/nonexistent/vigil/models"
UNREACHABLE_LLM = "http://127.0.0.1:9"
"""Port 9 (discard) has no listener on a normal host: the connection is refused at once."""
DURATION = 1.0
NOMINAL_CPU_BYTES = 16 * 2**30
NOMINAL_MODEL_BYTES = 64 * 2**20
"""Measured bytes of a model that has no registry estimate (the detector, the face embedder)."""
PINNED_MODEL = "pose"
"""The zoo model loaded (and pinned) through the API (``model_pinned.json``)."""
NORMALISED = [
    "ids: random second half -> counter; person ids' time half and created -> ENROLLED_AT",
    "snapshot_url: follows its event id",
    "updated_at (the time a revision was stored) -> the event's timestamp, also in revisions",
    "timings_ms values, uptime_seconds, enrichment inference_time_ms, zoo load_seconds and"
    " idle_s -> 1.0 (null stays null)",
    "devices: the CPU's total_bytes (the recording machine's memory) -> 16 GiB",
    "models: measured_bytes and peak_bytes -> estimated_bytes (64 MiB without one);"
    " non-zero accounted_bytes and vram_bytes follow",
    "sums of those, recomputed from the normalised figures: devices' used_bytes; zoo status"
    " zoo_used_mb, cotenants_mb, vram_used_mb, vram_available_mb, vram_utilization_percent",
    "enrichments: results, skipped and the enrich_<model> timings_ms stages sorted by model name",
    "paths: the models dir -> <models_dir>, the add-on venv's site-packages -> <site-packages>",
]
MIB = 2**20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def cat_in_view(photo: Any) -> Image.Image:
    """scikit-image's cat close-up, small in a grey 1200x900 frame as a camera would see it
    (the close-up alone fills the frame and yolov3-tiny finds nothing in it)."""
    frame = Image.new("RGB", (1200, 900), (120, 120, 120))
    frame.paste(Image.fromarray(photo), (600, 500))
    return frame


@dataclass
class Recording:
    """The answers to write, and the normalisation state shared by all of them."""

    fixtures: dict[str, tuple[str, str, int, Any]] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, method: str, path: str, status: int, body: Any) -> None:
        self.fixtures[name] = (method, path, status, body)

    def stable_id(self, original: str, *, person: bool = False) -> str:
        if original not in self.ids:
            head = f"{int(ENROLLED_AT * 1000):012x}" if person else original[:12]
            self.ids[original] = f"{head}{len(self.ids) + 1:012x}"
        return self.ids[original]


def _duration(value: Any) -> Any:
    return None if value is None else DURATION


def normalise_enrichments(enrichments: dict[str, Any]) -> dict[str, Any]:
    results = {
        name: result | {"inference_time_ms": DURATION} if "inference_time_ms" in result else result
        for name, result in sorted(enrichments["results"].items())
    }
    return {"results": results, "skipped": dict(sorted(enrichments["skipped"].items()))}


def normalise_event(rec: Recording, event: dict[str, Any]) -> dict[str, Any]:
    old = event["id"]
    event = dict(event)
    event["id"] = rec.stable_id(old)
    event["snapshot_url"] = event["snapshot_url"].replace(old, event["id"])
    if "updated_at" in event:  # when the revision was stored: now, unlike the event's time
        event["updated_at"] = event["timestamp"]
    if "revisions" in event:
        event["revisions"] = [r | {"updated_at": event["timestamp"]} for r in event["revisions"]]
    # The enrich_<model> stages are added as the models finish: in model-name order here.
    enrich = iter(sorted(k for k in event["timings_ms"] if k.startswith("enrich_")))
    stages = [next(enrich) if k.startswith("enrich_") else k for k in event["timings_ms"]]
    event["timings_ms"] = dict.fromkeys(stages, DURATION)
    event["enrichments"] = normalise_enrichments(event["enrichments"])
    event["reid"] = [
        face | {"person_id": rec.stable_id(face["person_id"], person=True)}
        if face["person_id"]
        else face
        for face in event["reid"]
    ]
    return event


def normalise_person(rec: Recording, person: dict[str, Any]) -> dict[str, Any]:
    return person | {"id": rec.stable_id(person["id"], person=True), "created": ENROLLED_AT}


def nominal_bytes(model: dict[str, Any]) -> int:
    """What a model's measured memory is recorded as: its estimate, or a nominal figure."""
    estimated: int | None = model.get("estimated_bytes")
    return estimated if estimated is not None else NOMINAL_MODEL_BYTES


def normalise_model(model: dict[str, Any]) -> dict[str, Any]:
    """A /v1/models entry or a zoo status model with its measured figures made nominal."""
    nominal = nominal_bytes(model)
    model = dict(model)
    for key in ("measured_bytes", "peak_bytes"):
        if model.get(key) is not None:
            model[key] = nominal
    for key in ("accounted_bytes", "vram_bytes"):
        if model.get(key):
            model[key] = nominal
    for key in ("load_seconds", "idle_s"):
        if key in model:
            model[key] = _duration(model[key])
    return model


def ledger(models: list[dict[str, Any]], device: str, *, kinds: set[str] | None = None) -> int:
    """Bytes booked on ``device`` by ``models`` (already normalised), as the add-on books them."""
    return sum(
        m["accounted_bytes"]
        for m in models
        if m["device"] == device and (kinds is None or m["kind"] in kinds)
    )


def normalise_health(health: dict[str, Any]) -> dict[str, Any]:
    models = [normalise_model(m) for m in health["models"]]
    devices = [
        device
        | {"used_bytes": ledger(models, device["id"])}
        | ({"total_bytes": NOMINAL_CPU_BYTES} if device["kind"] == "cpu" else {})
        for device in health["devices"]
    ]
    return health | {"uptime_seconds": DURATION, "devices": devices, "models": models}


def normalise_zoo_status(status: dict[str, Any], models: list[dict[str, Any]]) -> dict[str, Any]:
    """The zoo status with nominal model figures and the per-device sums recomputed.

    ``models`` is /v1/models (normalised) at the same moment: the co-tenants are its
    non-zoo models on the device, as the device ledger holds them.
    """
    devices = []
    for zoo in status["devices"]:
        loaded = [normalise_model(m) for m in zoo["loaded_models"]]
        zoo_bytes = sum(m["accounted_bytes"] for m in loaded)
        cotenants = ledger(models, zoo["device"], kinds={"detector", "face_embedder", "llm"})
        budget = round(zoo["vram_budget_mb"] * MIB)
        used = zoo_bytes + cotenants
        devices.append(
            zoo
            | {
                "loaded_models": loaded,
                "vram_used_mb": round(used / MIB, 1),
                "vram_available_mb": round(max(0, budget - used) / MIB, 1),
                "vram_utilization_percent": round(100.0 * used / budget, 1) if budget else 0.0,
                "zoo_used_mb": round(zoo_bytes / MIB, 1),
                "cotenants_mb": round(cotenants / MIB, 1),
            }
        )
    return status | {"devices": devices}


def replace_paths(document: Any, paths: dict[str, str]) -> Any:
    """``document`` with each path in ``paths`` replaced by its placeholder in every string."""
    if isinstance(document, str):
        for path, placeholder in paths.items():
            document = document.replace(path, placeholder)
        return document
    if isinstance(document, list):
        return [replace_paths(item, paths) for item in document]
    if isinstance(document, dict):
        return {key: replace_paths(value, paths) for key, value in document.items()}
    return document


def child_env() -> dict[str, str]:
    """The add-on's environment: ours without Vigil's overrides (the config file decides)."""
    from addon_server.config import ENV_OVERRIDES

    env = {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES}
    env.update(TZ="UTC", YOLO_OFFLINE="1", YOLO_AUTOINSTALL="False", PYTHONUNBUFFERED="1")
    env.setdefault("YOLO_CONFIG_DIR", str(REPO / ".state" / "ultralytics"))
    return env


@contextlib.contextmanager
def running_addon(config: dict[str, Any]) -> Iterator[str]:
    """Run the real add-on with ``config`` (YAML-shaped) until the block ends; yield its URL."""
    import yaml

    with tempfile.TemporaryDirectory(prefix="vigil-record-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        (data / "instance_id").write_text(INSTANCE_ID + "\n", encoding="utf-8")
        port = free_port()
        config = {
            **config,
            "server": {
                "host": "127.0.0.1",
                "port": port,
                "api_token": TOKEN,
                "data_dir": str(data),
            },
            "store": {"max_age_days": 365_000},  # the fixed event times stay inside retention
            "batching": {"autotune": False},
            "detector": {"warmup": False},
        }
        path = Path(tmp) / "vigil.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        log = Path(tmp) / "addon.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "addon_server", "serve", "--config", str(path)],
                cwd=REPO,
                env=child_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(base, proc, log)
            yield base
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until_up(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the add-on exited during start-up:\n{log.read_text()}")
        health = f"{base}/health"  # http on loopback, built above
        with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=5):  # noqa: S310
            return
        time.sleep(0.5)
    raise SystemExit(f"the add-on did not answer /health within 180 s:\n{log.read_text()}")


def session(base: str) -> aiohttp.ClientSession:
    """A client of the add-on at ``base`` that sends the token."""
    return aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {TOKEN}"})


async def call(
    session: aiohttp.ClientSession, method: str, path: str, status: int, **kwargs: Any
) -> Any:
    async with session.request(method, path, **kwargs) as resp:
        if resp.status != status:
            raise SystemExit(
                f"{method} {path}: expected {status}, got {resp.status}: {await resp.text()}"
            )
        return await resp.json()


def image_form(image: bytes, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", image, filename="image.jpg", content_type="image/jpeg")
    for name, value in fields.items():
        form.add_field(name, value)
    return form


async def record_healthy(rec: Recording, base: str) -> dict[str, Any]:
    from skimage import data as photos

    bus = (FIXTURES / "bus.jpg").read_bytes()
    zidane_path = Path(ultralytics.__file__).parent / "assets" / "zidane.jpg"
    zidane = zidane_path.read_bytes()
    mirrored = jpeg(ImageOps.mirror(Image.open(zidane_path)))
    cat = jpeg(cat_in_view(photos.chelsea()))
    async with session(base) as client:
        health = await call(client, "GET", "/health", 200)
        if health["status"] != "healthy":
            raise SystemExit(f"expected a healthy add-on, got {json.dumps(health, indent=2)}")
        await load_zoo_one_by_one(client)

        await call(
            client,
            "POST",
            "/v1/analyze",
            200,
            data=image_form(cat, camera=CAMERA, timestamp=STORED_AT, llm="false"),
        )
        events = await call(
            client, "GET", "/v1/events", 200, params={"camera": CAMERA, "limit": "1"}
        )
        for stored in events["events"]:
            check_no_timing(stored)
        events["events"] = [normalise_event(rec, e) for e in events["events"]]
        rec.add("events.json", "GET", "/v1/events", 200, events)

        form = aiohttp.FormData()
        form.add_field("name", PERSON)
        for image in (zidane, mirrored):
            form.add_field("image", image, filename="face.jpg", content_type="image/jpeg")
        person = await call(client, "POST", "/v1/people", 201, data=form)
        rec.add("person.json", "POST", "/v1/people", 201, normalise_person(rec, person))

        event = await call(
            client,
            "POST",
            "/v1/analyze",
            200,
            data=image_form(bus, camera=CAMERA, timestamp=ANALYSED_AT, llm="false"),
        )
        check_no_timing(event)
        rec.add("event.json", "POST", "/v1/analyze", 200, normalise_event(rec, event))

        models = await call(client, "GET", "/v1/models", 200)
        embedder = next(m["name"] for m in models["models"] if m["kind"] == "face_embedder")
        await call(client, "POST", f"/v1/models/{embedder}/unload", 200)
        loaded = await call(client, "POST", f"/v1/models/{embedder}/load", 200)
        rec.add("model_loaded.json", "POST", "/v1/models/{name}/load", 200, normalise_model(loaded))
        pinned = await call(
            client, "POST", f"/v1/models/{PINNED_MODEL}/load", 200, params={"pin": "true"}
        )
        rec.add("model_pinned.json", "POST", "/v1/models/{name}/load", 200, normalise_model(pinned))

        # After the analyses, so that the zoo holds the models they triggered.
        models = await call(client, "GET", "/v1/models", 200)
        models["models"] = [normalise_model(m) for m in models["models"]]
        rec.add("models.json", "GET", "/v1/models", 200, models)
        zoo = await call(client, "GET", "/v1/zoo/status", 200)
        rec.add(
            "zoo_status.json",
            "GET",
            "/v1/zoo/status",
            200,
            normalise_zoo_status(zoo, models["models"]),
        )
        health = await call(client, "GET", "/health", 200)
        if health["status"] != "healthy":
            # A zoo model that failed on the way (zoo_model_failed) is not a fixture.
            raise SystemExit(f"the add-on degraded while recording: {health['issues']}")
        rec.add("health.json", "GET", "/health", 200, normalise_health(health))

        spec: dict[str, Any] = await call(client, "GET", "/openapi.json", 200)
        return spec


async def record_degraded(rec: Recording, base: str) -> None:
    async with session(base) as client:
        health = await call(client, "GET", "/health", 200)
    codes = sorted(issue["code"] for issue in health["issues"])
    if codes != ["llm_unavailable", "model_not_installed", "service_fallback"]:
        raise SystemExit(f"expected three issues, got {json.dumps(health, indent=2)}")
    rec.add("health_degraded.json", "GET", "/health", 200, normalise_health(health))


async def load_zoo_one_by_one(client: aiohttp.ClientSession) -> None:
    """Load every installed zoo model before the analyses, one at a time.

    An analysis runs the models it triggers at once; loaded there, they would load side by
    side, so whether each finished within the request's deadline and whether its memory
    could be measured alone (the add-on does not trust a figure taken while other models
    ran) would depend on the machine's speed. Loaded one by one first, every model is
    measured alone and every analysis finds its models ready: the same answer every run.
    """
    models = (await call(client, "GET", "/v1/models", 200))["models"]
    for model in models:
        if model["kind"] == "zoo" and model["installed"]:
            await call(client, "POST", f"/v1/models/{model['name']}/load", 200)


def check_no_timing(event: dict[str, Any]) -> None:
    """An enrichment skipped for time (zoo_busy) would make the fixture machine-dependent."""
    busy = {n: s for n, s in event["enrichments"]["skipped"].items() if s["reason"] == "zoo_busy"}
    if busy:
        raise SystemExit(f"enrichments skipped for time while recording: {busy}")


def recorded_elsewhere(manifest: Path) -> list[dict[str, Any]]:
    """Entries another recorder wrote (they name it in ``recorded_by``), kept as they are:
    e.g. the /health of a Ray cluster with a host gone (tests/addon_server/scale)."""
    if not manifest.is_file():
        return []
    entries = json.loads(manifest.read_text(encoding="utf-8")).get("fixtures", [])
    return [e for e in entries if "recorded_by" in e]


def write(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--out", type=Path, default=FIXTURES)
    args = parser.parse_args(argv)
    if not (args.models_dir / "faceres.onnx").is_file():
        parser.error(f"{args.models_dir} has no faceres.onnx (see ../shared/models/README.md)")
    if Path(MISSING_MODELS_DIR).exists():
        parser.error(f"{MISSING_MODELS_DIR} exists; the degraded add-on needs it missing")
    rec = Recording()
    healthy = {"llm": {"mode": "disabled"}, "reid": {"models_dir": str(args.models_dir)}}
    with running_addon(healthy) as base:
        spec = asyncio.run(record_healthy(rec, base))
    degraded = {
        "devices": {"cuda:0": {"services": ["detector"]}},
        "reid": {"models_dir": MISSING_MODELS_DIR},
        "llm": {"mode": "external", "url": UNREACHABLE_LLM},
    }
    with running_addon(degraded) as base:
        asyncio.run(record_degraded(rec, base))
    args.out.mkdir(parents=True, exist_ok=True)
    paths = {
        str(args.models_dir.resolve()): "<models_dir>",
        str(args.models_dir): "<models_dir>",
        sysconfig.get_paths()["purelib"]: "<site-packages>",
    }
    for name, (_, _, _, body) in rec.fixtures.items():
        write(args.out / name, replace_paths(body, paths))
    write(args.out / "openapi.json", spec)
    write(
        args.out / "recorded.json",
        {
            "recorded_by": "scripts/record_fixtures.py",
            "normalised": NORMALISED,
            "fixtures": [
                {"fixture": name, "method": method, "path": path, "status": status}
                for name, (method, path, status, _) in sorted(rec.fixtures.items())
            ]
            + recorded_elsewhere(args.out / "recorded.json"),
        },
    )
    print(f"wrote {len(rec.fixtures)} fixtures, openapi.json and recorded.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
