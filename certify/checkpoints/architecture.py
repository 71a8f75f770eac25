"""Architectures: how to build the module a state_dict belongs to, and which code a file may name.

An :class:`Architecture` is ``module:Class`` with keyword arguments, or a sequential layer spec
from YAML.  Who named it decides what may be imported (docs/security.md):

* the user (``arch``, a suite's ``model.arch``): any module, like any code they run;
* a file (a lipcert state_dict's ``architecture``, a safetensors header): only lipcert's own zoo
  (:data:`BUILTIN_ARCH_MODULES`, old names included) or modules the user trusts
  (``trust_modules``).  Nothing else is imported, and only ``nn.Module`` classes (or the zoo's
  family builders) are called.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import BadInputError, UnsafeCheckpointError, short_repr
from .formats import first_line

#: Modules whose nn.Module classes a *file* may name as its architecture: the zoo, and its old
#: names, which files written before the move still carry (``certify.models`` is the alias of
#: ``certify.zoo.models``).  Others must be named by the user (``trust_modules``).
BUILTIN_ARCH_MODULES = ("certify.zoo.models", "certify.zoo.layers", "certify.models", "certify.layers")

#: The modules above whose family builders (functions returning an nn.Module) may be named.
_FAMILY_MODULES = ("certify.zoo.models", "certify.models")


def resolve_class(spec: str, *, trusted_modules: tuple[str, ...] | None = None) -> type[nn.Module]:
    """Import ``package.module:Class``, which must be an ``nn.Module`` subclass.

    ``trusted_modules=None``: the user named the class (``arch``), any module may be
    imported.  Otherwise the spec came from a file and may only name a module in
    :data:`BUILTIN_ARCH_MODULES` or in ``trusted_modules``: nothing else is imported.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise BadInputError(f"architecture: expected 'module:Class', got {short_repr(spec)}")
    mod_name, _, cls_name = spec.partition(":")
    if trusted_modules is not None and mod_name not in BUILTIN_ARCH_MODULES + tuple(trusted_modules):
        raise UnsafeCheckpointError(
            f"the checkpoint names architecture {short_repr(spec)}, outside lipcert's own models "
            f"({', '.join(BUILTIN_ARCH_MODULES[:2])}); lipcert imports nothing a file names. If you trust that "
            f"code, pass trust_modules {short_repr(mod_name, 40)[1:-1]}, or give arch "
            f"{short_repr(spec, 60)[1:-1]} yourself", param=("trust_modules", "arch"))
    obj = _attribute(_import(mod_name), mod_name, cls_name)
    if mod_name in _FAMILY_MODULES and obj in _family_builders():
        return obj  # lipcert's own family builders (functions returning an nn.Module)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise BadInputError(f"architecture: {short_repr(spec)} is not an nn.Module subclass; "
                            "name a class like mypkg.nets:Net")
    return obj


def _import(mod_name: str) -> Any:
    try:
        return importlib.import_module(mod_name)
    except ImportError as err:
        raise BadInputError(
            f"architecture: cannot import module {mod_name!r} ({err}); is it on PYTHONPATH?"
        ) from err
    except Exception as err:  # a module that fails while importing
        raise BadInputError(f"architecture: importing {mod_name!r} failed ({first_line(err)})") from err


def _attribute(mod: Any, mod_name: str, cls_name: str) -> Any:
    """``mod.a.b`` for ``cls_name`` "a.b": public attributes only (no ``__dunder__``)."""
    obj: Any = mod
    for part in cls_name.split("."):
        if not part or part.startswith("__") or not hasattr(obj, part):
            raise BadInputError(f"architecture: {mod_name!r} has no attribute {short_repr(cls_name, 60)}")
        obj = getattr(obj, part)
    return obj


def _family_builders() -> list[Any]:
    from ..zoo.models import FAMILIES

    return [b for fam in FAMILIES.values() for b in fam.builders.values()]


