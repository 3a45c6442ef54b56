"""Allow ``python -m iotwarden``."""

from iotwarden.cli import main

main()
