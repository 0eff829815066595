"""`python -m erpsync` is the same as the `erpsync` console script."""

from erpsync.cli.app import main

main()
