"""`taskledger simulate`: the whole system in one process on a virtual clock.

The simulated master's pure model (tools/sim_master/cluster.py), the scheduler's real logic (the
pymesos adapter's callbacks, its Driver and SchedulerCore, engine/mesos/), the Ledger on a real
LMDB folder and the reconciliation saga, driven step by step with every random choice drawn
from one seed: no wall clock, no threads, no sockets. Faults are injected from the same seed
and invariants are checked at every step (tools/deterministic/invariants.py).
"""
