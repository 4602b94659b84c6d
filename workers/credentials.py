"""Passwords stay on the nodes: an attempt's spec names the database and MLflow without them.

The spec travels in the Ray job's runtime env, which anyone holding the cluster's token can read back
from the Jobs API, so the service strips the password from each URI it puts there
(``without_password``). A worker puts it back from its node's own environment (``with_node_password``):
the node's ``MMAE_DATABASE_URL`` / ``MLFLOW_TRACKING_URI`` when it names the same server, database and
user; otherwise the URI is used as sent, and the driver's own sources apply (libpq's ``PGPASSWORD`` or
``~/.pgpass``, MLflow's ``MLFLOW_TRACKING_PASSWORD``). A local head inherits the API process's
environment, so a single machine needs nothing more; deploy files give Ray nodes the same variables as
the API.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

DATABASE_URL_ENV = "MMAE_DATABASE_URL"
MLFLOW_URI_ENV = "MLFLOW_TRACKING_URI"


def without_password(uri: str) -> str:
    """``uri`` with the password of its user info removed (``scheme://user:secret@host/x`` ->
    ``scheme://user@host/x``); a URI without one is returned unchanged."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    user_info, _, host = parts.netloc.rpartition("@")
    user = user_info.partition(":")[0]
    return parts._replace(netloc=f"{user}@{host}" if user else host).geturl()


def with_node_password(uri: str, env_var: str) -> str:
    """``uri`` as a worker should connect with it: the node's ``env_var`` when that is the same URI plus a
    password, else ``uri`` unchanged."""
    node_uri = os.environ.get(env_var)
    if not node_uri or urlsplit(uri).password is not None:
        return uri
    return node_uri if without_password(node_uri) == uri else uri
