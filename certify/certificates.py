"""``certify``: from a model and a dataset to certified accuracies (radii: [L2NNN] Lemmas 1 and 6, [LINF-DIST] Fact 3.2; docs/soundness.md).

:func:`plan_certificate` decides which margin-to-radius rule applies and on
what basis (verified from the weights, declared in metadata, or assumed by
the user); :func:`certify` streams the data through the model and returns a
frozen :class:`CertifyReport`.
"""

from __future__ import annotations

import dataclasses

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ._version import __version__
from .threat import parse_eps, parse_number  # noqa: F401  (re-exported)
from .checkpoints import LoadedModel
from .data import Dataset, ProgressFn, check_against_model
from .defaults import DEFAULT_BATCH_SIZE
from .errors import BadInputError, LipschitzUnverifiedError, RuntimeFailure, short_repr
from .device import certificate_precision, is_out_of_memory, run_device, smaller_batch
from .flags import Flag, check_outputs, check_training_mode
from .margins import (
    CERTIFICATES,
    certified_mask,
    logit_stats,
    norm_conversion_factor,
    pairwise_radius,
    radius_from_gap,
)



@dataclass(frozen=True)
class CertificatePlan:
    """Which radius rule is used, with which constant, and why it is trusted."""

    certificate: str  #: l2-multi, l2-single, linf-dist or pairwise
    certificate_norm: str  #: norm the rule certifies in
    norm: str  #: norm the user asked for (radii are converted to it)
    divisor: float
    lipschitz_constant: float
    lipschitz_verified: bool
    #: ``verified`` (bound computed from the weights), ``declared`` (metadata),
    #: ``assumed`` (user said so with --assume-lipschitz / --certificate)
    basis: str
    reason: str
    norm_factor: float = 1.0  #: radius conversion from certificate_norm to norm
    #: K×K sound Lipschitz bounds of y_i − y_j, for the pairwise rule
    pair_constants: torch.Tensor | None = field(default=None, repr=False, compare=False)
    #: the analysed forward pass (:class:`certify.lipschitz.forward.ForwardSet`): logits with a per-example
    #: bound on their floating-point error; None when no analysis backs the plan
    forward: Any = field(default=None, repr=False, compare=False)

    def logits(self, module: Any, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The logits behind a certificate, and their error bound (a, b) when the analysis gives one."""
        with certificate_precision(x.device):
            if self.forward is None:
                return module(x), None
            fwd = self.forward.for_batch(int(x.shape[0]))
            if fwd is None:
                raise RuntimeFailure(f"the model's graph may change with the batch size and was not analysed at "
                                     f"{int(x.shape[0])}; rerun with another batch size")
            logits, a, b = fwd.to(x.device)(x)
            return logits, (a, b)

    def radii(self, logits: torch.Tensor, stats, err: tuple[torch.Tensor, torch.Tensor] | None = None  # type: ignore[no-untyped-def]
              ) -> torch.Tensor:
        """Radii in the user's norm.  With the error bound (a, b): each margin loses 2κa and each
        Lipschitz constant gains κb, κ = √2 in L2 and 2 in ℓ∞ (see ``docs/soundness.md``)."""
        if self.forward is not None and err is None:
            raise RuntimeFailure("internal: a verified plan needs the error bound of its forward pass")
        safety, slope = stats.safety, None
        if err is not None:
            kappa = math.sqrt(2.0) if self.certificate_norm == "l2" else 2.0
            a, b = (t.to(stats.gap.device) for t in err)
            safety, slope = torch.maximum(safety, 2.0 * kappa * a), kappa * b
        if self.pair_constants is not None:
            r = pairwise_radius(logits, stats.prediction, self.pair_constants, safety, slope)
        else:
            r = radius_from_gap(stats.gap, safety, self.divisor, self.lipschitz_constant, slope)
        return r * self.norm_factor


@dataclass(frozen=True)
class EpsResult:
    eps: float
    certified_accuracy: float
    certified_count: int


@dataclass(frozen=True)
class Examples:
    """Per-example records, as numpy arrays of equal length."""

    index: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    gap: np.ndarray
    margin: np.ndarray
    radius: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def correct(self) -> np.ndarray:
        return self.label == self.prediction

    def certified(self, eps: float) -> np.ndarray:
        return self.correct & (self.radius > eps)


@dataclass(frozen=True)
class CertifyReport:
    lipcert_version: str
    model: dict[str, str]
    data: dict[str, object]
    norm: str
    plan: CertificatePlan
    clean_accuracy: float
    mean_gap: float
    median_radius: float
    results: tuple[EpsResult, ...]
    examples: Examples
    flags: tuple[Flag, ...]
    partial: bool
    seed: int | None
    seconds: float
    #: what a ``--resume`` must match (see :func:`certify_settings`)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.examples)


@dataclass(frozen=True)
class CertifyResume:
    """A partial certify run: its settings block and its per-example rows (checked, then recomputed)."""

    settings: Mapping[str, Any]
    examples: Examples

    def __len__(self) -> int:
        return len(self.examples)


def certify_settings(model: LoadedModel, data: Dataset, *, norm: str, eps: Sequence[float], certificate: str,
                     lipschitz_constant: float | None, assume_lipschitz: bool, seed: int | None) -> dict[str, Any]:
    """Everything a resumed certify run must share with the partial one."""
    return {"command": "certify", "model_sha256": model.sha256, "data_source": data.source, "data_split": data.split,
            "data_total": len(data), "norm": norm, "eps": [float(e) for e in eps], "certificate": certificate,
            "lipschitz_constant": lipschitz_constant, "assume_lipschitz": bool(assume_lipschitz), "seed": seed}


# --------------------------------------------------------------------------- planning


def _claim_certificate(claim, norm: str) -> str | None:  # type: ignore[no-untyped-def]
    """Best rule a declared claim supports for ``norm``."""
    if claim is None:
        return None
    if claim.norm == "linf":
        return "linf-dist"
    if claim.kind == "vector" and norm == "l2":
        return "l2-single"
    return "l2-multi"


def resolved_certificate(model: LoadedModel, norm: str, certificate: str) -> str:
    """The rule ``certificate`` stands for on this model: ``auto`` becomes the declared claim's rule,
    or stays ``auto`` (pairwise bounds from the weights, where a given constant cannot apply)."""
    if certificate != "auto":
        return certificate
    return _claim_certificate(model.metadata.lipschitz, norm) or "auto"


def plan_certificate(
    model: LoadedModel,
    *,
    norm: str,
    certificate: str = "auto",
    lipschitz_constant: float | None = None,
    assume_lipschitz: bool = False,
    input_dim: int,
    input_shape: tuple[int, ...] | None = None,
    batch_sizes: tuple[int, ...] | None = None,
) -> CertificatePlan:
    """Choose the radius rule (see the module docs).

    A claim is taken from the model's metadata.  When it cannot be verified
    from the weights, the plan records ``lipschitz_verified=False`` and the
    basis it rests on, and certify raises the ``lipschitz-assumed`` flag.
    """
    from .lipschitz.claims import verify_certificate  # analyser; may refuse

    if norm not in ("l2", "linf"):
        raise BadInputError(f"expected --norm l2 or linf, got {norm!r}")
    if lipschitz_constant is not None and not (0 < lipschitz_constant < math.inf):
        raise BadInputError(f"--lipschitz-constant must be positive and finite, got {lipschitz_constant}")
    claim = model.metadata.lipschitz
    requested = certificate
    if certificate == "auto":
        certificate = _claim_certificate(claim, norm) or "auto"
    if certificate != "auto" and certificate not in CERTIFICATES:
        raise BadInputError(f"expected --certificate auto or one of {sorted(CERTIFICATES)}, got {certificate!r}")
    return verify_certificate(
        model,
        norm=norm,
        certificate=certificate,
        requested=requested,
        lipschitz_constant=lipschitz_constant,
        assume_lipschitz=assume_lipschitz,
        input_dim=input_dim,
        input_shape=input_shape,
        batch_sizes=batch_sizes,
    )


def batch_sizes_for(n: int, batch_size: int, start: int = 0) -> tuple[int, ...]:
    """The batch sizes a loop over examples ``start..n`` in batches of ``batch_size`` uses."""
    todo = max(n - start, 0)
    sizes = {min(batch_size, todo)} if todo else set()
    if todo % batch_size:
        sizes.add(todo % batch_size)
    return tuple(sorted(s for s in sizes if s > 0))


def declared_plan(model: LoadedModel, *, norm: str, certificate: str, lipschitz_constant: float | None,
                  assume_lipschitz: bool, input_dim: int, reason_unverified: str) -> CertificatePlan:
    """A plan resting on the declared claim or the user's assumption (not verified)."""
    kind = CERTIFICATES[certificate]
    claim = model.metadata.lipschitz
    declared = claim is not None and claim.norm == kind.norm and claim.kind in kind.implied_by
    L = lipschitz_constant if lipschitz_constant is not None else (claim.constant if declared and claim else 1.0)
    if declared and claim is not None and L < claim.constant:
        raise BadInputError(
            f"--lipschitz-constant {L} is below the declared constant {claim.constant}; that would over-claim"
        )
    if not declared and not assume_lipschitz:
        raise LipschitzUnverifiedError(
            f"certificate {certificate} needs {kind.description.split(':')[0]}, which could not be verified "
            f"({reason_unverified}); pass --assume-lipschitz to certify under that assumption"
        )
    basis = "declared" if declared else "assumed"
    return CertificatePlan(
        certificate=certificate,
        certificate_norm=kind.norm,
        norm=norm,
        divisor=kind.divisor,
        lipschitz_constant=float(L),
        lipschitz_verified=False,
        basis=basis,
        reason=reason_unverified,
        norm_factor=norm_conversion_factor(kind.norm, norm, input_dim),
    )


# --------------------------------------------------------------------------- running


def model_num_classes(model: LoadedModel, data: Dataset, device: torch.device) -> tuple[int, list[Flag]]:
    """Run one small batch: check the data fits the model, count outputs, raise sanity flags."""
    x, _ = data.batch(0, min(len(data), 8), device)
    try:
        with torch.inference_mode():
            out = model.module(x)
            out2 = model.module(x)
    except Exception as err:
        raise BadInputError(
            f"the model cannot run on data of shape {tuple(x.shape[1:])}: {str(err).splitlines()[0][:160]}"
        ) from err
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise BadInputError(f"the model must return logits of shape batch×classes, got {getattr(out, 'shape', type(out))}")
    flags = check_outputs(out, out2)
    if model.exported is None:  # exported graphs are traced in eval mode
        flags += check_training_mode(model.module)
    return int(out.shape[1]), flags


def certify(
    model: LoadedModel,
    data: Dataset,
    *,
    norm: str,
    eps: Sequence[float],
    certificate: str = "auto",
    lipschitz_constant: float | None = None,
    assume_lipschitz: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    seed: int | None = None,
    progress: ProgressFn | None = None,
    resume: CertifyResume | None = None,
) -> CertifyReport:
    """Certify every example of ``data``; see :class:`CertifyReport`.

    A ``KeyboardInterrupt`` stops the run and returns what was done, with
    ``partial=True``.  ``resume`` (:func:`resume_examples` of a partial run) is
    verified, not trusted: its settings must equal this run's, and its rows are
    recomputed and must agree with it (a certify pass is one forward pass, so
    the only thing a resume saves is nothing; what it gives is a checked partial).
    """
    eps_t = parse_eps(list(eps))
    settings = certify_settings(model, data, norm=norm, eps=eps_t, certificate=certificate,
                                lipschitz_constant=lipschitz_constant, assume_lipschitz=assume_lipschitz, seed=seed)
    if resume is not None:
        check_resume_settings(resume.settings, settings)
    device = run_device(model.module, device)  # None: the model's device; another one is refused
    start = time.perf_counter()
    meta = model.metadata
    check_against_model(data, meta.input_shape, meta.bounds, None)
    num_classes, flags = model_num_classes(model, data, device)
    check_against_model(data, meta.input_shape, meta.bounds, num_classes)
    input_dim = int(np.prod(data.input_shape))
    done = 0
    plan = plan_certificate(model, norm=norm, certificate=certificate, lipschitz_constant=lipschitz_constant,
                            assume_lipschitz=assume_lipschitz, input_dim=input_dim,
                            input_shape=data.input_shape, batch_sizes=batch_sizes_for(len(data), batch_size, done))
    if not plan.lipschitz_verified:
        flags.append(Flag("lipschitz-assumed", f"certificate {plan.certificate} rests on a {plan.basis} "
                                               f"Lipschitz property: {plan.reason}"))
    cols, partial = _run_batches(model, data, plan, batch_size, device, progress, start=done)
    examples = Examples(**{k: v.cpu().numpy() for k, v in cols.items()})
    check_finite_logits(examples)
    if resume is not None:
        check_resumed_rows(resume.examples, examples)
    report = _summarise(model, data, norm, plan, eps_t, examples, flags, partial, seed, time.perf_counter() - start)
    return dataclasses.replace(report, settings=settings)


def check_resume_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Refuse a partial whose settings block differs from this run's (exit 2, naming the first difference)."""
    for key, value in new.items():
        if old.get(key) != value:
            label = key.replace("_", " ")
            raise BadInputError(f"--resume: the partial results have {label} {short_repr(old.get(key), 70)}, "
                                f"this run has {short_repr(value, 70)}; resume with the same settings or rerun")


def check_resumed_rows(old: Examples, new: Examples) -> None:
    """The partial's rows must be the ones this run recomputes (index order, labels, predictions, radii)."""
    n = min(len(old), len(new))  # a resumed run may itself be interrupted before it catches up
    for name in ("index", "label", "prediction"):
        a, b = getattr(old, name)[:n], getattr(new, name)[:n]
        bad = np.flatnonzero(a != b)
        if bad.size:
            i = int(bad[0])
            raise BadInputError(f"--resume: row {i} of the partial results has {name} {int(a[i])}, but this model "
                                f"and data give {int(b[i])}; the partial is from another run or was edited")
    for name in ("gap", "margin", "radius"):
        a, b = getattr(old, name)[:n], getattr(new, name)[:n]
        same = np.isclose(a, b, rtol=1e-5, atol=1e-6) | ((a == b) & np.isinf(a))
        bad = np.flatnonzero(~same)
        if bad.size:
            i = int(bad[0])
            raise BadInputError(f"--resume: row {i} of the partial results has {name} {a[i]:.6g}, but recomputing "
                                f"it gives {b[i]:.6g}; the partial is from another run or was edited")


def check_finite_logits(ex: Examples) -> None:
    """NaN or Inf logits are a broken model, not a result: name the first bad example."""
    bad = np.flatnonzero(~(np.isfinite(ex.gap) & np.isfinite(ex.margin)))
    if bad.size:
        i = int(ex.index[bad[0]])
        raise BadInputError(f"the model's logits are NaN or Inf on example {i} (and {bad.size - 1} more); "
                            "the model is broken: check its weights and inputs")


def concat_examples(a: Examples, b: Examples) -> Examples:
    import dataclasses

    return Examples(**{f.name: np.concatenate([np.asarray(getattr(a, f.name), dtype=getattr(b, f.name).dtype),
                                               getattr(b, f.name)])
                       for f in dataclasses.fields(Examples)})


def _run_batches(model: LoadedModel, data: Dataset, plan: CertificatePlan, batch_size: int,
                 device: torch.device, progress: ProgressFn | None, start: int = 0
                 ) -> tuple[dict[str, torch.Tensor], bool]:
    chunks: dict[str, list[torch.Tensor]] = {k: [] for k in ("label", "prediction", "gap", "margin", "radius")}
    done, partial = start, False
    try:
        with torch.inference_mode():
            while done < len(data):
                x, y = data.batch(done, done + batch_size, device)
                try:
                    logits, err = plan.logits(model.module, x)
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise
                    batch_size = smaller_batch(batch_size, exc)
                    continue
                stats = logit_stats(logits, y)
                for key, value in (("label", y), ("prediction", stats.prediction), ("gap", stats.gap),
                                   ("margin", stats.margin), ("radius", plan.radii(logits, stats, err))):
                    chunks[key].append(value)
                done += x.shape[0]
                if progress is not None:
                    progress(done, len(data))
    except KeyboardInterrupt:
        partial = True
    empty = {"label": torch.long, "prediction": torch.long}
    cols = {k: (torch.cat(v) if v else torch.empty(0, dtype=empty.get(k, torch.float64), device=device))
            for k, v in chunks.items()}
    cols["index"] = torch.arange(start, done, device=device)
    return cols, partial


def _summarise(model: LoadedModel, data: Dataset, norm: str, plan: CertificatePlan, eps: tuple[float, ...],
               ex: Examples, flags: list[Flag], partial: bool, seed: int | None, seconds: float) -> CertifyReport:
    n = len(ex)
    correct = ex.correct
    results = []
    for e in eps:
        mask = certified_mask(torch.from_numpy(ex.radius), torch.from_numpy(correct), e)
        count = int(mask.sum())
        results.append(EpsResult(eps=e, certified_accuracy=count / n if n else 0.0, certified_count=count))
    return CertifyReport(
        lipcert_version=__version__,
        model=model.info,
        data={"source": data.source, "split": data.split, "n": n},
        norm=norm,
        plan=plan,
        clean_accuracy=float(correct.mean()) if n else 0.0,
        mean_gap=float(ex.gap.mean()) if n else 0.0,
        median_radius=float(np.median(ex.radius)) if n else 0.0,
        results=tuple(results),
        examples=ex,
        flags=tuple(flags),
        partial=partial,
        seed=seed,
        seconds=seconds,
    )


def resume_examples(results: dict, model: LoadedModel, data: Dataset, norm: str) -> CertifyResume:
    """A partial certify JSON, read and shape-checked (its settings and rows are checked by :func:`certify`)."""
    if not isinstance(results, dict) or results.get("command") != "certify":
        raise BadInputError("--resume expects the JSON of a partial 'lipcert certify' run")
    model_info = results.get("model") if isinstance(results.get("model"), dict) else {}
    if model_info.get("sha256") != model.sha256:
        raise BadInputError(f"--resume: the partial results have model sha256 {short_repr(model_info.get('sha256'))}, "
                            f"this run has {model.sha256!r}")
    settings = results.get("settings")
    if not isinstance(settings, dict):
        raise BadInputError("--resume: the JSON has no 'settings' block (written by an older lipcert?); rerun")
    pe = results.get("per_example")
    if not isinstance(pe, dict):
        raise BadInputError("--resume: the JSON has no per_example records to resume from")
    return CertifyResume(settings=settings, examples=_read_rows(pe, len(data)))


def _read_rows(pe: dict, total: int) -> Examples:
    """Per-example columns: all present, one-dimensional, of one length, finite where they must be."""
    dtypes = {"index": np.int64, "label": np.int64, "prediction": np.int64}
    cols = {}
    for k in ("index", "label", "prediction", "gap", "margin", "radius"):
        value = pe.get(k)
        if not isinstance(value, list):
            raise BadInputError(f"--resume: per_example {k!r} must be a list, got {short_repr(value)}")
        try:
            arr = np.array([np.inf if v is None and k == "radius" else v for v in value], dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise BadInputError(f"--resume: per_example {k!r} must hold numbers only") from None
        if arr.ndim != 1:
            raise BadInputError(f"--resume: per_example {k!r} must be a flat list of numbers")
        if k in dtypes:
            if not (np.isfinite(arr).all() and (arr == np.round(arr)).all() and (np.abs(arr) < 2**53).all()):
                raise BadInputError(f"--resume: per_example {k!r} must hold integers")
            arr = arr.astype(dtypes[k])
        cols[k] = arr
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) != 1:
        raise BadInputError(f"--resume: per_example lists have different lengths {lengths}; the file is damaged")
    n = lengths["index"]
    if n > total:
        raise BadInputError(f"--resume: the partial results hold {n} examples but the data has {total}")
    if not np.array_equal(cols["index"], np.arange(n)):
        raise BadInputError("--resume: per_example 'index' must be 0, 1, 2, … in order; the file was edited")
    if (cols["radius"] < 0).any() or np.isnan(cols["radius"]).any():
        raise BadInputError("--resume: per_example 'radius' holds a negative or NaN radius; the file was edited")
    return Examples(**cols)
