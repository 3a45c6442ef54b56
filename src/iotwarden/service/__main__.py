"""``python -m iotwarden.service [OPTIONS] run ...``: the iotwarden CLI with ``run`` registered.

Useful until ``run`` is part of the installed ``iotwarden`` command; both
take the same arguments.
"""

from iotwarden.cli import cli, main
from iotwarden.service.cli import run

if "run" not in cli.commands:
    cli.add_command(run)

main()
