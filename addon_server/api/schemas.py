"""The HTTP contract: JSON Schemas of every body the add-on sends and accepts, as data.

This module is the one owner of the shapes. ``/openapi.json`` publishes them under
``components/schemas`` and every route's responses point at them (``api/routes.py``); the
add-on's tests validate real responses of the real app against them; the integration's tests
validate their recorded fixtures against the committed copy of the document
(``tests/components/vigil/fixtures/openapi.json``, written by ``scripts/record_fixtures.py``).

Objects whose shape the add-on controls are closed (``additionalProperties: false``), so a
field added or renamed in a handler without a change here fails the contract tests instead of
reaching Home Assistant unannounced. Enumerations are built from the enums that own them
(:class:`RiskLevel`, :class:`LLMStatus`, ...), never restated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from addon_server.api.images import IMAGE_FIELD
from addon_server.config import CAMERA_ID, CAMERA_ID_RULE, DEVICE_ID, SERVICES
from addon_server.imaging import CONTENT_TYPES
from addon_server.reasoning.calibration import Verdict
from addon_server.reasoning.context import ALARM_STATES
from addon_server.reasoning.gate import GateReason
from addon_server.reasoning.levels import SCORE_MAX, SCORE_MIN, RiskLevel
from addon_server.reasoning.reasoner import LLMMode
from addon_server.reasoning.risk import SummarySource
from addon_server.reasoning.supervisor import ServerState
from addon_server.refinement import EventLLMStatus, Phase

JsonSchema = dict[str, Any]

ZONE_MAX_LENGTH: Final = 64
FEEDBACK_NOTE_MAX_LENGTH: Final = 500
WITHDRAW_VERDICT: Final = "none"
"""The request verdict that withdraws the feedback (as ``DELETE`` does)."""
PERSON_NAME_MAX_LENGTH: Final = 64
ID_PATTERN: Final = "^[0-9a-f]{24}$"
"""``store.new_id``: 12 hex digits of milliseconds, then 12 random hex digits."""

ISSUE_CODES: Final = (
    "service_fallback",
    "model_not_installed",
    "llm_unavailable",
    "llm_unresponsive",
    "storage_full",
    "storage_unavailable",
    "cpu_only",
    "triton_unavailable",
    "zoo_model_failed",
    "restart_required",
    "stage_unavailable",
    "registry_unreachable",
)
"""Codes of /health ``issues``: Home Assistant has a repair text for each (its ``ISSUE_CODES``)."""
ISSUE_SEVERITIES: Final = ("warning", "info")


def ref(name: str) -> JsonSchema:
    """A reference to one of :data:`SCHEMAS` as it appears in the OpenAPI document."""
    if name not in SCHEMAS:
        raise KeyError(f"no schema {name!r} in the contract")
    return {"$ref": f"#/components/schemas/{name}"}


def form(
    required: Mapping[str, JsonSchema], optional: Mapping[str, JsonSchema] | None = None
) -> JsonSchema:
    """A multipart form's fields; parts with other names are read and ignored, so allowed."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


def closed(
    required: Mapping[str, JsonSchema], optional: Mapping[str, JsonSchema] | None = None
) -> JsonSchema:
    """An object with exactly these properties (``required`` always present), nothing else."""
    return form(required, optional) | {"additionalProperties": False}


def nullable(schema: JsonSchema) -> JsonSchema:
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: JsonSchema) -> JsonSchema:
    return {"type": "array", "items": items}


def enum(values: Any) -> JsonSchema:
    return {"type": "string", "enum": [str(v) for v in values]}


