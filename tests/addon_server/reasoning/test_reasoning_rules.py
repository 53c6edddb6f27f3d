"""Rule engine: table tests of named factors, points and the resulting band."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from addon_server.reasoning.context import (
    Attribute,
    BBox,
    DetectedObject,
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


def box(class_name: str, x: float, y: float, w: float, h: float) -> DetectedObject:
    """A detection at a given place on a 1000x1000 frame (obj() puts all at one place)."""
    return DetectedObject(class_name, 0.9, BBox(x, y, w, h), 1000, 1000)


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
        {"person_present": 10, "unknown_person": 25, "daytime": -10},
        RiskLevel.LOW,
    ),
    (
        "unknown_person_night",
        scene("person", at=NIGHT),
        {"person_present": 10, "unknown_person": 25, "night": 10, "small_hours": 15},
        RiskLevel.HIGH,
    ),
    (
        "unknown_person_late_evening",
        scene("person", at=NIGHT.replace(hour=22, minute=40)),
        {"person_present": 10, "unknown_person": 25, "night": 10},
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
        {"person_present": 10, "unknown_person": 25, "accompanied": -20, "daytime": -10},
        RiskLevel.LOW,
    ),
    (
        "known_and_unknown_at_3am_no_company",
        scene("person", "person", at=NIGHT, persons=[ALICE, UNKNOWN]),
        {"person_present": 10, "unknown_person": 25, "night": 10, "small_hours": 15},
        RiskLevel.HIGH,
    ),
    (
        "three_unknown_capped",
        scene("person", "person", "person"),
        {"person_present": 10, "unknown_person": 45, "daytime": -10},
        RiskLevel.MEDIUM,
    ),
    (
        "group_of_four",
        scene("person", "person", "person", "person", at=NIGHT),
        {"person_present": 10, "unknown_person": 45, "group": 10, "night": 10, "small_hours": 15},
        RiskLevel.CRITICAL,
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
        {"person_present": 10, "posture_fallen": 60},
        RiskLevel.HIGH,
    ),
    (
        # Someone on the ground is an emergency whoever they are and whatever the hour: the
        # intrusion factors (unknown, night) would only push a fall into "critical".
        "fallen_unknown_at_night_high",
        scene(
            "person",
            at=NIGHT,
            enrichments={"pose": [Posture(model="pose", confidence=0.9, posture="fallen")]},
        ),
        {"person_present": 10, "posture_fallen": 60},
        RiskLevel.HIGH,
    ),
    (
        "lying_in_the_garden_by_day_is_resting",
        scene(
            "person",
            zone="garden",
            persons=[ALICE],
            enrichments={"pose": [Posture(model="pose", confidence=0.9, posture="lying")]},
        ),
        {"person_present": 10, "known_person": -20},
        RiskLevel.LOW,
    ),
    (
        "crouching_by_day_is_nothing_at_night_it_counts",
        scene(
            "person",
            at=NIGHT,
            zone="window",
            enrichments={"pose": [Posture(model="pose", confidence=0.8, posture="crouching")]},
        ),
        {
            "person_present": 10,
            "unknown_person": 25,
            "night": 10,
            "small_hours": 15,
            "posture_crouching": 25,
        },
        RiskLevel.CRITICAL,
    ),
    (
        "crouching_by_day",
        scene(
            "person",
            zone="porch",
            enrichments={"pose": [Posture(model="pose", confidence=0.8, posture="crouching")]},
        ),
        {"person_present": 10, "unknown_person": 25, "daytime": -10},
        RiskLevel.LOW,
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
    ("car_day", scene("car"), {}, RiskLevel.LOW),
    (
        "car_small_hours_nobody_on_foot",
        scene("car", "truck", at=NIGHT),
        {"vehicle": 30},
        RiskLevel.MEDIUM,
    ),
    (
        "car_late_evening",
        scene("car", at=NIGHT.replace(hour=23)),
        {"vehicle": 10},
        RiskLevel.LOW,
    ),
    (
        # The person box lies inside the car's and ends above its wheels: a driver.
        "driver_in_car_small_hours",
        SceneContext(
            "cam", NIGHT, (box("car", 100, 100, 400, 300), box("person", 200, 150, 80, 100))
        ),
        {"vehicle": 30, "vehicle_occupied": 10},
        RiskLevel.MEDIUM,
    ),
    (
        # Standing in front of a bus overlaps it as much, but the feet reach the ground.
        "pedestrian_in_front_of_a_bus_is_on_foot",
        SceneContext(
            "cam", DAY, (box("bus", 0, 100, 1000, 500), box("person", 300, 300, 100, 350))
        ),
        {"person_present": 10, "unknown_person": 25, "daytime": -10},
        RiskLevel.LOW,
    ),
    (
        "faint_person_nothing_corroborates",
        SceneContext("cam", NIGHT, (obj("person", confidence=0.55),), zone="garden"),
        {"faint_person": 10},
        RiskLevel.LOW,
    ),
    (
        "faint_person_vouched_for_by_posture",
        SceneContext(
            "cam",
            NIGHT,
            (obj("person", confidence=0.55),),
            zone="window",
            enrichments={
                "pose": [Posture(model="pose", confidence=0.6, posture="crouching", object_index=0)]
            },
        ),
        {
            "person_present": 10,
            "unknown_person": 25,
            "night": 10,
            "small_hours": 15,
            "posture_crouching": 25,
            "faint_detection": -10,
        },
        RiskLevel.HIGH,
    ),
    (
        "public_pavement_cancels_the_unknown_face",
        scene("person", at=NIGHT.replace(hour=22, minute=40), zone="pavement"),
        {"person_present": 10, "unknown_person": 25, "night": 10, "public_area": -25},
        RiskLevel.LOW,
    ),
    (
        "unknown_behind_the_house_by_day",
        scene("person", zone="garden"),
        {"person_present": 10, "unknown_person": 25, "daytime": -10, "private_area": 10},
        RiskLevel.MEDIUM,
    ),
    (
        "fire_at_night",
        scene(enrichments={"f": [Threat(model="f", confidence=0.8, label="smoke")]}, at=NIGHT),
        {"threat_smoke": 36, "night_fire": 30},
        RiskLevel.HIGH,
    ),
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
        {
            "person_present": 10,
            "unknown_person": 25,
            "night": 10,
            "small_hours": 15,
            "loitering": 25,
        },
        RiskLevel.CRITICAL,
    ),
    (
        "long_stay_at_the_door_by_day",
        scene("person", zone="porch", history=[HistoryPoint(s, 1) for s in range(60, 361, 60)]),
        {"person_present": 10, "unknown_person": 25, "daytime": -10, "loitering": 45},
        RiskLevel.HIGH,
    ),
    (
        "long_stay_by_day_elsewhere_is_work",
        scene("person", history=[HistoryPoint(s, 1) for s in range(60, 361, 60)]),
        {
            "person_present": 10,
            "unknown_person": 25,
            "daytime": -10,
            "loitering": 10,
            "working": -20,
        },
        RiskLevel.LOW,
    ),
    (
        "dwell_broken_by_empty_frame",
        scene("person", history=[HistoryPoint(30, 1), HistoryPoint(60, 0), HistoryPoint(200, 1)]),
        {"person_present": 10, "unknown_person": 25, "daytime": -10},
        RiskLevel.LOW,
    ),
    (
        "dwell_broken_by_gap",
        scene("person", history=[HistoryPoint(30, 1), HistoryPoint(300, 1)]),
        {"person_present": 10, "unknown_person": 25, "daytime": -10},
        RiskLevel.LOW,
    ),
    (
        "unknown_seen_on_other_camera",
        scene(
            "person",
            camera="back_yard",
            at=NIGHT,
            persons=[PersonSighting(None, 0.4, (Sighting("front_door", 300),))],
        ),
        {
            "person_present": 10,
            "unknown_person": 25,
            "night": 10,
            "small_hours": 15,
            "seen_on_other_cameras": 10,
        },
        RiskLevel.HIGH,
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
        {"person_present": 10, "unknown_person": 25, "daytime": -10},
        RiskLevel.LOW,
    ),
    (
        "attribute_is_not_scored",
        scene(
            "person",
            enrichments={"m": [Attribute(model="m", confidence=0.9, name="mask", value="yes")]},
        ),
        {"person_present": 10, "unknown_person": 25, "daytime": -10},
        RiskLevel.LOW,
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
    assert [h for h in range(24) if cfg.is_night(h)] == [0, 1, 2, 3, 4, 22, 23]
    assert [h for h in range(24) if cfg.is_small_hours(h)] == [0, 1, 2, 3, 4]
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
    zones = RuleConfig.from_mapping({"public_zones": ["Lane"]})
    assert zones.public_zones == frozenset({"lane"})  # a name set replaces the default
    engine = RuleEngine(cfg)
    ctx = scene("person", "car", zone="backyard")  # "vehicles" is disabled: no vehicle factor
    assert "vehicle" not in {f.name for f in engine.evaluate(ctx).factors}
    ctx = scene("person", zone="backyard")
    assert {f.name: f.points for f in engine.evaluate(ctx).factors} == {
        "person_present": 10,
        "unknown_person": 40,
        "daytime": -10,
        "private_area": 10,
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
