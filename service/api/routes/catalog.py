"""What a client needs to build requests: example bodies, the config JSON schema, UI settings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mmae.config import TrainConfig
from service.api.deps import SettingsDep, require_token
from service.examples import load_examples
from service.schemas import Example, UiSettings

router = APIRouter(prefix="/api", tags=["catalog"], dependencies=[require_token])


@router.get("/examples")
def examples() -> list[Example]:
    return [Example(name=name, kind=kind, body=body) for name, kind, body in load_examples()]


@router.get("/config/schema")
def config_schema() -> dict[str, Any]:
    return TrainConfig.model_json_schema()


@router.get("/settings/ui")
def ui_settings(settings: SettingsDep) -> UiSettings:
    return UiSettings(collapse_fraction=settings.collapse_fraction, mlflow_ui_url=settings.mlflow_ui_url)
