"""Token roles, owners and expiry; login sessions; owners on jobs and sweeps; Idempotency-Keys per token

``api_tokens`` gains ``role``, ``owner`` and ``expires_at``. Every token stored before this revision
could do everything, so each becomes an ``admin`` owned by its own name, never expiring: nobody loses
access. ``login_sessions`` holds what the web page's cookie names (the cookie no longer carries the
token). Jobs and sweeps gain ``owner`` (NULL for the rows already stored: only admin tokens change
those) and an Idempotency-Key becomes unique per token (``idempotency_token_id``) with the digest of
the request it came with (``request_digest``); keys stored before stay on their rows but belong to no
token, so no request replays them.

Revision ID: 0004
Revises: 0003
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYED_TABLES = ("jobs", "sweeps")


def upgrade() -> None:
    """Existing tokens become admins owned by their name; existing jobs and sweeps have no owner."""
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("owner", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE api_tokens SET role = 'admin', owner = name")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.alter_column("role", existing_type=sa.String(length=16), nullable=False)
        batch_op.alter_column("owner", existing_type=sa.String(length=100), nullable=False)
    op.create_table(
        "login_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"], ["api_tokens.id"], name=op.f("fk_login_sessions_token_id_api_tokens")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_sessions")),
        sa.UniqueConstraint("session_hash", name=op.f("uq_login_sessions_session_hash")),
    )
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_sessions_token_id"), ["token_id"], unique=False)
    for table in KEYED_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("owner", sa.String(length=100), nullable=True))
            batch_op.add_column(sa.Column("idempotency_token_id", sa.Integer(), nullable=True))
            batch_op.add_column(sa.Column("request_digest", sa.String(length=64), nullable=True))
            batch_op.drop_constraint(f"uq_{table}_idempotency_key", type_="unique")
            batch_op.create_unique_constraint(
                f"uq_{table}_idempotency", ["idempotency_token_id", "idempotency_key"]
            )


def downgrade() -> None:
    """Drop what 0004 added; keys become global again (the per-token duplicates are cleared first)."""
    for table in KEYED_TABLES:
        op.execute(
            f"UPDATE {table} SET idempotency_key = NULL WHERE idempotency_key IN "  # noqa: S608 (constant names)
            f"(SELECT idempotency_key FROM {table} GROUP BY idempotency_key HAVING COUNT(*) > 1)"
        )
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"uq_{table}_idempotency", type_="unique")
            batch_op.create_unique_constraint(f"uq_{table}_idempotency_key", ["idempotency_key"])
            batch_op.drop_column("request_digest")
            batch_op.drop_column("idempotency_token_id")
            batch_op.drop_column("owner")
    with op.batch_alter_table("login_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_sessions_token_id"))
    op.drop_table("login_sessions")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
        batch_op.drop_column("owner")
        batch_op.drop_column("role")
