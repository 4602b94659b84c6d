"""Metric series written through the workers' reporter, read back downsampled, and streamed live (SSE)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from mmae.callbacks import RunInfo, TrainResult
from service.api.live import MetricsCursor
from service.auth import TokenCache
from service.settings import Settings
from service.store.db import session_scope
from service.store.models import Attempt, Job
from service.store.states import AttemptStatus
from workers.reporter import Reporter, connect

Submit = Callable[..., dict[str, Any]]


@pytest.fixture
def reporter(settings: Settings, submit: Submit, client: TestClient) -> Iterator[Reporter]:
    job = submit()
    with session_scope(client.app.state.session_factory) as session:  # the job's current attempt: it may write
        session.add(Attempt(id=1, job_id=job["id"], number=1, status=AttemptStatus.RUNNING))
    engine = connect(settings.resolved_database_url)
    reporting = Reporter(engine, job_id=job["id"], attempt_id=1, flush_points=10_000, flush_interval_s=3600)
    reporting.on_train_start(
        RunInfo(
            total_steps=3000,
            start_step=0,
            feature_dim=192,
            num_parameters=10,
            device="cpu",
            precision="fp32",
            batch_size=256,
        )
    )
    yield reporting
    engine.dispose()


def feed(reporter: Reporter, steps: range) -> None:
    for step in steps:
        metrics = {"train/loss": 1.0 / (1 + step) + (5.0 if step == 1234 else 0.0)}
        if step % 10 == 0:
            metrics["info/erank"] = 3.0
            metrics["info/erank_centered"] = 3.0
        reporter.on_metrics(step, metrics)
    reporter.flush()


def set_status(client: TestClient, job_id: int, status: str) -> None:
    with session_scope(client.app.state.session_factory) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status))


def test_series_are_downsampled_keeping_first_last_and_spikes(client: TestClient, reporter: Reporter) -> None:
    feed(reporter, range(3000))
    url = f"/api/jobs/{reporter.job_id}/metrics"
    series = client.get(url, params={"max_points": 100}).json()["series"]
    assert set(series) == {"train/loss", "info/erank", "info/erank_centered"}
    loss = series["train/loss"]
    assert len(loss["steps"]) <= 100 and len(loss["steps"]) == len(loss["values"])
    assert loss["steps"][0] == 0 and loss["steps"][-1] == 2999
    assert 1234 in loss["steps"] and max(loss["values"]) == pytest.approx(5.0 + 1 / 1235)
    assert loss["steps"] == sorted(loss["steps"])
    full = client.get(url, params={"names": "train/loss", "max_points": 100_000}).json()["series"]
    assert list(full) == ["train/loss"] and len(full["train/loss"]["steps"]) == 3000
    tail = client.get(url, params={"names": "info/erank, train/loss", "since_step": 2980}).json()["series"]
    assert tail["info/erank"]["steps"] == [2990] and tail["train/loss"]["steps"] == list(range(2981, 3000))
    assert client.get(url, params={"names": "nope"}).json() == {"series": {}}
    assert client.get(f"{url}/names").json() == ["info/erank", "info/erank_centered", "train/loss"]


def test_job_view_carries_progress_and_the_collapse_flag(client: TestClient, reporter: Reporter) -> None:
    feed(reporter, range(50))
    job = client.get(f"/api/jobs/{reporter.job_id}").json()
    assert job["progress"] == {"step": 49, "total_steps": 3000, "phase": "training"}
    assert job["collapse"] == {  # centred erank 3 of at most min(B - 1, d) = 192 directions: collapsed
        "erank": 3.0,
        "erank_centered": 3.0,
        "batch_size": 256,
        "feature_dim": 192,
        "rank_bound": 192,
        "fraction": 0.04,
        "threshold": pytest.approx(7.68),
        "collapsed": True,
    }
    reporter.on_train_end(
        TrainResult(final_step=50, stopped_early=False, summary={"eval/linear_top1": 0.9}, last_checkpoint=None)
    )
    job = client.get(f"/api/jobs/{reporter.job_id}").json()
    assert job["progress"]["phase"] == "done" and job["summary"] == {"eval/linear_top1": 0.9}


def read_events(lines: Iterator[str], count: int) -> list[tuple[str, Any]]:
    """The next ``count`` SSE events as (event name, parsed data)."""
    events, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
            if len(events) == count:
                return events
    return events


def test_events_stream_history_then_only_new_points_and_end(client: TestClient, reporter: Reporter) -> None:
    feed(reporter, range(0, 100))
    set_status(client, reporter.job_id, "running")
    url = f"/api/jobs/{reporter.job_id}/events"
    client.app.state.token_cache = TokenCache()  # the stream's own token lookup hits the database
    with client.stream("GET", url, params={"max_points": 10, "tick_s": 0.2}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        (kind, job), (kind2, first) = read_events(lines, 2)
        assert (kind, kind2) == ("job", "metrics") and job["status"] == "running"
        assert len(first["series"]["train/loss"]["steps"]) <= 10, "history is downsampled"
        assert first["series"]["train/loss"]["steps"][-1] == 99
        in_use = []
        for _ in range(10):
            in_use.append(client.app.state.engine.pool.checkedout())
            time.sleep(0.05)
        assert min(in_use) == 0, "a live stream does not pin a database connection"

        def finish() -> None:
            feed(reporter, range(100, 105))
            reporter.on_metrics(104, {"eval/linear_top1": 0.5})
            reporter.flush()
            set_status(client, reporter.job_id, "succeeded")

        threading.Thread(target=finish).start()
        rest = read_events(lines, 100)
    new_points = [data for kind, data in rest if kind == "metrics"]
    steps = [s for data in new_points for s in data["series"].get("train/loss", {}).get("steps", [])]
    assert steps == [100, 101, 102, 103, 104], "each new point exactly once, nothing old"
    assert any("eval/linear_top1" in data["series"] for data in new_points)
    assert rest[-1][0] == "job" or rest[-1][0] == "metrics"
    assert [data for kind, data in rest if kind == "job"][-1]["status"] == "succeeded", "ends after terminal"


def test_events_of_a_finished_job_end_at_once(client: TestClient, submit: Submit) -> None:
    job = submit()
    set_status(client, job["id"], "cancelled")
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as response:
        events = read_events(response.iter_lines(), 10)
    assert [kind for kind, _ in events] == ["job", "metrics"]
    assert events[0][1]["status"] == "cancelled" and events[1][1] == {"series": {}}


def test_cursor_rereads_the_newest_step_for_late_metrics(client: TestClient, reporter: Reporter) -> None:
    feed(reporter, range(0, 10))
    cursor = MetricsCursor(reporter.job_id)
    with client.app.state.session_factory() as session:
        assert len(cursor.read(session)["train/loss"].steps) == 10
        assert cursor.read(session) == {}, "nothing new"
        reporter.on_metrics(9, {"probe/online_top1": 0.4})
        reporter.flush()
        late = cursor.read(session)
        assert list(late) == ["probe/online_top1"] and late["probe/online_top1"].steps == [9]
    since = MetricsCursor(reporter.job_id, since_step=7)
    with client.app.state.session_factory() as session:
        assert since.read(session)["train/loss"].steps == [8, 9]
