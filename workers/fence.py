"""The fencing rule: only a job's current attempt may write.

An attempt's id is its fencing token. The attempt is current while the service has it ``pending`` or
``running``; once the service ends it (Ray reported it dead, its heartbeat stopped, it waited too long)
or starts a newer one, every write the old attempt makes is refused, even if its process lives on (an
orphaned trainer, a node back from a partition). The check runs inside the writer's own transaction,
after its writes: on SQLite the writer already holds the database's write lock, and on PostgreSQL the
check takes a share lock on the attempt's row, so the service cannot end the attempt between the check
and the commit. Either the write commits while the attempt is current, or it is rolled back.
"""

from __future__ import annotations

from sqlalchemy import Connection, column, select, table

# Attempt statuses in which an attempt is its job's current one; the service's AttemptStatus values
# (service.store.states), repeated here because workers may not import the service (tests check they agree).
CURRENT_STATUSES: tuple[str, ...] = ("pending", "running")

# The service's attempts table, as far as the fence reads it.
_attempts = table("attempts", column("id"), column("job_id"), column("status"))


class AttemptFenced(RuntimeError):
    """This attempt is no longer its job's current one: its writes are refused and it must stop."""

    def __init__(self, job_id: int, attempt_id: int, status: str | None) -> None:
        seen = "has no record of it" if status is None else f"has it as {status}"
        super().__init__(
            f"attempt {attempt_id} is no longer the current attempt of job {job_id} (the service {seen}); "
            "its writes are refused"
        )


def check_current(connection: Connection, job_id: int, attempt_id: int) -> None:
    """Raise ``AttemptFenced`` unless ``attempt_id`` is ``job_id``'s current attempt.

    Call it inside the transaction whose writes it guards, after them; raising rolls them back.
    """
    query = select(_attempts.c.status).where(_attempts.c.id == attempt_id, _attempts.c.job_id == job_id)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(read=True)  # FOR SHARE: the service's UPDATE waits for our commit
    status = connection.execute(query).scalar_one_or_none()
    if status not in CURRENT_STATUSES:
        raise AttemptFenced(job_id, attempt_id, status)
