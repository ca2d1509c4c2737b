"""``python -m eventbus`` is the ``eventbus`` command."""

from .cli import main

raise SystemExit(main())
