"""The tests' name for tools/local_servers.py (throwaway PostgreSQL and ZooKeeper servers):
the servers moved there so that `taskledger demo --ha` can start them too."""

from tools.local_servers import (
    PostgresServer,
    ServerError,
    ZooKeeperServer,
    free_port,
    world_enterable_tempdir,
)

__all__ = [
    "PostgresServer",
    "ServerError",
    "ZooKeeperServer",
    "free_port",
    "world_enterable_tempdir",
]
