"""Cross-camera sightings say how they were made (face or body, similarity), and a body match
from an uncalibrated embedder informs the LLM without moving the score."""

from __future__ import annotations

import pytest

from addon_server.reasoning.context import PersonSighting, Sighting
from addon_server.reasoning.prompt import context_lines
from addon_server.reasoning.rules import RuleEngine

from .reasoning_scenes import NIGHT, scene

BODY = Sighting("front_door", 300, "body", 0.93, calibrated=True)
WEAK_BODY = Sighting("front_door", 300, "body", 0.92, calibrated=False)
FACE = Sighting("garage", 60, "face", 0.81)


def factors(*sightings: Sighting, known: str | None = None) -> dict[str, tuple[int, str]]:
    # At night: by day, walking past two cameras is the postman's round, not a factor.
    ctx = scene(
        "person", camera="back_yard", at=NIGHT, persons=[PersonSighting(known, 0.9, sightings)]
    )
    return {f.name: (f.points, f.detail) for f in RuleEngine().evaluate(ctx).factors}


def test_a_calibrated_body_match_scores_and_says_how_it_was_made() -> None:
    points, detail = factors(BODY)["seen_on_other_cameras"]
    assert points == 10
    assert detail == "unknown person seen on front_door 5 minutes ago (body appearance, 0.93)"


def test_an_uncalibrated_body_match_adds_no_points_but_reaches_the_llm() -> None:
    assert "seen_on_other_cameras" not in factors(WEAK_BODY)
    ctx = scene("person", camera="back_yard", persons=[PersonSighting(None, 0.92, (WEAK_BODY,))])
    assert (
        "Possibly the same person (body appearance, 0.92) seen on front_door camera 5 minutes ago"
        in context_lines(ctx)
    )


def test_face_and_body_sightings_each_name_their_kind() -> None:
    found = factors(WEAK_BODY, FACE)  # the weak body match is left out of the factor
    assert found["seen_on_other_cameras"] == (
        10,
        "unknown person seen on garage 60 s ago (face, 0.81)",
    )
    ctx = scene("person", camera="back_yard", persons=[PersonSighting(None, 0.9, (FACE, BODY))])
    lines = context_lines(ctx)
    assert "Same person (face, 0.81) seen on garage camera 60 s ago" in lines
    assert "Same person (body appearance, 0.93) seen on front_door camera 5 minutes ago" in lines


def test_an_enrolled_person_seen_by_body_elsewhere_scores_nothing_more() -> None:
    assert "seen_on_other_cameras" not in factors(BODY, known="alice")


def test_a_sighting_refuses_an_unknown_matcher_or_similarity() -> None:
    with pytest.raises(ValueError, match="by must be one of"):
        Sighting("garage", 5, "gait")
    with pytest.raises(ValueError, match="similarity"):
        Sighting("garage", 5, "body", 1.5)
