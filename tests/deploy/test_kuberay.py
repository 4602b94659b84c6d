"""deploy/kuberay: a storage-neutral RayCluster and two overlays, shared-volume/ (ReadWriteMany PVC at /data)
and object-storage/ (S3 credentials from a Secret, no volume), built by kustomize (``kubectl kustomize``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

KUBERAY = Path(__file__).resolve().parents[2] / "deploy" / "kuberay"


def build(overlay: str) -> dict[str, dict[str, Any]]:
    """The overlay's manifests by kind, as ``kubectl apply -k deploy/kuberay/<overlay>`` would send them."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    result = subprocess.run(
        ["kubectl", "kustomize", str(KUBERAY / overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return {doc["kind"]: doc for doc in yaml.safe_load_all(result.stdout)}


def pod_specs(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = cluster["spec"]
    return {
        "head": spec["headGroupSpec"]["template"]["spec"],
        **{group["groupName"]: group["template"]["spec"] for group in spec["workerGroupSpecs"]},
    }


def env_values(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry for container in pod["containers"] for entry in container.get("env", [])]


def assert_env_is_the_database_secret_only(name: str, pod: dict[str, Any]) -> None:
    """No value inline (secrets come from Secrets only); the database URL from its Secret, since attempt
    specs name the database without its password and each worker takes it from its own environment."""
    database = {"name": "MMAE_DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "mmae-database", "key": "url"}}}
    assert env_values(pod) == [database], name


def test_the_cluster_has_a_gpu_worker_group_token_auth_and_a_cluster_internal_head() -> None:
    (cluster,) = yaml.safe_load_all((KUBERAY / "base" / "raycluster.yaml").read_text())
    assert cluster["spec"]["authOptions"] == {"mode": "token", "secretName": "mmae-ray-auth"}
    head = cluster["spec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and head["rayStartParams"]["num-gpus"] == "0"
    (gpu,) = cluster["spec"]["workerGroupSpecs"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1 and gpu["rayStartParams"]["num-gpus"] == "1"
    for name, pod in pod_specs(cluster).items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert all(c["securityContext"]["allowPrivilegeEscalation"] is False for c in pod["containers"]), name
        assert_env_is_the_database_secret_only(name, pod)


def test_the_shared_volume_overlay_mounts_one_rwx_claim_at_data_in_every_pod() -> None:
    manifests = build("shared-volume")
    assert manifests["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    claim = manifests["PersistentVolumeClaim"]["metadata"]["name"]
    for name, pod in pod_specs(manifests["RayCluster"]).items():
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if v.get("persistentVolumeClaim")
        }
        assert claims == {"data": claim}, name
        (container,) = pod["containers"]
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"], name
        assert "envFrom" not in container, name


def test_the_object_storage_overlay_has_no_volume_claim_and_takes_s3_credentials_from_a_secret() -> None:
    manifests = build("object-storage")
    assert set(manifests) == {"RayCluster"}  # no PersistentVolumeClaim: runs on a cluster without RWX storage
    for name, pod in pod_specs(manifests["RayCluster"]).items():
        assert not any("persistentVolumeClaim" in volume for volume in pod.get("volumes", [])), name
        (container,) = pod["containers"]
        assert all(mount["mountPath"] != "/data" for mount in container.get("volumeMounts", [])), name
        assert container["envFrom"] == [{"secretRef": {"name": "mmae-s3"}}], name
        assert_env_is_the_database_secret_only(name, pod)
