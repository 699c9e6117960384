"""Configuration shared by the three systems: where the data are, and the one profile pattern.

The data folder is found through :func:`data_root` (one rule for every command, test and
benchmark): ``--data``, then ``$HELIOFORGE_DATA``, then ``../shared/data`` beside the checkout,
then a full sample fetched with ``helioforge data fetch``, then the embedded sample.

Every system's settings follow one pattern: each stage's section is a :class:`Settings`
dataclass whose ``Literal`` fields are checked when it is built (a misspelt ``sampler`` fails
at once, naming the field and the choices); a system's profile is a :class:`ProfileBase` of
sections with a JSON round trip (:meth:`ProfileBase.to_json` / :meth:`ProfileBase.from_json`)
and digests of chosen sections (:meth:`ProfileBase.digest`), which the work-folder protocol
(:mod:`helioforge.workspace`) uses to decide what is current. The systems' profiles live in
:mod:`helioforge.interrogate.config`, :mod:`helioforge.diffusion.config` and
:mod:`helioforge.inversion.config`; :func:`profile_from_registry` picks one by name.

Examples
--------
>>> from dataclasses import dataclass
>>> from typing import Literal
>>> @dataclass
... class Sampler(Settings):
...     kind: Literal["ddpm", "ddim"] = "ddim"
>>> Sampler("euler")
Traceback (most recent call last):
...
ValueError: Sampler.kind must be one of 'ddpm', 'ddim'; got 'euler'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from helioforge.data.fetch import fetched_root

__all__ = [
    "Settings",
    "check_choices",
    "data_root",
    "data_root_info",
    "data_file",
    "describe_data_root",
    "set_data_root",
    "SAMPLE_DIR",
    "ProfileBase",
    "dataclass_from_dict",
    "profile_from_registry",
]


#: The compact real sample shipped inside the package (built by ``scripts/build_sample.py``).
SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"

_data_override: Path | None = None


def set_data_root(path: str | Path | None) -> None:
    """Make ``path`` the data folder of this process (the ``--data`` option); ``None`` undoes it.

    Raises
    ------
    FileNotFoundError : ``path`` is not an existing folder.
    """
    global _data_override
    if path is None:
        _data_override = None
        return
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: data folder not found (given with --data)")
    _data_override = p


def _shared_data_candidates() -> list[Path]:
    """``../shared/data`` beside the checkout, then beside the current directory."""
    repo = Path(__file__).resolve().parents[2]
    return [repo / ".." / "shared" / "data", Path.cwd() / ".." / "shared" / "data"]


def data_root_info() -> tuple[Path, str]:
    """The data folder and why it was chosen: the one data-resolution rule of helioforge.

    In order: ``--data`` (:func:`set_data_root`) → ``$HELIOFORGE_DATA`` → ``../shared/data``
    beside the checkout (or beside the current directory) → the full sample fetched by
    ``helioforge data fetch`` into the user cache, when complete → the embedded sample inside
    the package (:data:`SAMPLE_DIR`), which always exists.

    Returns
    -------
    (path, origin) with origin one of ``"--data"``, ``"HELIOFORGE_DATA"``, ``"shared"``,
    ``"fetched"``, ``"embedded"``. An explicit ``$HELIOFORGE_DATA`` is returned even when it
    does not exist (callers report the missing folder).
    """
    if _data_override is not None:
        return _data_override, "--data"
    env = os.environ.get("HELIOFORGE_DATA")
    if env:
        return Path(env).expanduser().resolve(), "HELIOFORGE_DATA"
    for candidate in _shared_data_candidates():
        if candidate.is_dir():
            return candidate.resolve(), "shared"
    fetched = fetched_root()
    if fetched is not None:
        return fetched, "fetched"
    return SAMPLE_DIR, "embedded"


def data_root() -> Path:
    """Folder holding the real data (``sharp/``, ``aia/``, ``goes/``, ``stokes/`` ...).

    See :func:`data_root_info` for the rule (``--data`` → ``$HELIOFORGE_DATA`` →
    ``../shared/data`` → fetched full sample → embedded sample).
    """
    return data_root_info()[0]


def describe_data_root() -> str:
    """One line naming the data folder in use and the rule that chose it (printed by demos)."""
    path, origin = data_root_info()
    why = {"--data": "given with --data", "HELIOFORGE_DATA": "from $HELIOFORGE_DATA",
           "shared": "../shared/data beside the checkout", "fetched": "full sample fetched by `helioforge data fetch`",
           "embedded": "embedded sample inside the package; `helioforge data fetch` gets the full sample"}[origin]
    return f"data: {path} ({why})"


def data_file(relative: str | Path, root: Path | None = None) -> Path:
    """A file of the data folder, accepting its gzip-compressed form ``<name>.gz``.

    Parameters
    ----------
    relative : str or Path
        Path of the file inside the data folder (e.g. ``"goes/xrs.csv"``).
    root : Path, optional
        Data folder; defaults to :func:`data_root`.

    Returns
    -------
    Path
        ``root/relative`` when it exists, else ``root/relative.gz`` when that exists, else
        ``root/relative`` (the file need not exist: callers report the missing file).
    """
    base = Path(root) if root is not None else data_root()
    plain = base / relative
    if not plain.exists():
        packed = plain.with_name(plain.name + ".gz")
        if packed.exists():
            return packed
    return plain


def dataclass_from_dict(cls: type, d: dict[str, Any]):
    """Build dataclass ``cls`` from a nested dictionary (as written by ``dataclasses.asdict``).

    Nested dataclass fields are rebuilt recursively and JSON lists become tuples where the field
    is a tuple. Keys absent from ``d`` take the field defaults.

    Parameters
    ----------
    cls : type
        A dataclass (usually a :class:`Settings` or :class:`ProfileBase` subclass).
    d : dict
        ``{field name: value}``, nested dictionaries for dataclass-typed fields.

    Returns
    -------
    cls
        The new instance.

    Raises
    ------
    TypeError
        A key of ``d`` (at any depth) is not a field of its dataclass (the message names it), or
        a field without default is missing.
    ValueError
        For :class:`Settings` classes, a value outside a ``Literal`` field's choices
        (:func:`check_choices`).
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key not in names:
            raise TypeError(f"{cls.__name__}: unknown setting {key!r}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = dataclass_from_dict(hint, value)
        elif isinstance(value, list) and "tuple" in str(hint):
            value = tuple(value)
        out[key] = value
    return cls(**out)


def _choices(hint: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` hint (also inside ``Optional``/``|``), else ``None``."""
    if get_origin(hint) is Literal:
        return get_args(hint)
    args = get_args(hint)
    lits = [a for a in args if get_origin(a) is Literal]
    if lits:
        out: list[Any] = []
        for a in lits:
            out.extend(get_args(a))
        if type(None) in args:
            out.append(None)
        return tuple(out)
    return None


def check_choices(obj: Any) -> None:
    """Check every ``Literal`` field of the dataclass ``obj`` against its choices.

    Parameters
    ----------
    obj : a dataclass instance whose annotations may use ``typing.Literal``.

    Raises
    ------
    ValueError : naming the class, the field, the allowed values and the value given.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        allowed = _choices(hints.get(f.name))
        if allowed is None:
            continue
        value = getattr(obj, f.name)
        if value not in allowed:
            names = ", ".join(repr(a) for a in allowed)
            raise ValueError(f"{type(obj).__name__}.{f.name} must be one of {names}; got {value!r}")


class Settings:
    """Base of every settings dataclass: ``Literal`` choices are checked on construction
    (:func:`check_choices`). A subclass that defines ``__post_init__`` calls ``super().__post_init__()``."""

    def __post_init__(self) -> None:
        check_choices(self)


class ProfileBase(Settings):
    """A system's profile: a dataclass of :class:`Settings` sections with a JSON round trip and
    digests (used by every pipeline to decide whether a saved product is reusable)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dictionary (JSON-able) of every setting."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        TypeError : an unknown key. ValueError : a value outside a field's choices.
        """
        return dataclass_from_dict(cls, d)

    def to_json(self) -> str:
        """The profile as a JSON document (sorted keys, indented)."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        """Inverse of :meth:`to_json` (``from_json(p.to_json()) == p``).

        Parameters
        ----------
        text : str
            A JSON document as written by :meth:`to_json`.

        Returns
        -------
        ProfileBase
            A profile of this class.

        Raises
        ------
        json.JSONDecodeError
            ``text`` is not JSON (a ``ValueError``).
        TypeError
            An unknown key (see :func:`dataclass_from_dict`).
        ValueError
            A value outside a field's choices.
        """
        return cls.from_dict(json.loads(text))

    def digest(self, *sections: str, extra: Any = None, drop: tuple[str, ...] = ()) -> str:
        """Short hash of the named sections, plus ``extra``, minus the ``section.key`` entries in
        ``drop``: what a saved product was made with.

        Parameters
        ----------
        *sections : str
            Names of the profile's sections (fields) to include.
        extra : any, optional
            Further JSON-able data to include (input content digests, upstream tokens ...);
            values JSON cannot hold are hashed through ``str``.
        drop : tuple of str
            ``"section.key"`` entries left out (e.g. the length of training for a resume digest);
            entries of sections not named are ignored.

        Returns
        -------
        str
            The first 12 hex digits of the SHA-1 of the sorted JSON of the selection.

        Raises
        ------
        KeyError
            A name in ``sections`` is not a section of the profile.
        ValueError
            An entry of ``drop`` is not of the form ``section.key``.
        """
        d = self.to_dict()
        picked = {s: dict(d[s]) for s in sections}
        for item in drop:
            sec, key = item.split(".")
            picked.get(sec, {}).pop(key, None)
        blob = json.dumps({"sections": picked, "extra": extra}, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


def profile_from_registry(registry: dict[str, Any], name: str, what: str = "profile"):
    """A fresh profile from a ``{name: factory}`` registry.

    Parameters
    ----------
    registry : dict
        ``{profile name: factory}``, each factory called with no argument.
    name : str
        The profile asked for.
    what : str
        What to call the choice in the error message (e.g. ``"SICON profile"``).

    Returns
    -------
    ProfileBase
        ``registry[name]()``.

    Raises
    ------
    ValueError
        ``name`` is not in ``registry`` (the message lists the choices).
    """
    try:
        factory = registry[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; choose one of {sorted(registry)}") from None
    return factory()


