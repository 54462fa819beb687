"""The simulated Mesos master: a pure cluster model (cluster.py, wiring master.py, agents.py,
allocator.py and fault_actions.py over kernel.py) behind an HTTP shell (server.py) that the
unmodified pymesos driver talks to over real HTTP; cli.py is `taskledger sim`."""
