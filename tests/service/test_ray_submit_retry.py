"""A submission Ray cannot take just now (no answer, 5xx, 429) is retried with backoff by the reconciler
and fails the attempt only after ``submit_retry_s``; a refusal (4xx) fails the job at once (issue 10,
finding 8). Ray is a scripted HTTP transport here: the faults are exact and no head is needed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from service.cluster import ray_client
from service.cluster.ray_client import RayBusy, RayJobsClient, RayUnavailable
from service.settings import Settings
from service.store.db import make_engine, make_session_factory
from service.store.migrations import upgrade_to_head
from service.store.models import Attempt
from service.store.states import AttemptStatus, JobStatus
from service.tracking.tracker import Tracker
from tests.conftest import ControlPlane, spec_with
from workers.spec import Scaling

NODES = {
    "data": {
        "result": {
            "result": [
                {
                    "node_id": "n1",
                    "node_ip": "127.0.0.1",
                    "is_head_node": True,
                    "resources_total": {"CPU": 4.0},
                    "state": "ALIVE",
                },
            ]
        }
    }
}


class FlakyRay:
    """Answers the Jobs API like Ray, except that submissions get the scripted ``answers`` first
    (a status code, or ``"drop"`` for a connection that fails) before they are accepted."""

    def __init__(self, answers: list[int | str]) -> None:
        self.answers = list(answers)
        self.submitted: dict[str, str] = {}  # submission id -> status
        self.posts = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v0/nodes":
            return httpx.Response(200, json=NODES)
        if request.method == "POST" and path == "/api/jobs/":
            self.posts += 1
            answer = self.answers.pop(0) if self.answers else 200
            if answer == "drop":
                raise httpx.ConnectError("connection refused", request=request)
            if answer == 200:
                self.submitted[json.loads(request.content)["submission_id"]] = "RUNNING"
                return httpx.Response(200, json={"submission_id": "ok"})
            return httpx.Response(int(answer), text="scripted fault")
        submission_id = path.removeprefix("/api/jobs/")
        if submission_id not in self.submitted:
            return httpx.Response(404, text="not found")
        return httpx.Response(200, json={"status": self.submitted[submission_id], "driver_exit_code": None})


def client_of(ray: FlakyRay) -> RayJobsClient:
    client = RayJobsClient("http://ray.invalid:8265", start_local=False, stop_grace_s=1)
    client._http = httpx.Client(base_url=client.address, transport=httpx.MockTransport(ray))
    return client


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_client, "SUBMIT_BACKOFF_S", 0.2)


@pytest.fixture
def flaky_plane(
    tmp_path: Path, mlflow_store: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., tuple[ControlPlane, FlakyRay]]]:
    engines = []

    def make(answers: list[int | str], **fields: float) -> tuple[ControlPlane, FlakyRay]:
        settings = Settings(
            data_dir=tmp_path / "data",
            database_url=f"sqlite:///{tmp_path / 'mmae.db'}",
            mlflow_tracking_uri=mlflow_store,
            mlflow_experiment=request.node.name,
            **fields,
        )
        engine = make_engine(settings.resolved_database_url)
        engines.append(engine)
        upgrade_to_head(engine)
        ray = FlakyRay(answers)
        Tracker(settings).reachable()  # the session's MLflow store and this test's experiment exist
        return ControlPlane(settings, make_session_factory(engine), client_of(ray), Tracker(settings)), ray

    yield make
    for engine in engines:
        engine.dispose()


def test_ray_answers_are_sorted_into_transient_and_permanent() -> None:
    for answer, error in ((503, RayBusy), (429, RayBusy), ("drop", RayUnavailable), (400, RuntimeError)):
        client = client_of(FlakyRay([answer]))
        with pytest.raises(error) as raised:
            client.submit("mmae-attempt-1-x", spec_with(Scaling()))
        assert isinstance(raised.value, RayUnavailable) == (answer != 400), answer
        assert client.submit_due("mmae-attempt-1-x") == (answer == 400), "a transient failure waits its backoff"


def test_backoff_doubles_and_a_success_clears_it() -> None:
    client = client_of(FlakyRay([500, 500]))
    waits = []
    for _ in range(2):
        with pytest.raises(RayBusy):
            client.submit("mmae-attempt-1-x", spec_with(Scaling()))
        started = time.monotonic()
        while not client.submit_due("mmae-attempt-1-x"):
            time.sleep(0.01)
        waits.append(time.monotonic() - started)
    assert 0.15 < waits[0] < 0.35 and 0.35 < waits[1] < 0.6, waits
    client.submit("mmae-attempt-1-x", spec_with(Scaling()))
    assert client.submit_due("mmae-attempt-1-x")


def test_transient_submit_failures_are_retried_until_the_job_runs(flaky_plane, monkeypatch: pytest.MonkeyPatch) -> None:
    plane, ray = flaky_plane([503, 429, 502])
    job_id = plane.add_job()
    plane.tick()  # admitted; Ray answers 503: the attempt stays pending, the pass goes on
    assert plane.job(job_id).status == JobStatus.STARTING and ray.posts == 1
    with monkeypatch.context() as backing_off:
        backing_off.setattr(plane.ray, "submit_due", lambda submission_id: False)
        plane.tick()
    assert ray.posts == 1, "no new try before the backoff is over"
    job = plane.wait_for(job_id, lambda job: job.status == JobStatus.RUNNING, timeout_s=10)
    assert ray.posts == 4 and len(job.attempts) == 1 and job.attempts[0].status == AttemptStatus.RUNNING


def test_a_refused_submission_fails_the_job_at_once(flaky_plane) -> None:
    plane, ray = flaky_plane([400])
    job_id = plane.add_job(max_retries=3)
    plane.tick()
    job = plane.job(job_id)
    assert job.status == JobStatus.FAILED and "Ray rejected the submission" in job.error and ray.posts == 1


def test_a_submission_failing_past_the_retry_window_fails_its_attempt_and_retries_the_job(flaky_plane) -> None:
    plane, ray = flaky_plane([503] * 3, submit_retry_s=30)
    job_id = plane.add_job(max_retries=1)
    plane.tick()
    with plane.factory() as session:  # the attempt has waited longer than the window
        session.execute(update(Attempt).values(submitted_at=datetime.now(UTC) - timedelta(hours=1)))
        session.commit()
    plane.tick()  # reconcile ends the attempt and re-queues the job; admission starts attempt 2
    job = plane.job(job_id)
    first, second = job.attempts
    assert first.status == AttemptStatus.FAILED and "did not take the submission within 30 s" in first.error
    assert job.retries_used == 1 and job.status == JobStatus.STARTING and second.status == AttemptStatus.PENDING
    assert ray.posts == 2
