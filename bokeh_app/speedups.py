"""Serving speedups for Bokeh's property machinery: the same documents, the same bytes, less CPU.

A project page is ~410 Bokeh models, and every session builds and serialises its own (issue 16: at 40
sessions on 2 cores the server's CPU a session decides the first match's wait). Profiled (README: load),
most of that CPU was Bokeh recomputing property *defaults* it then throws away:

- ``HasProps.query_properties_with_values(include_defaults=False)`` (what ``to_serializable`` uses) computes,
  validates and copies the default of *every* property of a model (a glyph has ~60) before it drops those
  not set (Bokeh's own TODO: "this should happen before get_value()"). Here the unset ones are skipped
  first; one whose default may be ``Undefined`` is still read, so a required property left unset raises
  (or is reported as ``Undefined``) exactly as before.
- ``Property.themed_default`` re-validates the same immutable default (``None``, a number, a string, a tuple
  of those) each time a model is made or a property set. Here it is kept per (property, class) once
  computed, when the default is a plain value (not a factory) and no theme overrides it; containers and
  models (the "unstable" defaults, fresh for every instance) are made afresh as before, with the class's
  overridden defaults (a merge over its MRO) kept per class.
- ``HasProps.themed_values`` (read at every default) raised and caught an AttributeError for every model
  without a theme (through ``HasProps.__getattr__``); here it reads the instance's own dict.
- ``PropertyDescriptor.has_unstable_default`` walks a property's type parameters, for every property of
  every new model; its answer depends only on the property and the class, so it is kept per (descriptor,
  class).

Measured on the demo page (2-core VM, Bokeh 3.9.2): building 0.205 -> 0.124 s, serialising 0.085 ->
0.016 s a page (``benchmarks/bench_load.py`` has the figures under load).

Installed in every server process by the app's ``on_server_loaded`` hook (``bokeh_app/app_hooks.py``:
``lstmvis serve`` and ``bokeh serve bokeh_app`` alike; :func:`install`), only over the Bokeh code these replacements were written
against: each replaced function's source is compared with the hash recorded here, and on any difference
nothing is replaced (a log line says so; the server is then as fast as stock Bokeh and as correct).
``tests/app/test_speedups.py`` compares documents serialised with and without them, page by page and
model class by model class.
"""

from __future__ import annotations

import hashlib
import inspect
import logging

from bokeh.core.has_props import HasProps
from bokeh.core.property.bases import Property
from bokeh.core.property.descriptors import PropertyDescriptor, UnsetValueError
from bokeh.core.property.singletons import Undefined
from bokeh.core.property.wrappers import PropertyValueContainer

log = logging.getLogger(__name__)

#: sha256 (first 16 hex digits) of the source of each Bokeh function replaced or relied upon, as written
#: for Bokeh 3.9.2. Another Bokeh's code is not assumed to behave the same.
KNOWN_SOURCES = {
    "HasProps.query_properties_with_values": "e864a09d384658f4",
    "Property.themed_default": "6285cc20a7905875",
    "PropertyDescriptor.has_unstable_default": "5508a373943696c6",
    "PropertyDescriptor._get_default": "6173b5a328b12fc3",
    "PropertyDescriptor.__get__": "964a346a10d95348",
    "HasProps.themed_values": "668c1fc00de346e8",
    "HasProps.apply_theme": "d2db20814767ab3a",
    "HasProps.unapply_theme": "2fc6a9c8df957e62",
}

_STOCK = {
    "HasProps.query_properties_with_values": HasProps.query_properties_with_values,
    "Property.themed_default": Property.themed_default,
    "PropertyDescriptor.has_unstable_default": PropertyDescriptor.has_unstable_default,
    "PropertyDescriptor._get_default": PropertyDescriptor._get_default,
    "PropertyDescriptor.__get__": PropertyDescriptor.__get__,
    "HasProps.themed_values": HasProps.themed_values,
    "HasProps.apply_theme": HasProps.apply_theme,
    "HasProps.unapply_theme": HasProps.unapply_theme,
}

_IMMUTABLE = (type(None), bool, int, float, str)

# Caches (dict reads and writes are atomic under the GIL; a race computes a value twice, both equal).
_DEFAULTS: dict[tuple, tuple] = {}            # (id(property), cls, name, no_eval) -> (property, value)
_OVERRIDES: dict[type, dict] = {}             # cls -> cls._overridden_defaults()
_UNSTABLE: dict[tuple, bool] = {}             # (descriptor, cls) -> has_unstable_default
_MAYBE_UNDEFINED: dict[tuple, bool] = {}      # (cls, name) -> the default may be Undefined


def _source_hash(function) -> str | None:
    try:
        return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return None


def mismatches() -> list[str]:
    """The replaced or relied-upon functions whose source is not the one these speedups were written for."""
    return [name for name, function in _STOCK.items() if _source_hash(function) != KNOWN_SOURCES[name]]


