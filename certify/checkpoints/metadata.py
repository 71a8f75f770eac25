"""What lipcert knows about a model besides its weights: :class:`ModelMetadata` and the
:class:`LipschitzClaim` a model declares, read from (and written to) a checkpoint's ``lipcert.json``.

Everything here is read from untrusted files, so every value is type- and range-checked, and a
broken value is one :class:`~certify.errors.BadInputError` line.  No torch import: metadata is
plain data.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import BadInputError, short_repr
from ..threat import NORMS, Norm

#: The name of the metadata member (extra file, safetensors header key) in every checkpoint format.
METADATA_FILE = "lipcert.json"

#: ``per-logit``: every logit y_k is C-Lipschitz; ``vector``: the whole logit
#: vector is C-Lipschitz (norm → same norm).
LIPSCHITZ_KINDS = ("per-logit", "vector")


@dataclass(frozen=True)
class LipschitzClaim:
    """A Lipschitz property declared for a model (not yet verified).

    ``norm`` is a :class:`~certify.threat.Norm` ("l2" or "linf" are accepted and parsed; it compares
    and serialises as the string).
    """

    norm: Norm
    kind: str
    constant: float = 1.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "norm", Norm.parse(self.norm))
        except BadInputError:
            raise BadInputError(f"Lipschitz claim: expected norm in {NORMS}, got {short_repr(self.norm)}") from None
        if self.kind not in LIPSCHITZ_KINDS:
            raise BadInputError(
                f"Lipschitz claim: expected kind in {LIPSCHITZ_KINDS}, got {short_repr(self.kind)}"
            )
        if not (self.constant > 0 and self.constant < float("inf")):
            raise BadInputError(
                f"Lipschitz claim: expected a positive finite constant, got {short_repr(self.constant)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (the norm as its string, so ``torch.load(weights_only=True)`` reads it back)."""
        return {"norm": self.norm.value, "kind": self.kind, "constant": self.constant}


@dataclass(frozen=True)
class ModelMetadata:
    """What lipcert knows about a model besides its weights."""

    input_shape: tuple[int, ...] | None = None  #: one example, without the batch dimension
    bounds: tuple[float, float] = (0.0, 1.0)  #: valid input range in pixel space
    mean: tuple[float, ...] | None = None  #: per-channel normalisation mean
    std: tuple[float, ...] | None = None  #: per-channel normalisation std
    #: True when the stored model already applies (x - mean) / std itself.
    normalization_in_model: bool = True
    dataset: str | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    lipschitz: LipschitzClaim | None = None
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(self.lipschitz, LipschitzClaim):  # (callers may also give the claim as a plain dict)
            d["lipschitz"] = self.lipschitz.to_dict()
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> "ModelMetadata":
        if not raw:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise BadInputError(
                f"model metadata: unknown keys {unknown}; valid keys are {sorted(known)}"
            )
        try:
            meta = cls(**_typed(dict(raw)))
            _check_metadata(meta)
        except (TypeError, ValueError) as err:
            if isinstance(err, BadInputError):
                raise
            raise BadInputError(f"model metadata: {short_repr(str(err), 120)[1:-1]}; fix the checkpoint's "
                                "lipcert.json or give arch a spec that sets metadata", param="arch") from err
        return meta


def _typed(kw: dict[str, Any]) -> dict[str, Any]:
    """JSON lists → tuples and the claim object → a :class:`LipschitzClaim` (TypeError when the shape is wrong)."""
    for key in ("input_shape", "bounds", "mean", "std", "class_names"):
        if kw.get(key) is not None:
            if not isinstance(kw[key], (list, tuple)):
                raise TypeError(f"'{key}' must be a list, got {short_repr(kw[key], 40)}")
            kw[key] = tuple(kw[key])
    if kw.get("lipschitz") is not None:
        if not isinstance(kw["lipschitz"], Mapping):
            raise TypeError(f"'lipschitz' must be an object, got {short_repr(kw['lipschitz'], 40)}")
        kw["lipschitz"] = LipschitzClaim(**kw["lipschitz"])
    return kw


def _check_metadata(meta: ModelMetadata) -> None:
    """Types and ranges of metadata read from a file."""
    def numbers(values: Any) -> bool:
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)

    if meta.input_shape is not None and not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**20
                                                for v in meta.input_shape):
        raise BadInputError(f"model metadata: input_shape must be positive integers, got {short_repr(meta.input_shape)}")
    if len(meta.bounds) != 2 or not numbers(meta.bounds) or not meta.bounds[0] < meta.bounds[1]:
        raise BadInputError(f"model metadata: expected bounds [lo, hi] with lo < hi, got {short_repr(meta.bounds)}")
    for key in ("mean", "std"):
        value = getattr(meta, key)
        if value is not None and not numbers(value):
            raise BadInputError(f"model metadata: {key} must be finite numbers, got {short_repr(value)}")
    if meta.num_classes is not None and not (isinstance(meta.num_classes, int) and 0 < meta.num_classes < 2**31):
        raise BadInputError(f"model metadata: num_classes must be a positive integer, got {short_repr(meta.num_classes)}")


def read_meta_json(raw: str, where: str) -> dict[str, Any]:
    """The raw ``lipcert.json`` text of a checkpoint → a dict ({} when absent); refuse non-objects."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise BadInputError(f"{where}: lipcert.json metadata is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise BadInputError(f"{where}: lipcert.json metadata must be a JSON object")
    return data
