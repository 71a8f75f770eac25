"""YAML suites (``lipcert run suite.yaml``): the validated :class:`Suite` and its runner.

A suite names the model(s), data, norm and ε, what to run (certificate,
attacks, Lipschitz analyser, analyses), where to write JSON/PDF/Markdown,
and the gates.  Its schema is data (:data:`certify.suites.schema.SUITE_KEYS`), checked with line
numbers before anything here runs; the gates are :mod:`certify.suites.gates`.
Precedence: overrides (the CLI options) > suite file > :mod:`certify.defaults`.
Relative paths are taken from the current directory (where CI runs).

Example::

    model: examples/models/fmnist_l2nnn.pt2
    data: {source: fashion-mnist, limit: 1000}
    norm: l2
    eps: [0.1, 0.3]
    attacks: {names: [pgd, ddn], steps: [100]}
    gates:
      min_clean_accuracy: 0.8
      min_certified_accuracy: {0.1: 0.6}
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..budget import budget_or_none
from ..defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CERTIFICATE,
    DEFAULT_DEVICE,
    DEFAULT_SEED,
    DEFAULT_SPLIT,
    HYBRID_DELEGATE_ACCURACY,
)
from ..errors import BadInputError, short_repr
from ..threat import Norm, parse_fraction
from .gates import GateReport, evaluate_gates, gate_config
from .schema import MODEL_KEYS, SUITE_KEYS, load_yaml_nodes, validate

# --------------------------------------------------------------------------- the suite as data


@dataclass(frozen=True)
class ModelSpec:
    path: str
    name: str
    arch: str | None = None
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    trust_checkpoint: bool = False
    trust_modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suite:
    """A validated suite; every field already has its default or override applied."""

    models: tuple[ModelSpec, ...]
    data_source: str | None
    data_root: str | None
    split: str
    limit: int | None
    norm: Norm
    eps: tuple[float, ...] | None
    certify: bool
    certificate: str
    lipschitz_constant: float | None
    assume_lipschitz: bool
    attacks: tuple[str, ...] | None  #: () = skip, None = the norm's defaults
    steps: tuple[int, ...]
    restarts: int
    lipschitz: bool
    train_margins: bool
    delegate_accuracy: float
    json_path: str | None
    pdf_path: str | None
    md_path: str | None
    gates: Mapping[str, Any] | None
    seed: int
    device: str
    batch_size: int
    source: str = ""  #: the suite file
    #: auto: bound propagation within it after the Lipschitz certificate (None: Lipschitz only)
    certificate_budget: str | None = None


def load_suite(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> Suite:
    """Read, validate and apply ``overrides`` (CLI options; None values are ignored)."""
    node, raw = load_yaml_nodes(path)
    where = str(path)
    if raw is None:
        raise BadInputError(f"{where}: the suite is empty; give at least 'model' and 'norm'")
    validate(node, raw, SUITE_KEYS, where)
    return suite_from_dict(raw, where, overrides or {})


def suite_from_dict(raw: Mapping[str, Any], where: str, overrides: Mapping[str, Any]) -> Suite:
    ov = {k: v for k, v in overrides.items() if v is not None}
    models = _models(raw, where)
    data = raw.get("data") or {}
    data = {"source": data} if isinstance(data, str) else data
    cert = raw.get("certify", True)
    cert_cfg = cert if isinstance(cert, dict) else {}
    attacks, steps, restarts = _attacks(raw.get("attacks"))
    analysis = raw.get("analysis") or {}
    output = raw.get("output") or {}
    output = {"json": output} if isinstance(output, str) else output
    report = raw.get("report") or {}
    norm = _norm(raw, ov, where)
    eps = ov.get("eps", raw.get("eps"))
    return Suite(
        models=models, data_source=ov.get("data_source", data.get("source")),
        data_root=ov.get("data_root", data.get("root")), split=ov.get("split", data.get("split", DEFAULT_SPLIT)),
        limit=ov.get("limit", data.get("limit")), norm=norm, eps=_eps(eps),
        certify=cert is not False, certificate=cert_cfg.get("certificate", DEFAULT_CERTIFICATE),
        lipschitz_constant=cert_cfg.get("lipschitz_constant"),
        assume_lipschitz=bool(cert_cfg.get("assume_lipschitz", False)),
        attacks=ov.get("attacks", attacks), steps=tuple(ov.get("steps", steps)), restarts=ov.get("restarts", restarts),
        lipschitz=bool(raw.get("lipschitz", True)), train_margins=bool(analysis.get("train_margins", False)),
        delegate_accuracy=float(analysis.get("delegate_accuracy", HYBRID_DELEGATE_ACCURACY)),
        json_path=ov.get("json_path", output.get("json")), pdf_path=ov.get("pdf_path", report.get("pdf")),
        md_path=ov.get("md_path", report.get("md")), gates=raw.get("gates"),
        seed=ov.get("seed", raw.get("seed", DEFAULT_SEED)), device=ov.get("device", raw.get("device", DEFAULT_DEVICE)),
        batch_size=ov.get("batch_size", raw.get("batch_size", DEFAULT_BATCH_SIZE)), source=where,
        certificate_budget=budget_or_none(ov.get("certificate_budget", cert_cfg.get("certificate_budget"))))


def _norm(raw: Mapping[str, Any], ov: Mapping[str, Any], where: str) -> Norm:
    """The override's norm (a parameter: its errors name ``norm``), else the suite's 'norm' key."""
    if "norm" in ov:
        return Norm.parse(ov["norm"], param="norm")
    if raw.get("norm") is None:
        raise BadInputError(f"no norm given in {where}; add 'norm: l2' or 'norm: linf' to it", param="norm")
    try:
        return Norm.parse(raw["norm"])
    except BadInputError:
        raise BadInputError(f"{where}: 'norm' must be l2 or linf, got {short_repr(raw['norm'])}") from None


def _models(raw: Mapping[str, Any], where: str) -> tuple[ModelSpec, ...]:
    if ("model" in raw) == ("models" in raw):
        raise BadInputError(f"{where}: give exactly one of 'model' (one) or 'models' (a list)")
    entries = [raw["model"]] if "model" in raw else list(raw["models"])
    if not entries:
        raise BadInputError(f"{where}: 'models' is empty; list at least one model")
    specs = []
    for e in entries:
        e = {"path": e} if isinstance(e, str) else dict(e)
        if "path" not in e:
            raise BadInputError(f"{where}: every model needs a 'path'; valid keys: {', '.join(sorted(MODEL_KEYS))}")
        e.setdefault("name", Path(e["path"]).stem)
        e["trust_modules"] = tuple(e.get("trust_modules") or ())
        specs.append(ModelSpec(**e))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise BadInputError(f"{where}: model names must differ, got {short_repr(names)}; set 'name' for each model")
    return tuple(specs)


def _attacks(value: Any) -> tuple[tuple[str, ...] | None, tuple[int, ...], int]:
    if value is False:
        return (), (100,), 1
    if value is None or value is True:
        return None, (100,), 1
    if isinstance(value, list):
        return tuple(value), (100,), 1
    steps = value.get("steps", [100])
    steps = [steps] if isinstance(steps, int) else steps
    names = value.get("names")
    return (tuple(names) if names is not None else None), tuple(steps), int(value.get("restarts", 1))


def _eps(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in values:
        e = parse_fraction(v)
        if not (e >= 0 and math.isfinite(e)):
            raise BadInputError(f"ε must be ≥ 0 and finite, got {short_repr(v)}")
        out.append(e)
    return tuple(out)


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class SuiteRun:
    """What a suite produced: one combined results dict per model, and gate reports when gates are set."""

    suite: Suite
    results: tuple[dict[str, Any], ...]
    gates: tuple[GateReport, ...]  #: per model (empty without gates)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def run_suite(suite: Suite, *, argv: Sequence[str] | None = None,
              progress: Callable[[int, int], None] | None = None) -> SuiteRun:
    """Run every model of the suite (certify, attacks, Lipschitz, analyses) and evaluate its gates."""
    from ..data import load_dataset
    from ..device import resolve_device, seed_everything
    from ..distributed import current_world, rank_device
    from ..pipeline import analyze

    dev = rank_device(resolve_device(suite.device), current_world())  # under torchrun: cuda:LOCAL_RANK
    config = gate_config(suite.gates, suite.source) if suite.gates is not None else None
    opts = _analyze_options(suite, dev, argv)
    results, reports = [], []
    for spec in suite.models:
        seed_everything(suite.seed)
        model = _load(spec, dev)
        source = suite.data_source or model.metadata.dataset
        if source is None:
            raise BadInputError(f"{suite.source}: no data given and model {spec.name!r} names no dataset; "
                                "add 'data: {source: ...}'")
        data = load_dataset(source, split=suite.split, data_root=suite.data_root, limit=suite.limit)
        train = _train(source, suite) if suite.train_margins else None
        res = analyze(model, data, opts, train_data=train, command="run", name=spec.name, progress=progress)
        results.append(res)
        if res.get("partial"):  # interrupted: no further models, no gate on partial results
            break
        if config is not None:
            reports.append(evaluate_gates(res, config, name=spec.name))
    return SuiteRun(suite, tuple(results), tuple(reports))


def _load(spec: ModelSpec, device: Any) -> Any:
    """The model of one suite entry (its ``arch`` is the user's; ``trust_modules`` may be named by the file)."""
    from ..checkpoints import load_architecture, load_model

    return load_model(spec.path, arch=load_architecture(spec.arch, dict(spec.arch_kwargs)),
                      trust_checkpoint=spec.trust_checkpoint, trusted_modules=spec.trust_modules, device=device)


def _analyze_options(suite: Suite, device: Any, argv: Sequence[str] | None) -> Any:
    from ..pipeline import AnalyzeOptions

    return AnalyzeOptions(norm=suite.norm, eps=suite.eps, attacks=suite.attacks, steps=suite.steps,
                          restarts=suite.restarts, certificate=suite.certificate if suite.certify else "none",
                          certificate_budget=suite.certificate_budget,
                          lipschitz_constant=suite.lipschitz_constant, assume_lipschitz=suite.assume_lipschitz,
                          lipschitz=suite.lipschitz, delegate_accuracy=suite.delegate_accuracy,
                          batch_size=suite.batch_size, device=device, seed=suite.seed,
                          argv=tuple(argv) if argv is not None else None)


def _train(source: str, suite: Suite) -> Any:
    from ..data import load_dataset
    from ..defaults import TRAIN_MARGIN_LIMIT

    try:
        return load_dataset(source, split="train", data_root=suite.data_root, limit=TRAIN_MARGIN_LIMIT)
    except BadInputError:
        return None


def json_paths(suite: Suite) -> list[str]:
    """Where each model's results JSON goes ({name} replaced; several models get their name added)."""
    template = suite.json_path or "lipcert-{name}.json"
    out = []
    for spec in suite.models:
        if "{name}" in template:
            out.append(template.replace("{name}", spec.name))
        elif len(suite.models) > 1:
            p = Path(template)
            out.append(str(p.with_name(f"{p.stem}-{spec.name}{p.suffix}")))
        else:
            out.append(template)
    return out


def with_overrides(suite: Suite, **changes: Any) -> Suite:
    return dataclasses.replace(suite, **{k: v for k, v in changes.items() if v is not None})
