"""Measurement only: ranking metrics, evaluation loops (SRM, LLM, device tier, hypernetwork), calibration, reports
and plots. Builds nothing that is kept: the pipelines that write artifacts are in :mod:`pipelines`."""
