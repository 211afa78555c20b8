"""``python -m streamseg`` is the ``streamseg`` command."""

from streamseg.cli import main

raise SystemExit(main())
