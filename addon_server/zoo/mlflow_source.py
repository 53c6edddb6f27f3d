"""Weights from an MLflow model registry: ``models:/<name>@<alias>`` → a verified local copy.

A model's weights path (a zoo model's source, the detector's ``model_path``) may name a
registered model instead of a file. :class:`RegistrySource` asks the tracking server which
version the alias points at *now*, so moving an alias rolls the new version out at the next load
of that model (after an eviction or idle unload, or the detector's next start) without touching
the add-on. ``models:/<name>/<version>`` pins a version.

The artifacts (on S3 — MinIO, SeaweedFS, AWS — or wherever the server keeps them) are
downloaded once into ``<cache>/<name>/<version>/files`` and checked against the sha256 of each
file that ``vigil-addon models publish`` recorded as the version's ``vigil.sha256`` tag; a
version without that tag is refused, as is any file whose bytes differ (the copy is removed
first, so a tampered or truncated download never reaches a loader). Cached copies are verified
again at every load: it costs one read of weights the loader is about to read anyway.

A pinned version already in the cache needs no network. An alias does (that is how a switch
is seen), but when the tracking server cannot be reached the version the alias last resolved to
is served from the cache, and the result says so (``note``, logged as a warning); without a
cached copy the error names the URI and the server. The same holds when the server answers but
the artifact store (S3) does not. Either way the URI is listed by :meth:`RegistrySource.issues`
(the ``registry_unreachable`` issue of /health, a repair in Home Assistant) until a later
resolution of it reaches the registry again. Server URLs in messages have their password
hidden (:func:`~addon_server.reasoning.endpoint.redact`).

The cache keeps, per registered model, the newest ``keep`` versions plus every version in use
(what an alias last pointed at, what this process last resolved or still serves); the rest is
pruned after each new download. A version folder is renamed away before it is deleted and a
download lands in a hidden staging folder renamed into place, so another process sharing the
cache sees a version whole or not at all, and a download in progress is never touched.

``mlflow`` is imported only here and only when such a path is used: the default install never
loads it. S3 credentials are MLflow's and boto3's standard environment variables
(``MLFLOW_S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), read by them.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from addon_server.reasoning.endpoint import redact
from addon_server.zoo.manifest import file_sha256

if TYPE_CHECKING:
    from addon_server.config import RegistrySettings

_LOGGER = logging.getLogger(__name__)
SCHEME = "models:/"
CHECKSUM_TAG = "vigil.sha256"
"""Model version tag: JSON object mapping each artifact file (relative path) to its sha256."""
EXPERIMENT = "vigil-models"
"""The experiment whose runs hold the published artifacts."""
ARTIFACT_DIR = "model"
ALIASES_FILE = "aliases.json"
CHECKSUMS_FILE = "checksums.json"
FILES_DIR = "files"
ISSUE_CODE = "registry_unreachable"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


class RegistryError(Exception):
    """A registry model could not be provided; the message names the URI and the cause."""


class ChecksumError(RegistryError):
    """A file's bytes differ from the sha256 recorded at publish time: it is not used."""


def is_registry_uri(text: str | None) -> bool:
    return text is not None and text.startswith(SCHEME)


@dataclass(frozen=True, slots=True)
class ModelUri:
    name: str
    alias: str | None
    version: str | None

    @classmethod
    def parse(cls, text: str) -> ModelUri:
        match = _URI.match(text)
        if match is None:
            raise RegistryError(
                f"{text!r} is not a registry model URI: expected models:/<name>@<alias> or "
                "models:/<name>/<version>"
            )
        return cls(match["name"], match["alias"], match["version"])

    def __str__(self) -> str:
        tail = f"@{self.alias}" if self.alias else f"/{self.version}"
        return f"{SCHEME}{self.name}{tail}"


