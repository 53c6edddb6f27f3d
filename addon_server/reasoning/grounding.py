"""Is the model's text fit to reach a user? Grounded, complete, short — or the rules speak.

The event's ``summary`` is what Home Assistant shows on the *Last summary* sensor and what the
README's automation sends as a phone notification. The embedded SmolLM2-135M writes things like
"The camera is a weapon; it can be used to kill people…" or "no one is safe in this room." for
an empty hallway, and its summaries were cut off mid-word. Until the design gives the model a
narrower job, its text is used only when every check here passes; otherwise the rule summary is
used and the reason is recorded on the event (``summary_rejected``).

The checks are deliberately simple and conservative (a rejected good sentence costs nothing:
the rules' summary is accurate, just plainer):

* **complete**: not cut by ``max_tokens`` (``finish_reason``) nor by the schema length, ends
  with ``.``, ``!`` or ``?``, and is plain prose (no markup, links or template brackets);
* **grounded**: it names no person, vehicle, animal, weapon, fire, violence or injury that
  the scene does not contain. Words are matched against the categories of
  :mod:`~addon_server.reasoning.context` plus the word lists below; a word preceded in its
  clause by a negation ("no weapon", "nobody") does not count.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from .context import ANIMAL_CLASSES, PERSON_CLASSES, VEHICLE_CLASSES, Posture, SceneContext, Threat
from .llm import REASONING_MAX, SUMMARY_MAX, LLMAnswer

__all__ = ["WEAPON_WORDS", "check_answer", "check_text"]

WEAPON_WORDS: frozenset[str] = frozenset(
    {
        "weapon", "gun", "firearm", "pistol", "rifle", "shotgun", "handgun", "revolver",
        "knife", "blade", "machete", "axe", "sword", "bomb", "explosive", "grenade", "ammunition",
    }
)  # fmt: skip
"""Words that claim an armed scene; the same labels a weapon detector reports (see
``RuleConfig.threat_points``)."""

FIRE_WORDS: frozenset[str] = frozenset({"fire", "flame", "flames", "smoke", "burning", "blaze"})

VIOLENCE_WORDS: frozenset[str] = frozenset(
    {
        "kill", "kills", "killed", "killing", "killer", "murder", "murdered", "murderer",
        "shoot", "shoots", "shooting", "shot", "stab", "stabbed", "stabbing", "attack",
        "attacks", "attacked", "attacking", "attacker", "assault", "violence", "violent",
        "hostage", "blood", "bloody", "bleeding", "dead", "death", "die", "dies", "dying",
        "unsafe",
    }
)  # fmt: skip
"""Claims of harm; grounded only by a detected weapon."""

INJURY_WORDS: frozenset[str] = frozenset(
    {"injured", "injury", "hurt", "unconscious", "collapsed", "fallen", "fell", "lying"}
)
"""Claims of a medical emergency; grounded by a fallen/lying posture (or a weapon)."""

PERSON_WORDS: frozenset[str] = frozenset(
    {
        "people", "man", "men", "woman", "women", "child", "children", "kid", "kids", "boy",
        "girl", "intruder", "burglar", "thief", "robber", "stranger", "someone", "somebody",
        "individual", "visitor", "trespasser", "suspect", "human", "resident",
    }
)  # fmt: skip
VEHICLE_WORDS: frozenset[str] = frozenset({"vehicle", "van", "suv", "motorbike", "bike", "lorry"})
ANIMAL_WORDS: frozenset[str] = frozenset({"animal", "pet", "puppy", "kitten", "wildlife"})

# Phrases that claim danger without any of the words above ("no one is safe in this room").
_DANGER_PHRASES = re.compile(r"\b(no ?one|nobody|not|never)\b[\w\s']{0,20}\bsafe\b")
_NEGATIONS = frozenset(
    {"no", "not", "without", "nor", "neither", "never", "none", "nobody", "nothing", "zero"}
)
_NEGATION_WINDOW = 4  # words back, within the clause
_CLAUSE = re.compile(r"[;:.!?()]|\bbut\b|\bhowever\b")  # a comma may list negated things
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_MARKUP = re.compile(r"[\[\]{}<>|`*\\]|https?:|www\.|\.com\b")
_TERMINAL = re.compile(r"[.!?][\"')\]]*$")


def _forms(words: Iterable[str]) -> set[str]:
    """Singular and plural spellings: ``bus`` → ``buses``, ``knife`` → ``knives``."""
    out: set[str] = set()
    for w in words:
        out.add(w)
        if w.endswith("fe"):
            out.add(w[:-2] + "ves")
        elif w.endswith(("s", "x", "ch", "sh")):
            out.add(w + "es")
        else:
            out.add(w + "s")
    return out


def _threat_labels(ctx: SceneContext) -> set[str]:
    return {t.label.lower() for t in ctx.enrichments_of(Threat)}


def _armed(ctx: SceneContext) -> bool:
    return bool(_forms(WEAPON_WORDS) & _threat_labels(ctx))


def _burning(ctx: SceneContext) -> bool:
    return bool(FIRE_WORDS & _threat_labels(ctx))


def _fallen(ctx: SceneContext) -> bool:
    return any(p.posture.lower() in {"fallen", "lying"} for p in ctx.enrichments_of(Posture))


def _has_class(name: str) -> Callable[[SceneContext], bool]:
    return lambda ctx: name in ctx.class_counts()


Check = tuple[str, Callable[[SceneContext], bool]]
"""What a word claims (for the rejection reason) and whether the scene bears it out."""


def _vocabulary() -> dict[str, Check]:
    """Word → check. Detector classes need their own class in view; category words any
    member of the category."""
    vocab: dict[str, Check] = {}

    def add(words: Iterable[str], check: Check) -> None:
        for form in _forms(words):
            vocab.setdefault(form, check)

    # A person may be known from re-ID alone (a face without a body box): person_count.
    add(PERSON_CLASSES | PERSON_WORDS, ("a person", lambda c: c.person_count > 0))
    for name in sorted(VEHICLE_CLASSES | ANIMAL_CLASSES):
        add([name], (f"a {name}", _has_class(name)))
    add(VEHICLE_WORDS, ("a vehicle", lambda c: bool(c.objects_in("vehicle"))))
    add(ANIMAL_WORDS, ("an animal", lambda c: bool(c.objects_in("animal"))))
    add(WEAPON_WORDS, ("a weapon", _armed))
    add(FIRE_WORDS, ("fire or smoke", _burning))
    for word in VIOLENCE_WORDS:
        vocab.setdefault(word, ("violence", _armed))
    for word in INJURY_WORDS:
        vocab.setdefault(word, ("an injury", lambda c: _fallen(c) or _armed(c)))
    return vocab


_VOCABULARY = _vocabulary()


def _ungrounded(text: str, ctx: SceneContext) -> str | None:
    """The first claim in ``text`` the scene does not bear out, as a reason, or None."""
    lowered = text.lower()
    danger = _DANGER_PHRASES.search(lowered)
    if danger and not _armed(ctx):
        return f"claims danger without a detected threat ({danger.group(0)!r})"
    for clause in _CLAUSE.split(lowered):
        words = _WORD.findall(clause)
        for i, word in enumerate(words):
            check = _VOCABULARY.get(word)
            if check is None:
                continue
            before = words[max(0, i - _NEGATION_WINDOW) : i]
            if any(w in _NEGATIONS or w.endswith("n't") for w in before):
                continue
            what, present = check
            if not present(ctx):
                return f"mentions {what} that was not detected ({word!r})"
    return None


def check_text(text: str, ctx: SceneContext, *, limit: int = SUMMARY_MAX) -> str | None:
    """Why ``text`` may not be shown for this scene, or None when it may."""
    if not text.strip():
        return "empty"
    if len(text) > limit:
        return f"longer than {limit} characters"
    # The worst first: a false claim says more about the model than a missing full stop.
    ungrounded = _ungrounded(text, ctx)
    if ungrounded is not None:
        return ungrounded
    if _MARKUP.search(text):
        return "not plain prose (markup, link or placeholder)"
    if not _TERMINAL.search(text.rstrip()):
        return "not a complete sentence"
    return None


def check_answer(answer: LLMAnswer, ctx: SceneContext) -> str | None:
    """Why the model's summary and reasoning may not be shown, or None when both may.

    Both are judged because both reach the user (the event's ``summary`` and ``reasoning``);
    the reason names the field that failed.
    """
    if answer.finish_reason == "length":
        return "cut off at max_tokens"
    if answer.shortened:
        name = answer.shortened[0]
        limit = SUMMARY_MAX if name == "summary" else REASONING_MAX
        return f"{name}: cut off at {limit} characters"
    for name, text, limit in (
        ("summary", answer.summary, SUMMARY_MAX),
        ("reasoning", answer.reasoning, REASONING_MAX),
    ):
        reason = check_text(text, ctx, limit=limit)
        if reason is not None:
            return f"{name}: {reason}"
    return None
