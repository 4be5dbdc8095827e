"""tvseg: the contract shared by the orchestrator (login node) and the worker (compute node).

Only light modules live here: errors, states, the jobs.yaml schema, the task a worker
is handed and the signal that warns it of its time limit, and the journal format and
layout.  Nothing in this package imports TensorFlow, SQLAlchemy or submitit.
"""

__version__ = "0.1.0"
