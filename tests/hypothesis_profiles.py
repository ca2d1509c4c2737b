"""Hypothesis profiles for the whole suite, and the one way a test asks for fewer examples.

``conftest.py`` loads the profile ``HYPOTHESIS_PROFILE`` names (``ci`` if unset) before any test
module is imported, so every ``@given`` test runs that profile's ``max_examples`` unless it asks
for a fraction of it with :func:`examples`. ``pytest --hypothesis-profile NAME`` also works, and
wins over the variable.

- ``ci`` (the default, and what ``.ci/run`` gets): 50 examples a test. The suite stays under
  four minutes on a 2-core machine (property tests took 100 s of it at 100 examples); inputs
  are drawn anew at every run, so the runs together try many more.
- ``dev``: 20 examples, for a quick edit-and-test loop.
- ``thorough``: 1,000 examples, after changing a property or a strategy, or before a release.

All three have no deadline and skip the ``too_slow`` health check: both judge wall-clock time,
which on a 2-core machine shared with other work says more about the neighbours than about the
test. Failures print a blob for ``@reproduce_failure``; inputs stay random from run to run, so
each run tries new ones (the example database in ``.hypothesis/`` replays past failures first).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILES = {"dev": 20, "ci": 50, "thorough": 1000}

#: Each example takes 10 ms or more, most of it writing files and reading them back (a Parquet
#: log, an HDF5 file, a log replayed and resumed), against 1 to 10 ms for most properties: half
#: the profile's examples.
FILES = 0.5
#: Each example runs several whole trainings, with checkpoints and a backup, start to end (about
#: 1 s an example): 15% of the profile's examples (8 in ``ci``).
RUNS = 0.15

for _name, _count in PROFILES.items():
    settings.register_profile(_name, max_examples=_count, deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow])


def load() -> str:
    """Load the profile ``HYPOTHESIS_PROFILE`` names (default ``ci``); return its name."""
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    if name not in PROFILES:
        raise ValueError(f"HYPOTHESIS_PROFILE={name!r}: expected one of {sorted(PROFILES)}")
    settings.load_profile(name)
    return name


def examples(fraction: float = 1.0, *, function_fixture: bool = False) -> settings:
    """Settings for a test that runs ``fraction`` of the loaded profile's examples (at least 1).

    ``function_fixture``: the test takes a function-scoped fixture (``tmp_path``, a loopback
    server) that its examples may share; Hypothesis refuses one unless told so. The profile's
    other settings are kept: this is read when the test module is imported, after conftest.py
    has loaded the profile.
    """
    base = settings.default
    checks = list(base.suppress_health_check)
    if function_fixture:
        checks.append(HealthCheck.function_scoped_fixture)
    return settings(max_examples=max(1, round(base.max_examples * fraction)),
                    suppress_health_check=checks)
