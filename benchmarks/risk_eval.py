"""How often is Vigil's risk band right? The evaluation set, scored (issue 15, item 3).

    .venv-addon/bin/python benchmarks/risk_eval.py [--set PATH] [--no-photos]
        [--llm] [--llm-url URL --llm-model NAME [--llm-key KEY]] [--json out.json]

The set (``benchmarks/risk_eval/scenarios.yaml``) holds labelled scenes, each a
:class:`~addon_server.reasoning.context.SceneContext` with the band a careful homeowner would
give it and why, plus a handful of real photos that go through the add-on's real detector
(default model, classes and thresholds) before the rules. Each configuration is scored on the
whole set:

- **rules** — the rule engine with its defaults (always);
- **rules + embedded LLM** (``--llm``) — SmolLM2 through the real :class:`Reasoner`, supervised
  llama.cpp server and all, as the add-on runs it;
- **rules + external LLM** (``--llm-url``) — any OpenAI-compatible endpoint.

Reported per configuration: band accuracy, **false alarms** (high/critical given where
low/medium was right; % of the scenes whose right band is low/medium), **misses** (low/medium
given where high/critical was right; % of the scenes whose right band is high/critical), the
confusion matrix, and every wrong scene with its factors. The issue's goals for the rules alone
(≤ 3 % false alarms, ≤ 2 % misses) get a PASS/FAIL line; an LLM configuration is compared with
the rules (it should improve both to be on by default).

A scene's ``home`` (alarm, occupancy, doors, guests) becomes its context's
:class:`~addon_server.reasoning.context.HomeState`, as the add-on receives it from Home Assistant.

**Held-out part.** Rules tuned on the whole set would measure how well they were fitted, not how
well they judge. A fixed quarter of the set (:func:`held_out_ids`: every 4th id in sorted
order, photos included) was kept out of sight while the rules were tuned; the figures are
printed for the whole set and for that quarter alone, and ``--hide-held-out`` keeps its wrong
scenes out of the listing for whoever tunes next.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from addon_server.reasoning.context import (
    Animal,
    Attribute,
    BBox,
    DetectedObject,
    Enrichment,
    HistoryPoint,
    HomeState,
    PersonSighting,
    Posture,
    SceneContext,
    Sighting,
    Threat,
    VehicleKind,
)
from addon_server.reasoning.gate import LLMPolicy
from addon_server.reasoning.levels import LEVEL_RANK, RiskLevel, level_for
from addon_server.reasoning.rules import Factor, RuleConfig, RuleEngine

DEFAULT_SET = Path(__file__).resolve().parent / "risk_eval" / "scenarios.yaml"

HELD_OUT_EVERY = 4
"""Every 4th scene id (sorted) is held out from tuning: see :func:`held_out_ids`."""

GOAL_FALSE_ALARM_PCT = 3.0
GOAL_MISS_PCT = 2.0
"""Issue 15's goals for the rules alone."""

ALARM_RANK = LEVEL_RANK[RiskLevel.HIGH]
"""A band at or above high is an alarm (the blueprint notifies); below it is not."""

RECORD_TYPES: Mapping[str, type[Enrichment]] = {
    cls.kind: cls for cls in (Threat, Posture, Animal, VehicleKind, Attribute)
}
"""The set's ``kind`` of an enrichment is the record type's own ``kind`` (its JSON name)."""


class SetError(ValueError):
    """The evaluation set is malformed; the message names the scene and the field."""


@dataclass(frozen=True)
class Scenario:
    """One labelled scene: what the reasoning stage sees and the band a careful human gives."""

    id: str
    kind: str
    band: RiskLevel
    why: str
    context: SceneContext


@dataclass(frozen=True)
class Photo:
    """A real image and the situation it stands for (time, camera, zone), with its band."""

    id: str
    source: str
    band: RiskLevel
    why: str
    camera: str
    timestamp: datetime
    zone: str | None


@dataclass(frozen=True)
class EvalSet:
    """The parsed set: scenes, photos and the kinds it must cover."""

    scenarios: tuple[Scenario, ...]
    photos: tuple[Photo, ...]
    required_kinds: tuple[str, ...]

    def missing_kinds(self) -> list[str]:
        """Required kinds no scene covers (empty when the set is complete)."""
        present = {s.kind for s in self.scenarios}
        return [k for k in self.required_kinds if k not in present]


