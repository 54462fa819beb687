"""engine.store against eventsourcing's own recorder and application test cases.

These are the library's tests, not ours: subclassing them is how a persistence module shows
it behaves exactly like the POPO, SQLite and PostgreSQL modules.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from eventsourcing.persistence import InfrastructureFactory

# Imported as modules: pytest collects every unittest.TestCase named at module level, and
# the library's abstract bases must not run on their own.
from eventsourcing.tests import application as es_application
from eventsourcing.tests import persistence as es_persistence
from eventsourcing.utils import Environment

from engine.store import (
    LMDBAggregateRecorder,
    LMDBApplicationRecorder,
    LMDBDatastore,
    LMDBFactory,
    LMDBProcessRecorder,
    LMDBTrackingRecorder,
)


class _TempLogs:
    """Each recorder gets a fresh log folder (the library's tests expect an empty store)."""

    def setUp(self) -> None:
        self._dirs: list[str] = []
        self._stores: list[LMDBDatastore] = []
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        for store in self._stores:
            store.close()
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)

    def datastore(self) -> LMDBDatastore:
        path = tempfile.mkdtemp(prefix="tl-conf-")
        self._dirs.append(path)
        # Non-durable keeps the library's performance tests quick; durability has its own
        # tests in test_store.py.
        store = LMDBDatastore.open(path, durable=False, map_size=1 << 26)
        self._stores.append(store)
        return store


class TestLMDBAggregateRecorder(_TempLogs, es_persistence.AggregateRecorderTestCase):
    def create_recorder(self) -> LMDBAggregateRecorder:
        return LMDBAggregateRecorder(self.datastore(), "snapshots")


class TestLMDBApplicationRecorder(_TempLogs, es_persistence.ApplicationRecorderTestCase):
    def create_recorder(self) -> LMDBApplicationRecorder:
        return LMDBApplicationRecorder(self.datastore())

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestLMDBApplicationRecorderTextIds(TestLMDBApplicationRecorder):
    def new_originator_id(self) -> str:
        import uuid

        return f"job/0/{uuid.uuid4()}"


class TestLMDBTrackingRecorder(_TempLogs, es_persistence.TrackingRecorderTestCase):
    def create_recorder(self) -> LMDBTrackingRecorder:
        return LMDBTrackingRecorder(self.datastore())


class TestLMDBProcessRecorder(_TempLogs, es_persistence.ProcessRecorderTestCase):
    def create_recorder(self) -> LMDBProcessRecorder:
        return LMDBProcessRecorder(self.datastore())


class TestLMDBNonInterleaving(_TempLogs, es_persistence.NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> LMDBApplicationRecorder:
        return LMDBApplicationRecorder(self.datastore())


class TestLMDBInfrastructureFactory(es_persistence.InfrastructureFactoryTestCase[LMDBFactory]):
    def setUp(self) -> None:
        self.path = tempfile.mkdtemp(prefix="tl-factory-")
        self.env = Environment("TestCase")
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = "engine.store"
        self.env[LMDBFactory.LMDB_PATH] = self.path
        self.env[LMDBFactory.LMDB_DURABLE] = "no"
        super().setUp()

    def tearDown(self) -> None:
        self.factory.close()
        super().tearDown()
        shutil.rmtree(self.path, ignore_errors=True)

    def expected_factory_class(self) -> type[LMDBFactory]:
        return LMDBFactory

    def expected_aggregate_recorder_class(self) -> type[LMDBAggregateRecorder]:
        return LMDBAggregateRecorder

    def expected_application_recorder_class(self) -> type[LMDBApplicationRecorder]:
        return LMDBApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[LMDBTrackingRecorder]:
        return LMDBTrackingRecorder

    def tracking_recorder_subclass(self) -> type[LMDBTrackingRecorder]:
        return _CustomTrackingRecorder

    def expected_process_recorder_class(self) -> type[LMDBProcessRecorder]:
        return LMDBProcessRecorder


class _CustomTrackingRecorder(LMDBTrackingRecorder):
    pass


class TestApplicationOnLMDB(es_application.ExampleApplicationTestCase):
    expected_factory_topic = "engine.store:LMDBFactory"

    def setUp(self) -> None:
        self.path = tempfile.mkdtemp(prefix="tl-app-")
        os.environ["PERSISTENCE_MODULE"] = "engine.store"
        os.environ["LMDB_PATH"] = self.path
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        for key in ("PERSISTENCE_MODULE", "LMDB_PATH"):
            os.environ.pop(key, None)
        shutil.rmtree(self.path, ignore_errors=True)
