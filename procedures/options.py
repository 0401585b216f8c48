"""Click options and run configs derived from the config dataclasses.

Every option is declared once, as a field of a config dataclass (``nlp_distill.config.option``).
``config_options`` turns the fields of the given classes into click options with no click
default, so ``build_configs`` can apply the precedence

    dataclass default  <  --config JSON  <  flags typed on the command line

and validation happens in one place: the dataclass, whichever way a value came in.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

import click
from click.core import ParameterSource

from nlp_distill.config import SECTIONS, ConfigBase, field_types
from nlp_distill.errors import ConfigError

logger = logging.getLogger(__name__)
T = TypeVar("T", bound=ConfigBase)

# top-level keys of a run's config.json that are records, not settings
RUN_KEYS = ("task", "data_dir", "library_version")


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or f.name


def _base_type(tp: Any) -> Tuple[Any, bool]:
    """(item type, is_list) with Optional unwrapped."""
    if typing.get_origin(tp) is typing.Union:
        tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
    if typing.get_origin(tp) in (list, List):
        return typing.get_args(tp)[0], True
    return tp, False


def show_default(value: Any) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _range_text(meta: Dict[str, Any]) -> str:
    parts = [f"{w} {meta[k]}" for k, w in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if meta.get(k) is not None]
    return ", ".join(parts)


# --help headings, in the order they are shown; a section's options go under its heading
HEADINGS = ("Arguments", "Main", "Data", "Teacher", "Student", "Distillation", "Augmentation", "Pseudo-labels", "Training",
            "Export", "Run", "Other")
SECTION_HEADINGS = {"data": "Data", "model": "Teacher", "tagger": "Student", "student": "Student", "kd": "Distillation",
                    "augment": "Augmentation", "pseudo": "Pseudo-labels", "trainer": "Training", "label": "Teacher",
                    "storage": "Export", "seeds": "Training", "run": "Run"}
# the flags a user types first, shown under "Main" whatever their section
MAIN_FLAGS = ("data_dir", "output_dir", "model_dir", "teacher_model_path", "model_name_or_path", "data_file",
              "output_file", "unlabeled_filename")


def _grouped(opt: click.Option, cls: Optional[Type[ConfigBase]] = None) -> click.Option:
    """Tag ``opt`` with its --help heading (read by :class:`GroupedCommand`)."""
    opt.help_group = getattr(cls, "HEADING", "") or SECTION_HEADINGS.get(getattr(cls, "SECTION", ""), "Other")
    return opt


def heading_of(param: click.Parameter) -> str:
    """The --help heading of ``param``: Arguments, Main by name, else its section's tag or Run."""
    if isinstance(param, click.Argument):
        return "Arguments"
    if param.name in MAIN_FLAGS:
        return "Main"
    return getattr(param, "help_group", None) or "Run"


