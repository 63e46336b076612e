"""Splits a reviewer can trust: carving keeps passages / paragraphs whole, and subsampling
keeps MultiRC questions whole while leaving every other task's selection as it was."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch

from conftest import FIXTURES
from ptcore.data import subsample
from ptcore.tasks import get_task, load_splits
from ptcore.tasks.io import SPLIT_SEED, carve, read_records, to_examples


def _texts(examples: list[dict]) -> set[str]:
    return {ex["text_a"] for ex in examples}


def _file_examples(name: str, role: str) -> list[dict]:
    spec = get_task(name)
    return to_examples(read_records(FIXTURES / spec.local.path / spec.local.files[role], spec), spec)


# ---------------------------------------------------------------- carving by passage / paragraph


def test_boolq_fixture_shares_passages():
    """The fixture can catch a carve that splits a passage: questions share passages."""
    for role in ("train", "val"):
        texts = [ex["text_a"] for ex in _file_examples("superglue/boolq", role)]
        assert len(set(texts)) < len(texts)


def test_boolq_dev_carved_from_train_by_passage():
    splits, notes = load_splits(get_task("superglue/boolq"), data_dir=FIXTURES)
    assert splits["dev"] and not _texts(splits["train"]) & _texts(splits["dev"])
    assert any(n.startswith("dev = 10% of the official train split by passage (whole passages") for n in notes)


def test_boolq_carved_from_val_shares_no_passage(tmp_path: Path):
    (tmp_path / "superglue" / "BoolQ").mkdir(parents=True)
    shutil.copy(FIXTURES / "superglue/BoolQ/val.jsonl", tmp_path / "superglue/BoolQ/val.jsonl")
    splits, _ = load_splits(get_task("superglue/boolq"), data_dir=tmp_path)
    parts = [_texts(splits[s]) for s in ("train", "dev", "val")]
    assert all(parts)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_multirc_dev_shares_no_paragraph_with_train():
    splits, notes = load_splits(get_task("superglue/multirc"), data_dir=FIXTURES)
    assert splits["dev"] and not _texts(splits["train"]) & _texts(splits["dev"])
    # questions stay whole too (a paragraph holds whole questions)
    assert not {ex["group"] for ex in splits["train"]} & {ex["group"] for ex in splits["dev"]}
    assert any("by paragraph (whole paragraphs" in n for n in notes)


@pytest.mark.parametrize("seed", range(8))
def test_carve_by_text_never_splits_a_passage(seed: int):
    rng = random.Random(seed)
    examples = [{"text_a": f"passage {rng.randrange(12)}", "i": i} for i in range(60)]
    parts = carve(examples, (0.6, 0.1, 0.3), seed=seed, key="text_a")
    assert sorted(ex["i"] for part in parts for ex in part) == list(range(60))
    texts = [_texts(p) for p in parts]
    assert all(texts) and not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])


def test_carve_without_shared_values_is_the_plain_permutation():
    """Carving by a field whose values are all distinct selects what example carving did."""
    examples = [{"text_a": f"t{i}", "label": i % 2} for i in range(40)]
    by_text = carve(examples, (0.9, 0.1), key="text_a")
    idx = list(range(40))
    random.Random(SPLIT_SEED).shuffle(idx)
    assert by_text[1] == [examples[i] for i in sorted(idx[36:])]  # round(0.9 * 40) = 36 to train
    assert by_text == carve(examples, (0.9, 0.1))


def test_carve_leaves_every_part_a_unit():
    """Few units (two paragraphs): rounding 90% up must not leave dev empty."""
    examples = [{"text_a": "p0"}] * 3 + [{"text_a": "p1"}] * 2
    train, dev = carve(examples, (0.9, 0.1), key="text_a")
    assert train and dev and not _texts(train) & _texts(dev)


# ---------------------------------------------------------------- subsampling


def _legacy_subsample(examples, limit, seed=0):
    """ptcore.data.subsample before groups were kept whole (the selection existing results used)."""
    if limit is None or len(examples) <= limit:
        return examples
    g = torch.Generator().manual_seed(seed)
    idx = sorted(torch.randperm(len(examples), generator=g)[:limit].tolist())
    return [examples[i] for i in idx]


@pytest.mark.parametrize("n, limit, seed", [(10, 3, 0), (50, 7, 0), (872, 100, 0), (200, 199, 3), (5, 9, 0)])
def test_subsample_without_groups_is_unchanged(n: int, limit: int, seed: int):
    examples = [{"text_a": f"s{i}", "label": i % 2} for i in range(n)]
    assert subsample(examples, limit, seed) == _legacy_subsample(examples, limit, seed)


def test_subsample_of_real_fixture_splits_is_unchanged():
    for name in ("glue/sst2", "superglue/cb", "superglue/boolq", "superglue/copa"):
        for split in load_splits(get_task(name), data_dir=FIXTURES)[0].values():
            for limit in (1, 2, 3):
                assert subsample(split, limit) == _legacy_subsample(split, limit), name


def _grouped(sizes: list[int]) -> list[dict]:
    return [{"text_a": f"q{g} option {k}", "label": k % 2, "group": f"q{g}"} for g, n in enumerate(sizes) for k in range(n)]


@pytest.mark.parametrize("limit", [1, 4, 10, 23, 40])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subsample_keeps_multirc_questions_whole(limit: int, seed: int):
    examples = _grouped([2, 5, 3, 4, 6, 1, 3, 5, 2, 4, 3, 5])  # 43 options, 12 questions
    kept = subsample(examples, limit, seed)
    assert kept == subsample(examples, limit, seed)  # deterministic
    assert kept == [ex for ex in examples if ex in kept]  # file order
    count = {ex["group"]: 0 for ex in examples}
    for ex in examples:
        count[ex["group"]] += 1
    kept_groups = {ex["group"] for ex in kept}
    assert kept_groups and len(kept) == sum(count[g] for g in kept_groups)  # whole questions only
    assert len(kept) <= limit or len(kept_groups) == 1  # within the cap, but at least one question


def test_subsample_multirc_fixture_val():
    val = load_splits(get_task("superglue/multirc"), data_dir=FIXTURES)[0]["val"]  # questions of 2, 3, 3 options
    for limit in range(1, len(val)):
        kept = subsample(val, limit)
        groups = {ex["group"] for ex in kept}
        assert kept == [ex for ex in val if ex["group"] in groups]


def test_max_train_keeps_questions_whole():
    spec = get_task("superglue/multirc")
    full = load_splits(spec, data_dir=FIXTURES)[0]["train"]
    for cap in range(1, len(full)):
        splits, notes = load_splits(spec, data_dir=FIXTURES, max_train=cap)
        train = splits["train"]
        groups = {ex["group"] for ex in train}
        assert train == [ex for ex in full if ex["group"] in groups]
        assert len(train) <= cap or len(groups) == 1
        assert any(n.startswith(f"train subsampled to {len(train)} examples in whole groups (cap {cap}") for n in notes)


def test_max_train_without_groups_is_unchanged():
    spec = get_task("glue/sst2")
    full = load_splits(spec, data_dir=FIXTURES)[0]["train"]
    splits, notes = load_splits(spec, data_dir=FIXTURES, max_train=3)
    train = splits["train"]
    idx = list(range(len(full)))
    random.Random(SPLIT_SEED + 1).shuffle(idx)
    assert train == [full[i] for i in sorted(idx[:3])]
    assert f"train subsampled to 3 examples (seed {SPLIT_SEED + 1})" in notes
