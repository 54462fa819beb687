"""What shapes a simulated cluster: its size, its seed and every duration of its model."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes a simulated cluster. Durations are simulated seconds."""

    agents: int = 3
    seed: int = 0
    ip: str = "127.0.0.1"
    port: int = 5050
    hostname: str = "127.0.0.1"
    version: str = "1.11.0"
    # Wall-clock seconds at simulated time 0; TaskStatus.timestamp is epoch + now.
    epoch: float = 1_700_000_000.0
    heartbeat_interval: float = 15.0
    # SUBSCRIBED reports heartbeat_interval / wire_time_scale: a scheduler on the wall clock
    # then expects heartbeats at the rate they really arrive when the server compresses time.
    wire_time_scale: float = 1.0
    update_retry_initial: float = 10.0
    update_retry_max: float = 600.0
    agent_cpus: float = 4.0
    agent_mem: float = 8192.0
    agent_ports: tuple[int, int] = (31000, 32000)
    starting_delay: float = 0.5
    running_delay: float = 0.5
    kill_delay: float = 1.0
    allocation_interval: float = 1.0
    default_refuse_seconds: float = 5.0
