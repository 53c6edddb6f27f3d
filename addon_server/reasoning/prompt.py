"""The LLM prompt: one static system prompt and a user message of context lines.

The system prompt is a module constant and contains nothing that varies per call (no time, no
camera, no counts). llama.cpp keeps the KV cache of the previous prompt and re-evaluates only
from the first token that differs, so a byte-identical prefix is paid for once per server
process instead of on every event; ``benchmarks/reasoning.py`` measures the saving. Everything
that changes goes in the user message, after the prefix.

The user message is the seeds' context lines ("[CRITICAL] GUN DETECTED: confidence=95%",
"Same person seen on front_door camera 5 minutes ago", "2 persons, 1 car", "Time: 02:14
(night)"): short, factual, one fact per line, which small models follow better than prose,
closed by the rule engine's verdict (:func:`rules_line`).

There is deliberately no example answer in the system prompt: SmolLM2-135M copied it nearly
verbatim ("A dog is in the yard.") whatever the scene.
"""

from __future__ import annotations

from string import Template

from .context import Posture, SceneContext, Sighting, Threat
from .levels import band_ranges, level_for
from .rules import RuleConfig, RuleResult, dwell_seconds, format_duration, plural

__all__ = [
    "SYSTEM_PROMPT",
    "build_messages",
    "context_lines",
    "rules_line",
    "sighting_line",
    "time_of_day",
]

SYSTEM_PROMPT = Template("""\
You are Vigil, the security analyst of a home camera system. You receive facts about one \
camera frame, one fact per line; the last line is the score of Vigil's rule engine. Judge how \
worrying the scene is for the people living in the home and answer with one JSON object only, \
no other text.

Fields:
- risk_score: integer 0-100. Stay close to the rule engine's score unless the facts clearly \
say otherwise.
- risk_level: $bands; it must \
match risk_score.
- summary: one short sentence for a phone notification, about the facts given.
- reasoning: one or two short sentences explaining the score.
- factors: up to 3 items {"name": snake_case, "points": integer, "detail": short text}.

Guidance:
- A weapon (gun, knife) or fire is critical.
- A fallen or lying person may be a medical emergency: high.
- An unknown person at night, or one staying a long time, is high; in daytime usually medium.
- Enrolled (known) people, pets alone, or an empty scene are low.
- Vehicles alone are low; at night slightly higher.
- Use only the facts given. Do not invent objects or people.
""").substitute(bands=band_ranges())


def time_of_day(hour: int, rules: RuleConfig) -> str:
    """Label for the time line; "night" uses the rules' night window so both agree."""
    if rules.is_night(hour):
        return "night"
    if hour < 12:
        return "morning"
    if hour < 18:
        return "day"
    return "evening"


def context_lines(ctx: SceneContext, rules: RuleConfig | None = None) -> list[str]:
    """The facts of a scene, one per line, most alarming first."""
    cfg = rules or RuleConfig()
    lines: list[str] = []

    # Alarms first: small models weigh early lines more.
    threats = sorted(ctx.enrichments_of(Threat), key=lambda t: -t.confidence)
    lines.extend(t.describe() for t in threats)
    lines.extend(p.describe() for p in ctx.enrichments_of(Posture))
    lines.extend(e.describe() for e in ctx.all_enrichments() if not isinstance(e, Threat | Posture))

    where = f"Camera: {ctx.camera}"
    if ctx.zone:
        where += f" (zone: {ctx.zone})"
    lines.append(where)
    ts = ctx.timestamp
    lines.append(f"Time: {ts:%H:%M} ({time_of_day(ts.hour, cfg)})")
    if ctx.home is not None:  # what the house says: alarm, who is home, doors, guests
        lines.append(f"Home: {ctx.home.describe()}")

    counts = ctx.class_counts()
    if counts:
        lines.append("Objects: " + ", ".join(plural(n, name) for name, n in counts.items()))
    else:
        lines.append("Objects: none detected")

    n_known_lines = 0
    for i, p in enumerate(ctx.persons, start=1):
        if p.person_name is not None:
            lines.append(
                f"Person {i}: known, enrolled as {p.person_name} (similarity {p.similarity:.2f})"
            )
            n_known_lines += 1
        else:
            lines.append(f"Person {i}: unknown (not enrolled)")
        for s in sorted(p.seen_elsewhere, key=lambda s: s.seconds_ago):
            if s.camera == ctx.camera:
                continue
            lines.append(sighting_line(s))
    unidentified = ctx.person_count - len(ctx.persons)
    if unidentified > 0:
        lines.append(f"{plural(unidentified, 'person')} not identified (face not visible)")

    dwell, frames = dwell_seconds(ctx, cfg)
    if frames > 1:
        lines.append(f"Persons in view for {format_duration(dwell)} across {frames} recent frames")
    return lines


def sighting_line(s: Sighting) -> str:
    """``Same person (body appearance, 0.83) seen on front_door camera 5 minutes ago``.

    A match from an uncalibrated embedder is worded as a possibility, so the LLM weighs it as
    the weak hint it is.
    """
    how = f" ({s.how})" if s.similarity is not None else ""
    same = "Same person" if s.calibrated else "Possibly the same person"
    return f"{same}{how} seen on {s.camera} camera {format_duration(s.seconds_ago)} ago"


def rules_line(result: RuleResult) -> str:
    """The rule engine's verdict as the prompt's last line.

    Small models anchor on it (SmolLM2-135M without it scored a detected gun 5/100 when the
    prompt carried an example answer, and rambled without one); larger models treat it as one
    more fact. It changes per event, so it lives in the user message, after the cached prefix.
    """
    top = "; ".join(f.detail for f in result.factors[:3]) or "nothing of concern"
    return f"Rule engine: score {result.score} ({level_for(result.score).value}): {top}"


def build_messages(
    ctx: SceneContext,
    rules: RuleConfig | None = None,
    result: RuleResult | None = None,
) -> list[dict[str, str]]:
    """OpenAI chat messages: the static system prompt, then this scene's facts."""
    lines = context_lines(ctx, rules)
    if result is not None:
        lines.append(rules_line(result))
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "\n".join(lines)},
    ]
