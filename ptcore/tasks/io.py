"""Reading task data: official file formats from a data directory, or the hub.

The protocol (also in the README):

* ``train`` / ``dev``: the official training file, split once with a fixed seed
  (:data:`SPLIT_SEED`, independent of the run seed, so every run and method of a study
  sees the same dev set). ``dev`` is what model selection looks at.
* ``val``: the official validation file. Reported, never selected on.
* ``test``: an official labelled test file where one exists.
* A task whose training file is missing (offline BoolQ) is carved from its validation
  file: 60% train, 10% dev, 30% val, fixed seed. Results say so in ``data_notes``.
  ``spec.options`` may set ``carve_fractions`` and ``carve_by`` (the field whose equal
  values stay in one part; default ``group``) with ``carve_unit`` (its name in the data
  notes): SQuAD carves 70/10/20 by article ``title``; BoolQ and ReCoRD by passage and
  MultiRC by paragraph (``text_a``), so no passage is both trained on and evaluated.
* ``spec.train_hook`` (ReCoRD) then edits the train split only, e.g. drops examples that
  cannot be trained on; dev / val / test keep every example.
* ``max_train`` keeps whole ``group``s (MultiRC questions), see :func:`take_units`.
* ``spec.passage`` names the example key of a task's passages (BoolQ, MultiRC, ReCoRD):
  the few-shot sample and its dev keep whole passages (:mod:`ptcore.sampling`), and
  :func:`passage_ids` names each example's passage for predictions (``cluster``).
* ``spec.data_note``: a note on the official files (SST-2), added where the train file is read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import sys
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from ..errors import DataError
from .base import TaskSpec

DATA_DIR_ENV = "PTCORE_DATA_DIR"
SPLIT_SEED = 20220527  # fixed: the dev split must not move with the run seed
CARVE_FRACTIONS = (0.6, 0.1, 0.3)  # train / dev / val when only a validation file exists

csv.field_size_limit(sys.maxsize)  # GLUE QQP/MNLI rows can be long


def resolve_data_dir(data_dir: Optional[str | os.PathLike]) -> Optional[Path]:
    """The explicit argument wins, then ``$PTCORE_DATA_DIR``; None means "use the hub"."""
    value = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory {str(path)!r} does not exist; pass --data-dir DIR or set {DATA_DIR_ENV}")
    return path


# ---------------------------------------------------------------- raw readers


def read_jsonl(path: Path) -> list[dict]:
    records = []
    with open(path, encoding="utf-8-sig") as f:  # -sig: tolerate a leading byte-order mark
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected one JSON object per line") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: a JSON {type(record).__name__}, not an object; expected one JSON object per line")
            records.append(record)
    return records


def read_tsv(path: Path, header: bool) -> list[dict]:
    """GLUE tsv: tab separated, *no* quoting (sentences contain bare quotes).

    Read as utf-8-sig: GLUE's MRPC files start with a byte-order mark, which would
    otherwise turn the first column name into ``"\\ufeffQuality"``.
    """
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not header:
        return [{str(i): c for i, c in enumerate(r)} for r in rows]
    if not rows:
        return []
    names = rows[0]
    # rows with the wrong column count exist in the official QQP/MRPC files; skip them
    return [dict(zip(names, r)) for r in rows[1:] if len(r) == len(names)]


def read_records(path: Path, spec: TaskSpec) -> list[dict]:
    try:
        return _read_records(path, spec)
    except UnicodeDecodeError as e:  # every reader opens its file as UTF-8
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); the official files are UTF-8") from None


def _read_records(path: Path, spec: TaskSpec) -> list[dict]:
    fmt = spec.local.format
    if fmt == "jsonl":
        return read_jsonl(path)
    if fmt == "tsv":
        return read_tsv(path, spec.local.header)
    from . import readers  # conll / squad live with their task kinds

    return readers.read(fmt, path, spec)


# ---------------------------------------------------------------- record -> example


# the fields that hold a record's own id: SuperGLUE and the hub's GLUE (idx), SQuAD, QQP and
# the hub's NER sets (id), GLUE's tsv files (index)
ID_FIELDS = ("idx", "id", "index")


def record_id(rec: dict, position: int) -> Any:
    """The record's own id (a nested hub id such as MultiRC's ``{"paragraph": 4, "question":
    9, "answer": 30}`` joined as ``"4-9-30"``), else its 0-based ``position`` in its file."""
    for key in ID_FIELDS:
        value = rec.get(key)
        if isinstance(value, dict):
            return "-".join(str(v) for v in value.values())
        if value not in (None, ""):
            return value
    return position


def to_examples(records: Iterable[dict], spec: TaskSpec) -> list[dict]:
    """Each record's example(s), each with an ``id`` (a prediction file's key): the one a
    hook set, else :func:`record_id`, suffixed ``-k`` where a record yields several."""
    out: list[dict] = []
    for position, rec in enumerate(records):
        ex = spec.hook(rec, spec) if spec.hook else default_example(rec, spec)
        if ex is None:
            continue
        made = ex if isinstance(ex, list) else [ex]
        rid = record_id(rec, position)
        for k, one in enumerate(made):
            one.setdefault("id", rid if len(made) == 1 else f"{rid}-{k}")
        out.extend(made)
    return out


def label_index(value: Any, spec: TaskSpec) -> int:
    """Map a raw label value (string in the official files, int on the hub) to its index."""
    for i, lab in enumerate(spec.labels):
        if value == lab or str(value) == str(lab):
            return i
    if isinstance(value, int) and 0 <= value < len(spec.labels):
        return value  # hub datasets store the index already
    raise DataError(f"task {spec.name}: label {value!r} is not one of {list(spec.labels)}")


def default_example(rec: dict, spec: TaskSpec) -> Optional[dict]:
    try:
        texts = [str(rec[f]) for f in spec.text_fields]
    except KeyError as e:
        raise DataError(
            f"task {spec.name}: record has no field {e.args[0]!r} (fields: {sorted(rec)}); is this the official format?"
        ) from None
    ex: dict[str, Any] = {"text_a": texts[0]}
    if len(texts) > 1:
        ex["text_b"] = texts[1]
    raw = rec.get(spec.label_field) if spec.label_field else None
    if raw is None or raw == "" or raw == -1:
        ex["label"] = None  # unlabelled (a test file)
    elif spec.kind == "regression":
        ex["label"] = float(raw)
    else:
        ex["label"] = label_index(raw, spec)
    return ex


# ---------------------------------------------------------------- splits


def _shuffled(n: int, seed: int) -> list[int]:
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return idx


def units(examples: list[dict], key: str = "group") -> list[list[int]]:
    """Example indices by unit: examples with the same non-None ``ex[key]`` form one unit;
    an example without one is a unit alone. Units in order of first appearance."""
    return indices_by_key([ex.get(key) for ex in examples])


def indices_by_key(keys: Sequence[Any]) -> list[list[int]]:
    """Positions by key: equal non-None keys form one unit, a None key is a unit alone;
    units in order of first appearance (also a report's bootstrap units)."""
    members: dict[Any, list[int]] = {}
    for i, value in enumerate(keys):
        members.setdefault(("g", value) if value is not None else ("i", i), []).append(i)
    return list(members.values())


def passage_id(value: Any) -> Optional[str]:
    """A passage key as a short string: an id as it is (``"12"``), a passage named by its
    text (BoolQ) as the first 16 hex digits of the text's SHA-256; None stays None."""
    if value is None:
        return None
    text = str(value)
    if len(text) <= 40 and not any(c.isspace() for c in text):
        return text
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def passage_ids(examples: list[dict], spec: TaskSpec) -> Optional[list[Optional[str]]]:
    """Each example's passage (:func:`passage_id` of ``ex[spec.passage]``); None for a task
    without passages."""
    if spec.passage is None:
        return None
    return [passage_id(ex.get(spec.passage)) for ex in examples]


def take_units(members: list[list[int]], order: Iterable[int], limit: int) -> list[int]:
    """Sorted example indices of whole units taken in ``order`` until the next unit would
    take the total past ``limit``; at least one unit. With one example per unit this is
    exactly the first ``limit`` of ``order``."""
    kept: list[int] = []
    for u in order:
        if kept and len(kept) + len(members[u]) > limit:
            break
        kept.extend(members[u])
    return sorted(kept)


def carve(
    examples: list[dict], fractions: tuple[float, ...], seed: int = SPLIT_SEED, key: str = "group"
) -> list[list[dict]]:
    """Split ``examples`` into len(fractions) parts by a seeded permutation.

    Examples with equal ``ex[key]`` form one unit (see :func:`units`) and stay in the
    same part; fractions then count units, each part but the last taking
    ``max(1, round(fraction * units))``, fewer only where that would leave a later part
    without a unit (a handful of units, as in the test fixtures). ``key`` names the
    grouping field: ``group`` (default; MultiRC's question id), ``title`` (SQuAD: whole
    articles), ``text_a`` (BoolQ / ReCoRD passages, MultiRC paragraphs: no passage in
    two parts). Without a shared value every example is its own unit and the
    permutation is the plain one over examples.
    """
    members = units(examples, key)
    idx = _shuffled(len(members), seed)
    parts, start = [], 0
    for k, frac in enumerate(fractions):
        later = len(fractions) - 1 - k  # parts after this one: each keeps at least one unit
        if later:
            end = min(start + max(1, round(frac * len(idx))), max(start + 1, len(idx) - later))
        else:
            end = len(idx)
        parts.append([examples[i] for i in sorted(i for u in idx[start:end] for i in members[u])])
        start = end
    return parts


def _read_local(spec: TaskSpec, data_dir: Path) -> dict[str, list[dict]]:
    root = data_dir / spec.local.path
    found = {role: root / name for role, name in spec.local.files.items() if (root / name).is_file()}
    if not found:
        expected = ", ".join(str(root / n) for n in spec.local.files.values())
        raise DataError(
            f"task {spec.name}: no data files found (expected {expected}); put the official files there, "
            f"or point the data directory elsewhere (--data-dir, {DATA_DIR_ENV}, or a study's data_dir)"
        )
    return {role: to_examples(read_records(path, spec), spec) for role, path in found.items()}


def _read_hub(spec: TaskSpec) -> dict[str, list[dict]]:
    if spec.hub is None:
        raise DataError(f"task {spec.name}: no data directory given and the task has no hub source; pass --data-dir DIR or set {DATA_DIR_ENV}")
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise DataError(f"task {spec.name}: the 'datasets' package is needed to load from the hub ({e})") from None
    out = {}
    for role, hub_split in spec.hub.splits.items():
        try:
            ds = datasets.load_dataset(spec.hub.path, spec.hub.name, split=hub_split)
        except Exception as e:  # the hub raises many types; all mean "not reachable here"
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(
                f"task {spec.name}: loading {spec.hub.path}/{spec.hub.name or ''} from the Hugging Face hub failed ({msg}); "
                f"offline, pass --data-dir DIR (or set {DATA_DIR_ENV}) pointing at the official files"
            ) from None
        out[role] = to_examples(list(ds), spec)
    return out


def _carve_phrase(spec: TaskSpec) -> str:
    """How the data notes name the carving unit: "" (examples), " by article (whole articles)"."""
    carve_by = spec.options.get("carve_by", "group")
    unit = spec.options.get("carve_unit")
    if unit:
        return f" by {unit} (whole {unit}s, none in two parts)"
    return "" if carve_by == "group" else f" by {carve_by}"


def subsample_train(train: list[dict], limit: int) -> tuple[list[dict], str]:
    """``max_train``: a seeded subset of whole ``group`` units (:func:`take_units`) and its note."""
    members = units(train, "group")
    kept = take_units(members, _shuffled(len(members), SPLIT_SEED + 1), limit)
    if len(members) == len(train):  # no groups: the note (and selection) as before
        return [train[i] for i in kept], f"train subsampled to {limit} examples (seed {SPLIT_SEED + 1})"
    note = f"train subsampled to {len(kept)} examples in whole groups (cap {limit}; seed {SPLIT_SEED + 1})"
    return [train[i] for i in kept], note


def load_splits(
    spec: TaskSpec, data_dir: Optional[str | os.PathLike] = None, max_train: Optional[int] = None
) -> tuple[dict[str, list[dict]], list[str]]:
    """Return ``({"train", "dev", "val"[, "test"]: examples}, notes)`` for a task."""
    root = resolve_data_dir(data_dir)
    raw = _read_local(spec, root) if root is not None else _read_hub(spec)
    notes: list[str] = []
    splits: dict[str, list[dict]] = {}
    # spec.options may carve by another field (SQuAD: "title", whole articles) and fractions
    carve_by = spec.options.get("carve_by", "group")
    by = _carve_phrase(spec)
    fractions = tuple(spec.options.get("carve_fractions", CARVE_FRACTIONS))
    if "train" in raw and "dev" in raw:  # official dev file (NER): selection on it
        splits["train"], splits["dev"] = raw["train"], raw["dev"]
        if "val" in raw:
            splits["val"] = raw["val"]
    elif "train" in raw:
        splits["train"], splits["dev"] = carve(raw["train"], (1 - spec.dev_fraction, spec.dev_fraction), key=carve_by)
        notes.append(f"dev = {spec.dev_fraction:.0%} of the official train split{by} (seed {SPLIT_SEED})")
        if "val" in raw:
            splits["val"] = raw["val"]
    elif "val" in raw:
        splits["train"], splits["dev"], splits["val"] = carve(raw["val"], fractions, key=carve_by)
        pct = "/".join(str(round(100 * f)) for f in fractions)
        notes.append(
            f"no official train file: train/dev/val carved {pct}{by} from the official validation file "
            f"(seed {SPLIT_SEED}); val is a {fractions[-1]:.0%} subset, not the full official split"
        )
    else:
        raise DataError(f"task {spec.name}: neither a train nor a validation file was found")
    if "test" in raw:
        splits["test"] = raw["test"]
    if "train" in raw and spec.data_note:  # what the official files are (SST-2: train is phrases)
        notes.append(spec.data_note)
    if spec.train_hook is not None:
        splits["train"], hook_notes = spec.train_hook(splits["train"], spec)
        notes.extend(hook_notes)
    if max_train is not None and len(splits["train"]) > max_train:
        splits["train"], note = subsample_train(splits["train"], max_train)
        notes.append(note)
    for name, exs in splits.items():
        if not exs:
            raise DataError(f"task {spec.name}: split {name!r} is empty; check the data files")
    return splits, notes
