"""MLflow: experiment and run layout, tags, the tracker that mirrors the ledger, search plots."""
