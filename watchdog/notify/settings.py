"""The `notify:` section of the config (placeholder owned by the notify package; extended there)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class NotifySettings(BaseModel):
    """Where alerts go. With no chat channel configured, alerts are printed to the terminal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    console: bool = True
