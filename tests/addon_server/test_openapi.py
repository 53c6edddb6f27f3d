"""/openapi.json is a valid OpenAPI 3.1 document that describes every registered route."""

from __future__ import annotations

from openapi_spec_validator import validate

from addon_server.api import ALL_ROUTES
from addon_server.api.openapi import build_spec
from addon_server.app import create_app


async def test_openapi_describes_every_route(
    aiohttp_client, make_settings, counting_detector
) -> None:
    settings = make_settings({"detector": {"warmup": False}})
    app = create_app(settings, detector=counting_detector)
    client = await aiohttp_client(app)
    spec = await (await client.get("/openapi.json")).json()
    validate(spec)
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    registered = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
    }
    assert registered == documented
    assert {(r.method, r.path) for r in ALL_ROUTES} == documented
    assert spec["paths"]["/health"]["get"]["security"] == []
    detect = spec["paths"]["/v1/detect"]["post"]
    assert {"200", "400", "401", "413", "415", "429"} <= set(detect["responses"])
    assert "image/jpeg" in detect["requestBody"]["content"]


def test_every_answer_and_parameter_is_typed() -> None:
    """No operation publishes a bare ``object``: each JSON answer names a contract schema.

    (Events, health and models were documented as ``{"type": "object"}``, so clients and
    schemathesis could not tell a right answer from a wrong one.)
    """
    spec = build_spec(ALL_ROUTES)
    components = spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                for media, content in response["content"].items():
                    where = f"{method.upper()} {path} {status} {media}"
                    if media == "application/json":
                        ref = content["schema"].get("$ref", "")
                        assert ref.startswith("#/components/schemas/"), where
                        assert ref.rsplit("/", 1)[1] in components, where
                    else:
                        assert content["schema"]["type"] == "string", where
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                assert {"type", "$ref", "anyOf"} & set(schema), f"{method} {path} {parameter}"
