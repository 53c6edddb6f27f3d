"""The zoo section applied to the registry's rows: one function for the add-on's zoo and the
Ray Serve Zoo replicas (``addon_server.zoo.registry.configured``)."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from addon_server.config import parse
from addon_server.zoo.registry import Registry, configured


def test_sources_ttl_and_crops_are_applied_and_a_models_own_option_wins() -> None:
    rows = Registry()
    zoo = parse(
        {"zoo": {"idle_ttl_s": 30, "max_crops": 3, "sources": {"emotion": "models:/e@prod"}}},
        environ={},
    ).zoo
    own = replace(rows["pose"], options=MappingProxyType({"max_crops": 1}))
    specs = {s.name: s for s in configured([rows["emotion"], own], zoo)}
    assert specs["emotion"].files == ("models:/e@prod",)
    assert specs["pose"].files == rows["pose"].files  # no source: its own files
    assert {s.idle_ttl_s for s in specs.values()} == {30}
    assert specs["emotion"].options["max_crops"] == 3
    assert specs["pose"].options["max_crops"] == 1  # the row's own option wins

    (default,) = configured([rows["emotion"]], parse({}, environ={}).zoo)
    assert default.idle_ttl_s == rows["emotion"].idle_ttl_s  # no TTL set: the row's
    assert default.files == rows["emotion"].files