def _immutable(value) -> bool:
    if type(value) in _IMMUTABLE or isinstance(value, str):
        return True
    return type(value) is tuple and all(_immutable(v) for v in value)


def _overrides(cls) -> dict:
    """``cls._overridden_defaults()`` (a merge over the class's MRO, static once the class exists), kept."""
    try:
        return _OVERRIDES[cls]
    except KeyError:
        value = _OVERRIDES[cls] = cls._overridden_defaults()
        return value


_STOCK_DEFAULT = object()                         # a verdict: not kept, computed each time


def _themed_default(self, cls, name, theme_overrides, *, no_eval=False):
    """``Property.themed_default``: the same steps (an override, else the raw default; copied; prepared),
    with the class's overrides kept, and a plain immutable default kept once prepared."""
    if theme_overrides is not None and name in theme_overrides:
        return _STOCK["Property.themed_default"](self, cls, name, theme_overrides, no_eval=no_eval)
    key = (id(self), cls, name, no_eval)
    hit = _DEFAULTS.get(key)
    if hit is not None and hit[1] is not _STOCK_DEFAULT:
        return hit[1]
    overrides = _overrides(cls)
    if name in overrides:
        raw = overrides[name]
        default = self._copy_default(raw, no_eval=no_eval)
    else:
        raw = self._default
        default = self._raw_default(no_eval=no_eval)
    value = self.prepare_value(cls, name, default)
    if hit is None:                               # (the property kept alive with it: its id stays its own)
        keep = not callable(raw) and _immutable(value)     # a factory may answer differently each call
        _DEFAULTS[key] = (self, value if keep else _STOCK_DEFAULT)
    return value


def _themed_values(self):
    """``HasProps.themed_values``: ``__themed_values__`` is only ever an instance attribute (``apply_theme``);
    Bokeh's ``getattr(self, ..., None)`` went through ``HasProps.__getattr__`` and an AttributeError for
    every unthemed model, at every property default read."""
    return self.__dict__.get("__themed_values__")


def _has_unstable_default(self, obj) -> bool:
    key = (self, type(obj))
    try:
        return _UNSTABLE[key]
    except KeyError:
        value = _UNSTABLE[key] = _STOCK["PropertyDescriptor.has_unstable_default"](self, obj)
        return value


def _maybe_undefined(cls, name: str) -> bool:
    key = (cls, name)
    try:
        return _MAYBE_UNDEFINED[key]
    except KeyError:
        prop = cls.lookup(name).property
        overrides = _overrides(cls)
        raw = overrides[name] if name in overrides else prop._default
        value = _MAYBE_UNDEFINED[key] = callable(raw) or raw is Undefined
        return value


def _query_properties_with_values(self, query, *, include_defaults=True, include_undefined=False):
    """``HasProps.query_properties_with_values`` with the unset properties skipped before their default
    is computed (when defaults are not asked for). Same result, same exceptions."""
    if include_defaults:
        return _STOCK["HasProps.query_properties_with_values"](self, query, include_defaults=True,
                                                               include_undefined=include_undefined)
    selected = self._property_values.keys() | self._unstable_default_values.keys()
    themed_values = self.themed_values()
    themed_keys = set(themed_values.keys()) if themed_values is not None else set()
    selected |= themed_keys
    cls = type(self)
    result = {}
    for key in self.properties(_with_props=True):
        unset = key not in selected
        if unset and not _maybe_undefined(cls, key):
            continue                                  # Bokeh computes its default, then drops it
        descriptor = self.lookup(key)
        if not query(descriptor):
            continue
        try:
            value = descriptor.get_value(self)
        except UnsetValueError:
            if include_undefined:
                value = Undefined
            else:
                raise
        else:
            if unset:
                continue
            if key not in themed_keys and isinstance(value, PropertyValueContainer) \
                    and key in self._unstable_default_values:
                continue
        result[key] = value
    return result


def installed() -> bool:
    return HasProps.query_properties_with_values is _query_properties_with_values


def install() -> bool:
    """Replace the three functions (idempotent). False, and nothing replaced, where Bokeh's code differs."""
    if installed():
        return True
    different = mismatches()
    if different:
        log.info("Bokeh speedups not installed: this Bokeh's %s differ from the code they were written "
                 "for (pages are built at stock speed)", ", ".join(different))
        return False
    HasProps.query_properties_with_values = _query_properties_with_values
    Property.themed_default = _themed_default
    PropertyDescriptor.has_unstable_default = _has_unstable_default
    HasProps.themed_values = _themed_values
    return True


def uninstall() -> None:
    """Put Bokeh's own functions back (tests compare both)."""
    HasProps.query_properties_with_values = _STOCK["HasProps.query_properties_with_values"]
    Property.themed_default = _STOCK["Property.themed_default"]
    PropertyDescriptor.has_unstable_default = _STOCK["PropertyDescriptor.has_unstable_default"]
    HasProps.themed_values = _STOCK["HasProps.themed_values"]
