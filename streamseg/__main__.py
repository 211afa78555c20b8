"""``python -m streamseg`` is the ``streamseg`` command."""

from streamseg.cli import entry

entry()
