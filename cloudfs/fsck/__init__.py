"""`cloudfs fsck`: the namespace cross-checked against Swift, and the repairs the namespace can
make alone.

checks.py runs the checks (a flat list, one invariant each), objects.py verifies one content
against Swift, findings.py holds what was found and the exit status, render.py prints it,
repair.py is what --repair changes (and why that never deletes data), progress.py the
parallel requests and the progress line, command.py the subcommand and its refusal to repair
a mounted filesystem. docs/OPERATIONS.md ("cloudfs fsck") is the operator's view.
"""
