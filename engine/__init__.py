"""taskledger's engine: the log, the events, the state machines, the saga, the Ledger.

What a scheduler author needs is importable from here:

    from engine import Ledger
    with Ledger.open("var/ledger") as ledger: ...

The names load lazily (PEP 562), so importing a leaf module (engine.codec, say) does not
pull in the Ledger and everything under it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "Ledger": "engine.ledger",
    "LedgerLocked": "engine.ledger",
    "TaskExists": "engine.ledger",
    "BadTime": "engine.times",
    "PendingCommand": "engine.outbox",
    "DispatchReport": "engine.dispatcher",
    "SagaConfig": "engine.saga",
    "MalformedStatus": "engine.task_status",
    "LogOpenError": "engine.store",
    "LogFull": "engine.store",
    "DamagedRecord": "engine.store",
}

__all__ = [
    "BadTime",
    "DamagedRecord",
    "DispatchReport",
    "Ledger",
    "LedgerLocked",
    "LogFull",
    "LogOpenError",
    "MalformedStatus",
    "PendingCommand",
    "SagaConfig",
    "TaskExists",
]
assert sorted(_EXPORTS) == __all__, "a public name without its module, or the reverse"

if TYPE_CHECKING:
    from engine.dispatcher import DispatchReport
    from engine.ledger import Ledger, LedgerLocked, TaskExists
    from engine.outbox import PendingCommand
    from engine.saga import SagaConfig
    from engine.store import DamagedRecord, LogFull, LogOpenError
    from engine.task_status import MalformedStatus
    from engine.times import BadTime


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
