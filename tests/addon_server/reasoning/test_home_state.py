"""Home state as evidence (issue 15 item 4): the HomeState value and the rules' home factors."""

from __future__ import annotations

from typing import Any

import pytest

from addon_server.reasoning.context import HomeState, HomeStateError, PersonSighting, SceneContext
from addon_server.reasoning.levels import RiskLevel, level_for
from addon_server.reasoning.prompt import context_lines
from addon_server.reasoning.rules import RuleEngine

from .reasoning_scenes import DAY, NIGHT, obj, scene


def with_home(ctx: SceneContext, **home: Any) -> SceneContext:
    return SceneContext(
        ctx.camera,
        ctx.timestamp,
        ctx.objects,
        zone=ctx.zone,
        enrichments=ctx.enrichments,
        persons=ctx.persons,
        history=ctx.history,
        home=HomeState.from_json(home),
    )


def factors(ctx: SceneContext) -> dict[str, int]:
    return {f.name: f.points for f in RuleEngine().evaluate(ctx).factors}


def test_from_json_keeps_every_key_and_echoes_what_was_sent() -> None:
    raw = {
        "alarm": "armed_away",
        "people_home": 0,
        "household_present": [],
        "doors_open": ["Back door"],
        "unlocked": ["Front door"],
        "guests_expected": False,
    }
    home = HomeState.from_json(raw)
    assert home.unlocked == ("Front door",)
    assert home.nobody_home
    assert home.as_json() == {
        "alarm": "armed_away",
        "people_home": 0,
        "doors_open": ["Back door"],
        "unlocked": ["Front door"],
        "guests_expected": False,
    }
    assert HomeState.from_json({}).as_json() == {}
    assert not HomeState.from_json({}).nobody_home  # unknown occupancy is not "nobody"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"alarm": "on"}, "alarm"),
        ({"people_home": -1}, "people_home"),
        ({"people_home": "2"}, "people_home"),
        ({"people_home": True}, "people_home"),
        ({"guests_expected": "yes"}, "guests_expected"),
        ({"unlocked": "Front door"}, "unlocked"),
        ({"doors_open": [1]}, "doors_open"),
        ({"household_present": [""]}, "household_present"),
        ({"alrm": "armed_away"}, "alrm"),
    ],
)
def test_a_bad_key_is_named(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(HomeStateError) as caught:
        HomeState.from_json(raw)
    assert caught.value.key == key
    assert f"home_state.{key}" in str(caught.value)


def test_not_an_object_is_refused() -> None:
    with pytest.raises(HomeStateError, match="JSON object"):
        HomeState.from_json(["armed_away"])


def test_alarm_armed_away_raises_a_stranger_by_day_to_high() -> None:
    plain = scene("person", zone="patio")
    armed = with_home(plain, alarm="armed_away", people_home=0)
    found = factors(armed)
    assert found["alarm_armed_away"] == 25
    assert "nobody_home" not in found  # armed away already says the house is empty
    assert level_for(RuleEngine().evaluate(plain).score) is RiskLevel.MEDIUM
    assert level_for(RuleEngine().evaluate(armed).score) is RiskLevel.HIGH


@pytest.mark.parametrize(
    ("alarm", "name", "points"),
    [
        ("armed_night", "alarm_armed_night", 10),
        ("armed_home", "alarm_armed_home", 10),
        ("armed_vacation", "alarm_armed_away", 25),
        ("triggered", "alarm_triggered", 30),
    ],
)
def test_each_alarm_state_is_a_named_factor(alarm: str, name: str, points: int) -> None:
    assert factors(with_home(scene("person"), alarm=alarm))[name] == points


def test_nobody_home_unlocked_and_open_doors_add_points() -> None:
    found = factors(
        with_home(scene("person"), people_home=0, unlocked=["Front door"], doors_open=["Garage"])
    )
    assert found["nobody_home"] == 15
    assert found["door_unlocked"] == 10
    assert found["door_open"] == 10


def test_household_present_lowers_a_caller_by_day_but_not_at_night() -> None:
    day = factors(with_home(scene("person"), household_present=["Alice"], people_home=1))
    assert day["household_present"] == -20
    night = factors(with_home(scene("person", at=NIGHT), household_present=["Alice"]))
    assert "household_present" not in night


def test_guests_expected_cancel_the_unknown_faces_except_in_the_small_hours() -> None:
    evening = with_home(scene("person", "person", at=DAY.replace(hour=19)), guests_expected=True)
    found = factors(evening)
    assert found["guests_expected"] == -found["unknown_person"] == -35
    assert level_for(RuleEngine().evaluate(evening).score) is RiskLevel.LOW
    assert "guests_expected" not in factors(
        with_home(scene("person", at=NIGHT), guests_expected=True)
    )


def test_home_state_never_moves_residents_pets_or_an_empty_frame() -> None:
    for ctx in (
        scene("person", persons=[PersonSighting("alice", 0.9)]),
        scene("cat", at=NIGHT),
        scene(),
    ):
        armed = with_home(ctx, alarm="armed_away", people_home=0, unlocked=["Front door"])
        assert RuleEngine().evaluate(armed) == RuleEngine().evaluate(ctx)


def test_the_prompt_carries_the_home_state() -> None:
    ctx = with_home(scene("person"), alarm="armed_away", people_home=0, unlocked=["Front door"])
    assert "Home: alarm armed_away; nobody home; unlocked: Front door" in context_lines(ctx)
    assert not any(line.startswith("Home:") for line in context_lines(scene("person")))


def test_a_faint_person_gets_no_home_points() -> None:
    ctx = SceneContext("cam", NIGHT, (obj("person", confidence=0.55),))
    assert factors(with_home(ctx, alarm="armed_away")) == {"faint_person": 10}