# --- loading ---------------------------------------------------------------------------------


def _band(raw: Any, where: str) -> RiskLevel:
    try:
        return RiskLevel(raw)
    except ValueError:
        names = ", ".join(level.value for level in RiskLevel)
        raise SetError(f"{where}: band {raw!r} is not one of {names}") from None


def _time(day: date, tz: timezone, raw: Any, where: str) -> datetime:
    try:
        hour, minute = (int(part) for part in str(raw).split(":"))
        return datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
    except ValueError as exc:
        raise SetError(f"{where}: at {raw!r} is not HH:MM ({exc})") from None


def _record(raw: Mapping[str, Any], where: str) -> Enrichment:
    fields = dict(raw)
    kind = fields.pop("kind", None)
    cls = RECORD_TYPES.get(str(kind))
    if cls is None:
        raise SetError(f"{where}: enrichment kind {kind!r} is not one of {sorted(RECORD_TYPES)}")
    try:
        return cls(
            model=str(fields.pop("model")),
            confidence=float(fields.pop("conf")),
            object_index=fields.pop("obj", None),
            **fields,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SetError(f"{where}: bad {kind} record {dict(raw)!r}: {exc}") from None


def _context(
    raw: Mapping[str, Any], frame: tuple[int, int], day: date, tz: timezone, where: str
) -> SceneContext:
    width, height = frame
    try:
        objects = tuple(
            DetectedObject(str(c), float(conf), BBox(x, y, w, h), width, height)
            for c, conf, x, y, w, h in raw.get("objects") or ()
        )
        records: dict[str, list[Enrichment]] = {}
        for item in raw.get("enrichments") or ():
            rec = _record(item, where)
            records.setdefault(rec.model, []).append(rec)
        persons = tuple(
            PersonSighting(
                person_name=p.get("name"),
                similarity=float(p["sim"]),
                seen_elsewhere=tuple(Sighting(str(c), float(s)) for c, s in p.get("seen") or ()),
                object_index=p.get("obj"),
            )
            for p in raw.get("persons") or ()
        )
        history = tuple(HistoryPoint(float(s), int(n)) for s, n in raw.get("history") or ())
        return SceneContext(
            camera=str(raw["camera"]),
            timestamp=_time(day, tz, raw["at"], where),
            objects=objects,
            zone=raw.get("zone"),
            enrichments=records,
            persons=persons,
            history=history,
            home=HomeState.from_json(raw["home"]) if raw.get("home") else None,
        )
    except SetError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise SetError(f"{where}: {type(exc).__name__}: {exc}") from None


_COMMON_KEYS = ("band", "why", "at", "camera")


def _entry_id(raw: Mapping[str, Any], where: str, seen: set[str], keys: Sequence[str]) -> str:
    """An entry's id, checked unique across scenes and photos, with its required keys set."""
    eid = str(raw.get("id") or where)
    if eid in seen:
        raise SetError(f"{eid}: duplicate id")
    seen.add(eid)
    for key in keys:
        if not raw.get(key):
            raise SetError(f"{eid}: {key} is missing")
    return eid


def load_set(path: Path = DEFAULT_SET) -> EvalSet:
    """Parse the YAML set into real SceneContexts; any malformed scene raises :class:`SetError`."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    frame_w, frame_h = (int(v) for v in doc["frame"])
    day = date.fromisoformat(str(doc["date"]))
    tz = datetime.strptime(str(doc["utc_offset"]), "%z").tzinfo
    assert isinstance(tz, timezone)
    seen: set[str] = set()
    scenarios = []
    for index, raw in enumerate(doc.get("scenarios") or ()):
        sid = _entry_id(raw, f"scenarios[{index}]", seen, ("kind", *_COMMON_KEYS))
        scenarios.append(
            Scenario(
                id=sid,
                kind=str(raw["kind"]),
                band=_band(raw["band"], sid),
                why=str(raw["why"]),
                context=_context(raw, (frame_w, frame_h), day, tz, sid),
            )
        )
    photos = []
    for index, raw in enumerate(doc.get("photos") or ()):
        pid = _entry_id(raw, f"photos[{index}]", seen, ("source", *_COMMON_KEYS))
        photos.append(
            Photo(
                id=pid,
                source=str(raw["source"]),
                band=_band(raw["band"], pid),
                why=str(raw["why"]),
                camera=str(raw["camera"]),
                timestamp=_time(day, tz, raw["at"], pid),
                zone=raw.get("zone"),
            )
        )
    return EvalSet(tuple(scenarios), tuple(photos), tuple(doc.get("required_kinds") or ()))


def held_out_ids(ids: Iterable[str]) -> frozenset[str]:
    """The held-out quarter: every :data:`HELD_OUT_EVERY`-th id in sorted order (the 4th, 8th,
    ...). A rule of the ids alone, fixed before any tuning, so nobody picks which scenes to hide
    and a scene added later joins one part or the other by its name, not by its result."""
    ordered = sorted(ids)
    return frozenset(ordered[HELD_OUT_EVERY - 1 :: HELD_OUT_EVERY])


# --- real photos through the real detector ---------------------------------------------------


def photo_bytes(source: str) -> bytes:
    """The image behind a ``source``: an Ultralytics asset or a scikit-image data sample."""
    scheme, _, name = source.partition(":")
    if scheme == "ultralytics":
        import ultralytics

        return (Path(ultralytics.__file__).parent / "assets" / name).read_bytes()
    if scheme == "skimage":
        from PIL import Image
        from skimage import data

        buffer = io.BytesIO()
        Image.fromarray(getattr(data, name)()).convert("RGB").save(buffer, "JPEG", quality=92)
        return buffer.getvalue()
    raise SetError(f"photo source {source!r}: scheme must be ultralytics: or skimage:")


class PhotoDetector:
    """The add-on's default detector with its default selection (classes, thresholds)."""

    def __init__(self) -> None:
        from addon_server.config import parse
        from addon_server.detector import load_detector
        from addon_server.detector.base import Selection

        settings = parse({}, environ={})
        self.settings = settings
        self.detector = load_detector(settings.detector, "cpu")
        self.selection = Selection(
            classes=frozenset(settings.detector.classes),
            default_threshold=settings.detector.confidence,
            class_thresholds=settings.detector.class_thresholds,
        )

    def objects(self, data: bytes) -> tuple[DetectedObject, ...]:
        """Decode like the pipeline, detect, keep what the default selection keeps."""
        from addon_server.detector.base import select
        from addon_server.imaging import decode

        image = decode(data, max_pixels=self.settings.images.max_pixels)
        (found,) = self.detector.detect_batch([image.pixels])
        return tuple(
            DetectedObject(
                d.class_name,
                d.confidence,
                BBox(d.x, d.y, d.width, d.height),
                image.width,
                image.height,
            )
            for d in select(found, self.selection)
        )

    def close(self) -> None:
        self.detector.close()


def photo_scenarios(photos: Sequence[Photo]) -> list[Scenario]:
    """Each photo as a scene: the detector's objects at the photo's time, camera and zone."""
    if not photos:
        return []
    detector = PhotoDetector()
    try:
        return [
            Scenario(
                id=p.id,
                kind="photo",
                band=p.band,
                why=p.why,
                context=SceneContext(
                    camera=p.camera,
                    timestamp=p.timestamp,
                    objects=detector.objects(photo_bytes(p.source)),
                    zone=p.zone,
                ),
            )
            for p in photos
        ]
    finally:
        detector.close()


# --- scoring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What one configuration said about one scene."""

    scenario: Scenario
    level: RiskLevel
    score: int
    factors: tuple[Factor, ...]
    note: str = ""

    @property
    def right(self) -> bool:
        return self.level is self.scenario.band

    @property
    def false_alarm(self) -> bool:
        return LEVEL_RANK[self.level] >= ALARM_RANK > LEVEL_RANK[self.scenario.band]

    @property
    def miss(self) -> bool:
        return LEVEL_RANK[self.scenario.band] >= ALARM_RANK > LEVEL_RANK[self.level]


@dataclass(frozen=True)
class Summary:
    """A configuration's figures on the set."""

    name: str
    verdicts: tuple[Verdict, ...]
    seconds: float

    @property
    def benign(self) -> int:
        return sum(1 for v in self.verdicts if LEVEL_RANK[v.scenario.band] < ALARM_RANK)

    @property
    def threats(self) -> int:
        return len(self.verdicts) - self.benign

    @property
    def correct(self) -> int:
        return sum(v.right for v in self.verdicts)

    @property
    def false_alarms(self) -> int:
        return sum(v.false_alarm for v in self.verdicts)

    @property
    def misses(self) -> int:
        return sum(v.miss for v in self.verdicts)

    def pct(self, n: int, of: int) -> float:
        return 100.0 * n / of if of else 0.0

    @property
    def false_alarm_pct(self) -> float:
        return self.pct(self.false_alarms, self.benign)

    @property
    def miss_pct(self) -> float:
        return self.pct(self.misses, self.threats)

    @property
    def accuracy_pct(self) -> float:
        return self.pct(self.correct, len(self.verdicts))

    def confusion(self) -> dict[str, dict[str, int]]:
        """Rows: the right band; columns: the band given."""
        table = {t.value: {g.value: 0 for g in RiskLevel} for t in RiskLevel}
        for v in self.verdicts:
            table[v.scenario.band.value][v.level.value] += 1
        return table

    def part(self, ids: frozenset[str], name: str) -> Summary:
        """The same verdicts restricted to some scenes (the held-out quarter)."""
        return Summary(name, tuple(v for v in self.verdicts if v.scenario.id in ids), self.seconds)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scenes": len(self.verdicts),
            "accuracy_pct": round(self.accuracy_pct, 1),
            "false_alarms": self.false_alarms,
            "benign": self.benign,
            "false_alarm_pct": round(self.false_alarm_pct, 1),
            "misses": self.misses,
            "threats": self.threats,
            "miss_pct": round(self.miss_pct, 1),
            "confusion": self.confusion(),
            "seconds": round(self.seconds, 1),
            "wrong": [
                {
                    "id": v.scenario.id,
                    "right": v.scenario.band.value,
                    "given": v.level.value,
                    "score": v.score,
                    "factors": [f.as_json() for f in v.factors],
                    "note": v.note,
                }
                for v in self.verdicts
                if not v.right
            ],
        }


