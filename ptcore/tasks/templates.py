"""Text-to-text renderings of task examples, for a T5 or a decoder LM trained by verbalizer
(rank classification: score each label's target text) or by generation.

A :class:`~ptcore.tasks.base.TaskSpec` declares (all optional; a task without them cannot
be trained text-to-text, and a consumer refuses it in one line):

- ``template``: the model input, a ``str.format`` template over the *example* dict the
  task yields (keys in :mod:`ptcore.tasks.base`). A placeholder names an example key,
  optionally indexed: ``{text_a}``, ``{choices[0]}``, ``{answers[text][0]}``. Attribute
  access (``{text_a.upper}``), positional fields (``{}``, ``{0}``) and nested fields in a
  format spec are refused when the spec is built; a key the examples lack is refused when
  an example is rendered (:class:`~ptcore.errors.ConfigError`, one line).
- ``verbalizer``: the target text of each label, in label index order (classification);
  for multiple choice the target of choice *i* (COPA: ``("choice1", "choice2")``, both
  choices in the input, as T5 does).
- ``target``: the training target of a generation task, either a rule of
  :data:`TARGET_RULES` or a template like ``template``. The rule ``"answers"`` (SQuAD)
  trains toward the first gold answer text and scores against every gold answer (a
  question without one, SQuAD 2.0's unanswerable, trains toward ``""`` and is scored as
  the official script does: an empty prediction is right).
- ``template_source``: where the template and label words come from (a short citation).

Nothing here imports torch; the kinds that tokenize these strings live elsewhere.
"""

from __future__ import annotations

import dataclasses
import re
import string
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from ..errors import ConfigError, DataError
from .kinds import kind_class

if TYPE_CHECKING:
    from .base import TaskSpec  # annotations only: base imports this module to validate its specs

# generation target rules: name -> what it means (a target without "{" must name one)
TARGET_RULES: dict[str, str] = {
    "answers": 'the first gold answer text ("" when there is none: SQuAD 2.0 no-answer); scored against all gold answers',
}

# a placeholder: an example key, then any number of [index] parts (str.format's own grammar)
_FIELD = re.compile(r"[A-Za-z_]\w*(\[[^\[\]]+\])*")
_formatter = string.Formatter()


def template_fields(template: str, where: str, what: str = "template") -> tuple[str, ...]:
    """The placeholders of ``template`` (``"choices[0]"``...), in order; a malformed template,
    a positional or attribute field, or a nested field raises a one-line ConfigError.
    ``where`` names the task in messages (``"task superglue/cb"``)."""
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(f"{where}: {what} must be a non-empty string, got {template!r}")
    try:
        parsed = list(_formatter.parse(template))
    except ValueError as e:  # unbalanced braces
        raise ConfigError(f"{where}: {what} {template!r} is not a format string ({e}); write {{{{ and }}}} for literal braces") from None
    fields = []
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if not _FIELD.fullmatch(name):
            raise ConfigError(
                f"{where}: {what} field {name!r} is not an example key (optionally indexed, as 'choices[0]'); fix the {what}"
            )
        if spec and "{" in spec:
            raise ConfigError(f"{where}: {what} field {name!r} has a nested field in its format spec; fix the {what}")
        fields.append(name)
    return tuple(fields)


def _root(field: str) -> str:
    return field.split("[", 1)[0]


def _where(spec: Optional[TaskSpec]) -> str:
    return f"task {spec.name}" if spec is not None else "text-to-text"


def _render(template: str, example: dict, where: str, what: str = "template") -> str:
    """``template.format_map(example)`` with one-line errors naming the field at fault."""
    fields = template_fields(template, where, what)
    for field in fields:
        if _root(field) not in example:
            # the id is bookkeeping: allowed, not listed among the example's fields
            names = ", ".join(k for k in example if k != "id")
            raise ConfigError(f"{where}: {what} field {_root(field)!r} is not in its examples (fields: {names}); fix the {what}")
    try:
        return template.format_map(example)
    except (KeyError, IndexError, TypeError, ValueError) as e:  # an index the value lacks, a bad format spec
        raise ConfigError(
            f"{where}: {what} field cannot be read from an example ({type(e).__name__}: {e}); fields: {', '.join(fields)}; "
            f"fix the {what}"
        ) from None


def render_input(spec_or_template: Union[TaskSpec, str], example: dict) -> str:
    """The model input of ``example``: the spec's ``template`` (or a bare template) filled in."""
    if isinstance(spec_or_template, str):
        return _render(spec_or_template, example, _where(None))
    spec = spec_or_template
    if spec.template is None:
        raise ConfigError(f"task {spec.name} declares no text-to-text template (TaskSpec.template); give it one to train it text-to-text")
    return _render(spec.template, example, _where(spec))


