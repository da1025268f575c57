"""`python -m cisctool` (and `torchrun -m cisctool`) runs the command line."""

from cisctool.cli.main import main

main()
