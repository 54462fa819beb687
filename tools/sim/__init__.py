"""The simulated Mesos master: a pure cluster model (cluster.py) behind an HTTP shell
(server.py) that the unmodified pymesos driver talks to over real HTTP."""
