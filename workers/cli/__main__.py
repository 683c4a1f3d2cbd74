"""`python -m easeoff.workers.cli`, as the `easeoff` entry point."""

from easeoff.workers.cli import main

main()
