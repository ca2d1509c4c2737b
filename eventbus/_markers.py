"""The pluggy markers, apart from ``__init__`` so ``hookspecs`` imports them without a cycle."""

import pluggy

PROJECT_NAME = "eventbus"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
