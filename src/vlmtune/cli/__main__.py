"""`python -m vlmtune.cli`: the same as the `vlmtune` command (used under `accelerate launch`)."""

from vlmtune.cli.main import main

main()
