"""From task splits to batches: tokenized features (cached) and dynamic-padding loaders."""

from __future__ import annotations

import gc
import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import DataLoader

from .fileio import atomic_write
from .tasks.base import TaskSpec
from .tasks.io import take_units, units
from .tasks.kinds import Kind

CACHE_ENV = "PTCORE_CACHE_DIR"


def subsample(examples: list[dict], limit: Optional[int], seed: int = 0) -> list[dict]:
    """A deterministic subset of about ``limit`` examples (the same for every run), order preserved.

    Examples sharing a ``group`` (MultiRC: the answer options of one question) are kept or
    dropped together: whole groups are taken in a seeded order until the next would take
    the total past ``limit``, at least one group, so the subset may hold fewer than
    ``limit`` examples (never more, unless the first group alone is larger). Examples
    without a group are units of one; with no groups at all this is exactly the first
    ``limit`` of a seeded permutation, the selection made before groups were respected.
    """
    if limit is None or len(examples) <= limit:
        return examples
    members = units(examples, "group")
    order = torch.randperm(len(members), generator=torch.Generator().manual_seed(seed)).tolist()
    return [examples[i] for i in take_units(members, order, limit)]


# The feature cache is JSON: features are plain python values (dicts of ints, floats, None,
# strings and nested lists of them), and reading JSON can never run code, as unpickling can.
# Version 1 was a pickle (``*.pkl``): those files are never read, and are deleted when the
# split's new cache file is written.
CACHE_FORMAT = "ptcore-features/2"
CACHE_SUFFIX = ".features.json"


def _jsonable(value):
    """Examples that are not plain JSON (a set, an exotic scalar) still hash the same in every process."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return repr(value)


def _cache_key(spec: TaskSpec, tokenizer, max_length: int, split: str, examples: list[dict], tag: Optional[str] = None) -> str:
    """A stable hash of what the features depend on (the same in every process and run: JSON,
    not pickle, whose bytes may differ between Python versions for equal data). ``tag``: what a
    text kind's features also depend on (its format, template and label words)."""
    h = hashlib.sha256()
    head = [CACHE_FORMAT, spec.name, getattr(tokenizer, "name_or_path", ""), len(tokenizer), max_length, split]
    h.update(json.dumps(head if tag is None else head + [tag]).encode())
    h.update(json.dumps(examples, sort_keys=True, default=_jsonable).encode())
    return h.hexdigest()[:20]


def cache_path(cache_dir: str | os.PathLike, spec: TaskSpec, tokenizer, max_length: int, split: str, examples: list[dict],
               tag: Optional[str] = None) -> Path:
    """Where :func:`encode_split` keeps the features of a split."""
    stem = f"{spec.name.replace('/', '_')}-{split}"
    return Path(cache_dir) / f"{stem}-{_cache_key(spec, tokenizer, max_length, split, examples, tag)}{CACHE_SUFFIX}"


def read_cache(path: Path) -> Optional[list[dict]]:
    """The features stored at ``path``, or None where the file is missing, unreadable, not
    JSON or not a ptcore feature cache (the split is then tokenized again and the file
    rewritten). JSON only: nothing here can run code, whatever the file holds."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    enabled = gc.isenabled()
    gc.disable()  # ~1M small lists: the cyclic GC would otherwise triple the load time, finding nothing
    try:
        obj = json.loads(data)
    except ValueError:  # not JSON (UnicodeDecodeError is a ValueError too)
        return None
    finally:
        if enabled:
            gc.enable()
    if not isinstance(obj, dict) or obj.get("format") != CACHE_FORMAT or not isinstance(obj.get("features"), list):
        return None
    return obj["features"]


def write_cache(path: Path, features: list[dict]) -> None:
    """Atomically (concurrent trials never read half a file), with the umask's mode; the
    split's version-1 pickle caches beside it are deleted (they are never read)."""
    with atomic_write(path, "wb") as f:
        f.write(json.dumps({"format": CACHE_FORMAT, "features": features}, separators=(",", ":")).encode())
    stem = path.name[: -len(CACHE_SUFFIX)].rsplit("-", 1)[0]  # <task>-<split>
    old = re.compile(re.escape(stem) + r"-[0-9a-f]{20}\.pkl")
    for p in path.parent.glob(f"{glob.escape(stem)}-*.pkl"):
        if old.fullmatch(p.name):
            p.unlink(missing_ok=True)


def encode_split(
    kind: Kind, spec: TaskSpec, examples: list[dict], tokenizer, max_length: int, split: str, cache_dir: Optional[str] = None
) -> list[dict]:
    """Tokenize a split. With a cache dir (arg or $PTCORE_CACHE_DIR) features are stored
    once per (task, tokenizer, max_length, content) and reused by every later run/trial."""
    cache_dir = cache_dir or os.environ.get(CACHE_ENV)
    path = None
    if cache_dir:
        path = cache_path(cache_dir, spec, tokenizer, max_length, split, examples, getattr(kind, "cache_tag", None))
        cached = read_cache(path)
        if cached is not None:
            return cached
    features = kind.encode(examples, tokenizer, max_length)
    if path is not None:
        write_cache(path, features)
    return features


def feature_length(feature: dict) -> int:
    """Tokens of a feature (the longest choice for multiple choice)."""
    ids = feature["input_ids"]
    return max(len(x) for x in ids) if ids and isinstance(ids[0], list) else len(ids)


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Shuffled batches of similar length (like HF Trainer's ``group_by_length``).

    Each epoch: a seeded permutation, cut into mega-batches of ``mult`` batches, each
    sorted by length and cut into batches, the batch order shuffled again. Dynamic padding
    then pads far less; on CPU this roughly halves step time on tasks with varied lengths.
    """

    def __init__(self, lengths: list[int], batch_size: int, generator: torch.Generator, mult: int = 50):
        self.lengths, self.batch_size, self.generator, self.mult = lengths, batch_size, generator, mult

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        perm = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        mega = self.batch_size * self.mult
        batches = []
        for start in range(0, len(perm), mega):
            chunk = sorted(perm[start : start + mega], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        order = torch.randperm(len(batches), generator=self.generator).tolist()
        return iter([batches[i] for i in order])


def make_loader(features: list[dict], kind: Kind, pad_id: int, batch_size: int, shuffle: bool, seed: int = 0,
                generator: Optional[torch.Generator] = None) -> DataLoader:
    """Training (``shuffle``): seeded length-grouped batches, drawn from ``generator`` (default:
    a new one seeded with ``seed``; the training loop passes its own, to save and restore it).
    Evaluation: the given order (callers sort eval features by length, see :func:`sort_by_length`)."""
    collate = lambda fs: kind.collate(fs, pad_id)  # noqa: E731
    if shuffle:
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        sampler = LengthGroupedBatches([feature_length(f) for f in features], batch_size, g)
        return DataLoader(features, batch_sampler=sampler, collate_fn=collate)
    return DataLoader(features, batch_size=batch_size, shuffle=False, collate_fn=collate)


def sort_by_length(features: list[dict]) -> list[dict]:
    """Evaluation order that pads least; predictions are matched back by ``example_index``."""
    return sorted(features, key=feature_length)
