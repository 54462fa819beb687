"""`python -m tools.sim`: the same command as `taskledger sim`."""

from tools.sim.cli import sim_command

sim_command(prog_name="python -m tools.sim")
