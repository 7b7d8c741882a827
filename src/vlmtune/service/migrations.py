"""The database schema as ordered migration steps (simonw/llm's migrations.py): each runs once, in order.

A step is never edited once released: a change to the schema is a new step at the end, so a database made
by any earlier release is brought up to date on open. `_migrations` records the steps applied. One table per
concept; nested request structures are JSON columns, and everything a List call filters or sorts on is a
column of its own.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable

MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = []


def migration(step: Callable[[sqlite3.Connection], None]):
    MIGRATIONS.append(step)
    return step


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply every step not yet applied, in order; the names of those applied now."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    applied = []
    for step in MIGRATIONS:
        if step.__name__ in done:
            continue
        step(db)
        now = dt.datetime.now(dt.UTC).isoformat()
        db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (step.__name__, now))
        applied.append(step.__name__)
    return applied


# Columns every job-like resource has: identity, idempotency, and the timestamps List filters on.
_IDENTITY = """
    id TEXT PRIMARY KEY,
    arn TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    client_token TEXT UNIQUE,
    request_hash TEXT,
    tags TEXT NOT NULL DEFAULT '[]'
"""


@migration
def m001_customization_jobs(db):
    db.execute(f"""CREATE TABLE customization_jobs ({_IDENTITY},
        customization_type TEXT NOT NULL,
        base_model TEXT NOT NULL,
        base_model_arn TEXT NOT NULL,
        base_source TEXT NOT NULL,
        custom_model_name TEXT NOT NULL,
        custom_model_arn TEXT NOT NULL,
        role_arn TEXT NOT NULL,
        training_data TEXT NOT NULL,
        validation_data TEXT NOT NULL,
        output_data TEXT NOT NULL,
        hyper_parameters TEXT NOT NULL,
        customization_config TEXT,
        status TEXT NOT NULL,
        status_details TEXT NOT NULL,
        failure_message TEXT,
        training_loss REAL,
        validation_loss REAL,
        creation_time TEXT NOT NULL,
        last_modified_time TEXT NOT NULL,
        end_time TEXT)""")
    db.execute("CREATE INDEX customization_jobs_by_time ON customization_jobs (creation_time, id)")


@migration
def m002_custom_models(db):
    db.execute(f"""CREATE TABLE custom_models ({_IDENTITY},
        job_arn TEXT,
        base_model_arn TEXT NOT NULL,
        base_model_name TEXT NOT NULL,
        customization_type TEXT NOT NULL,
        weights TEXT,
        weights_kind TEXT,
        base_source TEXT,
        source_uri TEXT,
        status TEXT NOT NULL,
        failure_message TEXT,
        creation_time TEXT NOT NULL)""")
    db.execute("CREATE INDEX custom_models_by_time ON custom_models (creation_time, id)")


@migration
def m003_deployments(db):
    db.execute(f"""CREATE TABLE deployments ({_IDENTITY},
        model_arn TEXT NOT NULL,
        description TEXT,
        status TEXT NOT NULL,
        failure_message TEXT,
        update_model_arn TEXT,
        update_status TEXT,
        created_at TEXT NOT NULL,
        last_updated_at TEXT NOT NULL)""")
    db.execute("CREATE INDEX deployments_by_time ON deployments (created_at, id)")


@migration
def m004_model_imports(db):
    db.execute(f"""CREATE TABLE import_jobs ({_IDENTITY},
        imported_model_name TEXT NOT NULL,
        imported_model_arn TEXT,
        role_arn TEXT NOT NULL,
        source_uri TEXT NOT NULL,
        model_tags TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL,
        failure_message TEXT,
        creation_time TEXT NOT NULL,
        last_modified_time TEXT NOT NULL,
        end_time TEXT)""")
    db.execute(f"""CREATE TABLE imported_models ({_IDENTITY},
        job_arn TEXT NOT NULL,
        job_name TEXT NOT NULL,
        source_uri TEXT NOT NULL,
        weights TEXT NOT NULL,
        architecture TEXT NOT NULL,
        instruct_supported INTEGER NOT NULL,
        creation_time TEXT NOT NULL)""")
    db.execute("CREATE INDEX import_jobs_by_time ON import_jobs (creation_time, id)")
    db.execute("CREATE INDEX imported_models_by_time ON imported_models (creation_time, id)")


@migration
def m005_invocation_jobs(db):
    db.execute(f"""CREATE TABLE invocation_jobs ({_IDENTITY},
        role_arn TEXT NOT NULL,
        model_id TEXT NOT NULL,
        model_source TEXT NOT NULL,
        input_data TEXT NOT NULL,
        output_data TEXT NOT NULL,
        invocation_type TEXT NOT NULL,
        timeout_hours INTEGER,
        status TEXT NOT NULL,
        message TEXT,
        total_records INTEGER,
        processed_records INTEGER,
        success_records INTEGER,
        error_records INTEGER,
        input_tokens INTEGER,
        output_tokens INTEGER,
        submit_time TEXT NOT NULL,
        last_modified_time TEXT NOT NULL,
        end_time TEXT,
        expiration_time TEXT)""")
    db.execute("CREATE INDEX invocation_jobs_by_time ON invocation_jobs (submit_time, id)")


@migration
def m006_worker_runs(db):
    """Each attempt at running a job in a worker: what the runner starts, watches, stops and recovers."""
    db.execute("""CREATE TABLE worker_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_arn TEXT NOT NULL,
        kind TEXT NOT NULL,
        executor TEXT NOT NULL,
        handle TEXT NOT NULL,
        folder TEXT NOT NULL,
        started_at TEXT NOT NULL,
        stop_requested_at TEXT,
        ended_at TEXT,
        exit_code INTEGER,
        exit_reason TEXT)""")
    db.execute("CREATE INDEX worker_runs_open ON worker_runs (ended_at, job_arn)")
