"""Run configs: load ``configs/X.py[:variant]``, apply ``--config.a.b=value`` overrides, catch typos.

A config file is a Python module with ``get_config(arg=None) ->
ml_collections.ConfigDict`` (big_vision style); ``arg`` is the text after the
colon (``configs/stcn.py:tiny`` calls ``get_config("tiny")``). Command-line
overrides address fields by their dotted path and are parsed against the
type of the value they replace:

=================  =========================================================
current value      accepted text
=================  =========================================================
bool               ``true / false / yes / no / 1 / 0`` (any case)
int, float         a Python number (``1e-4``, ``10_000``)
str                the text as is (quotes optional)
tuple / list       a Python literal (``"(8, 8)"``) or comma-separated items
None or other      a Python literal if it parses as one, else the text
=================  =========================================================

A path that names no field raises :class:`~vosjax.errors.VosjaxError` that
names the field and the closest valid ones (``difflib`` ratio), the same
check :func:`check_fields` applies to the sections the trainer reads, so a
typo in a config file or on the command line fails before anything runs.

:func:`read_section` is the one reader of a config section into the frozen
options dataclass of whoever consumes it (the data pipeline, an objective,
the inference engine): keys map one to one onto the dataclass's fields, an
unknown key raises naming it and the closest fields, nested dataclass fields
take a section of their own, lists become tuples (hashable, so the result
can key a compiled function), and the dataclass's ``__post_init__`` checks
the values.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import inspect
import pathlib
import sys
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from vosjax.errors import VosjaxError

__all__ = [
    "apply_overrides",
    "check_fields",
    "closest",
    "load_config",
    "parse_override",
    "pick_variant",
    "read_section",
    "to_plain",
]


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The ``n`` candidates most similar to ``name`` (``difflib`` ratio >= 0.5), best first."""
    cands = sorted({str(c) for c in candidates})
    hits = difflib.get_close_matches(name, cands, n=n, cutoff=0.5)
    if not hits:  # also try a case-insensitive prefix match (e.g. 'lr' vs 'lr_schedule')
        hits = [c for c in cands if c.lower().startswith(name.lower()[:3])][:n] if name else []
    return hits


def _did_you_mean(name: str, valid: Iterable[str]) -> str:
    hint = closest(name, valid)
    return f" Did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""


def _unknown(where: str, name: str, valid: Iterable[str]) -> VosjaxError:
    valid = sorted(set(valid))
    did = _did_you_mean(name, valid)
    return VosjaxError(
        f"config: unknown field '{where}.{name}'.{did} Valid fields of '{where}': "
        f"{', '.join(valid) if valid else '(none)'}."
    )


def check_fields(section: Any, allowed: Iterable[str], where: str) -> None:
    """Raise :class:`VosjaxError` for keys of ``section`` not in ``allowed``.

    The message names the offending ``where.key`` and the closest allowed names.
    """
    allowed = set(allowed)
    keys = list(section.keys()) if hasattr(section, "keys") else []
    for key in keys:
        if key not in allowed:
            raise _unknown(where, key, allowed)


def _as_tuples(x: Any) -> Any:
    """Lists (and tuples) as tuples, recursively: ``[[0.0, 5]]`` -> ``((0.0, 5),)``."""
    if isinstance(x, (list, tuple)):
        return tuple(_as_tuples(v) for v in x)
    return x


def _section_values(section: Any, where: str, path: str) -> dict[str, Any]:
    """The key -> value dict of a ConfigDict / mapping / dataclass instance / None."""
    if section is None:
        return {}
    if isinstance(section, ml_collections.ConfigDict) or (
        hasattr(section, "to_dict") and not isinstance(section, Mapping)
    ):
        return dict(section.to_dict())
    if isinstance(section, Mapping):
        return dict(section)
    if dataclasses.is_dataclass(section) and not isinstance(section, type):
        return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
    what = f"field '{path}'" if path else "'config'"
    raise VosjaxError(
        f"{where}: {what} must be an ml_collections.ConfigDict or a mapping of field names to "
        f"values, got {type(section).__name__}."
    )


