"""The risk evaluation set (benchmarks/risk_eval/scenarios.yaml) parses into real scenes.

Not a test of accuracy: how often the rules or an LLM get the band right is the benchmark's job
(benchmarks/risk_eval.py). This checks that the set is usable evidence: every scene builds a
real SceneContext, every label is a real band, the set is large and covers what issue 15 asks
for, with enough alarms that a miss rate means something, and a malformed scene is refused
with its id named.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from addon_server.reasoning.context import HomeState, SceneContext
from addon_server.reasoning.levels import LEVEL_RANK, RiskLevel
from addon_server.reasoning.rules import RuleEngine
from benchmarks.risk_eval import (
    ALARM_RANK,
    DEFAULT_SET,
    GOAL_FALSE_ALARM_PCT,
    GOAL_MISS_PCT,
    EvalSet,
    SetError,
    held_out_ids,
    load_set,
    main,
    photo_bytes,
    photo_scenarios,
    render,
    score_rules,
)

# The kinds issue 15 (item 3) and its brief name; the set's own `required_kinds` must keep them.
ISSUE_KINDS = {
    "delivery_day",
    "cat_night",
    "known_person_door",
    "crouching_window_night",
    "knife",
    "gun",
    "loiterer",
    "car_idling",
    "children_playing",
    "empty",
    "false_detection",
    "dog_garden",
    "fall",
    "van_night_driveway",
    "group_night",
    "postman",
    "gardener_day",
    "running_night",
}


@pytest.fixture(scope="module")
def evalset() -> EvalSet:
    return load_set()


def test_every_scene_builds_a_real_context(evalset: EvalSet) -> None:
    assert len(evalset.scenarios) >= 80
    for s in evalset.scenarios:
        assert isinstance(s.context, SceneContext), s.id
        assert isinstance(s.band, RiskLevel), s.id
        assert s.why.strip(), s.id
        # The rule engine takes every scene (a scene it can't score is not evidence).
        assert 0 <= RuleEngine().evaluate(s.context).score <= 100, s.id
    ids = [s.id for s in evalset.scenarios] + [p.id for p in evalset.photos]
    assert len(ids) == len(set(ids))


def test_every_required_kind_is_present(evalset: EvalSet) -> None:
    assert set(evalset.required_kinds) >= ISSUE_KINDS
    assert evalset.missing_kinds() == []


def test_enough_alarms_and_non_alarms_for_both_rates_to_mean_something(
    evalset: EvalSet,
) -> None:
    alarms = [s for s in evalset.scenarios if LEVEL_RANK[s.band] >= ALARM_RANK]
    assert len(alarms) >= 20
    assert len(evalset.scenarios) - len(alarms) >= 40
    # Every band is used, so the confusion matrix has no empty row by construction.
    assert {s.band for s in evalset.scenarios} == set(RiskLevel)


def test_scenes_use_every_part_of_the_context(evalset: EvalSet) -> None:
    """Detections, enrichments, zones, history, enrolled and unknown re-ID, cross-camera."""
    ctxs = [s.context for s in evalset.scenarios]
    assert any(c.objects for c in ctxs)
    assert any(c.enrichments for c in ctxs)
    assert any(c.zone for c in ctxs)
    assert any(c.history for c in ctxs)
    assert any(p.known for c in ctxs for p in c.persons)
    assert any(not p.known for c in ctxs for p in c.persons)
    assert any(p.seen_elsewhere for c in ctxs for p in c.persons)
    hours = {c.timestamp.hour for c in ctxs}
    assert hours & {0, 1, 2, 3, 4}
    assert hours & {10, 11, 12, 13, 14, 15}


def test_home_state_becomes_the_scenes_home(evalset: EvalSet) -> None:
    homes = [s.context.home for s in evalset.scenarios if s.context.home is not None]
    assert len(homes) >= 10
    assert all(isinstance(h, HomeState) for h in homes)
    assert {h.alarm for h in homes} >= {"armed_away", "armed_night"}
    assert any(h.unlocked for h in homes) and any(h.doors_open for h in homes)
    assert any(h.guests_expected for h in homes) and any(h.household_present for h in homes)


def test_a_bad_home_state_is_refused_by_id(tmp_path: Path) -> None:
    path = tmp_path / "set.yaml"
    scene = "{id: s1, kind: empty, band: low, why: x, at: '12:00', camera: c, home: {alarm: on}}"
    path.write_text(HEADER + f"  - {scene}\n", encoding="utf-8")
    with pytest.raises(SetError, match=r"s1: .*home_state.alarm"):
        load_set(path)


def test_the_held_out_quarter_is_a_fixed_rule_of_the_ids() -> None:
    ids = [f"s{i:02d}" for i in range(12)]
    assert held_out_ids(reversed(ids)) == {"s03", "s07", "s11"}
    assert held_out_ids(ids[:3]) == set()


def test_the_rules_meet_the_issues_goals_on_the_set(evalset: EvalSet) -> None:
    """Issue 15: rules alone <= 3 % false alarms and <= 2 % misses, on the whole set and on the
    held-out quarter that was not looked at while the rules were tuned (photos, which need the
    detector, are in the benchmark's figures, not here)."""
    summary = score_rules(evalset.scenarios)
    held_out = summary.part(held_out_ids(s.id for s in evalset.scenarios), "held-out")
    for part in (summary, held_out):
        assert part.false_alarm_pct <= GOAL_FALSE_ALARM_PCT, render(part)
        assert part.miss_pct <= GOAL_MISS_PCT, render(part)
    assert held_out.threats >= 3 and held_out.benign >= 15


def test_photos_are_labelled_and_their_images_exist(evalset: EvalSet) -> None:
    assert len(evalset.photos) >= 4
    for photo in evalset.photos:
        assert isinstance(photo.band, RiskLevel)
        data = photo_bytes(photo.source)
        assert data[:2] == b"\xff\xd8", photo.id  # JPEG


def test_rules_score_the_whole_set(evalset: EvalSet) -> None:
    """The benchmark's scoring runs on the set; its figures are consistent with the verdicts."""
    summary = score_rules(evalset.scenarios)
    assert len(summary.verdicts) == len(evalset.scenarios)
    assert summary.benign + summary.threats == len(evalset.scenarios)
    matrix = summary.confusion()
    assert sum(sum(row.values()) for row in matrix.values()) == len(evalset.scenarios)
    assert sum(matrix[b.value][b.value] for b in RiskLevel) == summary.correct


HEADER = """
frame: [640, 480]
date: "2026-11-23"
utc_offset: "+01:00"
required_kinds: [empty]
scenarios:
"""


@pytest.mark.parametrize(
    ("scene", "message"),
    [
        ("{id: s1, kind: empty, band: severe, why: x, at: '12:00', camera: c}", "band 'severe'"),
        ("{id: s1, kind: empty, band: low, at: '12:00', camera: c}", "why is missing"),
        ("{id: s1, kind: empty, band: low, why: x, at: '25:99', camera: c}", "at '25:99'"),
        (
            "{id: s1, kind: empty, band: low, why: x, at: '12:00', camera: c,"
            " enrichments: [{kind: laser, model: m, conf: 0.5}]}",
            "enrichment kind 'laser'",
        ),
        (
            "{id: s1, kind: empty, band: low, why: x, at: '12:00', camera: c,"
            " objects: [[person, 1.5, 0, 0, 10, 10]]}",
            "confidence",
        ),
        (
            "{id: s1, kind: empty, band: low, why: x, at: '12:00', camera: c,"
            " enrichments: [{kind: posture, model: m, conf: 0.5, obj: 3, posture: lying}]}",
            "object #3",
        ),
    ],
)
def test_a_malformed_scene_is_refused_by_id(tmp_path: Path, scene: str, message: str) -> None:
    path = tmp_path / "set.yaml"
    path.write_text(HEADER + f"  - {scene}\n", encoding="utf-8")
    with pytest.raises(SetError, match="s1") as caught:
        load_set(path)
    assert message in str(caught.value)


def test_default_set_is_in_benchmarks() -> None:
    assert DEFAULT_SET.is_file()
    assert DEFAULT_SET.parent.parent.name == "benchmarks"


@pytest.mark.slow
def test_photos_go_through_the_real_detector(evalset: EvalSet) -> None:
    """bus.jpg through the add-on's default detector: persons and the bus reach the scene."""
    (bus,) = [p for p in evalset.photos if p.source == "ultralytics:bus.jpg"]
    (scene,) = photo_scenarios([bus])
    counts = scene.context.counts()
    assert counts["person"] >= 3
    assert counts["vehicle"] >= 1
    assert scene.context.timestamp == bus.timestamp


def test_benchmark_cli_writes_figures(tmp_path: Path) -> None:
    """Rules only plus one override file, as the lead would run it; figures land in the JSON."""
    overrides = tmp_path / "rules.yaml"
    overrides.write_text("threat_min_confidence: 0.5\n", encoding="utf-8")
    out = tmp_path / "figures.json"
    assert main(["--no-photos", "--rules-config", str(overrides), "--json", str(out)]) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    default, tuned = doc["runs"]
    assert default["name"] == "rules"
    assert tuned["name"] == "rules (rules.yaml)"
    assert default["scenes"] == tuned["scenes"] == len(load_set().scenarios)
    assert default["benign"] + default["threats"] == default["scenes"]
    assert len(default["wrong"]) == default["scenes"] - round(
        default["accuracy_pct"] * default["scenes"] / 100
    )
    assert doc["goals"][0].startswith(("PASS", "FAIL"))
    assert any("[held-out]" in line for line in doc["goals"])
    assert doc["held_out"] == sorted(held_out_ids(s.id for s in load_set().scenarios))
    assert doc["held_out_runs"][0]["scenes"] == len(doc["held_out"])
