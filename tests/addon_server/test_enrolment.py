"""Enrolment decodes at the analysis' working size: ten huge photos must not cost gigabytes."""

from __future__ import annotations

from typing import Any

import aiohttp

from addon_server.app import create_app
from addon_server.services import SERVICES_KEY
from tests.addon_server.conftest import CountingDetector, needs_shared_models


@needs_shared_models("faceres.onnx")
async def test_a_huge_photo_is_enrolled_at_the_working_size(
    aiohttp_client: Any,
    make_settings: Any,
    counting_detector: CountingDetector,
    zidane_4x_png: bytes,
    zidane_jpg: bytes,
) -> None:
    """A 5120x2880 upload reaches the face embedder at most ``analysis.max_side`` wide, and
    the person enrolled from it is still recognised in the ordinary-size photo."""
    settings = make_settings({"detector": {"warmup": False}, "analysis": {"max_side": 1280}})
    app = create_app(settings, detector=counting_detector)
    client = await aiohttp_client(app)
    reid = app[SERVICES_KEY].reid
    seen: list[tuple[int, ...]] = []
    enroll = reid.enroll

    async def spy(name: str, images: list[Any]) -> Any:  # records, then runs the real one
        seen.extend(image.shape for image in images)
        return await enroll(name, images)

    reid.enroll = spy  # type: ignore[method-assign]
    form = aiohttp.FormData()
    form.add_field("name", "Zinedine")
    form.add_field("image", zidane_4x_png, filename="z.png", content_type="image/png")
    resp = await client.post("/v1/people", data=form)
    assert resp.status == 201, await resp.text()
    assert seen == [(720, 1280, 3)]

    analyzed = await client.post(
        "/v1/analyze?camera=patio&llm=false",
        data=zidane_jpg,
        headers={"Content-Type": "image/jpeg"},
    )
    assert analyzed.status == 200, await analyzed.text()
    assert "Zinedine" in [face["person_name"] for face in (await analyzed.json())["reid"]]
