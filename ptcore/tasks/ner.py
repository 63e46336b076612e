"""Named-entity recognition (sequence labelling) tasks, kind ``token_classification``.

Local layout: ``<data_dir>/ner/<task>/{train,dev,test}.txt`` in CoNLL columns (see
:mod:`ptcore.tasks.readers`). ``dev.txt`` is the official development file and is used for
model selection; ``test.txt`` is the official labelled test file and is reported. Specs
declare the entity *types*; the label set is the full IOB2 tag list derived from them
(``O``, then ``B-t``, ``I-t`` per type in declared order), which is also the hub's
ClassLabel order for WNUT-17 and CoNLL-2003, so hub records (integer ``ner_tags``) map
onto the same labels. Scores are seqeval's entity-level micro P/R/F1 (default mode,
i.e. conlleval), with words cut off by the token limit predicted ``O``.
"""

from __future__ import annotations

from typing import Any, Optional

from ..errors import DataError
from .base import HubSource, LocalSource, TaskSpec

NER_METRICS = ("entity_f1", "entity_precision", "entity_recall")
FILES = {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"}
HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}

WNUT17_TYPES = ("corporation", "creative-work", "group", "location", "person", "product")
CONLL2003_TYPES = ("PER", "ORG", "LOC", "MISC")
CONLL2004_TYPES = ("Loc", "Org", "Peop", "Other")
ONTONOTES_TYPES = (
    "PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART",
    "LAW", "LANGUAGE", "DATE", "TIME", "PERCENT", "MONEY", "QUANTITY", "ORDINAL", "CARDINAL",
)  # fmt: skip


def iob2_tags(types: tuple[str, ...]) -> tuple[str, ...]:
    """``("O", "B-t1", "I-t1", "B-t2", ...)``: the full IOB2 tag list of some entity types."""
    return ("O",) + tuple(f"{p}-{t}" for t in types for p in ("B", "I"))


def ner_example(rec: dict, spec: TaskSpec) -> Optional[dict]:
    """A CoNLL sentence (string tags) or a hub record (integer ``ner_tags``) -> example.

    Adds ``tag_ids`` (indices into ``spec.labels``): the kind's ``encode`` sees no spec,
    so the label indices travel with the example.
    """
    tokens = [str(t) for t in rec.get("tokens", [])]
    if not tokens:
        return None
    raw = rec.get("tags", rec.get("ner_tags"))
    if raw is None:  # unlabelled
        return {"tokens": tokens, "tags": None, "tag_ids": None}
    if len(raw) != len(tokens):
        raise DataError(f"task {spec.name}: a sentence has {len(tokens)} tokens but {len(raw)} tags: {' '.join(tokens)[:80]!r}")
    tags: list[str] = []
    for t in raw:
        if isinstance(t, int):
            if not 0 <= t < len(spec.labels):
                raise DataError(f"task {spec.name}: tag index {t} out of range (0..{len(spec.labels) - 1})")
            t = spec.labels[t]
        tags.append(str(t))
    index = {tag: i for i, tag in enumerate(spec.labels)}
    bad = sorted({t for t in tags if t not in index})
    if bad:
        raise DataError(
            f"task {spec.name}: tags {bad} are not in the declared tag set {list(spec.labels)}; "
            f"wrong tag column (LocalSource.tag_column) or scheme?"
        )
    return {"tokens": tokens, "tags": tags, "tag_ids": [index[t] for t in tags]}


def _ner(
    task: str,
    types: tuple[str, ...],
    description: str,
    *,
    hub: Optional[HubSource] = None,
    scheme: str = "IOB2",
    tag_column: int = -1,
    max_length: int = 128,
    **options: Any,
) -> TaskSpec:
    return TaskSpec(
        name=f"ner/{task}",
        kind="token_classification",
        local=LocalSource(path=f"ner/{task}", format="conll", files=dict(FILES), tag_column=tag_column),
        hub=hub,
        label_field=None,
        labels=iob2_tags(types),
        metrics=NER_METRICS,
        primary="entity_f1",
        hook=ner_example,
        max_length=max_length,
        description=description,
        options={"scheme": scheme, "types": types, **options},
    )


SPECS: tuple[TaskSpec, ...] = (
    _ner(
        "wnut17", WNUT17_TYPES,
        "WNUT-17 emerging and rare entities in social media text, 6 types, IOB2 (entity F1, seqeval; test reported).",
        hub=HubSource("wnut_17", splits=dict(HUB_SPLITS)),
    ),
    _ner(
        "conll2003", CONLL2003_TYPES,
        "CoNLL-2003 English NER (PER/ORG/LOC/MISC); original 4-column IOB1 files (token POS chunk NER, "
        "-DOCSTART- lines), converted to IOB2 (IOB2 files read unchanged) (entity F1, seqeval; test reported).",
        hub=HubSource("eriktks/conll2003", splits=dict(HUB_SPLITS)),
        scheme="IOB1",
    ),
    _ner(
        "conll2004", CONLL2004_TYPES,
        "CoNLL-2004 entities (Loc/Org/Peop/Other) in CoNLL columns token TAB tag, IOB2; no hub copy in this "
        "format, local files only (entity F1, seqeval; test reported).",
        max_length=256,
    ),
    _ner(
        "ontonotes", ONTONOTES_TYPES,
        "OntoNotes 5.0 English NER, 18 types, CoNLL columns token TAB tag, IOB2; licensed (LDC2013T19), "
        "local files only (entity F1, seqeval; test reported).",
        max_length=256,
    ),
)
