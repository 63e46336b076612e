"""Orchestration over ptcore: one run in-process, or studies on Ray Tune/Train with MLflow."""
