"""The Mesos state tables as Aurora's and Mesos's documentation give them, written out here
independently of engine/mesos_states.py, so that the tests check the module against them."""

# Each Mesos state and the scheduler state Aurora maps it to.
EXPECTED_MAPPING = {
    "TASK_STAGING": "STARTING",
    "TASK_STARTING": "STARTING",
    "TASK_RUNNING": "RUNNING",
    "TASK_FINISHED": "FINISHED",
    "TASK_FAILED": "FAILED",
    "TASK_KILLING": "KILLED",
    "TASK_KILLED": "KILLED",
    "TASK_LOST": "LOST",
    "TASK_ERROR": "LOST",
    "TASK_DROPPED": "LOST",
    "TASK_GONE": "LOST",
    "TASK_GONE_BY_OPERATOR": "LOST",
    "TASK_UNREACHABLE": "PARTITIONED",
    "TASK_UNKNOWN": "PARTITIONED",
}
# The terminal Mesos states.
EXPECTED_TERMINAL = {
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_ERROR",
    "TASK_LOST",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
}