def label_targets(spec: TaskSpec) -> tuple[str, ...]:
    """The target text of each label (classification) or choice (multiple choice), in index order."""
    if not spec.verbalizer:
        raise ConfigError(
            f"task {spec.name} declares no verbalizer (label words); give it one (one word per label) to train it by verbalizer"
        )
    return spec.verbalizer


def _choice_targets(spec: TaskSpec, example: dict) -> tuple[str, ...]:
    """The verbalizer, checked against the example's choices where it has them."""
    words = label_targets(spec)
    choices = example.get("choices")
    if choices is not None and len(choices) != len(words):
        raise ConfigError(
            f"task {spec.name}: verbalizer has {len(words)} words ({', '.join(words)}) for {len(choices)} choices; "
            f"give one word per choice, in choice order"
        )
    return words


def _label_word(spec: TaskSpec, example: dict) -> str:
    words = _choice_targets(spec, example)
    label = example.get("label")
    if label is None:
        raise DataError(f"task {spec.name}: example {example.get('id')!r} has no label, so no target text")
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(words):
        raise DataError(f"task {spec.name}: example {example.get('id')!r} has label {label!r}, not an index into {len(words)} label words")
    return words[label]


def _answers(spec: TaskSpec, example: dict) -> list[str]:
    try:
        return [str(t) for t in example["answers"]["text"]]
    except (KeyError, TypeError):
        raise ConfigError(
            f"task {spec.name}: target rule 'answers' needs examples with answers.text (fields: "
            f"{', '.join(k for k in example if k != 'id')}); fix the target"
        ) from None


def train_target(spec: TaskSpec, example: dict) -> str:
    """The text a model is trained to produce for ``example``: the label's (choice's) word,
    or the generation target (``"answers"``: the first gold answer, ``""`` when none)."""
    if spec.target == "answers":
        answers = _answers(spec, example)
        return answers[0] if answers else ""
    if spec.target is not None:
        return _render(spec.target, example, _where(spec), "target")
    if spec.verbalizer:
        return _label_word(spec, example)
    raise ConfigError(f"task {spec.name} declares neither a verbalizer nor a target; it has no text-to-text target")


def gold_texts(spec: TaskSpec, example: dict) -> list[str]:
    """Every text a generated answer is scored against: all gold answers for ``"answers"``
    (``[]`` = unanswerable, as the SQuAD metrics read it), else the one training target."""
    if spec.target == "answers":
        return _answers(spec, example)
    return [train_target(spec, example)]


def with_overrides(spec: TaskSpec, template: Optional[str] = None, verbalizer: Optional[Sequence[str]] = None) -> TaskSpec:
    """``spec`` with a study's own template and/or label words, validated as a declaration
    is (``dataclasses.replace`` runs ``__post_init__``); ``template_source`` says so."""
    changes: dict[str, Any] = {}
    if template is not None:
        changes["template"] = template
    if verbalizer is not None:
        if isinstance(verbalizer, str):
            raise ConfigError(f"task {spec.name}: verbalizer must be a list of label words, got the string {verbalizer!r}")
        changes["verbalizer"] = tuple(verbalizer)
    if not changes:
        return spec
    changes["template_source"] = f"overridden ({', '.join(sorted(changes))}); declared: {spec.template_source or 'none'}"
    return dataclasses.replace(spec, **changes)


def check_text_to_text(spec: TaskSpec) -> None:
    """The declaration checks of ``template`` / ``verbalizer`` / ``target`` (``TaskSpec.__post_init__``);
    placeholders are checked against examples only when one is rendered."""
    where = f"task {spec.name}"
    if spec.template is not None:
        template_fields(spec.template, where)
    if spec.target is not None:
        if "{" in spec.target:
            template_fields(spec.target, where, "target")
        elif spec.target not in TARGET_RULES:
            raise ConfigError(
                f"{where}: target {spec.target!r} is neither a rule ({', '.join(TARGET_RULES)}) nor a template with {{fields}}"
            )
    words = spec.verbalizer
    if not words:
        return
    if not isinstance(words, tuple) or not all(isinstance(w, str) and w.strip() for w in words):
        raise ConfigError(f"{where}: verbalizer must be a tuple of non-empty strings, got {words!r}")
    if spec.target is not None:
        raise ConfigError(f"{where}: declares both a verbalizer and a target; a task is trained toward one of them")
    if not kind_class(spec.kind).has_label_set:
        raise ConfigError(f"{where}: a verbalizer needs a label set, and a {spec.kind} task has none; declare a target instead")
    if spec.labels and len(words) != spec.num_labels:
        labels = ", ".join(str(lab) for lab in spec.labels)
        raise ConfigError(
            f"{where}: verbalizer has {len(words)} words ({', '.join(words)}) for {spec.num_labels} labels ({labels}); "
            f"give one word per label, in label order"
        )
    if len(set(words)) != len(words):
        raise ConfigError(f"{where}: verbalizer words must differ ({', '.join(words)}); rank classification could not tell them apart")
