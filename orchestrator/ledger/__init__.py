"""The study's data: the results table and its statuses, the output directory's state and locks,
which final runs count for a cell and their statistics over seeds, the halving selection, disk
use. What MLflow and the report show is read from here."""
