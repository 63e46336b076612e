"""train_size / data_seed / dev_size: deterministic, stratified samples and the few-shot dev."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from conftest import FIXTURES
from tinymodels import tiny_backbone

from ptcore.config import make_run_config
from ptcore.errors import ConfigError, DataError
from ptcore.sampling import draw, quotas, sample
from ptcore.tasks import get_task, load_splits
from ptcore.train import prepare_data

# an imbalanced 3-label pool: 200 / 80 / 20
POOL = [{"idx": i, "label": 0 if i < 200 else (1 if i < 280 else 2)} for i in range(300)]


def ids(examples):
    return [ex["idx"] for ex in examples]


def test_same_sample_in_another_process():
    here = ids(draw(POOL, 32, 7, 16)[0]), ids(draw(POOL, 32, 7, 16)[1])
    code = (
        "import json; from ptcore.sampling import draw\n"
        "pool = [{'idx': i, 'label': 0 if i < 200 else (1 if i < 280 else 2)} for i in range(300)]\n"
        "t, d, _ = draw(pool, 32, 7, 16); print(json.dumps([[e['idx'] for e in t], [e['idx'] for e in d]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"}).stdout
    assert json.loads(out) == [list(here[0]), list(here[1])]


def test_stratified_by_label():
    train, _, _ = draw(POOL, 30, 0)
    assert len(train) == 30
    assert Counter(ex["label"] for ex in train) == {0: 20, 1: 8, 2: 2}  # 200:80:20 of 30
    train, _, _ = draw(POOL, 8, 3)  # 5.33 / 2.13 / 0.53: the rare label still gets one
    assert Counter(ex["label"] for ex in train) == {0: 5, 1: 2, 2: 1}


def test_quotas_sum_and_floor():
    for n in (3, 7, 32, 299):
        q = quotas({"a": 200, "b": 80, "c": 20}, n)
        assert sum(q.values()) == n and min(q.values()) >= 1
    assert quotas({"a": 9, "b": 1}, 1) == {"a": 1, "b": 0}  # fewer than the labels: by share


def test_data_seeds_give_different_samples():
    samples = {tuple(ids(draw(POOL, 32, s)[0])) for s in range(5)}
    assert len(samples) == 5


def test_few_shot_dev_outside_the_sample_and_stratified():
    train, dev, notes = draw(POOL, 32, 1, 32)
    assert not set(ids(train)) & set(ids(dev))
    assert Counter(ex["label"] for ex in dev) == Counter(ex["label"] for ex in train)  # same pool shares
    assert any("dev (selection)" in n for n in notes)
    # the train sample does not move when a dev carve is added
    assert ids(draw(POOL, 32, 1)[0]) == ids(train)


def test_groups_stay_whole():
    pool = [{"idx": i, "label": i % 2, "group": i // 4} for i in range(40)]  # 10 groups of 4 (mixed labels)
    picked, rest, how = sample(pool, 10, 0)
    groups = Counter(ex["group"] for ex in picked)
    assert set(groups.values()) == {4} and len(picked) == 8 and how == "whole groups, unstratified"


def test_train_size_at_least_the_pool_takes_all():
    train, _, notes = draw(POOL, 500, 0)
    assert ids(train) == ids(POOL) and "all of them used" in notes[0]
    with pytest.raises(DataError, match="lower train_size"):
        draw(POOL, 500, 0, 8)


def test_config_checks():
    base = {"task": "superglue/cb", "method": "finetune"}
    with pytest.raises(ConfigError, match="train_size and max_train_examples"):
        make_run_config({**base, "train_size": 8, "max_train_examples": 8})
    with pytest.raises(ConfigError, match="dev_size needs train_size"):
        make_run_config({**base, "dev_size": 8})
    # settings added later leave earlier runs' config hashes alone
    assert make_run_config(base).config_hash() == make_run_config({**base, "data_seed": 0}).config_hash()
    assert make_run_config({**base, "train_size": 8}).config_hash() != make_run_config({**base, "train_size": 8, "data_seed": 1}).config_hash()


def test_prepare_data_few_shot(tmp_path):
    bb = tiny_backbone("bert", tmp_path)
    whole = load_splits(get_task("superglue/cb"), str(FIXTURES))[0]
    cfg = make_run_config({"task": "superglue/cb", "method": "finetune", "data_dir": str(FIXTURES),
                           "train_size": 4, "dev_size": 2, "data_seed": 3})
    data = prepare_data(cfg, bb, 0)
    assert len(data.examples["train"]) == 4 and len(data.examples["dev"]) == 2
    train_ids = [json.dumps(ex, sort_keys=True) for ex in data.examples["train"]]
    assert all(json.dumps(ex, sort_keys=True) in [json.dumps(e, sort_keys=True) for e in whole["train"]] for ex in data.examples["dev"])
    assert not set(train_ids) & {json.dumps(ex, sort_keys=True) for ex in data.examples["dev"]}
    assert data.examples["val"] == whole["val"]  # the reported split is never touched


# ---------------------------------------------------------------- passages (BoolQ, MultiRC, ReCoRD)


def passage_pool(seed: int) -> list[dict]:
    """120 questions about 30 passages (1 to 8 questions each, labels mixed within a passage)."""
    import random

    rng = random.Random(seed)
    sizes = [rng.randint(1, 8) for _ in range(30)]
    pool = [{"idx": f"p{p}-{k}", "text_a": f"passage {p}", "label": rng.randrange(2)} for p, n in enumerate(sizes) for k in range(n)]
    rng.shuffle(pool)  # a passage's questions need not be adjacent
    return pool


def passages(examples, key="text_a"):
    return {ex[key] for ex in examples}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("train_size, dev_size", [(8, 8), (16, 16), (32, 8), (4, 32)])
def test_sample_and_few_shot_dev_share_no_passage(seed, train_size, dev_size):
    pool = passage_pool(seed)
    train, dev, notes = draw(pool, train_size, seed, dev_size, passage="text_a")
    assert train and dev and not passages(train) & passages(dev)
    # whole passages: every question of a drawn passage is drawn with it
    for part in (train, dev):
        assert sum(ex["text_a"] in passages(part) for ex in pool) == len(part)
    for part, size in ((train, train_size), (dev, dev_size)):  # at most the size, or one passage larger than it
        assert len(part) <= size or len(passages(part)) == 1
    assert "whole passages, unstratified" in notes[0] and "no passage in both" in notes[1]


def test_per_example_units_would_share_passages():
    """The check above has teeth: drawn per example (no passage key), the same pools put a
    passage in both the sample and the dev (what ptcore did before passages were declared)."""
    shared = [bool(passages(t) & passages(d)) for t, d, _ in (draw(passage_pool(s), 16, s, 16) for s in range(6))]
    assert any(shared)


def test_passage_tasks_are_declared():
    assert get_task("superglue/boolq").passage == "text_a"  # no passage id in BoolQ: its text
    assert get_task("superglue/multirc").passage == get_task("superglue/record").passage == "passage"
    assert get_task("superglue/cb").passage is None and get_task("glue/sst2").passage is None


def test_multirc_fixture_sample_keeps_paragraphs():
    """MultiRC's train file: two paragraphs. The sample takes one whole paragraph (all its
    questions' options), the dev the other."""
    from ptcore.tasks.io import read_records, to_examples

    spec = get_task("superglue/multirc")
    examples = to_examples(read_records(FIXTURES / spec.local.path / spec.local.files["train"], spec), spec)
    assert len(passages(examples, "passage")) == 2
    for seed in range(4):
        train, dev, _ = draw(examples, 4, seed, 4, passage=spec.passage)
        assert len(passages(train, "passage")) == len(passages(dev, "passage")) == 1
        assert not passages(train, "passage") & passages(dev, "passage")
        assert not passages(train) & passages(dev)  # the paragraph texts too
        assert not {ex["group"] for ex in train} & {ex["group"] for ex in dev}


@pytest.mark.parametrize("task, train_size, dev_size", [("superglue/boolq", 3, 3), ("superglue/record", 3, 3)])
def test_prepare_data_few_shot_keeps_passages_apart(tmp_path, task, train_size, dev_size):
    """On the fixtures (passages shared by several questions / queries): the few-shot sample
    and its dev never hold the same passage, for any data_seed."""
    spec = get_task(task)
    bb = tiny_backbone("bert", tmp_path)
    whole = load_splits(spec, str(FIXTURES))[0]["train"]
    assert len(passages(whole, spec.passage)) < len(whole)  # the fixture can catch a split passage
    for data_seed in range(4):
        cfg = make_run_config({"task": task, "method": "finetune", "data_dir": str(FIXTURES),
                               "train_size": train_size, "dev_size": dev_size, "data_seed": data_seed})
        data = prepare_data(cfg, bb, 0)
        train, dev = data.examples["train"], data.examples["dev"]
        assert train and dev
        assert not passages(train, spec.passage) & passages(dev, spec.passage)
        assert not passages(train) & passages(dev)  # text_a: the passage text
        assert any("no passage in both" in n for n in data.notes)