def score_rules(
    scenarios: Iterable[Scenario], engine: RuleEngine | None = None, name: str = "rules"
) -> Summary:
    """The rule engine alone, with its default configuration unless ``engine`` is given."""
    engine = engine or RuleEngine()
    t0 = time.perf_counter()
    verdicts = []
    for s in scenarios:
        result = engine.evaluate(s.context)
        verdicts.append(Verdict(s, level_for(result.score), result.score, result.factors))
    return Summary(name, tuple(verdicts), time.perf_counter() - t0)


async def score_llm(name: str, scenarios: Sequence[Scenario], settings: Any) -> Summary:
    """Rules + an LLM through the real Reasoner (blend, floors and fallbacks included).

    The LLM is asked only where the add-on would ask it (:mod:`addon_server.reasoning.gate`,
    with the settings' ``llm_policy``): elsewhere the rules' verdict is the event's, as in the
    add-on's two-phase events."""
    from addon_server.reasoning.reasoner import Reasoner

    reasoner = Reasoner(settings)
    await reasoner.start()
    try:
        if not await reasoner.wait_ready(settings.ready_timeout_s):
            raise SystemExit(f"{name}: the LLM did not become ready: {reasoner.status()}")
        t0 = time.perf_counter()
        verdicts = []
        asked = 0
        for i, s in enumerate(scenarios, 1):
            verdict = reasoner.rule_verdict(s.context)
            a = verdict.assessment
            if verdict.decision.asked:
                asked += 1
                a = await reasoner.refine(s.context, verdict)
            note = f"llm {a.llm_status} ({verdict.decision.reason})"
            if a.llm_score is not None:
                note += f", model scored {a.llm_score}, rules {a.rule_score}"
            if a.llm_error:
                note += f": {a.llm_error}"
            verdicts.append(Verdict(s, a.risk_level, a.risk_score, a.factors, note))
            print(f"  [{name}] {i}/{len(scenarios)} {s.id}: {a.risk_level}", file=sys.stderr)
        summary = Summary(name, tuple(verdicts), time.perf_counter() - t0)
    finally:
        await reasoner.stop()
    print(
        f"  [{name}] the gate asked the LLM about {asked}/{len(scenarios)} scenes"
        f" (llm_policy {settings.llm_policy})",
        file=sys.stderr,
    )
    fallbacks = sum(1 for v in summary.verdicts if v.note.startswith("llm fallback"))
    if fallbacks:
        print(f"  [{name}] {fallbacks} scenes fell back to the rules (see notes)", file=sys.stderr)
    return summary


