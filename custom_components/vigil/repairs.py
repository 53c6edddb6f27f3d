"""Repair issues raised from what the add-on reports in /health `issues`.

The issues are not fixable from Home Assistant (a model must be installed, or a GPU
made available, on the add-on's side); each is removed as soon as the add-on stops
reporting its cause, or when the config entry is unloaded.
"""

from __future__ import annotations

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from .api import HealthIssue
from .const import DOMAIN, ISSUE_CODES
from .coordinator import VigilConfigEntry


def issue_id(entry: VigilConfigEntry, issue: HealthIssue) -> str:
    """Return the repair issue id of one add-on issue."""
    return f"{entry.entry_id}_{issue.code}_{issue.subject}".rstrip("_")


@callback
def async_sync_issues(hass: HomeAssistant, entry: VigilConfigEntry) -> None:
    """Make the repair issues match the add-on's latest /health (kept while it is down)."""
    runtime = entry.runtime_data
    if not runtime.server.last_update_success or runtime.server.data is None:
        return
    current: set[str] = set()
    for issue in runtime.server.data.issues:
        iid = issue_id(entry, issue)
        current.add(iid)
        known = issue.code in ISSUE_CODES
        ir.async_create_issue(
            hass,
            DOMAIN,
            iid,
            is_fixable=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key=issue.code if known else "addon_issue",
            translation_placeholders={
                "addon": entry.title,
                "subject": issue.subject or "-",
                "message": issue.message or issue.code,
            },
        )
    for stale in runtime.issues - current:
        ir.async_delete_issue(hass, DOMAIN, stale)
    runtime.issues = current


@callback
def async_clear_issues(hass: HomeAssistant, entry: VigilConfigEntry) -> None:
    """Remove every repair issue of an entry."""
    for iid in entry.runtime_data.issues:
        ir.async_delete_issue(hass, DOMAIN, iid)
    entry.runtime_data.issues = set()
