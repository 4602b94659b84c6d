"""The ``mmae`` command: local training (``train``, ``eval``) plus the control plane.

``serve`` runs the API; ``token create | list | revoke`` manage tokens in the database;
``submit``/``sweep`` send job and sweep files to the API (``--wait`` follows them with a progress bar
and exits 0 only on success); ``status``, ``logs`` and ``cancel`` read and steer jobs; ``report``
writes a sweep's reproduction report. Errors print one line and exit 2 (bad input) or 1 (a job failed,
or the API could not be reached); never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from mmae.cli import EXIT_USAGE, CliError, add_train_commands, guard_cli_errors, load_config
from service.client import ApiClient, ApiError
from service.examples import ExampleError, sweep_body
from service.store.states import TERMINAL, JobStatus

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from service.settings import Settings

EXIT_FAILED = 1
POLL_S = 1.0
KEEP_ALIVE_S = 75
MAX_TOKEN_DAYS = 3650


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``mmae: error: ...``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"mmae: error: {message} (see `{self.prog} --help`)\n")


def guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the API's errors (and, through ``guard_cli_errors``, the CLI's own) into one line on stderr and an
    exit status."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ApiError as error:
            print(f"mmae: error: {error}", file=sys.stderr)
            return error.exit_code
        except KeyboardInterrupt:
            print(
                "\nmmae: interrupted (submitted work keeps running; `mmae cancel ID` stops it)",
                file=sys.stderr,
            )
            return 130

    return guard_cli_errors(run)


def load_settings() -> Settings:
    """The service's settings from the environment; a bad value is a ``CliError`` naming it (one line)."""
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings()
    except ValidationError as error:
        reasons = "; ".join(item["msg"].removeprefix("Value error, ") for item in error.errors())
        raise CliError(f"invalid configuration: {reasons}") from None


def serve_command(args: argparse.Namespace) -> int:
    """Serve with one process, or ``--workers`` processes that share the port; whichever holds the database's
    scheduler lease runs the scheduler loop. Migrations and the first admin token happen here, once, before
    any worker starts."""
    import uvicorn

    from service.api.main import announce_admin_token, create_app, prepare_database

    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    settings = load_settings()
    # Keep-alive longer than a load balancer's idle timeout (60 s on common ones), so a connection is never
    # closed by us while the balancer sends a request on it.
    options = {"host": args.host, "port": args.port, "log_level": "info", "timeout_keep_alive": KEEP_ALIVE_S}
    if args.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return 0
    engine, factory = prepare_database(settings)
    try:
        announce_admin_token(factory, settings)
    finally:
        engine.dispose()
    uvicorn.run("service.api.main:create_app", factory=True, workers=args.workers, **options)
    return 0


def token_create_command(args: argparse.Namespace) -> int:
    """Mint a token with a role, an owner (default: its name) and an optional expiry; print it (once)."""
    from datetime import timedelta

    from service.auth import create_token
    from service.store.clock import utcnow

    name, owner = args.name.strip(), (args.owner or args.name).strip()
    for label, value in (("token name", name), ("owner", owner)):
        if not 1 <= len(value) <= 100:
            raise CliError(f"{label} must be 1 to 100 characters")
    if args.expires_in is not None and not 1 <= args.expires_in <= MAX_TOKEN_DAYS:
        raise CliError(f"--expires-in must be 1 to {MAX_TOKEN_DAYS} days")
    expires_at = utcnow() + timedelta(days=args.expires_in) if args.expires_in is not None else None
    with token_session() as session:
        token = create_token(session, name, role=args.role, owner=owner, expires_at=expires_at)
    print(token)
    return 0


def token_list_command(args: argparse.Namespace) -> int:
    """Every token: id, name, role, owner, state (live, revoked, expired), expiry and last use."""
    from sqlalchemy import select

    from service.store.clock import as_utc, utcnow
    from service.store.models import ApiToken

    with token_session() as session:
        rows = session.scalars(select(ApiToken).order_by(ApiToken.id)).all()
    now = utcnow()
    print(f"{'ID':>4}  {'NAME':<20}  {'ROLE':<5}  {'OWNER':<16}  {'STATE':<7}  {'EXPIRES':<16}  LAST USED")
    for row in rows:
        expires = row.expires_at and as_utc(row.expires_at)
        state = "revoked" if row.revoked else "expired" if expires is not None and expires <= now else "live"
        print(
            f"{row.id:>4}  {row.name:<20}  {row.role:<5}  {row.owner:<16}  {state:<7}  "
            f"{_minute(expires) or 'never':<16}  {_minute(row.last_used_at and as_utc(row.last_used_at)) or 'never'}"
        )
    return 0


def token_revoke_command(args: argparse.Namespace) -> int:
    """Revoke a token by id: it (and the web sessions opened with it) stop working within seconds."""
    from service.store.models import ApiToken

    with token_session() as session:
        row = session.get(ApiToken, args.id)
        if row is None:
            raise CliError(f"no token with id {args.id} (see `mmae token list`)")
        row.revoked = True
        name = row.name
    print(f"token {args.id} ({name}) revoked")
    return 0