STRING: Final[JsonSchema] = {"type": "string"}
TEXT: Final[JsonSchema] = {"type": "string", "minLength": 1}
BOOLEAN: Final[JsonSchema] = {"type": "boolean"}
COUNT: Final[JsonSchema] = {"type": "integer", "minimum": 0}
BYTES: Final[JsonSchema] = {"type": "integer", "minimum": 0}
DURATION: Final[JsonSchema] = {"type": "number", "minimum": 0}
PIXELS: Final[JsonSchema] = {"type": "integer", "minimum": 1}
SCORE: Final[JsonSchema] = {"type": "integer", "minimum": SCORE_MIN, "maximum": SCORE_MAX}
PROBABILITY: Final[JsonSchema] = {"type": "number", "minimum": 0, "maximum": 1}
SNAKE_CASE: Final[JsonSchema] = {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}
BINARY: Final[JsonSchema] = {"type": "string", "format": "binary"}

SCHEMAS: dict[str, JsonSchema] = {}
"""Every named schema, in the order the OpenAPI document lists them."""

SCHEMAS["Error"] = closed(
    {
        "error": closed(
            {
                "code": {**SNAKE_CASE, "description": "Stable, machine-readable reason"},
                "message": {**TEXT, "description": "What went wrong, for a person"},
            }
        )
    }
)
SCHEMAS["RiskLevel"] = {
    **enum(RiskLevel),
    "description": "Lowest first; derived from risk_score by fixed bands",
}
SCHEMAS["CameraId"] = {
    "type": "string",
    "pattern": CAMERA_ID.pattern,
    "description": f"A camera id: {CAMERA_ID_RULE}",
}
SCHEMAS["Id"] = {
    "type": "string",
    "pattern": ID_PATTERN,
    "description": "Id of a stored event or enrolled person",
}
SCHEMAS["BoundingBox"] = closed({"x": COUNT, "y": COUNT, "width": COUNT, "height": COUNT}) | {
    "description": "Pixels of the uploaded image, top-left origin"
}
SCHEMAS["ImageSize"] = closed({"width": PIXELS, "height": PIXELS})
SCHEMAS["Detection"] = closed(
    {"class": TEXT, "confidence": PROBABILITY, "bbox": ref("BoundingBox")}
)
SCHEMAS["DetectResult"] = closed(
    {
        "detections": array(ref("Detection")),
        "image": ref("ImageSize"),
        "inference_time_ms": DURATION,
        "model": TEXT,
    },
    {
        "degraded": BOOLEAN | {"description": "Present (true) when a stand-in model answered"},
        "missing_stages": array(enum(SERVICES))
        | {"description": "The stage that did not answer (BACKEND=ray, its host gone)"},
    },
)
SCHEMAS["Factor"] = closed(
    {
        "name": TEXT,
        "points": {"type": "integer", "description": "Signed contribution to the score"},
        "detail": STRING,
    }
)
SCHEMAS["FaceMatch"] = closed(
    {
        "person_id": nullable({"type": "string"}),
        "person_name": nullable({"type": "string"}),
        "similarity": {"type": "number", "minimum": -1, "maximum": 1},
        "bbox": ref("BoundingBox"),
        "seen": array(closed({"camera": ref("CameraId"), "seconds_ago": DURATION})),
    }
)
SCHEMAS["BodyMatch"] = closed(
    {
        "model": TEXT,
        "object_index": nullable(COUNT),
        "bbox": nullable(ref("BoundingBox")),
        "similarity": {"type": "number", "minimum": -1, "maximum": 1},
        "calibrated": BOOLEAN,
        "seen": array(
            closed(
                {
                    "camera": ref("CameraId"),
                    "seconds_ago": DURATION,
                    "similarity": {"type": "number", "minimum": -1, "maximum": 1},
                }
            )
        ),
    }
) | {
    "description": "A person's body appearance vector (zoo person_reid) and the cameras where "
    "the same appearance was seen; calibrated: the model's threshold was measured to keep "
    "false matches at or below 1 %"
}
SCHEMAS["EnrichmentSkip"] = closed(
    {
        "reason": enum(("zoo_busy", "not_installed", "load_failed", "error", "stage_unavailable")),
        "message": STRING,
    }
)
SCHEMAS["Enrichments"] = closed(
    {
        "results": {
            "type": "object",
            "propertyNames": SNAKE_CASE,
            "additionalProperties": {"type": "object"},
            "description": "Each model's result by model name (pose, threat_detector, ...)",
        },
        "skipped": {
            "type": "object",
            "propertyNames": SNAKE_CASE,
            "additionalProperties": ref("EnrichmentSkip"),
            "description": "Triggered models that gave no result, and why",
        },
    }
)
SCHEMAS["Feedback"] = closed(
    {
        "verdict": enum(Verdict),
        "note": nullable({"type": "string", "maxLength": FEEDBACK_NOTE_MAX_LENGTH}),
        "ts": {"type": "number", "description": "When it was given, Unix seconds"},
    }
) | {"description": "The user's verdict on the event; it calibrates the camera's next events"}
SCHEMAS["FeedbackRequest"] = closed(
    {"verdict": enum((*Verdict, WITHDRAW_VERDICT))},
    {"note": {"type": "string", "maxLength": FEEDBACK_NOTE_MAX_LENGTH}},
) | {"description": f"{WITHDRAW_VERDICT!r} withdraws the event's feedback"}
_NAMES = array(TEXT)
SCHEMAS["HomeState"] = closed(
    {},
    {
        "alarm": enum(ALARM_STATES) | {"description": "The alarm panel's state"},
        "people_home": COUNT | {"description": "Persons home (presence entities)"},
        "household_present": _NAMES | {"description": "Who of the household is home"},
        "doors_open": _NAMES | {"description": "Doors or openings that are open"},
        "unlocked": _NAMES | {"description": "Locks that are unlocked"},
        "guests_expected": BOOLEAN | {"description": "The user's 'guests expected' toggle"},
    },
) | {
    "description": "What the house says while the camera looks (all keys optional); the rules "
    "turn it into factors (alarm_armed_away, nobody_home, door_unlocked, ...)"
}
SCHEMAS["EventCounts"] = closed({"person": COUNT, "vehicle": COUNT, "animal": COUNT})
SCHEMAS["LlmDecision"] = closed(
    {"asked": BOOLEAN, "reason": enum(GateReason), "detail": STRING}
) | {"description": "Whether the LLM was asked to refine the event, and why (or why not)"}
SCHEMAS["EventRevision"] = closed(
    {
        "revision": {"type": "integer", "minimum": 1},
        "phase": enum(Phase),
        "updated_at": nullable({"type": "string", "format": "date-time"}),
        "risk_score": SCORE,
        "risk_level": ref("RiskLevel"),
        "factors": array(ref("Factor")),
        "summary": STRING,
        "llm_status": enum(EventLLMStatus),
    }
) | {"description": "One stored verdict on the event (1: the rules', 2: refined by the LLM)"}
SCHEMAS["Event"] = closed(
    {
        "id": ref("Id"),
        "camera": ref("CameraId"),
        "zone": nullable({"type": "string", "maxLength": ZONE_MAX_LENGTH}),
        "timestamp": {"type": "string", "format": "date-time"},
        "ts": {"type": "number", "description": "timestamp as Unix seconds"},
        "risk_score": SCORE,
        "risk_level": ref("RiskLevel"),
        "summary": STRING,
        "reasoning": STRING,
        "summary_source": enum(SummarySource),
        "summary_rejected": nullable(STRING)
        | {"description": "Why the LLM's text was not used (null when it was, or none came)"},
        "factors": array(ref("Factor")),
        "llm_status": enum(EventLLMStatus)
        | {"description": "pending: the LLM will refine this event (a revision 2 follows)"},
        "llm_decision": ref("LlmDecision"),
        "revision": {"type": "integer", "minimum": 1},
        "phase": enum(Phase),
        "updated_at": {"type": "string", "format": "date-time"},
        "rule_score": SCORE,
        "llm_score": nullable(SCORE),
        "llm_error": nullable(STRING),
        "detections": array(ref("Detection")),
        "counts": ref("EventCounts"),
        "enrichments": ref("Enrichments"),
        "reid": array(ref("FaceMatch")),
        "notify": BOOLEAN,
        "image": ref("ImageSize"),
        "model": TEXT,
        "snapshot_url": {"type": "string", "format": "uri-reference"},
        "timings_ms": {
            "type": "object",
            "propertyNames": SNAKE_CASE,
            "additionalProperties": DURATION,
            "description": "Milliseconds per stage (decode, detect, reid, reason, ...)",
        },
    },
    {
        "body_reid": array(ref("BodyMatch")),
        "feedback": ref("Feedback"),
        "degraded": BOOLEAN
        | {"description": "A model stage did not answer (BACKEND=ray, a host gone)"},
        "missing_stages": array(enum(SERVICES))
        | {"description": "The stages this analysis went without; empty when it is complete"},
        "revisions": array(ref("EventRevision"))
        | {"description": "The stored history, oldest first (GET /v1/events/{id} only)"},
        "home_state": nullable(ref("HomeState"))
        | {"description": "The analysis request's home state, as the rules read it"},
    },
)
SCHEMAS["EventList"] = closed({"events": array(ref("Event"))})
SCHEMAS["TritonStatistics"] = closed(
    {
        "inference_count": COUNT,
        "execution_count": COUNT,
        "success_count": COUNT,
        "failure_count": COUNT,
        "queue_seconds": DURATION,
        "compute_seconds": DURATION,
    }
)
SCHEMAS["TritonHealth"] = closed(
    {
        "url": TEXT,
        "protocol": enum(("grpc", "http")),
        "model": TEXT,
        "live": BOOLEAN,
        "ready": BOOLEAN,
        "model_ready": BOOLEAN,
        "versions": array(TEXT),
        "platform": STRING,
        "max_batch_size": COUNT,
        "statistics": ref("TritonStatistics"),
        "retries": COUNT,
        "failures": COUNT,
        "error": nullable(STRING),
    }
)
SCHEMAS["RegistrySource"] = closed(
    {
        "uri": TEXT | {"description": "The models:/<name>@<alias> (or /<version>) it resolves"},
        "version": TEXT | {"description": "The registry version served (or last loaded)"},
        "path": TEXT,
        "cached": BOOLEAN | {"description": "Nothing was downloaded for this load"},
        "note": nullable(STRING)
        | {"description": "Set when the registry was unreachable and the cache answered"},
    }
)
_MODEL_STATES = ("not_installed", "unloaded", "loading", "loaded", "unloading", "failed")
_PRIORITIES = ("low", "medium", "high", "critical")
_OPTIONAL_BYTES = nullable(BYTES)
SCHEMAS["Model"] = closed(
    {
        "name": TEXT,
        "kind": enum(("detector", "face_embedder", "llm", "zoo")),
        "backend": TEXT,
        "device": TEXT,
        "state": enum(_MODEL_STATES),
        "loaded": BOOLEAN,
        "installed": BOOLEAN,
        "vram_bytes": BYTES | {"description": "Measured bytes when loaded on a GPU, else 0"},
        "measured_bytes": _OPTIONAL_BYTES
        | {"description": "Measured after load and one warm-up inference (null before)"},
        "estimated_bytes": _OPTIONAL_BYTES,
        "accounted_bytes": BYTES | {"description": "What the device budget counts for it now"},
        "priority": nullable(enum(_PRIORITIES)),
        "category": nullable(STRING),
        "refcount": COUNT | {"description": "Calls holding it now; never evicted while > 0"},
        "pinned": BOOLEAN,
        "unloadable": BOOLEAN,
        "unload_pending": BOOLEAN,
        "error": nullable(STRING),
    },
    {"triton": ref("TritonHealth"), "registry": ref("RegistrySource")},
)
SCHEMAS["DetectorReload"] = closed(
    {
        "changed": BOOLEAN | {"description": "Another version is served than before the call"},
        "previous": TEXT | {"description": "The detector's name before the call"},
        "model": ref("Model"),
    }
)
SCHEMAS["ZooModel"] = closed(
    {
        "name": TEXT,
        "category": TEXT,
        "priority": enum(_PRIORITIES),
        "device": TEXT,
        "state": enum(_MODEL_STATES),
        "estimated_bytes": BYTES,
        "measured_bytes": _OPTIONAL_BYTES,
        "accounted_bytes": BYTES,
        "peak_bytes": _OPTIONAL_BYTES,
        "refcount": COUNT,
        "pinned": BOOLEAN,
        "unload_pending": BOOLEAN,
        "idle_ttl_s": DURATION,
        "idle_s": nullable(DURATION),
        "load_seconds": nullable(DURATION),
        "loads": COUNT,
        "evictions": COUNT,
        "triggers": array(TEXT),
        "description": STRING,
        "error": nullable(STRING),
    },
    {"registry": ref("RegistrySource")},
)
_MB = {"type": "number", "minimum": 0}
SCHEMAS["ZooDevice"] = closed(
    {
        "device": TEXT,
        "vram_budget_mb": _MB,
        "vram_used_mb": _MB | {"description": "Accounted: the zoo's models and co-tenants"},
        "vram_available_mb": _MB,
        "vram_utilization_percent": {"type": "number", "minimum": 0},
        "zoo_used_mb": _MB,
        "cotenants_mb": _MB | {"description": "Detector, face embedder, LLM on this device"},
        "loaded_models": array(ref("ZooModel")),
        "registered_models": array(TEXT),
        "pending_loads": array(TEXT),
        "overruns": COUNT,
    }
)
SCHEMAS["ZooStatus"] = closed({"enabled": BOOLEAN, "devices": array(ref("ZooDevice"))})
SCHEMAS["ModelResult"] = {
    "type": "object",
    "required": ["model", "image", "inference_time_ms"],
    "properties": {"model": TEXT, "image": ref("ImageSize"), "inference_time_ms": DURATION},
    "description": "The model's own result fields beside these (see its family's docs)",
}
SCHEMAS["EnrichResult"] = closed(
    {
        "detections": array(ref("Detection")),
        "image": ref("ImageSize"),
        "enrichments": ref("Enrichments"),
        "timings_ms": {
            "type": "object",
            "propertyNames": SNAKE_CASE,
            "additionalProperties": DURATION,
        },
    }
)
SCHEMAS["ModelList"] = closed({"models": array(ref("Model"))})
SCHEMAS["Device"] = closed(
    {
        "id": TEXT,
        "kind": enum(("cpu", "cuda")),
        "name": STRING,
        "present": BOOLEAN,
        "budget_bytes": BYTES,
        "used_bytes": BYTES,
        "total_bytes": BYTES,
        "services": array(enum(SERVICES)),
    }
)
SCHEMAS["Placement"] = closed(
    {
        "device": TEXT,
        "requested_device": TEXT,
        "fallback": BOOLEAN,
        "reason": nullable(STRING),
    }
)
SCHEMAS["DeviceEntry"] = closed(
    {},
    {
        "budget_gb": {"type": "number", "minimum": 0, "description": "Absent: the default"},
        "services": array(enum(SERVICES)),
    },
)
SCHEMAS["DeviceAssignment"] = {
    "type": "object",
    "propertyNames": {"pattern": DEVICE_ID.pattern},
    "additionalProperties": ref("DeviceEntry"),
    "description": "Per device id: the entries of the config's devices: section",
}
SCHEMAS["GpuAssignmentRequest"] = closed({"devices": ref("DeviceAssignment")})
SCHEMAS["AssignedDevice"] = closed(
    {k: v for k, v in SCHEMAS["Device"]["properties"].items() if k != "used_bytes"}
)
SCHEMAS["GpuAssignment"] = closed(
    {
        "devices": array(ref("AssignedDevice")) | {"description": "As the add-on runs now"},
        "assignment": ref("DeviceAssignment"),
        "pending": nullable(ref("DeviceAssignment"))
        | {"description": "Written, applies at the next start (null: none waiting)"},
        "restart_required": BOOLEAN,
        "host_gpus": array(closed({"id": TEXT, "name": STRING, "total_bytes": BYTES})),
        "override_path": TEXT,
        "reference_path": TEXT,
        "devices_path": TEXT,
    }
)
_OPTIONAL_SECONDS = nullable(DURATION)
SCHEMAS["LlmHealth"] = closed(
    {
        "mode": enum(LLMMode),
        "state": enum((*ServerState, LLMMode.DISABLED)),
        "ready": BOOLEAN,
    },
    {
        "url": nullable(STRING),
        "model": nullable(STRING),
        "device": nullable(STRING),
        "pid": nullable({"type": "integer"}),
        "restarts": COUNT,
        "hangs": COUNT,
        "unresponsive": BOOLEAN,
        "last_error": nullable(STRING),
        "last_exit_code": nullable({"type": "integer"}),
        "load_seconds": _OPTIONAL_SECONDS,
        "restart_to_ready_seconds": _OPTIONAL_SECONDS,
        "ready_since": nullable({"type": "number"}),
        "response_format": STRING,
    },
)
SCHEMAS["BatcherHealth"] = closed(
    {
        "queue_depth": COUNT,
        "requests": COUNT,
        "batches": COUNT,
        "rejected": COUNT,
        "max_batch_size": PIXELS,
        "autotune_ms_per_image": nullable(
            {
                "type": "object",
                "propertyNames": {"pattern": "^[1-9][0-9]*$"},
                "additionalProperties": DURATION,
                "description": "Measured milliseconds per image by batch size",
            }
        ),
    }
)
SCHEMAS["HealthIssue"] = closed(
    {"code": enum(ISSUE_CODES), "severity": enum(ISSUE_SEVERITIES), "message": STRING},
    {
        "service": enum(SERVICES),
        "model": TEXT,
        "path": {**TEXT, "description": "The data dir, for storage issues"},
    },
)
SCHEMAS["PrivacyHealth"] = closed(
    {
        "blur_unknown_faces": {
            **BOOLEAN,
            "description": "Faces of people not enrolled are blurred in stored snapshots",
        },
        "local_only": {
            **BOOLEAN,
            "description": "The LLM is only reached on loopback or the private LAN",
        },
    }
)
SCHEMAS["Health"] = closed(
    {
        "status": enum(("healthy", "degraded", "unhealthy")),
        "version": TEXT,
        "instance_id": TEXT,
        "uptime_seconds": DURATION,
        "cuda_available": BOOLEAN,
        "model_loaded": BOOLEAN,
        "devices": array(ref("Device")),
        "services": {
            "type": "object",
            "propertyNames": enum(SERVICES),
            "additionalProperties": ref("Placement"),
        },
        "models": array(ref("Model")),
        "llm": ref("LlmHealth"),
        "privacy": ref("PrivacyHealth"),
        "batcher": nullable(ref("BatcherHealth")),
        "issues": array(ref("HealthIssue")),
    }
)
SCHEMAS["Person"] = closed(
    {
        "id": ref("Id"),
        "name": {"type": "string", "minLength": 1, "maxLength": PERSON_NAME_MAX_LENGTH},
        "embeddings": COUNT,
        "created": {"type": "number", "description": "Unix seconds"},
    }
)
SCHEMAS["PersonList"] = closed({"people": array(ref("Person"))})
SCHEMAS["PersonDeleted"] = closed({"deleted": STRING})
SCHEMAS["OpenApiDocument"] = {
    "type": "object",
    "required": ["openapi", "info", "paths", "components"],
}


def image_body(fields: Mapping[str, JsonSchema] | None = None) -> dict[str, Any]:
    """A request body holding one image: raw (its type in Content-Type) or a multipart form
    with an ``image`` file and, optionally, text ``fields``."""
    raw = {media: {"schema": BINARY} for media in (*CONTENT_TYPES, "application/octet-stream")}
    multipart = {"schema": form({IMAGE_FIELD: BINARY}, fields)}
    return {"required": True, "content": {**raw, "multipart/form-data": multipart}}


def components() -> JsonSchema:
    """The ``components/schemas`` section of the OpenAPI document."""
    return dict(SCHEMAS)
