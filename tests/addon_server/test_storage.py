"""The data dir failing under the real server: a full disk, a read-only one, a bad one at start.

The disk is real where the tests may mount one (root): a 4 MiB tmpfs as the data dir, filled with
a file until the kernel says ENOSPC, or remounted read-only mid-run. Elsewhere the full disk is
SQLite's own ``max_page_count`` limit, which takes the same SQLITE_FULL path through the store.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from addon_server.app import create_app
from addon_server.services import SERVICES_KEY
from addon_server.store import EventStore, check_storage
from tests.addon_server.conftest import addon_process_env, needs_shared_models

JPEG = {"Content-Type": "image/jpeg"}
UNLIMITED_PAGES = 1_073_741_823


def _mount(*args: str) -> bool:
    result = subprocess.run(["mount", *args], capture_output=True, check=False)
    return result.returncode == 0


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


class Disk:
    """The data dir's disk, which a test fills, frees or makes read-only."""

    real = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store: EventStore | None = None

    async def fill(self) -> None:
        """Leave no room for another event; SQLite's page limit when no disk can be mounted."""
        await self._page_limit(1)  # clamps to the pages in use

    async def free(self) -> None:
        await self._page_limit(UNLIMITED_PAGES)

    async def _page_limit(self, pages: int) -> None:
        assert self.store is not None
        await self.store._run(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}"))

    async def read_only(self, on: bool) -> None:
        """SQLite's ``query_only``: every write fails with SQLITE_READONLY, as on a read-only
        mount (which Linux refuses to remount while the database is open for writing)."""
        assert self.store is not None
        await self.store._run(lambda conn: conn.execute(f"PRAGMA query_only = {int(on)}"))

    def close(self) -> None:
        pass


class TmpfsDisk(Disk):
    """A real 4 MiB tmpfs mounted on the data dir."""

    real = True

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.filler = path / "filler"

    async def fill(self) -> None:
        """Write a file until the kernel answers ENOSPC (unbuffered: the last write is partial)."""
        chunk = b"\0" * 65536
        with self.filler.open("ab", buffering=0) as out:
            try:
                while True:
                    out.write(chunk)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise

    async def free(self) -> None:
        self.filler.unlink()

    def close(self) -> None:
        _umount(self.path)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    data = tmp_path / "data"  # make_settings' data dir
    data.mkdir()
    mounted = os.geteuid() == 0 and _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data))
    disk = TmpfsDisk(data) if mounted else Disk(data)
    try:
        yield disk
    finally:
        disk.close()


@pytest.fixture
async def client(aiohttp_client: Any, make_settings: Any, counting_detector: Any, disk: Disk):
    settings = make_settings({"detector": {"warmup": False}, "reid": {"enabled": False}})
    app = create_app(settings, detector=counting_detector)
    client = await aiohttp_client(app)
    disk.store = app[SERVICES_KEY].store
    return client


async def _analyze(client: Any, image: bytes) -> Any:
    return await client.post(
        "/v1/analyze", params={"camera": "front_door", "llm": "false"}, data=image, headers=JPEG
    )


async def _issues(client: Any) -> list[dict[str, Any]]:
    """The warnings in /health (this machine's informational ``cpu_only`` left out)."""
    resp = await client.get("/health")
    assert resp.status == 200
    return [i for i in (await resp.json())["issues"] if i["severity"] == "warning"]


async def _stored_ids(client: Any) -> list[str]:
    resp = await client.get("/v1/events")
    assert resp.status == 200
    return [e["id"] for e in (await resp.json())["events"]]


async def test_full_disk_answers_507_keeps_reads_and_recovers(
    client: Any, disk: Disk, bus_jpg: bytes
) -> None:
    first = await _analyze(client, bus_jpg)
    assert first.status == 200, await first.text()
    event = await first.json()

    await disk.fill()
    refused = await _analyze(client, bus_jpg)
    assert refused.status == 507, await refused.text()
    error = (await refused.json())["error"]
    assert error["code"] == "storage_full"
    assert str(disk.path) in error["message"]
    # Reads keep working, and nothing was claimed stored that is not.
    assert await _stored_ids(client) == [event["id"]]
    assert (await client.get(f"/v1/events/{event['id']}")).status == 200
    snapshot = await client.get(f"/v1/events/{event['id']}/snapshot.jpg")
    assert (await snapshot.read())[:3] == b"\xff\xd8\xff"
    health = await (await client.get("/health")).json()
    assert health["status"] == "degraded"
    [issue] = [i for i in health["issues"] if i["severity"] == "warning"]
    assert (issue["code"], issue["path"]) == ("storage_full", str(disk.path))
    assert "no space left" in issue["message"]
    # The detector still answers: only storing is refused.
    assert (await client.post("/v1/detect", data=bus_jpg, headers=JPEG)).status == 200

    await disk.free()
    stored = await _analyze(client, bus_jpg)
    assert stored.status == 200, await stored.text()
    assert await _issues(client) == []
    assert await _stored_ids(client) == [(await stored.json())["id"], event["id"]]


async def test_freed_space_clears_the_issue_before_the_next_event(
    client: Any, disk: Disk, bus_jpg: bytes
) -> None:
    """Home Assistant's repair goes away once space is back, without waiting for a camera."""
    if not disk.real:
        pytest.skip("needs a real full file system: mounting a tmpfs needs root")
    await disk.fill()
    assert (await _analyze(client, bus_jpg)).status == 507
    assert [i["code"] for i in await _issues(client)] == ["storage_full"]
    await disk.free()
    assert await _issues(client) == []


