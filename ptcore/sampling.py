"""Training-set size and the few-shot regime: deterministic, stratified samples.

``train_size: N`` with ``data_seed: s`` draws N examples from a task's training split:

* **deterministic**: the same (task data, N, s) gives the same sample in every run and
  process (a seeded ``torch.Generator``; nothing depends on hash randomisation or order of
  arrival);
* **stratified by label** where examples have labels (classification, multiple choice):
  each label gets its share of N (largest remainder), and at least one example when N is at
  least the number of labels, so a 32-shot CB sample keeps its rare ``neutral`` class;
* **whole groups** (MultiRC's answer options of one question) are kept or dropped
  together; a task with groups is sampled by group, unstratified;
* **whole passages** where the task declares them (``TaskSpec.passage``: BoolQ's passage,
  MultiRC's paragraph, ReCoRD's article): every example about one passage is in the sample
  or out of it, so the sample and the few-shot dev never share a passage; such a task is
  sampled by passage, unstratified (a passage holds whole MultiRC questions);
* different ``data_seed``\\ s give different samples, so final seeds can vary the sample as
  well as the initialization (the few-shot regime's main source of variance).

``dev_size: K`` (the few-shot regime) carves the selection set from the training split
*outside* the sample, stratified (or by whole groups / passages) the same way with its own
stream: small like the training set (as in LM-BFF, Gao et al. 2021: "a development set of
the same size"), and never the reported split.
"""

from __future__ import annotations

import zlib
from typing import Optional

import torch

from .errors import DataError
from .tasks.io import take_units, units


def _generator(data_seed: int, purpose: str) -> torch.Generator:
    """One stream per (data_seed, purpose): the dev carve never shifts the train sample."""
    return torch.Generator().manual_seed(zlib.crc32(f"{purpose}:{data_seed}".encode()))


def _label_of(examples: list[dict], members: list[int]) -> object:
    labels = {repr(examples[i].get("label")) for i in members}
    return labels.pop() if len(labels) == 1 else None


def quotas(counts: dict[str, int], n: int) -> dict[str, int]:
    """Each label's share of ``n`` by largest remainder (ties: label order), at least one per
    label where ``n`` allows it, never more than a label has."""
    total = sum(counts.values())
    labels = sorted(counts)
    exact = {lab: n * counts[lab] / total for lab in labels}
    out = {lab: min(int(exact[lab]), counts[lab]) for lab in labels}
    if n >= len(labels):
        for lab in labels:
            out[lab] = max(out[lab], 1)
    # hand out what is left by largest remainder, then take back from the largest share if over
    by_remainder = sorted(labels, key=lambda lab: (-(exact[lab] - int(exact[lab])), lab))
    while sum(out.values()) < n:
        for lab in by_remainder:
            if sum(out.values()) < n and out[lab] < counts[lab]:
                out[lab] += 1
    floor = 1 if n >= len(labels) else 0
    while sum(out.values()) > n:
        lab = max((lab for lab in labels if out[lab] > floor), key=lambda lab: (out[lab] - exact[lab], out[lab]))
        out[lab] -= 1
    return out


def sample(examples: list[dict], n: int, data_seed: int, purpose: str = "train", passage: Optional[str] = None
           ) -> tuple[list[dict], list[dict], str]:
    """``(sample, rest, how)``: ``n`` examples (whole units) drawn as the module doc says, the
    examples not drawn (both in their original order), and how they were drawn, for the data
    notes. ``passage``: the example key of the task's passages (``TaskSpec.passage``), which
    are then the units; else ``group``. ``n`` at least the pool: everything."""
    if n >= len(examples):
        return list(examples), [], "all"
    unit = passage or "group"
    members = units(examples, unit)
    g = _generator(data_seed, purpose)
    labels = [_label_of(examples, m) for m in members]
    stratify = all(len(m) == 1 for m in members) and all(lab not in (None, "None") for lab in labels)
    chosen: list[int] = []
    if stratify:
        by_label: dict[str, list[int]] = {}
        for u, lab in enumerate(labels):
            by_label.setdefault(lab, []).append(u)
        want = quotas({lab: len(us) for lab, us in by_label.items()}, n)
        for lab in sorted(by_label):
            us = by_label[lab]
            perm = torch.randperm(len(us), generator=g).tolist()
            chosen += [members[us[i]][0] for i in perm[: want[lab]]]
    else:
        chosen = take_units(members, torch.randperm(len(members), generator=g).tolist(), n)
    keep = set(chosen)
    whole = "whole passages" if passage else "whole groups"
    how = "stratified by label" if stratify else (f"{whole}, unstratified" if len(members) < len(examples) else "unstratified")
    return [examples[i] for i in sorted(keep)], [ex for i, ex in enumerate(examples) if i not in keep], how


def draw(train: list[dict], train_size: int, data_seed: int, dev_size: Optional[int] = None,
         passage: Optional[str] = None) -> tuple[list[dict], Optional[list[dict]], list[str]]:
    """(train sample, few-shot dev or None, data notes) for a run's ``train_size`` / ``dev_size``.
    ``passage`` (``TaskSpec.passage``): sample and dev keep whole passages, so they share none."""
    notes = []
    picked, rest, how = sample(train, train_size, data_seed, "train", passage)
    if len(picked) < len(train):
        notes.append(f"train: a sample of {len(picked)} of {len(train)} training examples ({how}, data_seed {data_seed})")
    else:
        notes.append(f"train_size {train_size} >= the {len(train)} training examples: all of them used")
    dev = None
    if dev_size is not None:
        if not rest:
            raise DataError(f"train_size {train_size} takes every one of the {len(train)} training examples, leaving none "
                            f"for the dev_size carve; lower train_size")
        dev, _, how = sample(rest, dev_size, data_seed, "dev", passage)
        shares = "; no passage in both" if passage else ""
        notes.append(f"dev (selection): {len(dev)} examples carved from the training split outside the train sample "
                     f"({how}{shares}; few-shot: the task's dev split is not used)")
    return picked, dev, notes
