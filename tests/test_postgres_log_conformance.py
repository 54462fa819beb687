"""engine.postgres_log against eventsourcing's own recorder and application test cases.

The fenced recorders subclass eventsourcing's PostgreSQL ones; these are the library's tests,
run on a throwaway PostgreSQL server (tests/servers.py) with the recorder leading epoch 1,
to show that fencing and group commit change nothing an eventsourcing user relies on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from uuid import uuid4

import pytest
from eventsourcing.persistence import InfrastructureFactory

# Imported as modules: pytest collects every unittest.TestCase named at module level, and
# the library's abstract bases must not run on their own.
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresDatastore,
    PostgresTrackingRecorder,
)
from eventsourcing.tests import application as es_application
from eventsourcing.tests import persistence as es_persistence
from eventsourcing.utils import Environment
from servers import PostgresServer

from engine.postgres_log import (
    FencedApplicationRecorder,
    FencedPostgresFactory,
    FencedProcessRecorder,
)

REPLICA = "conformance"


class _OnPostgres:
    """Each test gets a fresh schema on the session's server, and a datastore on it."""

    originator_id_type = "uuid"

    @pytest.fixture(autouse=True)
    def _schema(self, postgres: PostgresServer) -> Iterator[None]:
        with postgres.fresh_schema() as schema:
            self.datastore = PostgresDatastore(
                postgres.dbname,
                "127.0.0.1",
                postgres.port,
                postgres.user,
                postgres.password,
                schema=schema,
                # The library's concurrent tests run 10 writers and 2 readers.
                pool_size=4,
                max_overflow=12,
                originator_id_type=self.originator_id_type,
            )
            try:
                yield
            finally:
                self.datastore.close()

    def leading(self, recorder: FencedApplicationRecorder) -> FencedApplicationRecorder:
        recorder.create_table()
        recorder.take_over(1, REPLICA)
        return recorder


class TestFencedApplicationRecorder(_OnPostgres, es_persistence.ApplicationRecorderTestCase):
    def create_recorder(self) -> FencedApplicationRecorder:
        return self.leading(
            FencedApplicationRecorder(self.datastore, events_table_name="app_events")
        )

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestFencedApplicationRecorderTextIds(TestFencedApplicationRecorder):
    originator_id_type = "text"

    def new_originator_id(self) -> str:
        return f"job/0/{uuid4()}"


class TestFencedProcessRecorder(_OnPostgres, es_persistence.ProcessRecorderTestCase):
    def create_recorder(self) -> FencedProcessRecorder:
        return self.leading(
            FencedProcessRecorder(
                self.datastore,
                events_table_name="proc_events",
                tracking_table_name="proc_tracking",
            )
        )


class TestFencedNonInterleaving(_OnPostgres, es_persistence.NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> FencedApplicationRecorder:
        return self.leading(
            FencedApplicationRecorder(self.datastore, events_table_name="ni_events")
        )


class _FactoryEnvironment:
    """PERSISTENCE_MODULE=engine.postgres_log on a fresh schema, leading epoch 1."""

    @pytest.fixture(autouse=True)
    def _env(self, postgres: PostgresServer) -> Iterator[None]:
        with postgres.fresh_schema() as schema:
            self.settings = {
                InfrastructureFactory.PERSISTENCE_MODULE: "engine.postgres_log",
                **postgres.env(schema),
                FencedPostgresFactory.TASKLEDGER_REPLICA: REPLICA,
                FencedPostgresFactory.TASKLEDGER_EPOCH: "1",
            }
            yield


class TestFencedPostgresFactory(
    _FactoryEnvironment, es_persistence.InfrastructureFactoryTestCase[FencedPostgresFactory]
):
    def setUp(self) -> None:
        self.env = Environment("TestCase")
        self.env.update(self.settings)
        super().setUp()

    def expected_factory_class(self) -> type[FencedPostgresFactory]:
        return FencedPostgresFactory

    def expected_aggregate_recorder_class(self) -> type[PostgresAggregateRecorder]:
        return PostgresAggregateRecorder

    def expected_application_recorder_class(self) -> type[FencedApplicationRecorder]:
        return FencedApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[PostgresTrackingRecorder]:
        return PostgresTrackingRecorder

    def tracking_recorder_subclass(self) -> type[PostgresTrackingRecorder]:
        return _CustomTrackingRecorder

    def expected_process_recorder_class(self) -> type[FencedProcessRecorder]:
        return FencedProcessRecorder


class _CustomTrackingRecorder(PostgresTrackingRecorder):
    pass


class TestApplicationOnFencedPostgres(
    _FactoryEnvironment, es_application.ExampleApplicationTestCase
):
    expected_factory_topic = "engine.postgres_log:FencedPostgresFactory"

    def setUp(self) -> None:
        os.environ.update(self.settings)
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        for key in self.settings:
            os.environ.pop(key, None)
