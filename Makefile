# Two entry points for a fresh machine: `make demo` and `make test`.
.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/headcast demo --force

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/headcast bench reconstruct --n 20
