"""The demo schema the example tasks work on: events to archive, counts to recount, a run ledger,
and the resumable tasks' transactional checkpoints (tasks/transactional.py)."""

from __future__ import annotations

from easeoff.tasks.shards import connect, database_name
from easeoff.tasks.transactional import checkpoint_table_ddl

TABLES = (
    """CREATE TABLE IF NOT EXISTS events (
        id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        user_id INT NOT NULL,
        created_at DATETIME NOT NULL,
        payload VARCHAR(255) NOT NULL,
        KEY by_created (created_at),
        KEY by_user (user_id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS events_archive (
        id BIGINT NOT NULL PRIMARY KEY,
        user_id INT NOT NULL,
        created_at DATETIME NOT NULL,
        payload VARCHAR(255) NOT NULL,
        KEY by_user (user_id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS user_counts (
        user_id INT NOT NULL PRIMARY KEY,
        events INT NOT NULL,
        updated_at DATETIME(6) NOT NULL
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS user_stats (
        user_id INT NOT NULL PRIMARY KEY,
        later_pairs BIGINT NOT NULL,
        updated_at DATETIME(6) NOT NULL
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS job_runs (
        id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        job_id VARCHAR(64) NOT NULL,
        task VARCHAR(64) NOT NULL,
        tag VARCHAR(64) NOT NULL DEFAULT '',
        ran_at DATETIME(6) NOT NULL,
        KEY by_job (job_id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS job_ledger (
        job_id VARCHAR(64) NOT NULL PRIMARY KEY,
        task VARCHAR(64) NOT NULL,
        tag VARCHAR(64) NOT NULL DEFAULT '',
        runs INT NOT NULL,
        first_at DATETIME(6) NOT NULL,
        last_at DATETIME(6) NOT NULL
    ) ENGINE=InnoDB""",
    checkpoint_table_ddl(),  # the tasks would create it on first use; the demo has it from the start
)


def create_schema(shard: int, url: str | None = None, reset: bool = False) -> None:
    """Create the shard's demo database and tables; `reset` empties them first."""
    conn = connect(shard, url=url, database=False)
    try:
        with conn.cursor() as cur:
            name = database_name(shard)
            if reset:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
            cur.execute(f"USE `{name}`")
            for ddl in TABLES:
                cur.execute(ddl)
        conn.commit()
    finally:
        conn.close()


def seed_events(
    shard: int, users: int = 50, per_user: int = 40, old_fraction: float = 0.5, url: str | None = None
) -> int:
    """Insert `users * per_user` events, `old_fraction` of them older than 60 days. Returns the count."""
    rows = []
    for user in range(1, users + 1):
        for i in range(per_user):
            age_days = 90 if i < per_user * old_fraction else 1
            rows.append((user, age_days, f"event {i} of user {user}"))
    conn = connect(shard, url=url)
    try:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO events (user_id, created_at, payload) VALUES (%s, NOW() - INTERVAL %s DAY, %s)", rows
            )
        conn.commit()
    finally:
        conn.close()
    return len(rows)
