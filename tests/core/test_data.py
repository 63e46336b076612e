"""Evaluation subsets: max_eval_examples caps dev/val/test, max_dev_examples only dev."""

from tinymodels import tiny_backbone

from ptcore.config import RunConfig
from ptcore.train import prepare_data


def _sst2(root):
    """An SST-2 directory in the official tsv layout: 40 train rows (-> 4 dev), 10 val rows."""
    d = root / "glue" / "SST-2"
    d.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", 40), ("dev.tsv", 10)):
        rows = [f"it was {'good' if i % 2 else 'bad'} {i}\t{i % 2}" for i in range(n)]
        (d / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return root


def _prepare(tmp_path, **settings):
    cfg = RunConfig(task="glue/sst2", method="finetune", data_dir=str(_sst2(tmp_path / "data")), **settings)
    data = prepare_data(cfg, tiny_backbone("bert", tmp_path), extra_tokens=0)
    return {s: len(x) for s, x in data.examples.items()}, data.notes


def test_dev_only_cap_leaves_val_whole(tmp_path):
    full, _ = _prepare(tmp_path)
    assert (full["train"], full["dev"], full["val"]) == (36, 4, 10)
    sizes, notes = _prepare(tmp_path, max_dev_examples=2)
    assert (sizes["train"], sizes["dev"], sizes["val"]) == (36, 2, 10)
    assert "dev subsampled to 2 of 4 examples" in notes and not any(n.startswith("val") for n in notes)
    sizes, _ = _prepare(tmp_path, max_eval_examples=3, max_dev_examples=5)  # the smaller cap wins
    assert (sizes["dev"], sizes["val"]) == (3, 3)