# --- report ----------------------------------------------------------------------------------


def figure_lines(summary: Summary) -> list[str]:
    """Accuracy, false alarms and misses of one configuration (or one part of the set)."""
    return [
        f"band accuracy  {summary.correct}/{len(summary.verdicts)} = {summary.accuracy_pct:.1f} %",
        f"false alarms   {summary.false_alarms}/{summary.benign} low/medium scenes"
        f" = {summary.false_alarm_pct:.1f} %",
        f"misses         {summary.misses}/{summary.threats} high/critical scenes"
        f" = {summary.miss_pct:.1f} %",
    ]


def render(summary: Summary, held_out: frozenset[str] = frozenset(), hide: bool = False) -> str:
    """The figures (whole set, then the held-out part), the confusion matrix and the wrong
    scenes, as text; ``hide`` leaves the held-out part's wrong scenes out of the listing."""
    lines = [
        f"== {summary.name}: {len(summary.verdicts)} scenes ({summary.seconds:.1f} s)",
        *figure_lines(summary),
    ]
    part = summary.part(held_out, f"{summary.name} [held-out]")
    if part.verdicts:
        lines += [f"-- held-out part: {len(part.verdicts)} scenes", *figure_lines(part)]
    lines += [
        "",
        "confusion (rows: right band, columns: band given)",
        f"{'':>10}" + "".join(f"{g.value:>10}" for g in RiskLevel),
    ]
    for truth, row in summary.confusion().items():
        lines.append(f"{truth:>10}" + "".join(f"{row[g.value]:>10}" for g in RiskLevel))
    wrong = [
        v for v in summary.verdicts if not v.right and not (hide and v.scenario.id in held_out)
    ]
    if wrong:
        lines += ["", "wrong scenes (FA = false alarm, MISS = missed alarm):"]
    for v in wrong:
        tag = "FA  " if v.false_alarm else "MISS" if v.miss else "    "
        if v.scenario.id in held_out:
            tag += " [held-out]"
        factors = ", ".join(f"{f.name} {f.points:+d}" for f in v.factors) or "no factors"
        lines.append(
            f"  {tag} {v.scenario.id}: right {v.scenario.band}, given {v.level}"
            f" ({v.score}) — {factors}"
        )
        lines.append(f"       why: {v.scenario.why}")
        if v.note:
            lines.append(f"       {v.note}")
    return "\n".join(lines)


