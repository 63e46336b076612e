"""Named bundles of settings: ``--set preset=dpt``, a study's ``fixed: {preset: dpt}`` (no torch).

A :class:`Preset` names the run settings and method options a published setup used (``dpt``:
the Dynamic Prompting reference code's, registered by ``ptcore/methods/dynamic/preset.py``),
spelled as ``--set`` spells them, and, per task, the input template and label words it used.
:func:`expand_preset` fills them into a run's raw values where the values give none, so
whatever a user, a study or a replayed config gives explicitly wins over the preset, and the
preset wins over the defaults. ``RunConfig`` calls it before it validates anything
(``ptcore.config``), so every way of building a run gets it.

A preset registers itself beside what it configures, as a method does; ``ptcore.methods``
imports every method package, and ``ptcore.config`` imports ``ptcore.methods``, so import
either to have every preset registered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Collection, Mapping, Optional

from .errors import ConfigError
from .registry import Registry

TASK_KEYS = ("template", "verbalizer")  # what a preset may set per task

# run settings that stand in for each other (RunConfig refuses both): a preset's setting is not
# filled in where the run gives the other one (the explicit choice wins)
ALTERNATIVES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "warmup_steps": ("warmup_ratio",), "warmup_ratio": ("warmup_steps",),
    "train_size": ("max_train_examples",), "max_train_examples": ("train_size",),
    "dev_size": ("max_dev_examples",), "max_dev_examples": ("dev_size",),
})  # fmt: skip


@dataclass(frozen=True)
class Preset:
    name: str
    description: str  # one line: whose setup it is
    # run settings and method options side by side, each spelled as --set spells it (lr, prompt_length)
    settings: Mapping[str, Any]
    # task name -> {"template": ..., "verbalizer": (...)}: the text format the setup used for that task
    tasks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # how a run of this preset still departs from the setup it names, one line each
    notes: tuple[str, ...] = ()
    # setting (or "<task> template" / "<task> verbalizer") -> where the setup sets it
    sources: Mapping[str, str] = field(default_factory=dict)

    def task_format(self, task: str) -> Optional[Mapping[str, Any]]:
        """The template / label words this preset gives ``task``; None where it gives none."""
        return self.tasks.get(task)

    def source_keys(self) -> list[str]:
        """Every key :attr:`sources` should have: the settings, then each task's template and label words."""
        return list(self.settings) + [f"{task} {key}" for task, fmt in self.tasks.items() for key in TASK_KEYS if key in fmt]


PRESETS: Registry[Preset] = Registry("preset")


def register_preset(
    name: str,
    *,
    description: str,
    settings: Mapping[str, Any],
    tasks: Optional[Mapping[str, Mapping[str, Any]]] = None,
    notes: tuple[str, ...] = (),
    sources: Optional[Mapping[str, str]] = None,
) -> Preset:
    """Register a preset (its settings are read-only from here on); returns it."""
    tasks = {t: dict(fmt) for t, fmt in (tasks or {}).items()}
    for task, fmt in tasks.items():
        bad = sorted(set(fmt) - set(TASK_KEYS))
        if bad or not fmt:
            raise ValueError(f"preset {name!r}, task {task!r}: give {' and/or '.join(TASK_KEYS)} (got {sorted(fmt)})")
        if "verbalizer" in fmt:
            fmt["verbalizer"] = tuple(fmt["verbalizer"])
    if "preset" in settings:
        raise ValueError(f"preset {name!r} sets 'preset': a preset cannot name another")
    preset = Preset(
        name=name, description=description, settings=MappingProxyType(dict(settings)),
        tasks=MappingProxyType({t: MappingProxyType(fmt) for t, fmt in tasks.items()}), notes=tuple(notes),
        sources=MappingProxyType(dict(sources or {})),
    )  # fmt: skip
    unsourced = [k for k in preset.source_keys() if k not in preset.sources]
    if sources is not None and unsourced:
        raise ValueError(f"preset {name!r}: no source for {', '.join(unsourced)}")
    return PRESETS.register(name, preset)


def unregister_preset(name: str) -> Preset:
    """Remove a preset (a test restoring the registry); returns it."""
    return PRESETS.unregister(name)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name is a one-line :class:`ConfigError` with suggestions."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(PRESETS.unknown_message(str(name)))
    return PRESETS.get(name)


def expand_preset(
    values: Mapping[str, Any],
    run_fields: Collection[str],
    method_fields: Callable[[str], Collection[str]],
    default_method: str,
) -> dict[str, Any]:
    """``values`` (a run's raw settings, with ``preset``) with every setting of the preset that
    ``values`` does not give filled in. A key present in ``values`` counts as given, whatever its
    value, so replaying a resolved config (which holds every setting) changes nothing.

    * run settings (``run_fields``: RunConfig's fields) at the top level, except one whose
      alternative the values give (:data:`ALTERNATIVES`: a given ``warmup_ratio`` keeps the
      preset's ``warmup_steps`` out);
    * method options into ``method_args``, only those the run's method has
      (``method_fields(method)``; the method: the values', else the preset's, else
      ``default_method``): ``method: prompt_tuning`` with ``dpt`` gets its prompt length and init,
      not dynamic prompting's selector;
    * the task's template and label words, where the run is single-task, the preset has the task,
      the values give neither, and the run's format is not ``head``.

    ``method_args`` given as a method config object (every option set) gets no options. The
    caller passes what only it knows (``ptcore.config`` owns RunConfig and imports this module).
    """
    out = dict(values)
    name = out.get("preset")
    if name is None:
        return out
    preset = get_preset(name)
    opts = {k: v for k, v in preset.settings.items() if k not in run_fields}
    for key, value in preset.settings.items():
        if key in run_fields and key not in values and not any(alt in values for alt in ALTERNATIVES.get(key, ())):
            out[key] = value
    method = out.get("method", default_method)
    given = out.get("method_args")
    if opts and (given is None or isinstance(given, Mapping)):
        try:
            known = set(method_fields(method))
        except KeyError:  # an unknown method: RunConfig's own check names it
            known = set()
        given = dict(given or {})
        out["method_args"] = {**{k: v for k, v in opts.items() if k in known and k not in given}, **given}
    task = out.get("task")  # a multi-task run's "a+b" names no task of the preset
    fmt = preset.task_format(task.strip().lower()) if isinstance(task, str) else None
    if fmt and "template" not in values and "verbalizer" not in values and out.get("format") != "head":
        out.update({k: fmt[k] for k in TASK_KEYS if k in fmt})
    return out


def preset_method(values: Mapping[str, Any], default_method: str) -> str:
    """The method a run of ``values`` trains: its own, else its preset's, else ``default_method``
    (``--set`` checks option names against it before the config is built)."""
    if values.get("method") is not None:
        return values["method"]
    if values.get("preset") is not None:
        return get_preset(values["preset"]).settings.get("method", default_method)
    return default_method
