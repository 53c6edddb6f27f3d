"""Which parts of a stored snapshot must not show a face (``privacy.blur_unknown_faces``).

A camera at the front door films the postman, the neighbours and passers-by as well as the
household. With the option on, the snapshot kept in the event store shows the faces of enrolled
people only: every face re-ID did not match to an enrolled person is blurred before the snapshot
is encoded (:func:`addon_server.imaging.annotate_jpeg` does the pixel work). The upload itself
is only ever held in memory, so no clear copy of a stranger's face reaches the disk.

The faces are re-ID's own (CenterFace, else the Haar cascade), so "who is blurred" and "who was
recognised" cannot disagree. When re-ID could not search the frame (its models are not installed
or were unloaded) nobody can be told apart, so the head region of every detected person is
blurred instead: the option fails closed, never open.
"""

from __future__ import annotations

from collections.abc import Sequence

from addon_server.config import PrivacySettings
from addon_server.detector.base import Detection
from addon_server.imaging import Box
from addon_server.reid.gallery import FaceMatch

__all__ = ["FACE_MARGIN", "HEAD_SHARE", "faces_to_blur"]

FACE_MARGIN = 0.25
"""Added on every side of a face box, as a share of its size: face finders box the eyes-to-chin
area tightly, and hair, ears and the jaw line identify a person too."""
HEAD_SHARE = 0.25
"""The top share of a person box blurred when no face search ran (the head of a standing or
crouching person; a whole body would hide what the snapshot is for)."""


def _widened(label: str, x: int, y: int, width: int, height: int, margin: float) -> Box:
    dx, dy = round(width * margin), round(height * margin)
    return Box(label, max(0, x - dx), max(0, y - dy), width + 2 * dx, height + 2 * dy)


def faces_to_blur(
    settings: PrivacySettings,
    matches: Sequence[FaceMatch],
    detections: Sequence[Detection],
    *,
    searched: bool,
) -> tuple[Box, ...]:
    """The regions (in the upload's pixels) to blur in the stored snapshot; none when off.

    ``matches`` are re-ID's faces; a face matched to an enrolled person (``person_id``) stays
    clear. ``searched`` says whether re-ID looked for faces at all; when it did not, every
    person detection's head region is returned instead.
    """
    if not settings.blur_unknown_faces:
        return ()
    if not searched:
        return tuple(
            _widened("head", d.x, d.y, d.width, round(d.height * HEAD_SHARE), 0.0)
            for d in detections
            if d.class_name == "person"
        )
    return tuple(
        _widened("face", m.face.x, m.face.y, m.face.width, m.face.height, FACE_MARGIN)
        for m in matches
        if m.person_id is None
    )
