"""Repair issues raised from what the add-on reports in /health `issues`.

The issues are not fixable from Home Assistant (a model must be installed, or a GPU
made available, on the add-on's side); each is removed as soon as the add-on stops
reporting its cause. The add-on says how serious each one is: `cpu_only` (no GPU) is
information, the others are warnings.

An issue is created once and then only kept: re-reporting an unchanged issue on every
poll changes nothing in the registry, and a reload (a camera added, options changed)
keeps the issues, so one the user ignored stays ignored. They go with the entry when it
is removed or disabled.
"""

from __future__ import annotations

from typing import Final

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from .api import HealthIssue
from .const import DOMAIN, ISSUE_CODES
from .coordinator import VigilConfigEntry

# The add-on's severities as repair severities. Repairs have no information level (the
# lowest is warning): `info` is a warning whose text says it needs no repair.
SEVERITIES: Final = {
    "info": ir.IssueSeverity.WARNING,
    "warning": ir.IssueSeverity.WARNING,
    "error": ir.IssueSeverity.ERROR,
    "critical": ir.IssueSeverity.CRITICAL,
}


def issue_id(entry: ConfigEntry, issue: HealthIssue) -> str:
    """Return the repair issue id of one add-on issue."""
    return f"{entry.entry_id}_{issue.code}_{issue.subject}".rstrip("_")


def _entry_issue_ids(hass: HomeAssistant, entry: ConfigEntry) -> set[str]:
    """Return the ids of the repair issues raised for an entry (kept across restarts)."""
    prefix = f"{entry.entry_id}_"
    return {
        iid
        for domain, iid in ir.async_get(hass).issues
        if domain == DOMAIN and iid.startswith(prefix)
    }


@callback
def async_sync_issues(hass: HomeAssistant, entry: VigilConfigEntry) -> None:
    """Make the repair issues match the add-on's latest /health (kept while it is down)."""
    runtime = entry.runtime_data
    if not runtime.server.last_update_success or runtime.server.data is None:
        return
    current: set[str] = set()
    for issue in runtime.server.data.health.issues:
        iid = issue_id(entry, issue)
        current.add(iid)
        known = issue.code in ISSUE_CODES
        ir.async_create_issue(
            hass,
            DOMAIN,
            iid,
            is_fixable=False,
            severity=SEVERITIES.get(issue.severity, ir.IssueSeverity.WARNING),
            translation_key=issue.code if known else "addon_issue",
            translation_placeholders={
                "addon": entry.title,
                "subject": issue.subject or "-",
                "message": issue.message or issue.code,
            },
        )
    for stale in _entry_issue_ids(hass, entry) - current:
        ir.async_delete_issue(hass, DOMAIN, stale)
    runtime.issues = current


@callback
def async_clear_issues(hass: HomeAssistant, entry: ConfigEntry) -> None:
    """Remove every repair issue of an entry (it is being removed or disabled)."""
    for iid in _entry_issue_ids(hass, entry):
        ir.async_delete_issue(hass, DOMAIN, iid)
