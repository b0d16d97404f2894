"""Dev tooling that runs a mesh on one machine: the process owner (process.py) and the supervisor (`python -m launcher`)."""
