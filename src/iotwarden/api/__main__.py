"""``python -m iotwarden.api serve|token``: the API commands without the main CLI."""

import sys

import click

from iotwarden.api.cli import api_cli
from iotwarden.errors import IotwardenError

try:
    api_cli.main(standalone_mode=False)
except click.ClickException as error:
    error.show()
    sys.exit(error.exit_code)
except IotwardenError as error:
    click.echo(f"error: {error}", err=True)
    sys.exit(1)
