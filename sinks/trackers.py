"""Experiment trackers as sinks. MLflow is the one built in (:mod:`sinks.mlflow`, where its
documentation is); a tracker's sink follows the same contract as every other sink."""

from sinks.mlflow import MLflowSink

__all__ = ["MLflowSink"]