def _nested_type(cls: type, field: dataclasses.Field) -> type | None:
    """The dataclass type of a field that holds a section of its own, else None."""
    if dataclasses.is_dataclass(field.default):
        return type(field.default)
    hint = field.type
    if isinstance(hint, str):
        try:
            hint = typing.get_type_hints(cls).get(field.name)
        except Exception:  # noqa: BLE001  (an annotation that does not resolve: not a section)
            return None
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _read(cls: type, section: Any, where: str, path: str, overrides: Mapping[str, Any]) -> Any:
    if isinstance(section, cls) and not overrides:
        return section
    values = _section_values(section, where, path)
    values.update(overrides)
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    for key in values:
        if key not in names:
            dotted = f"{path}.{key}" if path else str(key)
            of = f" of '{path}'" if path else ""
            raise VosjaxError(
                f"{where}: unknown field '{dotted}'.{_did_you_mean(str(key), names)} Valid "
                f"fields{of}: {', '.join(names)}."
            )
    for f in fields:
        if f.name not in values:
            continue
        sub = _nested_type(cls, f)
        value = values[f.name]
        if sub is not None and not isinstance(value, sub):
            dotted = f"{path}.{f.name}" if path else f.name
            values[f.name] = _read(sub, value, where, dotted, {})
        else:
            values[f.name] = _as_tuples(value)
    return cls(**values)


def read_section(cls: type, section: Any, where: str, /, **overrides: Any) -> Any:
    """The frozen dataclass ``cls`` built from a config section, plus ``overrides``.

    Args:
      cls: a dataclass whose fields are the section's keys (1:1); missing keys
        take the field defaults.
      section: an ``ml_collections.ConfigDict``, a mapping, an instance of a
        dataclass (its fields are read; an instance of ``cls`` itself is
        returned as is when there are no overrides) or None (all defaults).
      where: who reads it, the first words of every message, e.g.
        ``"EngineConfig.from_config"`` or ``"objective"``.
      overrides: field values that replace the section's (checked the same way).

    A key that is not a field of ``cls`` raises :class:`VosjaxError`
    ``"<where>: unknown field '<key>'. Did you mean ...? Valid fields: ..."``
    (the closest names by :func:`closest`). A field whose default (or
    annotation) is a dataclass reads its value as a section of its own (keys
    named ``'<field>.<key>'`` in errors) unless it is already an instance.
    Lists become tuples, recursively. Values are checked by ``cls`` itself.
    """
    return _read(cls, section, where, "", overrides)