def goal_lines(rules: Summary) -> list[str]:
    """PASS/FAIL for the issue's rules-only goals (on whichever part ``rules`` holds)."""
    where = f" [{rules.name}]" if rules.name != "rules" else ""
    fa_ok = rules.false_alarm_pct <= GOAL_FALSE_ALARM_PCT
    miss_ok = rules.miss_pct <= GOAL_MISS_PCT
    return [
        f"{'PASS' if fa_ok else 'FAIL'} rules false alarms{where} {rules.false_alarm_pct:.1f} %"
        f" (goal ≤ {GOAL_FALSE_ALARM_PCT:g} %)",
        f"{'PASS' if miss_ok else 'FAIL'} rules misses{where} {rules.miss_pct:.1f} %"
        f" (goal ≤ {GOAL_MISS_PCT:g} %)",
    ]


def comparison_line(rules: Summary, other: Summary) -> str:
    """Whether another configuration (an LLM, rule overrides) improves both figures over the
    default rules: the issue turns the LLM on by default only if it does."""
    better = other.false_alarm_pct < rules.false_alarm_pct and other.miss_pct < rules.miss_pct
    return (
        f"{other.name}: false alarms {other.false_alarm_pct:.1f} %"
        f" vs {rules.false_alarm_pct:.1f} %,"
        f" misses {other.miss_pct:.1f} % vs {rules.miss_pct:.1f} %"
        f" -> {'improves both' if better else 'does NOT improve both'}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, help="the evaluation set (YAML)")
    parser.add_argument("--no-photos", action="store_true", help="skip the real photos")
    parser.add_argument("--llm", action="store_true", help="also rules + the embedded SmolLM2")
    parser.add_argument("--llm-url", help="also rules + an OpenAI-compatible endpoint")
    parser.add_argument("--llm-model", default="", help="model name for --llm-url")
    parser.add_argument("--llm-key", default=None, help="API key for --llm-url")
    parser.add_argument("--llm-timeout", type=float, default=120.0, help="per answer, seconds")
    parser.add_argument("--threads", type=int, default=None, help="embedded LLM threads")
    parser.add_argument(
        "--llm-policy",
        choices=[p.value for p in LLMPolicy if p is not LLMPolicy.NEVER],
        default=LLMPolicy.AUTO.value,
        help="when the LLM arms ask the LLM (default auto: what a user would switch on; the"
        " add-on's own default is never until an LLM improves both figures here)",
    )
    parser.add_argument(
        "--rules-config",
        type=Path,
        action="append",
        default=[],
        help="also the rules with these overrides (a YAML mapping shaped like the config's"
        " reasoning.rules section); repeatable",
    )
    parser.add_argument(
        "--hide-held-out",
        action="store_true",
        help="leave the held-out quarter's wrong scenes out of the listing (while tuning)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    evalset = load_set(args.set)
    missing = evalset.missing_kinds()
    if missing:
        print(f"warning: the set lacks required kinds {missing}", file=sys.stderr)
    scenes = list(evalset.scenarios)
    if not args.no_photos:
        scenes += photo_scenarios(evalset.photos)
    print(
        f"set {args.set}: {len(evalset.scenarios)} scenes + "
        f"{0 if args.no_photos else len(evalset.photos)} photos"
    )

    held_out = held_out_ids(s.id for s in scenes)
    rules = score_rules(scenes)
    summaries = [rules]
    print(render(rules, held_out, args.hide_held_out))
    for path in args.rules_config:
        overrides = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        engine = RuleEngine(RuleConfig.from_mapping(overrides))
        summaries.append(score_rules(scenes, engine, f"rules ({path.name})"))
        print()
        print(render(summaries[-1], held_out, args.hide_held_out))

    if args.llm or args.llm_url:
        from addon_server.reasoning.settings import LLMMode, ReasoningSettings

        # Generous timeouts: on a busy 2-core box a slow answer must not become a fallback,
        # or the figures would measure the machine, not the model.
        common: dict[str, Any] = {
            "timeout_s": args.llm_timeout,
            "ready_timeout_s": 300.0,
            "llm_policy": LLMPolicy(args.llm_policy),
        }
        configs: list[tuple[str, ReasoningSettings]] = []
        if args.llm:
            configs.append(("rules+smollm2", ReasoningSettings(threads=args.threads, **common)))
        if args.llm_url:
            configs.append(
                (
                    f"rules+{args.llm_model or 'external'}",
                    ReasoningSettings(
                        mode=LLMMode.EXTERNAL,
                        url=args.llm_url,
                        model=args.llm_model,
                        api_key=args.llm_key,
                        **common,
                    ),
                )
            )
        for name, settings in configs:
            summary = asyncio.run(score_llm(name, scenes, settings))
            summaries.append(summary)
            print()
            print(render(summary, held_out, args.hide_held_out))

    print()
    lines = goal_lines(rules) + goal_lines(rules.part(held_out, "held-out"))
    lines += [comparison_line(rules, s) for s in summaries[1:]]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "set": str(args.set),
                    "goals": lines,
                    "held_out": sorted(held_out),
                    "runs": [s.as_json() for s in summaries],
                    "held_out_runs": [
                        s.part(held_out, f"{s.name} [held-out]").as_json() for s in summaries
                    ],
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
