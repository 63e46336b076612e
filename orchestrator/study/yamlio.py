"""Reading a study file: YAML with one-line errors naming the line, the key path and the
fix, duplicate keys refused (:func:`read_yaml`); :func:`file_hash` of its contents."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import yaml

from orchestrator.study.schema import StudyError, _fmt_loc


def _yaml_fix(e: yaml.YAMLError) -> str:
    """What to do about a YAML syntax error, from PyYAML's problem and context."""
    problem = getattr(e, "problem", None) or ""
    context = getattr(e, "context", None) or ""
    cmark = getattr(e, "context_mark", None)
    opened = f" at line {cmark.line + 1}, column {cmark.column + 1}" if cmark is not None else ""
    if "'\\t'" in problem or "\t" in problem:
        return "indent with spaces, not tabs"
    if "flow sequence" in context:
        return f"close the '[' opened{opened} with ']' (and separate items with commas)"
    if "flow mapping" in context:
        return f"close the '{{' opened{opened} with '}}' (and separate entries with commas)"
    if "quoted scalar" in context:
        return f"close the quote opened{opened}"
    if "mapping values are not allowed" in problem:
        return "a value holding ': ' needs quotes, or the key is indented wrongly"
    if "block end" in problem or "expected key" in problem or "block mapping" in context:
        return "line up the keys of one mapping at the same indentation"
    return "fix the YAML syntax there"


def _yaml_path(text: str) -> str:
    """The key path (``methods.0.search``) where parsing ``text`` stops at a syntax error."""
    frames: list[list] = []  # [kind ("map"/"seq"), current key or index, a map's value is in progress]

    def child_started() -> None:
        if frames and frames[-1][0] == "seq":
            frames[-1][1] += 1

    try:
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):
            top = frames[-1] if frames else None
            if isinstance(ev, (yaml.ScalarEvent, yaml.AliasEvent)):
                if top is not None and top[0] == "map":
                    if not top[2]:
                        top[1], top[2] = getattr(ev, "value", None), True
                    else:
                        top[2] = False
                else:
                    child_started()
            elif isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                child_started()
                frames.append(["map", None, False] if isinstance(ev, yaml.MappingStartEvent) else ["seq", -1, False])
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                frames.pop()
                if frames and frames[-1][0] == "map":
                    frames[-1][2] = False
    except yaml.YAMLError:
        pass
    parts = []
    for k, frame in enumerate(frames):
        inner = k == len(frames) - 1
        if frame[0] == "map" and frame[1] is not None and (frame[2] or not inner):
            parts.append(str(frame[1]))
        elif frame[0] == "seq" and frame[1] >= 0 and not inner:
            parts.append(str(frame[1]))
    return ".".join(parts)


def _duplicate_key(node, loc: tuple = ()) -> Optional[tuple[str, int, int]]:
    """The first key written twice in one mapping: (its path, first line, second line).
    PyYAML keeps the last silently; a study file must say one thing."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            k = key.value if isinstance(key, yaml.ScalarNode) else None
            if k is not None and k != "<<":
                if k in seen:
                    return _fmt_loc(loc + (k,)), seen[k], key.start_mark.line + 1
                seen[k] = key.start_mark.line + 1
            found = _duplicate_key(value, loc + ((k,) if k is not None else ()))
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, loc + (i,))
            if found:
                return found
    return None


def read_yaml(path: Path) -> Any:
    if path.is_dir():
        raise StudyError(f"{path}: is a directory, not a study file; pass the YAML file (e.g. studies/smoke.yaml)")
    if not path.is_file():
        raise StudyError(f"{path}: no such study file; check the path (the shipped studies are studies/*.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise StudyError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the study file as UTF-8") from None
    except OSError as e:
        raise StudyError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        column = f", column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        key = _yaml_path(text)
        at = f" in {key}" if key else ""
        raise StudyError(f"{path}: {where}invalid YAML{at} ({problem}{column}); {_yaml_fix(e)}") from None
    dup = _duplicate_key(yaml.compose(text, Loader=yaml.SafeLoader))
    if dup:
        loc, first, second = dup
        raise StudyError(f"{path}: {loc}: the key is written twice (lines {first} and {second}); keep one")
    return raw


def file_hash(raw: Any) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:12]
