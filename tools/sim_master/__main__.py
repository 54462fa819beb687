"""`python -m tools.sim_master`: the same command as `taskledger sim`."""

from tools.sim_master.cli import sim_command

sim_command(prog_name="python -m tools.sim_master")
