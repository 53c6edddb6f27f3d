"""Rule engine: table tests of named factors, points and the resulting band."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from addon_server.reasoning.context import (
    Attribute,
    HistoryPoint,
    PersonSighting,
    Posture,
    SceneContext,
    Sighting,
    Threat,
)
from addon_server.reasoning.risk import RiskLevel, level_for
from addon_server.reasoning.rules import RULES, RuleConfig, RuleEngine

from .reasoning_scenes import DAY, NIGHT, obj, scene

UNKNOWN = PersonSighting(None, 0.2)
ALICE = PersonSighting("alice", 0.86)
BOB = PersonSighting("bob", 0.81)


def gun(conf: float = 0.95) -> dict[str, list[Threat]]:
    return {"weapon-det": [Threat(model="weapon-det", confidence=conf, label="gun")]}


# (id, scene, expected factors {name: points}, expected level)
CASES = [
    ("empty", scene(), {}, RiskLevel.LOW),
    ("empty_at_night", scene(at=NIGHT), {}, RiskLevel.LOW),
    (
        "unknown_person_day",
        scene("person"),
        {"person_present": 10, "unknown_person": 25},
        RiskLevel.MEDIUM,
    ),
    (
        "unknown_person_night",
        scene("person", at=NIGHT),
        {"person_present": 10, "unknown_person": 25, "night": 20},
        RiskLevel.MEDIUM,
    ),
    (
        "known_person_day",
        scene("person", persons=[ALICE]),
        {"person_present": 10, "known_person": -20},
        RiskLevel.LOW,
    ),
    (
        "known_and_unknown",
        scene("person", "person", persons=[ALICE, UNKNOWN]),
        {"person_present": 10, "unknown_person": 25, "known_person": -5},
        RiskLevel.MEDIUM,
    ),
    (
        "three_unknown_capped",
        scene("person", "person", "person"),
        {"person_present": 10, "unknown_person": 45},
        RiskLevel.MEDIUM,
    ),
    (
        "group_of_four",
        scene("person", "person", "person", "person"),
        {"person_present": 10, "unknown_person": 45, "group": 10},
        RiskLevel.HIGH,
    ),
    (
        "gun_critical_alone",
        scene(enrichments=gun()),
        {"threat_gun": 95},
        RiskLevel.CRITICAL,
    ),
    (
        "gun_low_confidence_ignored",
        scene(enrichments=gun(0.2)),
        {},
        RiskLevel.LOW,
    ),
    (
        "gun_with_known_person_still_critical",
        scene("person", persons=[ALICE], enrichments=gun()),
        {"threat_gun": 95, "person_present": 10, "known_person": -20},
        RiskLevel.CRITICAL,
    ),
    (
        "unlisted_threat_uses_default_points",
        scene(enrichments={"z": [Threat(model="z", confidence=0.5, label="crowbar")]}),
        {"threat_crowbar": 30},
        RiskLevel.MEDIUM,
    ),
    (
        "fallen_resident_high",
        scene(
            "person",
            persons=[ALICE],
            enrichments={"pose": [Posture(model="pose", confidence=0.9, posture="fallen")]},
        ),
        {"person_present": 10, "known_person": -20, "posture_fallen": 70},
        RiskLevel.HIGH,
    ),
    (
        "fallen_unknown_critical",
        scene(
            "person",
            enrichments={"pose": [Posture(model="pose", confidence=0.9, posture="fallen")]},
        ),
        {"person_present": 10, "unknown_person": 25, "posture_fallen": 70},
        RiskLevel.CRITICAL,
    ),
    (
        "low_confidence_posture_ignored",
        scene(
            "person",
            persons=[ALICE],
            enrichments={"pose": [Posture(model="pose", confidence=0.3, posture="fallen")]},
        ),
        {"person_present": 10, "known_person": -20},
        RiskLevel.LOW,
    ),
    (
        "standing_posture_no_points",
        scene(
            "person",
            persons=[ALICE],
            enrichments={"pose": [Posture(model="pose", confidence=0.9, posture="standing")]},
        ),
        {"person_present": 10, "known_person": -20},
        RiskLevel.LOW,
    ),
    ("car_day", scene("car"), {"vehicle": 5}, RiskLevel.LOW),
    ("car_night", scene("car", "truck", at=NIGHT), {"vehicle": 10}, RiskLevel.LOW),
    ("pets_only", scene("dog", "cat"), {"pets_only": -10}, RiskLevel.LOW),
    (
        "pet_with_person_not_pets_only",
        scene("dog", "person", persons=[BOB]),
        {"person_present": 10, "known_person": -20},
        RiskLevel.LOW,
    ),
    (
        "loitering_two_minutes_at_night",
        scene(
            "person",
            at=NIGHT,
            history=[HistoryPoint(30, 1), HistoryPoint(70, 1), HistoryPoint(130, 1)],
        ),
        {"person_present": 10, "unknown_person": 25, "night": 20, "loitering": 15},
        RiskLevel.HIGH,
    ),
    (
        "long_loitering",
        scene("person", history=[HistoryPoint(s, 1) for s in range(60, 361, 60)]),
        {"person_present": 10, "unknown_person": 25, "loitering": 25},
        RiskLevel.HIGH,
    ),
    (
        "dwell_broken_by_empty_frame",
        scene("person", history=[HistoryPoint(30, 1), HistoryPoint(60, 0), HistoryPoint(200, 1)]),
        {"person_present": 10, "unknown_person": 25},
        RiskLevel.MEDIUM,
    ),
    (
        "dwell_broken_by_gap",
        scene("person", history=[HistoryPoint(30, 1), HistoryPoint(300, 1)]),
        {"person_present": 10, "unknown_person": 25},
        RiskLevel.MEDIUM,
    ),
    (
        "unknown_seen_on_other_camera",
        scene(
            "person",
            camera="back_yard",
            persons=[PersonSighting(None, 0.4, (Sighting("front_door", 300),))],
        ),
        {"person_present": 10, "unknown_person": 25, "seen_on_other_cameras": 10},
        RiskLevel.MEDIUM,
    ),
    (
        "known_seen_elsewhere_no_points",
        scene("person", persons=[PersonSighting("alice", 0.9, (Sighting("garage", 60),))]),
        {"person_present": 10, "known_person": -20},
        RiskLevel.LOW,
    ),
    (
        "old_sighting_outside_window",
        scene("person", persons=[PersonSighting(None, 0.4, (Sighting("garage", 3600),))]),
        {"person_present": 10, "unknown_person": 25},
        RiskLevel.MEDIUM,
    ),
    (
        "attribute_is_not_scored",
        scene(
            "person",
            enrichments={"m": [Attribute(model="m", confidence=0.9, name="mask", value="yes")]},
        ),
        {"person_present": 10, "unknown_person": 25},
        RiskLevel.MEDIUM,
    ),
]


@pytest.mark.parametrize(
    ("ctx", "expected", "level"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule_table(ctx: SceneContext, expected: dict[str, int], level: RiskLevel) -> None:
    result = RuleEngine().evaluate(ctx)
    assert {f.name: f.points for f in result.factors} == expected
    assert result.score == max(0, min(100, sum(expected.values())))
    assert level_for(result.score) is level
    assert all(f.detail for f in result.factors), "every factor must say why"


def test_factors_sorted_by_effect() -> None:
    result = RuleEngine().evaluate(scene("person", at=NIGHT, enrichments=gun()))
    pts = [abs(f.points) for f in result.factors]
    assert pts == sorted(pts, reverse=True)
    assert result.factors[0].name == "threat_gun"


def test_strongest_threat_per_label_counts_once() -> None:
    ctx = scene(
        enrichments={
            "a": [Threat(model="a", confidence=0.6, label="knife")],
            "b": [Threat(model="b", confidence=0.8, label="Knife")],
        }
    )
    result = RuleEngine().evaluate(ctx)
    assert [(f.name, f.points) for f in result.factors] == [("threat_knife", 60)]


def test_night_window_wraps_midnight_and_is_configurable() -> None:
    cfg = RuleConfig()
    assert [h for h in range(24) if cfg.is_night(h)] == [0, 1, 2, 3, 4, 5, 22, 23]
    late = RuleConfig(night_start_hour=1, night_end_hour=4)
    assert [h for h in range(24) if late.is_night(h)] == [1, 2, 3]
    assert not any(RuleConfig(night_start_hour=3, night_end_hour=3).is_night(h) for h in range(24))


def test_time_of_day_uses_the_timestamps_own_offset() -> None:
    # 01:30 UTC is 02:30 at +01:00 and 20:30 at -05:00: the local hour decides.
    from datetime import timedelta, timezone

    utc = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)
    night = scene("person", at=utc.astimezone(timezone(timedelta(hours=1))))
    evening = scene("person", at=utc.astimezone(timezone(timedelta(hours=-5))))
    engine = RuleEngine()
    assert "night" in {f.name for f in engine.evaluate(night).factors}
    assert "night" not in {f.name for f in engine.evaluate(evening).factors}


def test_weights_from_config_merge_tables_and_disable_rules() -> None:
    cfg = RuleConfig.from_mapping(
        {
            "unknown_person_points": 40,
            "threat_points": {"axe": 80},
            "zone_points": {"Backyard": 15},
            "disabled_rules": ["vehicles"],
        }
    )
    assert cfg.threat_points["gun"] == 100
    assert cfg.threat_points["axe"] == 80
    engine = RuleEngine(cfg)
    ctx = scene("person", "car", zone="backyard")
    assert {f.name: f.points for f in engine.evaluate(ctx).factors} == {
        "person_present": 10,
        "unknown_person": 40,
        "zone": 15,
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"no_such_weight": 1},
        {"night_start_hour": 24},
        {"disabled_rules": ["nope"]},
        {"threat_min_confidence": 1.5},
    ],
)
def test_bad_rule_config_is_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        RuleConfig.from_mapping(bad)


def test_rule_table_names_are_unique() -> None:
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))


def test_close_to_camera() -> None:
    ctx = SceneContext("door", DAY, (obj("person", size=600),), persons=(ALICE,))
    factors = {f.name: f.points for f in RuleEngine().evaluate(ctx).factors}
    assert factors["close_to_camera"] == 5


@pytest.mark.parametrize(
    "build",
    [
        lambda: SceneContext("cam", datetime(2026, 1, 1, 12, 0)),  # naive timestamp
        lambda: SceneContext("", DAY),
        lambda: obj("person", confidence=1.5),
        lambda: obj("person", confidence=float("nan")),
        lambda: PersonSighting(None, 2.0),
        lambda: HistoryPoint(-1, 1),
        lambda: Threat(model="m", confidence=0.5, label="gun", object_index=3),
        lambda: SceneContext(
            "cam",
            DAY,
            (),
            enrichments={"m": [Threat(model="m", confidence=0.5, label="gun", object_index=0)]},
        ),
    ],
)
def test_invalid_scene_values_are_rejected(build: object) -> None:
    assert callable(build)
    try:
        value = build()
    except ValueError:
        return
    # Threat(object_index=3) alone is fine; it fails once placed in a scene without object #3.
    with pytest.raises(ValueError, match="points at object"):
        SceneContext("cam", DAY, (), enrichments={"m": [value]})