@dataclass(frozen=True, slots=True)
class Resolved:
    """A registry model on local disk, verified."""

    uri: str
    name: str
    version: str
    path: Path
    """The one artifact file, or the folder when the version has several."""
    cached: bool
    """True when nothing was downloaded for this load."""
    note: str | None = None
    """Set when the server was unreachable and the cache answered (shown in /v1/models)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "version": self.version,
            "path": str(self.path),
            "cached": self.cached,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class _Version:
    version: str
    source: str
    checksums: dict[str, str]


def sha256_tree(path: Path) -> dict[str, str]:
    """sha256 of a file (keyed by its name) or of every file below a folder (relative paths)."""
    if path.is_file():
        return {path.name: file_sha256(path)}
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {p.relative_to(path).as_posix(): file_sha256(p) for p in files}


def _client(tracking_uri: str | None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@dataclass(frozen=True, slots=True)
class Outage:
    """A model URI whose last resolution did not reach the registry."""

    uri: str
    version: str | None
    """The cached version served instead (None: nothing cached, the model is not loaded)."""
    message: str


class RegistrySource:
    """Resolves registry URIs into a local cache (one per add-on; safe from several threads:
    each download lands in its own temporary folder and is renamed into place)."""

    def __init__(
        self, tracking_uri: str | None, cache_dir: Path, timeout_s: float = 5.0, keep: int = 2
    ) -> None:
        self.tracking_uri = tracking_uri
        self.cache_dir = cache_dir
        self.timeout_s = timeout_s
        self.keep = keep
        """Newest versions kept per registered model (besides those in use) when pruning."""
        self._lock = threading.Lock()
        self._outages: dict[str, Outage] = {}
        self._serving: dict[str, tuple[str, str]] = {}
        """URI → (registered model, version) its last resolution gave: in use, never pruned."""

    @classmethod
    def of(cls, settings: RegistrySettings) -> RegistrySource:
        """The source the ``registry:`` section describes (the add-on's, a Zoo replica's)."""
        return cls(
            settings.tracking_uri, settings.cache_dir, settings.timeout_s, settings.cache_keep
        )

    @property
    def server(self) -> str:
        """The tracking server as messages show it: without its password."""
        return redact(self.tracking_uri) if self.tracking_uri else "(none configured)"

    def issues(self) -> list[dict[str, Any]]:
        """One ``registry_unreachable`` issue per URI whose last resolution missed the
        registry (served from the cache, or not at all): /health turns them into repairs."""
        with self._lock:
            outages = sorted(self._outages.values(), key=lambda o: o.uri)
        return [{"code": ISSUE_CODE, "model": o.uri, "message": o.message} for o in outages]

    def resolve(self, text: str) -> Resolved:
        uri = ModelUri.parse(text)
        if uri.version is not None and self._cached(uri.name, uri.version) is not None:
            return self._served(self._from_cache(uri, uri.version, None), reached=True)
        unreachable = self._unreachable()
        where = f"the MLflow registry at {self.server}"
        if unreachable is None:
            try:
                found = self._lookup(uri)
            except RegistryError:
                raise
            except Exception as err:  # connection errors surface as several exception types
                unreachable = f"{type(err).__name__}: {err}"
            else:
                try:
                    return self._served(self._fetch(uri, found), reached=True)
                except RegistryError:
                    raise
                except Exception as err:  # S3 down, or its credentials refused
                    where = f"the artifact store of version {found.version} ({found.source})"
                    unreachable = f"{type(err).__name__}: {err}"
        where, unreachable = redact(where), redact(unreachable)
        version = uri.version or self._aliases(uri.name).get(uri.alias or "")
        if version is None or self._cached(uri.name, version) is None:
            message = (
                f"{uri}: {where} cannot be reached ({unreachable}) and no copy is cached in "
                f"{self.cache_dir / uri.name}"
            )
            self._outage(Outage(str(uri), None, f"{message}: the model is not loaded"))
            raise RegistryError(message)
        note = f"{where} unreachable ({unreachable}); serving cached version {version}"
        _LOGGER.warning("%s: %s", uri, note)
        resolved = self._from_cache(uri, version, note)
        self._outage(
            Outage(
                str(uri),
                version,
                f"{uri}: {note} until a load of it reaches the registry again (a switched "
                "alias is not seen meanwhile)",
            )
        )
        return self._served(resolved, reached=False)

    def _outage(self, outage: Outage) -> None:
        with self._lock:
            self._outages[outage.uri] = outage

    def _served(self, resolved: Resolved, *, reached: bool) -> Resolved:
        """Record what ``resolved.uri`` serves now (and that the registry answered for it)."""
        with self._lock:
            self._serving[resolved.uri] = (resolved.name, resolved.version)
            if reached:
                self._outages.pop(resolved.uri, None)
        return resolved

    # -- the server ---------------------------------------------------------------------------

    def _unreachable(self) -> str | None:
        """Why an HTTP tracking server cannot be reached now (None: it answers, or the URI is
        not HTTP). One short request, so a server that is down costs ``timeout_s`` at most
        rather than MLflow's retries with back-off."""
        uri = self.tracking_uri
        if uri is None:
            return "no tracking URI configured (MLFLOW_TRACKING_URI)"
        if not uri.startswith(("http://", "https://")):
            return None
        # urllib takes ``user:password@`` for part of the host name: send it as basic auth.
        parts = urllib.parse.urlsplit(uri)
        bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        request = urllib.request.Request(f"{bare.rstrip('/')}/health")  # noqa: S310
        if parts.username is not None:
            password = urllib.parse.unquote(parts.password or "")
            userinfo = f"{urllib.parse.unquote(parts.username)}:{password}"
            token = base64.b64encode(userinfo.encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s):  # noqa: S310
                return None
        except urllib.error.HTTPError:
            return None  # it answers: a proxy without /health is still a server
        except (urllib.error.URLError, OSError) as err:
            return str(getattr(err, "reason", err))

    def _lookup(self, uri: ModelUri) -> _Version:
        from mlflow.exceptions import MlflowException

        client = _client(self.tracking_uri)
        try:
            if uri.alias is not None:
                found = client.get_model_version_by_alias(uri.name, uri.alias)
            else:
                found = client.get_model_version(uri.name, uri.version)
        except MlflowException as err:
            if err.error_code in _NOT_FOUND:
                raise RegistryError(f"{uri}: not in the MLflow registry ({err.message})") from err
            raise
        raw = (found.tags or {}).get(CHECKSUM_TAG)
        try:
            checksums = json.loads(raw) if raw else None
        except ValueError:
            checksums = None
        if not isinstance(checksums, dict) or not checksums:
            raise RegistryError(
                f"{uri}: version {found.version} has no {CHECKSUM_TAG} tag (publish it with "
                "`vigil-addon models publish`); unverified weights are not loaded"
            )
        return _Version(str(found.version), str(found.source), {**checksums})

    def _fetch(self, uri: ModelUri, found: _Version) -> Resolved:
        recorded = self._recorded(uri.name, found.version)
        if recorded == found.checksums:
            try:
                resolved = self._from_cache(uri, found.version, None)
            except ChecksumError as err:
                _LOGGER.warning("%s; fetching version %s again", err, found.version)
            else:
                if uri.alias is not None:
                    self._remember(uri.name, uri.alias, found.version)
                return resolved
        from mlflow.artifacts import download_artifacts

        home = self.cache_dir / uri.name
        home.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{found.version}-", dir=home))
        try:
            downloaded = Path(
                download_artifacts(
                    artifact_uri=found.source,
                    dst_path=str(staging / "download"),
                    tracking_uri=self.tracking_uri,
                )
            )
            files = staging / FILES_DIR
            if downloaded.is_file():
                files.mkdir()
                downloaded.rename(files / downloaded.name)
            else:
                downloaded.rename(files)
            _verify(files, found.checksums, f"{uri} (version {found.version})")
            (staging / CHECKSUMS_FILE).write_text(json.dumps(found.checksums, sort_keys=True))
            target = home / found.version
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _LOGGER.info("%s: version %s downloaded into %s", uri, found.version, target)
        if uri.alias is not None:  # only now: an outage must fall back to a version on disk
            self._remember(uri.name, uri.alias, found.version)
        self.prune(uri.name, also_keep={found.version})
        return Resolved(str(uri), uri.name, found.version, _entry_path(target), cached=False)

    def prune(self, name: str, also_keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Delete the cached versions of ``name`` beyond the newest :attr:`keep` that nothing
        uses (an alias's last version, one this process resolved or serves, ``also_keep``).

        Each folder is renamed to a hidden name first (atomic), so a reader in another
        process never sees half a version; hidden staging folders (downloads in progress)
        are not versions and are left alone. Returns the versions removed.
        """
        home = self.cache_dir / name
        try:
            versions = sorted(
                (p.name for p in home.iterdir() if p.is_dir() and p.name.isdigit()),
                key=int,
                reverse=True,
            )
        except OSError:
            return []
        with self._lock:
            serving = {version for model, version in self._serving.values() if model == name}
        keep = (
            set(versions[: self.keep])
            | serving
            | set(also_keep)
            | set(self._aliases(name).values())
        )
        removed = []
        for version in versions:
            if version in keep:
                continue
            trash = home / f".prune-{version}-{os.getpid()}-{threading.get_ident()}"
            try:
                (home / version).rename(trash)
            except OSError:  # gone already: another process pruned it
                continue
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(version)
        for stale in home.glob(".prune-*"):  # left by a pruner that was killed midway
            shutil.rmtree(stale, ignore_errors=True)
        if removed:
            _LOGGER.info("%s: pruned cached versions %s", name, ", ".join(removed))
        return removed

    # -- the cache ----------------------------------------------------------------------------

    def _cached(self, name: str, version: str) -> Path | None:
        folder = self.cache_dir / name / version
        return folder if (folder / CHECKSUMS_FILE).is_file() else None

    def _recorded(self, name: str, version: str) -> dict[str, str] | None:
        folder = self._cached(name, version)
        if folder is None:
            return None
        try:
            data = json.loads((folder / CHECKSUMS_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _from_cache(self, uri: ModelUri, version: str, note: str | None) -> Resolved:
        folder = self.cache_dir / uri.name / version
        checksums = self._recorded(uri.name, version) or {}
        _verify(folder / FILES_DIR, checksums, f"{uri} (cached version {version})")
        return Resolved(str(uri), uri.name, version, _entry_path(folder), cached=True, note=note)

    def _aliases(self, name: str) -> dict[str, str]:
        try:
            data = json.loads((self.cache_dir / name / ALIASES_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _remember(self, name: str, alias: str, version: str) -> None:
        """Record where the alias pointed, for a load while the server is down."""
        aliases = self._aliases(name)
        if aliases.get(alias) == version:
            return
        aliases[alias] = version
        path = self.cache_dir / name / ALIASES_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f"{ALIASES_FILE}.{os.getpid()}.{threading.get_ident()}.part")
        part.write_text(json.dumps(aliases, sort_keys=True))
        os.replace(part, path)


def _verify(files: Path, checksums: dict[str, str], what: str) -> None:
    """Every recorded file is there with its sha256; a wrong one is deleted and refused."""
    if not checksums:
        raise ChecksumError(f"{what}: no checksums recorded; the copy is not used")
    for relative, expected in checksums.items():
        path = files / relative
        if not path.is_file():
            raise ChecksumError(f"{what}: {relative} is missing from {files}")
        got = file_sha256(path)
        if got != str(expected).lower():
            path.unlink()
            raise ChecksumError(
                f"{what}: sha256 mismatch for {relative}: got {got}, expected {expected} "
                "(recorded at publish time); the file was refused and removed"
            )


def _entry_path(version_dir: Path) -> Path:
    """The single artifact file, or the folder that holds several (a checkpoint folder)."""
    files = version_dir / FILES_DIR
    children = [p for p in files.iterdir() if p.is_file()]
    if len(children) == 1 and not any(p.is_dir() for p in files.iterdir()):
        return children[0]
    return files


# -- publishing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    name: str
    version: str
    checksums: dict[str, str]
    alias: str | None


def publish(path: Path, name: str, tracking_uri: str | None, alias: str | None = None) -> Published:
    """Log ``path`` (a file or a folder) as a run's artifacts, register it as a new version of
    ``name`` with each file's sha256 as the ``vigil.sha256`` tag, and point ``alias`` at it."""
    from mlflow.exceptions import MlflowException

    if not path.exists():
        raise RegistryError(f"{path}: no such file or folder")
    checksums = sha256_tree(path)
    if not checksums:
        raise RegistryError(f"{path}: the folder holds no files")
    client = _client(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = (
        experiment.experiment_id if experiment is not None else client.create_experiment(EXPERIMENT)
    )
    run = client.create_run(experiment_id, run_name=f"publish {name}")
    run_id = run.info.run_id
    try:
        if path.is_file():
            client.log_artifact(run_id, str(path), artifact_path=ARTIFACT_DIR)
        else:
            client.log_artifacts(run_id, str(path), artifact_path=ARTIFACT_DIR)
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name,
        source=f"{run.info.artifact_uri}/{ARTIFACT_DIR}",
        run_id=run_id,
        tags={CHECKSUM_TAG: json.dumps(checksums, sort_keys=True)},
    )
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return Published(name, str(version.version), checksums, alias)


def add_parser(actions: Any, config_help: str) -> None:
    """``models publish`` on the ``models`` command's sub-parsers."""
    cmd = actions.add_parser(
        "publish", help="register a weights file or folder in the MLflow model registry"
    )
    cmd.add_argument("path", type=Path, metavar="FILE_OR_DIR", help="the weights to publish")
    cmd.add_argument("--name", required=True, help="registered model name")
    cmd.add_argument("--alias", default=None, help="point this alias at the new version")
    cmd.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    cmd.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking server (default: the config's registry.tracking_uri / "
        "MLFLOW_TRACKING_URI)",
    )


def run_publish(args: argparse.Namespace, tracking_uri: str | None) -> int:
    uri = args.tracking_uri or tracking_uri
    if not uri:
        print(
            "vigil-addon: models publish: no MLflow tracking server: pass --tracking-uri or set "
            "MLFLOW_TRACKING_URI",
            file=sys.stderr,
        )
        return 2
    try:
        done = publish(args.path, args.name, uri, args.alias)
    except Exception as err:  # the server's or S3's own message is the useful one
        print(f"vigil-addon: models publish: {err}", file=sys.stderr)
        return 1
    print(
        f"{done.name}: version {done.version} registered ({len(done.checksums)} file(s)): "
        f"{SCHEME}{done.name}/{done.version}"
    )
    if done.alias:
        print(f"alias {done.alias} -> version {done.version}: {SCHEME}{done.name}@{done.alias}")
    return 0