class GroupedCommand(click.Command):
    """A command whose --help lists options under headings (Main first, then by topic)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups: Dict[str, List[Tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            rec = param.get_help_record(ctx)
            if rec is not None:
                groups.setdefault(heading_of(param), []).append(rec)
        for heading in [h for h in HEADINGS if h in groups] + [h for h in groups if h not in HEADINGS]:
            with formatter.section(heading if heading == "Arguments" else f"{heading} options"):
                formatter.write_dl(groups[heading])


def field_option(cls: Type[ConfigBase], f: dataclasses.Field) -> click.Option:
    """The click option of one config field (no click default: unset flags never override)."""
    meta = f.metadata
    item, is_list = _base_type(field_types(cls)[f.name])
    flag = flag_name(f)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    rng = _range_text(meta)
    help_ = f"{meta['help']}{f' ({rng})' if rng else ''} [default: {show_default(default)}]"
    aliases = [f"--{a}" for a in meta.get("aliases") or ()]
    if item is bool:
        if meta.get("off_flag") == "":  # a switch: on when given
            return _grouped(click.Option([f"--{flag}", flag], is_flag=True, default=None, help=help_), cls)
        return _grouped(click.Option([f"--{flag}/--{meta.get('off_flag') or 'no_' + flag}", flag], default=None,
                                     help=help_), cls)
    if meta.get("choices") and not is_list:
        ptype: Any = click.Choice(meta["choices"])
    elif is_list:
        ptype = click.STRING
    else:
        ptype = {int: click.INT, float: click.FLOAT}.get(item, click.STRING)
    metavar = meta.get("metavar") or {"file": "FILE", "dir": "DIR", "any": "PATH"}.get(meta.get("path") or "")
    if is_list:
        help_ = help_.replace(" [default", " Repeat or comma-separate. [default", 1)
        metavar = metavar or ("LIST" if not meta.get("choices") else "[" + "|".join(meta["choices"]) + "],...")
    return _grouped(click.Option([f"--{flag}", *aliases, flag], type=ptype, default=None, multiple=is_list,
                                 metavar=metavar, help=help_), cls)


def config_options(*classes: Type[ConfigBase], exclude: Sequence[str] = (), sections: bool = True) -> Callable:
    """Decorator adding one click option per field of ``classes`` (flag names must be unique),
    except the flags in ``exclude`` (settings the command has no use for keep their default).
    ``sections``: the classes are sections of the command's ``--config`` (``build_configs``);
    ``False`` for settings read from typed flags alone (``typed_options``)."""
    opts: List[click.Option] = []
    seen: Dict[str, str] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            flag = flag_name(f)
            if flag in exclude:
                continue
            if flag in seen:
                raise RuntimeError(f"flag --{flag} declared by both {seen[flag]} and {cls.__name__}.{f.name}")
            seen[flag] = f"{cls.__name__}.{f.name}"
            opts.append(field_option(cls, f))

    def deco(fn: Callable) -> Callable:
        params = getattr(fn, "__click_params__", [])
        params.extend(reversed(opts))  # click reverses the list: options show in declaration order
        fn.__click_params__ = params  # type: ignore[attr-defined]
        if sections:
            fn.__config_classes__ = classes  # type: ignore[attr-defined]
        return fn

    return deco


def _cli_value(cls: Type[ConfigBase], f: dataclasses.Field, value: Any) -> Any:
    item, is_list = _base_type(field_types(cls)[f.name])
    if not is_list:
        return value
    parts = [p.strip() for v in value for p in str(v).split(",") if p.strip()]
    if item is int:
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"--{flag_name(f)}: expected integers, got {','.join(parts)!r}") from None
    return parts


def _read_config_file(config_file: str, sections: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    try:
        loaded = json.loads(Path(config_file).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{config_file}: not valid JSON ({e})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{config_file}: expected a JSON object with sections {', '.join(sections)}")
    out: Dict[str, Dict[str, Any]] = {}
    for key, val in loaded.items():
        if key in sections:
            if not isinstance(val, dict):
                raise ConfigError(f"{config_file}: section {key!r} must be an object")
            out[key] = dict(val)
        elif key in SECTIONS:
            logger.warning("%s: section %r is not used by this command: ignored", config_file, key)
        elif key not in RUN_KEYS:
            raise ConfigError(f"{config_file}: unknown section {key!r}; this command reads {', '.join(sections)}")
    return out


def build_configs(ctx: click.Context, config_file: Optional[str] = None) -> Dict[str, ConfigBase]:
    """One config object per section of the command: defaults < ``--preset`` < ``--config`` < typed flags."""
    classes: Sequence[Type[ConfigBase]] = ctx.command.callback.__config_classes__  # type: ignore[union-attr]
    sections = [c.SECTION for c in classes]
    raw = _read_config_file(config_file, sections) if config_file else {}
    for cls in classes:  # the file alone first, so its errors name the file
        try:
            cls.from_dict(raw.get(cls.SECTION, {}))
        except ConfigError as e:
            raise ConfigError(f"{config_file}: {e}") from None
    out = {}
    for cls in classes:
        values = dict(raw.get(cls.SECTION, {}))
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            flag = flag_name(f)
            if ctx.get_parameter_source(flag) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
                values[f.name] = _cli_value(cls, f, ctx.params[flag])
        preset = values.get("preset")  # a preset's values sit between the defaults and the file
        out[cls.SECTION] = cls.from_preset(preset, **values) if preset else cls.from_dict(values)
    return out


def typed_options(ctx: click.Context, cls: Type[T]) -> T:
    """``cls`` from the flags typed on the command line (``config_options(cls, sections=False)``),
    its defaults for the rest and for the flags this command leaves out."""
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        flag = flag_name(f)
        if flag in ctx.params and ctx.get_parameter_source(flag) in (ParameterSource.COMMANDLINE,
                                                                      ParameterSource.ENVIRONMENT):
            values[f.name] = _cli_value(cls, f, ctx.params[flag])
    return cls.from_dict(values)


def given_settings(ctx: click.Context, config_file: Optional[str] = None) -> List[Tuple[str, str]]:
    """(section, field) of every setting the user gave: a flag typed on the command line or a key
    of the ``--config`` file (defaults excluded)."""
    classes: Sequence[Type[ConfigBase]] = ctx.command.callback.__config_classes__  # type: ignore[union-attr]
    raw = _read_config_file(config_file, [c.SECTION for c in classes]) if config_file else {}
    out = []
    for cls in classes:
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            typed = ctx.get_parameter_source(flag_name(f)) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
            if typed or f.name in raw.get(cls.SECTION, {}):
                out.append((cls.SECTION, f.name))
    return out
