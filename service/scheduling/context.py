"""What every scheduler step works with, passed as one value: the Ray client, the settings and the
MLflow tracker (``SchedulerContext``). Built once per process from the app's state (the scheduler loop)
or per request (the routes that cancel), never at import."""

from __future__ import annotations

from dataclasses import dataclass

from service.cluster.ray_client import RayClient
from service.settings import Settings
from service.tracking.tracker import Tracker


@dataclass(frozen=True)
class SchedulerContext:
    """The scheduler's collaborators: ``ray`` runs attempts, ``settings`` bound them, ``tracker`` is woken
    when job states change (its MLflow sync, when it runs in this process, follows)."""

    ray: RayClient
    settings: Settings
    tracker: Tracker
