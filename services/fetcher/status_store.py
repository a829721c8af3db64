"""Each poll's outcome per account, in ``account_status`` (for the admin page and the CLI).

Timestamps are naive UTC, like the column type (``timestamp without time zone``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert

from services.fetcher.tables import AccountStatus


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


class AccountStatusStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record_success(self, account_id: str, *, at: datetime, lag_seconds: float | None, mails: int) -> None:
        """A good poll: failures reset, ``mails`` added to the running total; the last error is kept for history."""
        at = _naive_utc(at)
        table = AccountStatus.__table__
        statement = insert(AccountStatus).values(
            account_id=account_id,
            last_poll_at=at,
            last_success_at=at,
            consecutive_failures=0,
            poll_lag_seconds=lag_seconds,
            mails_fetched=mails,
        )
        with self._engine.begin() as connection:
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["account_id"],
                    set_={
                        "last_poll_at": at,
                        "last_success_at": at,
                        "consecutive_failures": 0,
                        "poll_lag_seconds": lag_seconds,
                        "mails_fetched": table.c.mails_fetched + mails,
                    },
                )
            )

    def record_failure(
        self, account_id: str, *, at: datetime, lag_seconds: float | None, step: str, error: str, mails: int = 0
    ) -> int:
        """A failed poll, with the step and the error (the server's exact reply when it sent one).

        ``mails`` counts those produced before the failure. Returns the consecutive failures so far.
        """
        at = _naive_utc(at)
        table = AccountStatus.__table__
        statement = insert(AccountStatus).values(
            account_id=account_id,
            last_poll_at=at,
            last_error_at=at,
            last_error_step=step[:64],
            last_error=error,
            consecutive_failures=1,
            poll_lag_seconds=lag_seconds,
            mails_fetched=mails,
        )
        with self._engine.begin() as connection:
            return connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["account_id"],
                    set_={
                        "last_poll_at": at,
                        "last_error_at": at,
                        "last_error_step": step[:64],
                        "last_error": error,
                        "consecutive_failures": table.c.consecutive_failures + 1,
                        "poll_lag_seconds": lag_seconds,
                        "mails_fetched": table.c.mails_fetched + mails,
                    },
                ).returning(AccountStatus.consecutive_failures)
            ).scalar_one()

    def failing(self, now: datetime) -> dict[str, tuple[int, float]]:
        """Accounts whose last poll failed: (consecutive failures, seconds since the last
        failure), so a restarted fetcher goes on with their backoff."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(AccountStatus.account_id, AccountStatus.consecutive_failures, AccountStatus.last_error_at).where(
                    AccountStatus.consecutive_failures > 0
                )
            ).all()
        now = _naive_utc(now)
        return {
            account_id: (failures, max(0.0, (now - last_error_at).total_seconds()) if last_error_at else 0.0)
            for account_id, failures, last_error_at in rows
        }
