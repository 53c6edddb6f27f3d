"""The model's text reaches users only when grounded, complete and short.

The rejected strings are what the embedded SmolLM2-135M really wrote into events' summaries
(from the issue and from runs of the supervised server at temperature 0.2).
"""

from __future__ import annotations

import pytest

from addon_server.reasoning.context import PersonSighting, Posture, SceneContext, Threat
from addon_server.reasoning.grounding import check_answer, check_text
from addon_server.reasoning.llm import SUMMARY_MAX, LLMAnswer, parse_answer
from addon_server.reasoning.risk import BlendWeights, LLMStatus, SummarySource, blend
from addon_server.reasoning.rules import RuleEngine

from .reasoning_scenes import NIGHT, scene

EMPTY = scene()
HALLWAY = scene("person")
PETS = scene("dog", "cat")
GUN = scene("person", enrichments={"weapon": [Threat(model="weapon", confidence=0.9, label="gun")]})
FALLEN = scene(
    "person", enrichments={"pose": [Posture(model="pose", confidence=0.9, posture="fallen")]}
)
RESIDENT = scene("person", "car", persons=[PersonSighting("alice", 0.88)])


@pytest.mark.parametrize(
    ("text", "ctx", "reason"),
    [
        # The examples: a weapon and violence in a scene with neither, cut off.
        ("The camera is a weapon; it can be used to kill people…", HALLWAY, "a weapon"),
        ("The camera is a weapon; it can be used to kill people", EMPTY, "a weapon"),
        ("no one is safe in this room.", EMPTY, "claims danger"),
        ("no one is safe in this room.", HALLWAY, "claims danger"),
        # Seen from the supervised server.
        ("A weapon (gun) or fire is critical.", PETS, "a weapon"),
        ("The camera is a firearm.", HALLWAY, "a weapon"),
        (
            "A gun was detected by a weapon in the front door of an unregistered vehicle.",
            GUN,
            "a vehicle",
        ),
        (
            "1 person not enrolled; time:02.34 (night) } [CRITICAL] GUN DETECTED: [SCORE=78]"
            "(https://www.youtubecom/embed-image?markt",
            GUN,
            "not plain prose",
        ),
        ("[1] The object [animal name]", PETS, "not plain prose"),
        ("A person is standing at the door and", HALLWAY, "not a complete sentence"),
        ("An intruder is in the garden.", PETS, "a person"),
        ("A cat is in the yard.", scene("dog"), "a cat"),
        ("A person has collapsed.", HALLWAY, "an injury"),
        ("Smoke is rising from the garage.", HALLWAY, "fire or smoke"),
        ("x" * (SUMMARY_MAX + 1) + ".", HALLWAY, "longer than"),
        ("   ", HALLWAY, "empty"),
    ],
)
def test_ungrounded_or_broken_text_is_rejected(text: str, ctx: SceneContext, reason: str) -> None:
    found = check_text(text, ctx)
    assert found is not None
    assert reason in found


@pytest.mark.parametrize(
    ("text", "ctx"),
    [
        ("An unknown person is at the front door at night.", scene("person", at=NIGHT)),
        ("A person with a gun is at the front door!", GUN),
        ("A person has fallen and may be injured.", FALLEN),
        ("Two pets are in the yard: a dog and a cat.", PETS),
        ("No people, vehicles or weapons are in view.", EMPTY),
        ("Nobody is there; nothing to worry about.", EMPTY),
        ("Alice, a resident, parked her car.", RESIDENT),
        ("Is someone at the door?", HALLWAY),
    ],
)
def test_grounded_complete_text_is_accepted(text: str, ctx: SceneContext) -> None:
    assert check_text(text, ctx) is None


def answer(summary: str, reasoning: str = "One person in view.", **kw: object) -> LLMAnswer:
    return LLMAnswer(risk_score=35, risk_level="medium", summary=summary, reasoning=reasoning, **kw)  # type: ignore[arg-type]


def test_answer_cut_by_max_tokens_or_schema_length_is_rejected() -> None:
    assert check_answer(answer("A person.", finish_reason="length"), HALLWAY) == (
        "cut off at max_tokens"
    )
    long_summary = "A person is at the door " * 10 + "."
    parsed = parse_answer(
        '{"risk_score": 35, "summary": "%s", "reasoning": "ok."}' % long_summary  # noqa: UP031
    )
    assert parsed.shortened == ("summary",)
    assert len(parsed.summary) == SUMMARY_MAX
    assert check_answer(parsed, HALLWAY) == f"summary: cut off at {SUMMARY_MAX} characters"


def test_reasoning_is_checked_too() -> None:
    found = check_answer(answer("A person is here.", "They could kill someone."), HALLWAY)
    assert found == "reasoning: mentions violence that was not detected ('kill')"


def test_rejected_text_gives_the_rule_summary_and_says_why() -> None:
    ctx = scene("person", zone="garden")  # an unknown person behind the house: medium
    rules = RuleEngine().evaluate(ctx)
    said = answer("The camera is a weapon; it can be used to kill people.")
    a = blend(
        rules,
        said,
        BlendWeights(),
        llm_status=LLMStatus.OK,
        text_rejected=check_answer(said, ctx),
    )
    assert a.llm_status is LLMStatus.OK  # the model's score still counts
    assert a.summary_source is SummarySource.RULES
    assert a.summary_rejected == "summary: mentions a weapon that was not detected ('weapon')"
    assert "weapon" not in a.summary
    assert a.summary.startswith("Medium risk: ")
    assert a.reasoning.endswith(f"The model's text was not used: {a.summary_rejected}.")
    event = a.as_json()
    assert event["summary_source"] == "rules"
    assert event["summary_rejected"] == a.summary_rejected

    good = answer("A person is at the front door.")
    b = blend(rules, good, BlendWeights(), llm_status=LLMStatus.OK, text_rejected=None)
    assert (b.summary_source, b.summary) == (SummarySource.LLM, "A person is at the front door.")