@needs_shared_models("faceres.onnx")
async def test_enrolment_on_a_full_disk_answers_507(
    aiohttp_client: Any, make_settings: Any, counting_detector: Any, disk: Disk, zidane_jpg: bytes
) -> None:
    app = create_app(make_settings({"detector": {"warmup": False}}), detector=counting_detector)
    client = await aiohttp_client(app)
    disk.store = app[SERVICES_KEY].store
    await disk.fill()
    form = aiohttp.FormData()
    form.add_field("name", "Zinedine")
    form.add_field("image", zidane_jpg, filename="z.jpg", content_type="image/jpeg")
    resp = await client.post("/v1/people", data=form)
    assert resp.status == 507, await resp.text()
    assert (await resp.json())["error"]["code"] == "storage_full"
    people = await client.get("/v1/people")
    assert (await people.json())["people"] == []


async def test_read_only_data_dir_mid_run_answers_503(
    client: Any, disk: Disk, bus_jpg: bytes
) -> None:
    first = await _analyze(client, bus_jpg)
    assert first.status == 200
    event_id = (await first.json())["id"]
    await disk.read_only(True)
    refused = await _analyze(client, bus_jpg)
    assert refused.status == 503, await refused.text()
    error = (await refused.json())["error"]
    assert error["code"] == "storage_unavailable"
    assert str(disk.path) in error["message"]
    assert await _stored_ids(client) == [event_id]
    assert [i["code"] for i in await _issues(client)] == ["storage_unavailable"]

    await disk.read_only(False)
    again = await _analyze(client, bus_jpg)
    assert again.status == 200, await again.text()
    assert await _issues(client) == []


EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32): every later I/O fails with EIO
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


@pytest.fixture
def ext4_data_dir(tmp_path: Path) -> Iterator[Path]:
    """The data dir on a real ext4 file system (an 8 MiB loop image) that a test can kill."""
    data = tmp_path / "data"  # make_settings' data dir
    data.mkdir()
    image = tmp_path / "disk.ext4"
    with image.open("wb") as out:
        out.truncate(8 << 20)
    if (
        os.geteuid() != 0
        or shutil.which("mkfs.ext4") is None
        or subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True).returncode
        or not _mount("-o", "loop", str(image), str(data))
    ):
        pytest.skip("a real I/O error needs root (mount), mkfs.ext4 and a loop device")
    try:
        yield data
    finally:
        _umount(data)  # the loop device goes with it (autoclear)


async def test_disk_io_error_answers_503_not_500(
    aiohttp_client: Any,
    make_settings: Any,
    counting_detector: Any,
    ext4_data_dir: Path,
    bus_jpg: bytes,
) -> None:
    """The disk dies under the running add-on (ext4 shutdown: EIO from then on)."""
    settings = make_settings({"detector": {"warmup": False}, "reid": {"enabled": False}})
    client = await aiohttp_client(create_app(settings, detector=counting_detector))
    first = await _analyze(client, bus_jpg)
    assert first.status == 200, await first.text()
    event_id = (await first.json())["id"]

    fd = os.open(ext4_data_dir, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)
    refused = await _analyze(client, bus_jpg)
    assert refused.status == 503, await refused.text()
    error = (await refused.json())["error"]
    assert error["code"] == "storage_unavailable"
    assert str(ext4_data_dir) in error["message"]
    # Reading a dead disk fails too, as a 503 naming it, never a 500.
    for path in ("/v1/events", f"/v1/events/{event_id}", f"/v1/events/{event_id}/snapshot.jpg"):
        resp = await client.get(path)
        assert resp.status == 503, (path, await resp.text())
        assert (await resp.json())["error"]["code"] == "storage_unavailable"
    assert [i["code"] for i in await _issues(client)] == ["storage_unavailable"]


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs that even root cannot write, holding the database of an earlier run."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)):
        pytest.skip("a read-only mount needs root; the data-dir-is-a-file case runs anyway")
    try:
        check_storage(path / "existing" / "vigil.db")
        assert _mount("-o", "remount,ro", str(path))
        yield path
    finally:
        _umount(path)


def _serve(data_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = addon_process_env(
        VIGIL_DATA_DIR=str(data_dir),
        VIGIL_API_TOKEN="storage-test",
        LLM_MODE="disabled",
        PORT=str(_free_port()),
    )
    return subprocess.run(
        [sys.executable, "-m", "addon_server", "serve"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,  # a hang, not slowness: it exits before loading any model
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _assert_one_line_exit_2(result: subprocess.CompletedProcess[str], data_dir: Path) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"vigil-addon: the data dir {data_dir} ")
    return line


@pytest.mark.parametrize("name", ["new", "existing"])
def test_read_only_data_dir_at_start_up_exits_2(
    read_only_mount: Path, tmp_path: Path, name: str
) -> None:
    data_dir = read_only_mount / name
    line = _assert_one_line_exit_2(_serve(data_dir, tmp_path), data_dir)
    assert "cannot be used (" in line


def test_data_dir_that_is_a_file_exits_2(tmp_path: Path) -> None:
    data_dir = tmp_path / "not-a-dir"
    data_dir.write_text("a file where the data dir should be\n")
    line = _assert_one_line_exit_2(_serve(data_dir, tmp_path), data_dir)
    assert "not a directory" in line
