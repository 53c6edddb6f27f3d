"""Body re-ID: the same person on another camera, by appearance (clothes, build), no face needed.

The zoo's appearance model (``person_reid``: MobileNetV2 now, OSNet when supplied) gives one
unit vector per person box in the enrich stage. Here each vector is compared, with the gallery's
one matching function, against the body sightings of the last ``window_seconds`` and stored with
the frame's event, so the gallery survives restarts.

Vectors of different models live in different spaces (and may even share a length), so a
vector's kind names its model: ``body:mobilenetv2-appearance``, ``body:osnet``. The gallery is
read by kind, so two models' vectors are never compared. Each model's match threshold and
whether it is calibrated come from its registry row (``zoo/registry.py``, measured by
``benchmarks/body_reid.py``) through the result the zoo hands over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from addon_server.detector.base import Detection
from addon_server.reid.gallery import SeenOn, match
from addon_server.store import EventStore, StoredEmbedding, Vector
from addon_server.zoo.interface import Enrichment
from addon_server.zoo.models.appearance import AppearanceResult
from addon_server.zoo.models.boxes import Box, overlapping

BODY = "body"
_PERSON = frozenset({"person"})
SAME_BOX_IOU = 0.5
"""A body vector belongs to the person detection whose box it overlaps more than this (the
zoo crops the detections' own boxes, so the boxes are normally identical)."""


def body_kind(model: str) -> str:
    """The store's ``kind`` of a body vector from ``model``: one gallery per embedder."""
    return f"{BODY}:{model}"


@dataclass(frozen=True, slots=True)
class BodyMatch:
    """One person's body vector in this frame and where the same appearance was seen before.

    ``object_index`` points at the person detection the vector was taken from (None when no
    detection of this frame has that box).
    """

    object_index: int | None
    vector: Vector
    model: str
    similarity: float
    seen: tuple[SeenOn, ...]
    calibrated: bool

    @property
    def kind(self) -> str:
        return body_kind(self.model)


def _object_index(box: Box, detections: Sequence[Detection]) -> int | None:
    return overlapping(box, detections, _PERSON, above=SAME_BOX_IOU)


class BodyGallery:
    """Matches a frame's body vectors against recent body sightings, and hands them to the store."""

    def __init__(self, store: EventStore, window_seconds: float) -> None:
        self.store = store
        self.window_seconds = window_seconds

    async def identify(
        self, ts: float, results: Mapping[str, Enrichment], detections: Sequence[Detection]
    ) -> list[BodyMatch]:
        """Every appearance vector of the frame with its matches (``detections`` in the
        pixels the zoo saw, so its boxes are the vectors' boxes)."""
        found: list[BodyMatch] = []
        for result in results.values():
            if not isinstance(result, AppearanceResult) or not result.embeddings:
                continue
            threshold = result.match_threshold
            gallery: Sequence[StoredEmbedding] = ()
            if threshold is not None:
                gallery = await self.store.embeddings(
                    body_kind(result.model), since=ts - self.window_seconds
                )
            for embedding in result.embeddings:
                index = _object_index(embedding.bbox, detections)
                similarity, seen = 0.0, tuple[SeenOn, ...]()
                if threshold is not None:
                    known = match(embedding.vector, gallery, threshold=threshold, ts=ts)
                    similarity, seen = known.similarity, known.seen
                found.append(
                    BodyMatch(
                        index,
                        embedding.vector,
                        result.model,
                        similarity,
                        seen,
                        result.calibrated,
                    )
                )
        return found

    @staticmethod
    def sightings(
        matches: Sequence[BodyMatch], camera: str, ts: float, event_id: str
    ) -> list[StoredEmbedding]:
        """The frame's body vectors, to be stored with its event."""
        return [
            StoredEmbedding(m.kind, m.vector, ts, camera=camera, event_id=event_id) for m in matches
        ]