@dataclass(frozen=True)
class Architecture:
    """How to build the module a state_dict belongs to."""

    cls: str | None = None  #: ``module:Class``
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    layers: tuple[Any, ...] | None = None  #: a sequential spec from YAML
    metadata: Mapping[str, Any] | None = None

    #: None: named by the user; a tuple: named by a file, so only lipcert's own
    #: modules and these may be imported (see :func:`resolve_class`).
    trusted_modules: tuple[str, ...] | None = None

    def build(self, device: str | torch.device | None = None) -> nn.Module:
        """Build the module (on ``device``; ``"meta"`` allocates nothing)."""
        with torch.device(device) if device is not None else contextlib.nullcontext():
            if self.layers is not None:
                return _build_sequential(self.layers)
            if self.cls is None:
                raise BadInputError("architecture: give 'class: module:Class' or 'layers: [...]'")
            if not isinstance(self.kwargs, Mapping) or not all(isinstance(k, str) for k in self.kwargs):
                raise BadInputError(f"architecture {short_repr(self.cls)}: kwargs must be a mapping of names")
            factory = resolve_class(self.cls, trusted_modules=self.trusted_modules)
            try:
                return factory(**dict(self.kwargs))
            except (TypeError, ValueError, RuntimeError, OverflowError) as err:
                raise BadInputError(f"architecture {short_repr(self.cls)}: bad keyword arguments "
                                    f"({first_line(err)})") from err

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cls is not None:
            out["class"] = self.cls
            out["kwargs"] = dict(self.kwargs)
        if self.layers is not None:
            out["layers"] = list(self.layers)
        return out


def _build_sequential(layers: tuple[Any, ...]) -> nn.Module:
    """Build ``nn.Sequential`` from ``[{Conv2d: [1, 16, 3]}, "ReLU", {Linear: {in_features: 4, ...}}]``.

    Names are looked up in ``torch.nn`` and in lipcert's own layers
    (:mod:`certify.zoo.layers`, when present).
    """
    mods: list[nn.Module] = []
    for i, item in enumerate(layers):
        if isinstance(item, str):
            name, args = item, []
        elif isinstance(item, Mapping) and len(item) == 1:
            ((name, args),) = item.items()
        else:
            raise BadInputError(f"model spec: layers[{i}] must be 'Name' or {{Name: args}}, got {short_repr(item)}")
        cls = _layer_class(name, i)
        try:
            if isinstance(args, Mapping):
                mods.append(cls(**args))
            elif isinstance(args, (list, tuple)):
                mods.append(cls(*args))
            else:
                mods.append(cls(args))
        except (TypeError, ValueError, RuntimeError, OverflowError) as err:
            raise BadInputError(f"model spec: layers[{i}] {name}: {first_line(err)}") from err
    return nn.Sequential(*mods)


def _layer_class(name: Any, i: int) -> Any:
    from ..zoo import layers as layers_mod

    for mod in (nn, layers_mod):
        obj = getattr(mod, name, None) if isinstance(name, str) and not name.startswith("_") else None
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            return obj
    raise BadInputError(f"model spec: layers[{i}]: unknown layer {short_repr(name)} "
                        "(an nn.Module class of torch.nn or certify.layers)")


def load_architecture(spec: str | os.PathLike[str] | None, kwargs: Mapping[str, Any] | None = None) -> Architecture | None:
    """``module:Class`` (with kwargs) or the path of a YAML model spec (named by the user: trusted)."""
    if spec is None:
        return None
    spec = str(spec)
    if spec.endswith((".yaml", ".yml")) or (os.path.exists(spec) and ":" not in spec):
        from ..io import load_yaml_file

        raw = load_yaml_file(spec)
        if not isinstance(raw, Mapping):
            raise BadInputError(f"model spec {spec!r}: expected a mapping with 'class' or 'layers'")
        valid = {"class", "kwargs", "layers", "metadata"}
        unknown = sorted(set(raw) - valid)
        if unknown:
            raise BadInputError(f"model spec {spec!r}: unknown keys {unknown}; valid keys are {sorted(valid)}")
        return Architecture(
            cls=raw.get("class"),
            kwargs=dict(raw.get("kwargs") or {}),
            layers=tuple(raw["layers"]) if raw.get("layers") is not None else None,
            metadata=raw.get("metadata"),
        )
    return Architecture(cls=spec, kwargs=dict(kwargs or {}))


def file_architecture(a: Any, where: str, file_trust: tuple[str, ...] | None) -> Architecture:
    """The architecture a checkpoint names for itself (untrusted unless ``file_trust`` is None)."""
    if not isinstance(a, Mapping) or set(a) - {"class", "kwargs", "layers"}:
        raise BadInputError(f"checkpoint {where!r}: its architecture must be an object with 'class' and "
                            f"'kwargs' or 'layers', got {short_repr(a)}; name it yourself with arch instead",
                            param="arch")
    layers = a.get("layers")
    if layers is not None and not isinstance(layers, (list, tuple)):
        raise BadInputError(f"checkpoint {where!r}: architecture 'layers' must be a list, got {short_repr(layers)}")
    kwargs = a.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise BadInputError(f"checkpoint {where!r}: architecture 'kwargs' must be an object, got {short_repr(kwargs)}")
    return Architecture(cls=a.get("class"), kwargs=kwargs, layers=tuple(layers) if layers else None,
                        trusted_modules=file_trust)
