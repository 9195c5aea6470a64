"""Everything EPLB: the balancer contract, traces, simulation, scoring and sandboxed execution.

`EVALUATOR_VERSION` stamps every score; bump it whenever a change could alter any number.
"""

EVALUATOR_VERSION = "1.1.0"
