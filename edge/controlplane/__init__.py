"""The cluster purge control plane: one ``POST /purge`` reaches every edge, and a durable log says who applied it.

Until the router hosts it (:func:`register_control_plane` on its admin app), it runs on its own:
``python -m edge.controlplane --listen 127.0.0.1:8090 --edges inventory.toml --state-dir var/cp``.

- :mod:`edge.controlplane.models` — the request body and :class:`ControlPlaneSettings`;
- :mod:`edge.controlplane.log` — the SQLite purge log, retention, per-edge delivery status;
- :mod:`edge.controlplane.service` — fan-out, ordered per-edge delivery, background catch-up;
- :mod:`edge.controlplane.app` — the aiohttp handlers and the app factory.
"""

from edge.controlplane.app import CONTROL_PLANE_KEY, create_control_plane_app, register_control_plane
from edge.controlplane.log import ClusterPurge, ClusterPurgeLog, Delivery, EdgeStatus, LogLockedError, LogPage
from edge.controlplane.models import ControlPlaneSettings, PurgeRequest, StandaloneSettings, load_standalone_settings
from edge.controlplane.service import ControlPlane, ControlPlaneCounters

__all__ = [
    "CONTROL_PLANE_KEY",
    "ClusterPurge",
    "ClusterPurgeLog",
    "ControlPlane",
    "ControlPlaneCounters",
    "ControlPlaneSettings",
    "Delivery",
    "EdgeStatus",
    "LogLockedError",
    "LogPage",
    "PurgeRequest",
    "StandaloneSettings",
    "create_control_plane_app",
    "load_standalone_settings",
    "register_control_plane",
]