@contextmanager
def token_session() -> Iterator[Session]:
    """A transaction on the service's database (migrated to head), straight from the settings: token
    management needs no running API."""
    from service.api.main import prepare_database
    from service.store.db import session_scope

    engine, factory = prepare_database(load_settings())
    try:
        with session_scope(factory) as session:
            yield session
    finally:
        engine.dispose()


def _minute(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else None


def submit_command(args: argparse.Namespace) -> int:
    config = load_config(args.file, args.overrides)
    body = {
        "name": args.name or args.file.stem,
        "config": config.model_dump(mode="json"),
        "priority": args.priority,
        "max_retries": args.max_retries,
        "resources": {
            "num_cpus": "auto" if args.cpus is None else args.cpus,
            "num_gpus": args.gpus,
            "workers": args.workers,
            "placement": args.placement,
        },
        "tags": args.tags,
    }
    client = ApiClient()
    try:
        job = client.post("/api/jobs", body)
        print(f"job {job['id']} queued: {job['name']}")
        return wait_for_job(client, job["id"]) if args.wait else 0
    finally:
        client.close()


def sweep_command(args: argparse.Namespace) -> int:
    try:
        body = sweep_body(args.file)
    except ExampleError as error:
        raise CliError(str(error)) from error
    client = ApiClient()
    try:
        sweep = client.post("/api/sweeps", body)
        print(f"sweep {sweep['id']} ({sweep['name']}): {sweep['total']} cells")
        return wait_for_sweep(client, sweep["id"]) if args.wait else 0
    finally:
        client.close()


def wait_for_job(client: ApiClient, job_id: int) -> int:
    """Follow a job with a step progress bar; 0 when it succeeds, 1 otherwise."""
    from tqdm import tqdm

    with tqdm(total=0, desc=f"job {job_id}", unit="step", dynamic_ncols=True) as bar:
        while True:
            job = client.get(f"/api/jobs/{job_id}")
            progress = job["progress"]
            bar.total = max(progress["total_steps"], bar.total or 0)
            bar.n = progress["step"]
            bar.set_postfix_str(f"{job['status']} {progress['phase']}", refresh=True)
            if job["status"] in TERMINAL:
                break
            time.sleep(POLL_S)
    return report_job(job)


def report_job(job: dict[str, Any]) -> int:
    if job["status"] != JobStatus.SUCCEEDED:
        reason = (job.get("error") or "").strip().splitlines()
        print(f"job {job['id']} {job['status']}" + (f": {reason[0]}" if reason else ""), file=sys.stderr)
        return EXIT_FAILED
    headline = {name: value for name, value in job["summary"].items() if name.startswith("eval/")}
    shown = " ".join(f"{name}={value:.4g}" for name, value in sorted(headline.items()) if value is not None)
    print(f"job {job['id']} succeeded" + (f": {shown}" if shown else ""))
    return 0


def wait_for_sweep(client: ApiClient, sweep_id: int) -> int:
    """Follow a sweep with a bar of finished cells; 0 only when every cell succeeded."""
    from tqdm import tqdm

    with tqdm(total=0, desc=f"sweep {sweep_id}", unit="cell", dynamic_ncols=True) as bar:
        while True:
            sweep = client.get(f"/api/sweeps/{sweep_id}")
            counts = sweep["counts"]
            bar.total = sweep["total"]
            bar.n = sum(counts.get(status, 0) for status in TERMINAL)
            bar.set_postfix_str(" ".join(f"{status}={n}" for status, n in sorted(counts.items())), refresh=True)
            if bar.n >= sweep["total"]:
                break
            time.sleep(POLL_S)
    succeeded = counts.get(JobStatus.SUCCEEDED, 0)
    print(f"sweep {sweep_id}: {succeeded}/{sweep['total']} cells succeeded")
    return 0 if succeeded == sweep["total"] else EXIT_FAILED


def status_command(args: argparse.Namespace) -> int:
    client = ApiClient()
    try:
        if args.id is not None:
            print_job(client.get(f"/api/jobs/{args.id}"))
        else:
            print_jobs(client.get("/api/jobs", limit=args.limit)["items"])
    finally:
        client.close()
    return 0


def print_job(job: dict[str, Any]) -> None:
    progress = job["progress"]
    print(f"job {job['id']}  {job['name']}")
    print(f"  status    {job['status']} ({progress['phase']}, step {progress['step']}/{progress['total_steps']})")
    print(f"  method    {job['method']}  params {job['params']}")
    print(f"  attempts  {len(job['attempts'])}  retries used {job['retries_used']}/{job['max_retries']}")
    for name, value in sorted(job["summary"].items()):
        print(f"  {name:<24}{value}")
    if job.get("error"):
        print(f"  error     {job['error'].strip().splitlines()[0]}")
    if job.get("mlflow_url"):
        print(f"  mlflow    {job['mlflow_url']}")


def print_jobs(jobs: list[dict[str, Any]]) -> None:
    print(f"{'ID':>6}  {'STATUS':<10}  {'METHOD':<12}  {'STEP':>11}  NAME")
    for job in jobs:
        progress = job["progress"]
        step = f"{progress['step']}/{progress['total_steps']}"
        print(f"{job['id']:>6}  {job['status']:<10}  {job['method']:<12}  {step:>11}  {job['name']}")


def logs_command(args: argparse.Namespace) -> int:
    client = ApiClient()
    try:
        for line in client.get(f"/api/jobs/{args.id}/logs", tail=args.tail)["lines"]:
            print(line)
    finally:
        client.close()
    return 0


def cancel_command(args: argparse.Namespace) -> int:
    client = ApiClient()
    try:
        job = client.post(f"/api/jobs/{args.id}/cancel")
    finally:
        client.close()
    print(f"job {job['id']}: {job['status']}")
    return 0


def report_command(args: argparse.Namespace) -> int:
    """Write a sweep's reproduction report (one self-contained HTML page) and print its path."""
    client = ApiClient()
    try:
        html = client.send("GET", f"/api/sweeps/{args.id}/report").text
    finally:
        client.close()
    path = args.output or Path(f"sweep-{args.id}-report.html")
    try:
        path.write_text(html, encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot write {path}: {error.strerror or error}") from error
    print(path)
    return 0


def positive_id(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) < 2**31:
        raise argparse.ArgumentTypeError(f"invalid id '{text}' (a positive integer)")
    return int(text)


def add_service_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the API, scheduler and web UI")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="API processes sharing the port (default 1)")
    serve.set_defaults(handler=guarded(serve_command))

    token = sub.add_parser("token", help="manage API tokens").add_subparsers(dest="token_command", required=True)
    create = token.add_parser("create", help="mint a token and print it (once)")
    create.add_argument("name")
    create.add_argument(
        "--role",
        choices=("admin", "user", "read"),
        default="user",
        help="admin: everything; user: change only its owner's jobs (default); read: read only",
    )
    create.add_argument("--owner", help="who its jobs and sweeps belong to (default: the name)")
    create.add_argument("--expires-in", type=int, metavar="DAYS", help="stop working after DAYS days")
    create.set_defaults(handler=guarded(token_create_command))
    token.add_parser("list", help="every token, its role, owner, state and last use").set_defaults(
        handler=guarded(token_list_command)
    )
    revoke = token.add_parser("revoke", help="stop a token (and its web sessions) from working")
    revoke.add_argument("id", type=positive_id)
    revoke.set_defaults(handler=guarded(token_revoke_command))

    submit = sub.add_parser("submit", help="queue a job from a TrainConfig YAML file")
    submit.add_argument("file", type=Path)
    submit.add_argument("--wait", action="store_true", help="follow it; exit 0 only if it succeeds")
    submit.add_argument("--name")
    submit.add_argument("--priority", type=int, default=0)
    submit.add_argument("--workers", type=int, default=1, help="data-parallel workers (default 1)")
    submit.add_argument("--cpus", type=float, help="CPUs per worker (default auto: a node's CPUs, or 4 per GPU)")
    submit.add_argument("--gpus", type=float, default=0.0, help="GPUs per worker (default 0)")
    submit.add_argument(
        "--placement",
        choices=("pack", "spread"),
        default="pack",
        help="pack the workers on as few nodes as possible, or spread them (default pack)",
    )
    submit.add_argument("--max-retries", type=int, default=2)
    submit.add_argument("--tag", dest="tags", action="append", default=[])
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    submit.set_defaults(handler=guarded(submit_command))

    sweep = sub.add_parser("sweep", help="queue a sweep from a sweep YAML file")
    sweep.add_argument("file", type=Path)
    sweep.add_argument("--wait", action="store_true", help="follow it; exit 0 only if every cell succeeds")
    sweep.set_defaults(handler=guarded(sweep_command))

    status = sub.add_parser("status", help="one job, or the newest jobs")
    status.add_argument("id", nargs="?", type=positive_id)
    status.add_argument("--limit", type=int, default=20)
    status.set_defaults(handler=guarded(status_command))

    logs = sub.add_parser("logs", help="a job's Ray logs")
    logs.add_argument("id", type=positive_id)
    logs.add_argument("--tail", type=int, default=500)
    logs.set_defaults(handler=guarded(logs_command))

    report = sub.add_parser("report", help="write a sweep's reproduction report (HTML) and print its path")
    report.add_argument("id", type=positive_id, help="sweep id")
    report.add_argument("--output", type=Path, help="where to write it (default sweep-ID-report.html)")
    report.set_defaults(handler=guarded(report_command))

    cancel = sub.add_parser("cancel", help="stop a job (it checkpoints first)")
    cancel.add_argument("id", type=positive_id)
    cancel.set_defaults(handler=guarded(cancel_command))


def build_parser() -> Parser:
    parser = Parser(prog="mmae", description="Information-theoretic self-supervised learning: train and orchestrate")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_commands(sub)
    add_service_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmae`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
