"""What the fuzz tests share: strategies, and a hash of a log's events as stored."""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import strategies as st

from engine.store import LMDBDatastore

# Any value msgpack can carry (within its 64-bit integer range), nested a little.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)


def event_hash(path: str) -> str:
    """A hash of every record of the log's notifications database (the events as stored):
    what a command that only reads, or a refused write, must leave as it was."""
    store = LMDBDatastore.open(path)
    try:

        def read(txn: Any) -> str:
            digest = hashlib.sha256()
            for key, value in txn.cursor(db=store.dbs["notifications"]):
                digest.update(key + value)
            return digest.hexdigest()

        return store.read(read)
    finally:
        store.close()