def pick_variant(arg: str | None, variants: Sequence[str], config_file: str) -> str:
    """Validate the ``:variant`` suffix of a config spec; ``None`` / ``""`` picks the first."""
    if not arg:
        return variants[0]
    if arg not in variants:
        hint = closest(arg, variants)
        did = f" Did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
        raise VosjaxError(
            f"config {config_file}: unknown variant {arg!r}.{did} Choose one of: "
            f"{', '.join(variants)}."
        )
    return arg


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``"configs/stcn.py:tiny"`` -> the ConfigDict returned by that file's ``get_config("tiny")``.

    The path is taken relative to the working directory, or, failing that, to
    the repository root (so ``configs/demo.py`` works from anywhere inside a
    checkout).
    """
    if not isinstance(spec, str) or not spec:
        raise VosjaxError("load_config: --config must name a config file, e.g. configs/stcn.py:tiny.")
    path_text, _, variant = spec.partition(":")
    path = pathlib.Path(path_text)
    if not path.is_file():
        alt = pathlib.Path(__file__).resolve().parents[1] / path_text
        if not path.is_absolute() and alt.is_file():
            path = alt
        else:
            raise VosjaxError(
                f"load_config: config file {path_text!r} not found (looked in {pathlib.Path.cwd()} "
                f"and the repository root); pass e.g. --config configs/stcn.py[:variant]."
            )
    if path.suffix != ".py":
        raise VosjaxError(f"load_config: {path} is not a Python config file (*.py).")
    name = f"_vosjax_config_{path.stem}_{abs(hash(str(path.resolve())))}"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    try:
        sys.modules[name] = module
        mod_spec.loader.exec_module(module)
    except VosjaxError:
        raise
    except Exception as e:
        raise VosjaxError(f"load_config: {path} failed to import: {type(e).__name__}: {e}") from e
    finally:
        sys.modules.pop(name, None)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise VosjaxError(f"load_config: {path} defines no get_config(arg=None) function.")
    takes_arg = bool(inspect.signature(get_config).parameters)
    if variant and not takes_arg:
        raise VosjaxError(f"load_config: {path} has no variants; drop ':{variant}' from --config.")
    config = get_config(variant or None) if takes_arg else get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise VosjaxError(
            f"load_config: {path}:get_config must return an ml_collections.ConfigDict, got "
            f"{type(config).__name__}."
        )
    return config


# ----------------------------------------------------------------------------- overrides

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_value(path: str, text: str, current: Any) -> Any:
    """``text`` converted to the type of ``current`` (see the module docstring)."""
    stripped = text.strip()
    if isinstance(current, bool):
        low = stripped.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise VosjaxError(f"config: --config.{path} expects true/false, got {text!r}.")
    if isinstance(current, (int, float)):
        value = _literal(stripped)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise VosjaxError(
                f"config: --config.{path} expects a number ({type(current).__name__}), got {text!r}."
            )
        if isinstance(current, int) and isinstance(value, float):
            if not value.is_integer():
                raise VosjaxError(f"config: --config.{path} expects an integer, got {text!r}.")
            value = int(value)
        return type(current)(value)
    if isinstance(current, str):
        value = _literal(stripped)
        return value if isinstance(value, str) else stripped
    if isinstance(current, (tuple, list)):
        value = _literal(stripped)
        if not isinstance(value, (tuple, list)):
            if stripped == "":
                value = ()
            else:
                value = tuple(_literal(x.strip()) for x in stripped.split(","))
        return type(current)(value)
    if isinstance(current, ml_collections.ConfigDict):
        raise VosjaxError(
            f"config: --config.{path} is a section ({', '.join(sorted(current.keys()))}); set one "
            f"of its fields, e.g. --config.{path}.{min(current.keys())}=..."
        )
    return _literal(stripped)


def parse_override(arg: str) -> tuple[str, str]:
    """``"--config.a.b=1"`` (or ``"a.b=1"``) -> ``("a.b", "1")``."""
    text = arg.removeprefix("--")
    text = text.removeprefix("config.")
    path, sep, value = text.partition("=")
    if not sep or not path:
        raise VosjaxError(
            f"config: cannot read override {arg!r}; write --config.<field>=<value>, e.g. "
            "--config.stages.video.steps=100."
        )
    return path.strip(), value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Apply ``--config.a.b=value`` overrides in order (on a copy); unknown paths raise."""
    config = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
    for arg in overrides:
        path, text = parse_override(arg)
        parts = path.split(".")
        node: Any = config
        where = "config"
        for i, key in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, (list, tuple)) and key.lstrip("-").isdigit():
                idx = int(key)
                if not -len(node) <= idx < len(node):
                    raise VosjaxError(f"config: '{where}' has {len(node)} entries; index {idx} is out of range.")
                if last:
                    new = list(node)
                    new[idx] = _parse_value(path, text, node[idx])
                    _set(config, parts[:-1], type(node)(new))
                else:
                    node = node[idx]
                where = f"{where}.{key}"
                continue
            if not isinstance(node, ml_collections.ConfigDict):
                raise VosjaxError(f"config: '{where}' is a value, not a section; cannot set {path!r}.")
            if key not in node:
                raise _unknown(where, key, node.keys())
            if last:
                node[key] = _parse_value(path, text, node[key])
            else:
                node = node[key]
                where = f"{where}.{key}"
    return config


def _set(config: ml_collections.ConfigDict, parts: Sequence[str], value: Any) -> None:
    node: Any = config
    for key in parts[:-1]:
        node = node[int(key)] if isinstance(node, (list, tuple)) else node[key]
    node[parts[-1]] = value


def to_plain(x: Any) -> Any:
    """A ConfigDict (or nested mapping / sequence) as plain JSON-friendly Python values."""
    if isinstance(x, ml_collections.ConfigDict):
        x = x.to_dict()
    if isinstance(x, Mapping):
        return {str(k): to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        try:
            return x.item()
        except (TypeError, ValueError):
            return x
    return x
