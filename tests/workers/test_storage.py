"""Run storage: checkpoints published to and restored from a local path or S3 (a real S3 emulator)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow.fs
import pytest
import torch

from mmae.callbacks import Callback
from mmae.checkpoint import last_checkpoint, load_checkpoint, save_checkpoint
from mmae.config import TrainConfig
from mmae.train import fit
from tests.s3_server import S3Emulator, free_port
from tests.tiny_config import tiny
from workers.storage import (
    CheckpointUploader,
    LocalRunStorage,
    S3RunStorage,
    StorageError,
    open_run_storage,
)


class Refused(Exception):
    """What a fence raises for an attempt that is no longer current."""


class Fence:
    """Counts its checks; raises ``Refused`` once ``refuse`` is set."""

    def __init__(self) -> None:
        self.checks = 0
        self.refuse = False

    def __call__(self) -> None:
        self.checks += 1
        if self.refuse:
            raise Refused("attempt 1 is no longer current")


def _checkpoint(folder: Path, step: int) -> Path:
    """A real checkpoint file of ``step`` written by ``mmae.checkpoint`` (distinct bytes per step)."""
    return save_checkpoint(folder, step, {"step": step, "weights": torch.full((8, 8), float(step))})


def _s3_storage(s3: S3Emulator, keep: int = 2) -> S3RunStorage:
    storage = open_run_storage(f"s3://{s3.bucket}/runs", f"job-{uuid.uuid4().hex[:8]}", keep)
    assert isinstance(storage, S3RunStorage)
    return storage


def _objects(storage: S3RunStorage) -> list[str]:
    selector = pyarrow.fs.FileSelector(storage.folder, allow_not_found=True)
    return sorted(info.base_name for info in storage.fs.get_file_info(selector) if info.is_file)


def test_publish_then_restore_round_trips_the_bytes(s3_env, tmp_path):
    storage, fence = _s3_storage(s3_env), Fence()
    written = _checkpoint(tmp_path / "trainer", 4)
    storage.publish(4, written, fence)
    assert fence.checks == 1

    fresh = tmp_path / "fresh"
    assert storage.restore(fresh) == 4
    restored = fresh / "checkpoints" / "last.pt"
    assert restored.read_bytes() == written.read_bytes()
    assert torch.equal(load_checkpoint(restored)["weights"], torch.full((8, 8), 4.0))
    assert last_checkpoint(fresh) == restored


def test_only_the_keep_newest_step_objects_remain(s3_env, tmp_path):
    storage = _s3_storage(s3_env, keep=2)
    for step in (2, 4, 6):
        storage.publish(step, _checkpoint(tmp_path / "trainer", step), Fence())
    objects = _objects(storage)
    assert objects == ["last.json", f"step_00000004.{storage.writer}.pt", f"step_00000006.{storage.writer}.pt"]
    assert storage.restore(tmp_path / "fresh") == 6


def test_a_refused_publish_leaves_the_previous_checkpoint_visible(s3_env, tmp_path):
    storage, fence = _s3_storage(s3_env), Fence()
    first = _checkpoint(tmp_path / "trainer", 2)
    first_bytes = first.read_bytes()
    storage.publish(2, first, fence)
    fence.refuse = True
    with pytest.raises(Refused):
        storage.publish(4, _checkpoint(tmp_path / "trainer", 4), fence)

    assert _objects(storage) == ["last.json", f"step_00000002.{storage.writer}.pt"]  # the refused one is gone
    fresh = tmp_path / "fresh"
    assert storage.restore(fresh) == 2
    assert (fresh / "checkpoints" / "last.pt").read_bytes() == first_bytes


def test_a_stale_writers_leftover_is_pruned_and_never_outranks_the_current_one(s3_env, tmp_path):
    name = f"job-{uuid.uuid4().hex[:8]}"
    stale, current = (open_run_storage(f"s3://{s3_env.bucket}/runs", name, keep=1) for _ in range(2))
    leftover = f"{stale.folder}/step_00000008.{stale.writer}.pt"  # uploaded, then its writer died
    with stale.fs.open_output_stream(leftover) as sink:
        sink.write(_checkpoint(tmp_path / "stale", 8).read_bytes())
    current.publish(6, _checkpoint(tmp_path / "trainer", 6), Fence())
    assert _objects(current) == ["last.json", f"step_00000006.{current.writer}.pt"]
    assert current.restore(tmp_path / "fresh") == 6


def test_restore_without_a_checkpoint_returns_none_and_clears_the_working_copy(s3_env, tmp_path):
    local = tmp_path / "scratch"
    _checkpoint(local, 12)  # a previous attempt's unpublished checkpoint on this node
    assert _s3_storage(s3_env).restore(local) is None
    assert last_checkpoint(local) is None
    assert not list((local / "checkpoints").glob("*.pt"))


def test_wrong_credentials_raise_a_storage_error_naming_the_uri(s3_env, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    storage = _s3_storage(s3_env)
    with pytest.raises(StorageError) as raised:
        storage.restore(tmp_path / "fresh")
    message = str(raised.value)
    assert message.startswith(f"run storage {storage.uri}: cannot read the last checkpoint: AWS Error ACCESS_DENIED")
    assert "\n" not in message
    assert s3_env.secret_access_key not in message and "not-the-secret" not in message
    with pytest.raises(StorageError, match="cannot upload the checkpoint of step 2"):
        storage.publish(2, _checkpoint(tmp_path / "trainer", 2), Fence())


def test_an_unreachable_endpoint_raises_a_storage_error(s3_env, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    storage = _s3_storage(s3_env)
    with pytest.raises(StorageError, match=rf"^run storage {storage.uri}: .*NETWORK_CONNECTION"):
        storage.restore(tmp_path / "fresh")


def test_a_missing_bucket_fails_the_restore(s3_env, tmp_path):
    storage = open_run_storage("s3://no-such-bucket/runs", "job-1-abcd", keep=2)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        storage.restore(tmp_path / "fresh")


def test_a_malformed_pointer_is_a_storage_error(s3_env, tmp_path):
    storage = _s3_storage(s3_env)
    with storage.fs.open_output_stream(f"{storage.folder}/last.json") as sink:
        sink.write(b'{"step": 3, "object": "../../elsewhere.pt"}')
    with pytest.raises(StorageError, match="names no checkpoint object"):
        storage.restore(tmp_path / "fresh")


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("", "must be an absolute path"),
        ("runs/relative", "must be an absolute path"),
        ("file://host/data", "no host"),
        ("gs://bucket/prefix", "scheme 'gs' is not supported"),
        ("s3://", "needs a bucket name"),
        ("s3://Bad_Bucket/runs", "needs a bucket name"),
        ("s3://bucket:9000/runs", "needs a bucket name"),
        ("s3://bucket/a//b", "segment"),
        ("s3://bucket/a/../b", "segment"),
        ("s3://bucket/runs?region=x", "no query"),
    ],
)
def test_bad_uris_are_value_errors_naming_the_setting(uri, reason):
    with pytest.raises(ValueError, match=rf"^MMAE_STORAGE_URI: .*{reason}"):
        open_run_storage(uri, "job-1-abcd", keep=2)


def test_a_uri_with_credentials_is_refused_without_echoing_them():
    with pytest.raises(ValueError, match="must not carry credentials") as raised:
        open_run_storage("s3://AKIAKEY:topsecret@bucket/runs", "job-1-abcd", keep=2)
    assert "topsecret" not in str(raised.value)


@pytest.mark.parametrize("name", ["", "..", ".hidden", "a/b", "../job-1", "job\\1", "job 1"])
def test_run_names_must_stay_inside_the_prefix(name):
    with pytest.raises(ValueError, match="run name"):
        open_run_storage("s3://bucket/runs", name, keep=2)


@pytest.mark.parametrize(("uri", "prefix"), [("s3://bucket", "bucket"), ("s3://my.bucket/a/b/", "my.bucket/a/b")])
def test_s3_uris_name_their_run_under_the_prefix(uri, prefix):
    storage = open_run_storage(uri, "job-1-abcd", keep=2)
    assert storage.uri == f"s3://{prefix}/job-1-abcd"
    assert storage.local_run_dir(Path("/scratch")) == Path("/scratch/job-1-abcd")


def test_a_local_storage_used_as_the_run_dir_copies_nothing(tmp_path):
    storage = open_run_storage(f"file://{tmp_path}/runs", "job-1-abcd", keep=2)
    assert isinstance(storage, LocalRunStorage)
    run_dir = storage.local_run_dir(tmp_path / "scratch")
    assert run_dir == tmp_path / "runs" / "job-1-abcd"
    assert storage.restore(run_dir) is None
    written = _checkpoint(run_dir, 4)
    before = {path.name: path.stat().st_ino for path in (run_dir / "checkpoints").iterdir()}
    fence = Fence()
    storage.publish(4, written, fence)
    assert storage.restore(run_dir) == 4
    assert {path.name: path.stat().st_ino for path in (run_dir / "checkpoints").iterdir()} == before
    assert fence.checks == 0  # fit's own before_checkpoint_publish hook fenced it


def test_a_local_storage_elsewhere_gets_fenced_pruned_copies(tmp_path):
    storage, fence = open_run_storage(str(tmp_path / "shared"), "job-1-abcd", keep=2), Fence()
    for step in (2, 4, 6):
        storage.publish(step, _checkpoint(tmp_path / "scratch", step), fence)
    fence.refuse = True
    with pytest.raises(Refused):
        storage.publish(8, _checkpoint(tmp_path / "scratch", 8), fence)
    stored = tmp_path / "shared" / "job-1-abcd" / "checkpoints"
    assert sorted(path.name for path in stored.iterdir()) == ["last.pt", "step_00000004.pt", "step_00000006.pt"]
    fresh = tmp_path / "fresh"
    assert storage.restore(fresh) == 6
    assert torch.equal(load_checkpoint(fresh / "checkpoints" / "last.pt")["weights"], torch.full((8, 8), 6.0))


class StopAt(Callback):
    """Asks ``fit`` to stop (and checkpoint) once ``step`` has been reported."""

    def __init__(self, step: int) -> None:
        self.step, self.seen = step, 0

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.seen = max(self.seen, step)

    def should_stop(self) -> bool:
        return self.seen >= self.step


@pytest.mark.slow
def test_a_run_checkpointed_to_s3_resumes_on_a_fresh_node_exactly(s3_env, tmp_path):
    config = TrainConfig.model_validate(
        tiny(steps=6, checkpoint_every=2, **{"data.batch_size": 32, "monitor.every": 2, "eval.enabled": False})
    )
    fit(config, tmp_path / "straight")

    storage, fence = _s3_storage(s3_env, keep=config.checkpoint_keep), Fence()
    first_node = storage.local_run_dir(tmp_path / "node-a")
    assert storage.restore(first_node) is None
    stopped = fit(config, first_node, [CheckpointUploader(storage, fence), StopAt(3)])
    assert stopped.stopped_early and stopped.final_step == 3
    assert fence.checks == 2  # steps 2 and 3 were published
    assert len([name for name in _objects(storage) if name.startswith("step_")]) == config.checkpoint_keep

    second_node = storage.local_run_dir(tmp_path / "node-b")
    assert storage.restore(second_node) == 3
    resumed = fit(config, second_node, [CheckpointUploader(storage, fence)])
    assert resumed.final_step == 6 and fence.checks == 4  # steps 4 and 6
    expected = load_checkpoint(last_checkpoint(tmp_path / "straight"))["objective"]
    assert storage.restore(tmp_path / "node-c") == 6
    actual = load_checkpoint(last_checkpoint(tmp_path / "node-c"))["objective"]
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
