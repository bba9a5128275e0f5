"""The base class of errors that ``kedro run`` reports in one line instead of a traceback."""

from __future__ import annotations

import click


class KedroPrefectError(click.ClickException):
    """A problem the user must fix (bad option, bad prefect.yml, unreachable API, timeout...).

    A ``click.ClickException``: ``kedro run`` prints ``Error: <message>`` and exits with
    :attr:`exit_code` (1 unless set) instead of printing a traceback.
    """

    def __str__(self) -> str:
        return self.message
