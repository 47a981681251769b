"""Schema versions: every table of a BACKUP_TABLE prefix, migrated idempotently."""

from __future__ import annotations

import logging

from psycopg2 import sql

from chroma_backup.postgres.session import Part, Tables, _lock_key

log = logging.getLogger(__name__)


def _migrations(tb: Tables) -> list[sql.Composed]:
    """Schema versions 1..n; each is applied once, in order, inside the migration transaction."""
    return [
        tb.fmt(
            """
            CREATE TABLE {coll} (
                collection_ref bigserial PRIMARY KEY,
                tenant text NOT NULL,
                database text NOT NULL,
                name text NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                UNIQUE (tenant, database, name)
            );
            CREATE TABLE {snap} (
                snapshot_id bigserial PRIMARY KEY,
                collection_ref bigint NOT NULL REFERENCES {coll} ON DELETE CASCADE,
                status text NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
                started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                finished_at timestamptz,
                record_count bigint,
                added bigint,
                updated bigint,
                deleted bigint,
                dimension integer,
                content_digest bytea,
                chroma_collection_id text,
                collection_metadata jsonb,
                configuration_json jsonb,
                schema_json jsonb,
                server_version text,
                health text,
                forced boolean NOT NULL DEFAULT false,
                error text,
                backend_pid integer,
                host text
            );
            CREATE INDEX {snap_idx} ON {snap} (collection_ref, status, snapshot_id DESC);
            CREATE TABLE {t} (
                collection_ref bigint NOT NULL REFERENCES {coll} ON DELETE CASCADE,
                record_id text NOT NULL,
                valid_from bigint NOT NULL,
                valid_to bigint,
                digest bytea NOT NULL,
                embedding bytea NOT NULL,
                document text,
                metadata jsonb,
                uri text,
                PRIMARY KEY (collection_ref, record_id, valid_from)
            );
            -- float32 vectors do not compress: when a row is toasted, store them out of line
            -- without trying.
            ALTER TABLE {t} ALTER COLUMN embedding SET STORAGE EXTERNAL;
            CREATE UNIQUE INDEX {current_idx} ON {t} (collection_ref, record_id) WHERE valid_to IS NULL;
            CREATE TABLE {rest} (
                restore_id bigserial PRIMARY KEY,
                collection_ref bigint REFERENCES {coll} ON DELETE CASCADE,
                snapshot_id bigint REFERENCES {snap} ON DELETE SET NULL,
                source_snapshot_id bigint NOT NULL,
                target text NOT NULL,
                target_server text,
                target_collection_id text,
                status text NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
                started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                finished_at timestamptz,
                records bigint,
                verified boolean NOT NULL DEFAULT false,
                trigger text NOT NULL CHECK (trigger IN ('cli', 'auto')),
                reason text,
                error text
            );
            CREATE INDEX {rest_idx} ON {rest} (collection_ref, restore_id DESC);
            """,
            snap_idx=tb.index("snapshots_idx"),
            current_idx=tb.index("current_idx"),
            rest_idx=tb.index("restores_idx"),
        ),
        # 2: verdicts label snapshots (and an operator can accept a new size); restores record the
        # temporary names they use; recovery targets' snapshots say where they came from; every
        # health verdict is kept.
        tb.fmt(
            """
            ALTER TABLE {snap} ADD COLUMN health_detail text,
                ADD COLUMN accepted boolean NOT NULL DEFAULT false,
                ADD COLUMN origin_collection text,
                ADD COLUMN origin_snapshot_id bigint;
            ALTER TABLE {rest} ADD COLUMN temporary_name text, ADD COLUMN aside_name text,
                ADD COLUMN target_database text;
            CREATE TABLE {health} (
                health_id bigserial PRIMARY KEY,
                collection_ref bigint NOT NULL REFERENCES {coll} ON DELETE CASCADE,
                checked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                status text NOT NULL,
                detail text,
                records bigint,
                snapshot_id bigint
            );
            CREATE INDEX {health_idx} ON {health} (collection_ref, health_id DESC);
            """,
            health_idx=tb.index("health_idx"),
        ),
        # 3: a record-identical restore whose configuration or schema differs from the snapshot
        # names every differing key.
        tb.fmt("ALTER TABLE {rest} ADD COLUMN differences jsonb"),
        # 4: a restore says which process runs it (a dead one's row is marked failed) and which
        # collection it was building (a dead one's half-built copy is removed by that id).
        tb.fmt("ALTER TABLE {rest} ADD COLUMN backend_pid integer, ADD COLUMN temporary_collection_id text"),
        # 5: surgical recovery: a restore may write records back into a live collection (kind
        # ``repair`` or ``records``, with what it wrote), and a deep check's verdict keeps its
        # counts (records checked, unreadable, not found by the index, gone).
        tb.fmt(
            """
            ALTER TABLE {rest} ADD COLUMN kind text NOT NULL DEFAULT 'restore'
                CHECK (kind IN ('restore', 'repair', 'records')),
                ADD COLUMN counts jsonb;
            ALTER TABLE {health} ADD COLUMN findings jsonb;
            """
        ),
        # 6: several daemons on one catalog: which one took a snapshot or ran a restore.
        tb.fmt("ALTER TABLE {snap} ADD COLUMN replica text; ALTER TABLE {rest} ADD COLUMN replica text"),
        # 7: an operator pins a snapshot (never pruned) and labels snapshots with notes.
        tb.fmt("ALTER TABLE {snap} ADD COLUMN pinned boolean NOT NULL DEFAULT false, ADD COLUMN note text"),
    ]


class Schema(Part):
    """Creates or upgrades the tables."""

    def migrate(self) -> int:
        """Create or upgrade the schema; safe to run from several processes at once."""
        tb = self.tables
        migrations = _migrations(tb)
        with self.transaction("schema migration") as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(tb.prefix, "migrate"),))
            cur.execute(
                tb.fmt(
                    "CREATE TABLE IF NOT EXISTS {sv} (version integer PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"
                )
            )
            cur.execute(tb.fmt("SELECT coalesce(max(version), 0) FROM {sv}"))
            current = cur.fetchone()[0]
            for version, statement in enumerate(migrations, start=1):
                if version > current:
                    cur.execute(statement)
                    cur.execute(tb.fmt("INSERT INTO {sv} (version) VALUES (%s)"), (version,))
            if len(migrations) > current:
                log.info("schema table=%s migrated_from=%d migrated_to=%d", tb.prefix, current, len(migrations))
        return len(migrations)
