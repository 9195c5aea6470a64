"""Everything EPLB: the balancer contract, traces, simulation, scoring and sandboxed execution.

`EVALUATOR_VERSION` stamps every score; bump it whenever a change could alter any number.
"""

# 1.1.0: imported traces and trace files are scored whole (split `all`), with their trailing partial window,
# and with the expert groups their import recorded (no longer 1 when the file states none); bundled datasets
# score as in 1.0.0.
EVALUATOR_VERSION = "1.1.0"
