"""Readers for the file formats that are not jsonl / tsv: CoNLL columns and SQuAD JSON.

:func:`read` is what :func:`ptcore.tasks.io.read_records` calls. Both readers return
records already in their kind's example schema (see :mod:`ptcore.tasks.base`); the task
hooks (:mod:`ptcore.tasks.ner`, :mod:`ptcore.tasks.qa`) then validate them and add what
the kind needs, so hub records (same schema, different spellings) go through the same hooks.

CoNLL (one token per line, columns separated by a tab or by spaces, a blank line between
sentences):

* the tag column is ``spec.local.tag_column`` (default -1, the last one); the token is
  always column 0. CoNLL-2003 has 4 columns ``token POS chunk NER``; WNUT-17 has 2.
* ``-DOCSTART-`` lines are document boundaries, not sentences; they are dropped wherever
  they appear (and end the current sentence).
* lines holding only whitespace (WNUT-17's train file separates sentences with a lone
  tab) count as blank; repeated blank lines, trailing blank lines, CRLF line ends, a
  byte-order mark and a missing final newline are all fine.
* ``spec.options["scheme"] == "IOB1"`` converts tags to IOB2 (an ``I-X`` that starts an
  entity becomes ``B-X``). The conversion leaves IOB2 input unchanged, so a spec
  declared IOB1 also reads IOB2 files.

SQuAD (v1.1 and v2.0 JSON, ``{"data": [{"title", "paragraphs": [{"context", "qas"}]}]}``):
one record per question: ``id``, ``title`` (the article), ``question``, ``context``,
``answers`` (``{"text": [...], "answer_start": [...]}``) and ``is_impossible`` (v2.0; an
impossible question has empty answers; its ``plausible_answers`` are not answers).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from ..errors import DataError
from .base import TaskSpec

FORMATS = ("jsonl", "tsv", "conll", "squad")
DOCSTART = "-DOCSTART-"
_SPACES = re.compile(r"[ \t]+")  # ASCII only: a token may be a non-breaking space or similar


def read(fmt: str, path: Path, spec: TaskSpec) -> list[dict]:
    """Records of one data file in format ``fmt`` (``conll`` or ``squad``)."""
    if fmt == "conll":
        return read_conll(path, tag_column=spec.local.tag_column, scheme=spec.options.get("scheme", "IOB2"))
    if fmt == "squad":
        return read_squad(path)
    raise DataError(f"task {spec.name}: unknown data format {fmt!r} for {path} (known formats: {', '.join(FORMATS)})")


# ---------------------------------------------------------------- CoNLL


def _fields(line: str) -> list[str]:
    """Columns of a token line: tab separated if it has a tab, else space separated."""
    if "\t" in line:
        parts = [p.strip(" ") for p in line.split("\t")]
    else:
        parts = _SPACES.split(line.strip(" "))
    while parts and parts[-1] == "":  # a trailing separator
        parts.pop()
    return parts


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """``I-X`` that does not continue an ``X`` entity begins one: it becomes ``B-X``."""
    out: list[str] = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-"):
            kind = tag[2:]
            if prev == "O" or prev[2:] != kind:
                tag = "B-" + kind
        out.append(tag)
        prev = tag
    return out


def read_conll(path: Path, tag_column: int = -1, scheme: str = "IOB2") -> list[dict]:
    """Sentences of a CoNLL column file as ``{"tokens": [...], "tags": [...]}`` records."""
    if scheme not in ("IOB1", "IOB2"):
        raise DataError(f"{path}: tag scheme {scheme!r} is not supported (IOB1 or IOB2)")
    sentences: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            sentences.append({"tokens": list(tokens), "tags": iob1_to_iob2(tags) if scheme == "IOB1" else list(tags)})
        tokens.clear()
        tags.clear()

    # newline=None: universal newlines, so CRLF files read like LF ones; -sig drops a BOM
    with open(path, encoding="utf-8-sig", newline=None) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                flush()
                continue
            parts = _fields(line)
            if parts[0] == DOCSTART:
                flush()
                continue
            if len(parts) < 2:
                raise DataError(f"{path}:{lineno}: expected 'token <columns...> tag', got {line!r}")
            try:
                tag = parts[tag_column]
            except IndexError:
                raise DataError(f"{path}:{lineno}: no tag column {tag_column} in {line!r} ({len(parts)} columns)") from None
            tokens.append(parts[0])
            tags.append(tag)
    flush()
    return sentences


# ---------------------------------------------------------------- SQuAD


def read_squad(path: Path) -> list[dict]:
    """One record per question of a SQuAD v1.1 / v2.0 JSON file."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); expected a SQuAD file") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f"{path}: not a SQuAD file (expected a JSON object with a 'data' list of articles)")
    records: list[dict] = []
    for a, article in enumerate(data["data"]):
        title = str(article.get("title", f"article-{a}"))
        for paragraph in article.get("paragraphs", []):
            context = paragraph["context"]
            for qa in paragraph.get("qas", []):
                impossible = bool(qa.get("is_impossible", False))
                answers = [] if impossible else qa.get("answers", [])
                records.append(
                    {
                        "id": str(qa["id"]),
                        "title": title,
                        "question": qa["question"],
                        "context": context,
                        "answers": {
                            "text": [ans["text"] for ans in answers],
                            "answer_start": [int(ans["answer_start"]) for ans in answers],
                        },
                        "is_impossible": impossible,
                    }
                )
    return records

