"""Helpers for the orchestrator study tests: a tiny random BERT on disk and tiny study files.

(A plain module, imported by the test files, rather than a conftest.py.)
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FIXTURE_DATA = REPO / "tests" / "fixtures" / "data"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 random BERT + a character-level WordPiece tokenizer, saved like a hub model."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny-bert")
    chars = string.ascii_lowercase + string.digits
    words = "the a is was it he she they not no yes and or but of to in that this what cause result because so".split()
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + list(chars + string.punctuation) + ["##" + c for c in chars]))
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab=str(d / "vocab.txt"), do_lower_case=True)  # transformers 5: `vocab`, not `vocab_file`
    assert len(tok) == len(vocab)
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def tiny_study(model_dir: Path, out_dir: Path, **overrides: Any) -> dict[str, Any]:
    """2 cells (CB, RTE) x ptuning_v2, 2 search trials each, final seeds 0 and 1 in one trial."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "backbones": [{"id": str(model_dir), "label": "tiny"}],
        "tasks": ["superglue/cb", "superglue/rte"],
        "methods": [
            {"name": "ptuning_v2", "fixed": {"prompt_length": 4}, "search": {"lr": {"type": "loguniform", "low": 1e-3, "high": 3e-2}}}
        ],
        "train": {"epochs": 2, "batch_size": 4, "max_length": 48},
        "budget": {"trials_per_cell": 2, "max_concurrent": 2},
        "final": {"seeds": [0, 1], "runs_per_trial": 2},
        "data_dir": str(FIXTURE_DATA),
        "ray": {"num_cpus": 2},
        "output_dir": str(out_dir),
    }
    for k, v in overrides.items():
        raw[k] = v
    return raw


def write_study(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def mlflow_runs(uri: str, experiment: str) -> list:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
