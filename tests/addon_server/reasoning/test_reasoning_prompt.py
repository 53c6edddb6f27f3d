"""Prompt: a byte-identical static prefix and the seeds' context lines."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from addon_server.reasoning.context import (
    Attribute,
    HistoryPoint,
    PersonSighting,
    Posture,
    Sighting,
    Threat,
)
from addon_server.reasoning.prompt import SYSTEM_PROMPT, build_messages, context_lines
from addon_server.reasoning.rules import RuleEngine

from .reasoning_scenes import DAY, NIGHT, scene


def test_system_prompt_is_static_between_calls() -> None:
    a = build_messages(scene("person", at=NIGHT, camera="garage"))
    b = build_messages(scene("dog", at=DAY, camera="back_yard", zone="lawn"))
    assert a[0] == b[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert a[0]["content"].encode() == b[0]["content"].encode()
    assert a[1]["role"] == "user"
    assert a[1]["content"] != b[1]["content"]
    # Nothing per-call may leak into the prefix.
    for token in ("garage", "back_yard", "02:14", "14:05"):
        assert token not in SYSTEM_PROMPT


def test_seed_context_lines() -> None:
    ctx = scene(
        "person",
        "person",
        "car",
        at=NIGHT,
        camera="back_yard",
        zone="patio",
        enrichments={"w": [Threat(model="w", confidence=0.95, label="gun")]},
        persons=[
            PersonSighting(None, 0.3, (Sighting("front_door", 300), Sighting("back_yard", 5))),
            PersonSighting("alice", 0.84),
        ],
        history=[HistoryPoint(30, 2), HistoryPoint(60, 2)],
    )
    lines = context_lines(ctx)
    assert lines[0] == "[CRITICAL] GUN DETECTED: confidence=95%"
    assert "Same person seen on front_door camera 5 minutes ago" in lines
    assert not any("seen on back_yard" in line for line in lines)  # same camera is not news
    assert "Objects: 2 persons, 1 car" in lines
    assert "Time: 02:14 (night)" in lines
    assert "Camera: back_yard (zone: patio)" in lines
    assert "Person 2: known, enrolled as alice (similarity 0.84)" in lines
    assert "Persons in view for 60 s across 3 recent frames" in lines


def test_lines_for_empty_scene_enrichments_and_unidentified_persons() -> None:
    ctx = scene(
        "person",
        "person",
        enrichments={
            "pose": [Posture(model="pose", confidence=0.88, posture="fallen", object_index=1)],
            "attrs": [Attribute(model="attrs", confidence=0.7, name="mask", value="worn")],
        },
    )
    lines = context_lines(ctx)
    assert "[WARNING] Posture of person #2: fallen (confidence=88%)" in lines
    assert "mask: worn (confidence=70%)" in lines
    assert "2 persons not identified (face not visible)" in lines
    assert "Objects: none detected" in context_lines(scene())
    assert "Time: 14:05 (day)" in context_lines(scene())


def test_time_line_is_local_to_the_timestamp() -> None:
    at = datetime(2026, 6, 1, 21, 30, tzinfo=timezone(timedelta(hours=-4)))
    assert "Time: 21:30 (evening)" in context_lines(scene(at=at))
    assert "Time: 07:00 (morning)" in context_lines(scene(at=at.replace(hour=7, minute=0)))


def test_rule_engine_verdict_closes_the_user_message() -> None:
    ctx = scene("person", at=NIGHT)
    msgs = build_messages(ctx, result=RuleEngine().evaluate(ctx))
    last = msgs[1]["content"].splitlines()[-1]
    assert last == (
        "Rule engine: score 60 (high): 1 person not enrolled; 02:14: nobody calls at this hour;"
        " time 02:14 is night"
    )
    assert msgs[0]["content"] == SYSTEM_PROMPT
