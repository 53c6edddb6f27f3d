"""Constants for the Vigil integration."""

import logging
from datetime import timedelta
from typing import Final

DOMAIN: Final = "vigil"
LOGGER = logging.getLogger(__package__)

DEFAULT_PORT: Final = 8095
DEFAULT_REQUEST_TIMEOUT: Final = 60
HEALTH_INTERVAL: Final = timedelta(seconds=30)
HEALTH_TIMEOUT: Final = 10

# Config entry data / options
CONF_REQUEST_TIMEOUT: Final = "request_timeout"

# Home state (options): entities whose states are sent with every analysis as evidence.
CONF_ALARM_ENTITY: Final = "alarm_entity"
CONF_PRESENCE_ENTITIES: Final = "presence_entities"
CONF_DOOR_ENTITIES: Final = "door_entities"
CONF_LOCK_ENTITIES: Final = "lock_entities"
CONF_GUESTS_ENTITY: Final = "guests_entity"
HOME_STATE_OPTIONS: Final = (
    CONF_ALARM_ENTITY,
    CONF_PRESENCE_ENTITIES,
    CONF_DOOR_ENTITIES,
    CONF_LOCK_ENTITIES,
    CONF_GUESTS_ENTITY,
)

# Camera subentries
SUBENTRY_CAMERA: Final = "camera"
CONF_CAMERA_ENTITY: Final = "camera_entity"
CONF_TRIGGER_ENTITIES: Final = "trigger_entities"
CONF_MIN_INTERVAL: Final = "min_interval"
CONF_LLM: Final = "llm"
CONF_NOTIFY_LEVEL: Final = "notify_level"

DEFAULT_MIN_INTERVAL: Final = 10
DEFAULT_NOTIFY_LEVEL: Final = "high"

# Risk levels, lowest first; the add-on's bands.
RISK_LEVELS: Final = ("low", "medium", "high", "critical")

# Trigger entities: binary sensors of these device classes.
TRIGGER_DEVICE_CLASSES: Final = ("motion", "occupancy")

# Bus event fired after every analysis.
EVENT_RISK: Final = "vigil_risk_event"

# Repair issue codes the add-on reports in /health.
ISSUE_CODES: Final = (
    "service_fallback",
    "model_not_installed",
    "llm_unavailable",
    "llm_unresponsive",
    "storage_full",
    "storage_unavailable",
    "cpu_only",
    "zoo_model_failed",
    "restart_required",
    "triton_unavailable",
    "stage_unavailable",
    "registry_unreachable",
)

ATTR_CAMERA: Final = "camera"
ATTR_LEVEL: Final = "level"
ATTR_SCORE: Final = "score"
ATTR_SUMMARY: Final = "summary"
ATTR_FACTORS: Final = "factors"
ATTR_EVENT_ID: Final = "event_id"
ATTR_NOTIFY: Final = "notify"
ATTR_PHASE: Final = "phase"
ATTR_REVISION: Final = "revision"

# Enrichments of an event, flat for automations (event entity, bus event, analyze response);
# each is absent when no model found it.
ATTR_THREAT: Final = "threat"
ATTR_THREAT_CONFIDENCE: Final = "threat_confidence"
ATTR_POSTURES: Final = "postures"
ATTR_PET: Final = "pet"
ATTR_PET_HOUSEHOLD: Final = "pet_household"
ATTR_VEHICLE_TYPE: Final = "vehicle_type"
ATTR_PLATE: Final = "plate"
ATTR_ENRICHMENTS_SKIPPED: Final = "enrichments_skipped"
