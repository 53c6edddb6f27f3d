"""Zoo results become the rules' records, pointing at the detection they are about."""

from __future__ import annotations

from addon_server.detector.base import Detection
from addon_server.reasoning.context import Attribute, Posture, Threat
from addon_server.zoo.evidence import records, threat_label
from addon_server.zoo.models.boxes import Box
from addon_server.zoo.models.plates import Plate, PlateResult
from addon_server.zoo.models.pose import KEYPOINTS, PersonPose, PoseResult
from addon_server.zoo.models.threat import Threat as ZooThreat
from addon_server.zoo.models.threat import ThreatResult

DETECTIONS = (
    Detection("car", 0.8, 0, 0, 100, 60),
    Detection("person", 0.9, 300, 100, 80, 200),
    Detection("person", 0.9, 500, 100, 80, 200),
)
UNSEEN = ((0.0, 0.0, 0.0),) * len(KEYPOINTS)
"""Keypoints of a person whose posture is given (the records read only posture and box)."""


def test_records_point_at_the_overlapping_person() -> None:
    crouching = PersonPose(UNSEEN, Box(505, 110, 75, 185), 0.8, "crouching", ())
    unknown = PersonPose(UNSEEN, Box(300, 100, 80, 200), 0.8, "unknown", ())
    knife = ZooThreat("knife", 0.7, "detector", Box(310, 120, 60, 150))
    found = records(
        {"pose": PoseResult((crouching, unknown)), "threat_detector": ThreatResult((knife,))},
        DETECTIONS,
    )
    (posture,) = found["pose"]  # an unknown posture is no evidence
    assert isinstance(posture, Posture)
    assert (posture.posture, posture.object_index) == ("crouching", 2)
    (threat,) = found["threat_detector"]
    assert isinstance(threat, Threat) and (threat.label, threat.object_index) == ("knife", 1)


def test_far_boxes_point_at_nothing_and_weapon_names_are_grouped() -> None:
    lost = PersonPose(UNSEEN, Box(900, 500, 10, 10), 0.8, "lying", ())
    (posture,) = records({"pose": PoseResult((lost,))}, DETECTIONS)["pose"]
    assert posture.object_index is None
    assert [threat_label(n) for n in ("revolver", "assault rifle", "cleaver", "baseball bat")] == [
        "gun",
        "gun",
        "knife",
        "weapon",
    ]


def test_an_unreadable_plate_says_so() -> None:
    """The OCR read nothing (text None): the prompt must not read a plate "None"."""
    seen = Plate(None, 0.6, 0.0, Box(10, 10, 40, 12))
    (plate,) = records({"plate_reader": PlateResult((seen,))}, DETECTIONS)["plate_reader"]
    assert isinstance(plate, Attribute) and plate.value == "unreadable"
