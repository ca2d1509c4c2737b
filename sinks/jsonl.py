"""The JSON Lines event log as a sink: one record a line (the format: docs/log-format.md).

The writer lives in the core (:mod:`eventbus.jsonl`), beside its reader, because the bus opens
its own log (``Bus(log="run.jsonl")``); it is a :class:`~eventbus.Sink` like every other and
can be given to a bus as one, e.g. a second copy of the log: ``Bus(log=[main, JsonlSink(copy)])``.
"""

from eventbus.jsonl import JsonlWriter

#: The same class under the name the other sinks' pattern gives it.
JsonlSink = JsonlWriter

__all__ = ["JsonlSink", "JsonlWriter"]
