"""One model, one dataset → the combined results JSON (``lipcert analyze`` and ``lipcert run``).

:func:`analyze` certifies, attacks (when the ``attacks`` package is
installed), bounds the Lipschitz constant (when the analyser is available)
and computes every analysis of :mod:`certify.analysis`.  It returns the
combined results as a JSON-ready dict (see the README's "Combined results"),
because every report, table and gate reads that dict: so every number shown
equals the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .analyses import (
    Analysis,
    LayerSpread,
    analyse_examples,
    attack_points_from_json,
    forward_examples,
    per_example_from_json,
    singular_value_spreads,
)
from ..defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CERTIFICATE,
    DEFAULT_SEED,
    HYBRID_DELEGATE_ACCURACY,
)
from ..data import ProgressFn
from ..errors import BadInputError
from ..threat import Norm, parse_eps


@dataclass(frozen=True)
class AnalyzeOptions:
    """What :func:`analyze` runs.  ``attacks=()`` skips attacks; ``None`` uses the defaults."""

    norm: str
    eps: tuple[float, ...] | None = None  #: chosen ε (default: defaults.DEFAULT_ANALYSIS_EPS[norm])
    attacks: tuple[str, ...] | None = None
    steps: tuple[int, ...] = (100,)
    restarts: int = 1
    certificate: str = DEFAULT_CERTIFICATE  #: or "none" to skip certification
    #: with certificate "auto": bound propagation (CROWN, α-CROWN) within this budget after the Lipschitz
    #: certificate, for certify and the attacks' certify-first alike (None: the Lipschitz certificate alone)
    certificate_budget: str | None = None
    lipschitz_constant: float | None = None
    assume_lipschitz: bool = False
    lipschitz: bool = True  #: run the Lipschitz analyser when it is available
    delegate_accuracy: float = HYBRID_DELEGATE_ACCURACY
    batch_size: int = DEFAULT_BATCH_SIZE
    device: Any = None  #: None: the model's device
    seed: int = DEFAULT_SEED
    argv: tuple[str, ...] | None = field(default=None, compare=False)


def chosen_eps(opts: AnalyzeOptions) -> tuple[float, ...]:
    from ..defaults import DEFAULT_ANALYSIS_EPS

    norm = Norm.parse(opts.norm)
    if opts.eps is None:
        return DEFAULT_ANALYSIS_EPS[norm]
    return parse_eps(opts.eps, allow_zero=True)


def analyze(model: Any, data: Any, opts: AnalyzeOptions, *, train_data: Any = None, command: str = "analyze",
            name: str | None = None, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run everything ``opts`` asks for and return the combined results dict.

    The certificate is planned once (:func:`_plan`) and that plan, or its refusal, is handed to
    certify and to the attacks; the Lipschitz section reuses the plan's analysis when its norm is ours.
    """
    from ..results import analysis_json, certify_json, combined_json

    eps = chosen_eps(opts)
    notes: list[str] = []
    plan = _plan(model, data, opts, [e for e in eps if e > 0], notes)
    report = _certify_or_none(model, data, opts, [e for e in eps if e > 0], plan, progress)
    cert = certify_json(report, opts.argv) if report is not None else None
    if report is not None and report.partial:  # interrupted: stop here, write what certify did
        attack, lipschitz = None, None
        notes.append("interrupted during certify: attacks and the Lipschitz analysis were not run")
    else:
        attack, lipschitz = external_reports(model, data, opts, [e for e in eps if e > 0], notes, progress, plan)
    ex_source = cert["per_example"] if cert else _forward_json(model, data, opts)
    if cert is None and attack is None:
        notes.append("no certificate and no attack: the analysis has natural accuracy and gaps only")
    train_margins = None
    if train_data is not None:
        train_margins = forward_examples(model, train_data, batch_size=opts.batch_size, device=opts.device).margin
    attack_seen = attack
    if attack is not None and attack.get("partial"):  # holds only its completed chunks: leave it out
        attack_seen = None
        notes.append("interrupted during the attacks: the analysis leaves the partial attack results out")
    analysis = analyse_results_parts(ex_source, attack_seen, norm=opts.norm, eps=eps, train_margins=train_margins,
                                     spreads=singular_value_spreads(model), delegate_accuracy=opts.delegate_accuracy)
    partial = bool(report is not None and report.partial) or bool(attack and attack.get("partial"))
    data_info = {"source": data.source, "split": data.split, "n": len(data)}
    return combined_json(command=command, seed=opts.seed, model=model.info, data=data_info, certify=cert,
                         attack=attack, lipschitz=lipschitz, analysis=analysis_json(analysis), partial=partial,
                         name=name, notes=notes)


def _plan(model: Any, data: Any, opts: AnalyzeOptions, eps: Sequence[float], notes: list[str]) -> Any:
    """The one certificate plan of this run: a plan, a :class:`NoCertificate` (``auto`` found no sound
    property: noted), or None when nothing certifies (no positive ε, or ``certificate="none"``)."""
    from ..certificates import NoCertificate, batch_sizes_for, plan_certificate, plan_or_refusal

    if opts.certificate == "none":
        notes.append("certification skipped (certify: false)")
        return None
    if not eps:
        notes.append("no positive ε: certification skipped")
        return None
    kwargs = dict(norm=opts.norm, certificate=opts.certificate, lipschitz_constant=opts.lipschitz_constant,
                  assume_lipschitz=opts.assume_lipschitz, input_dim=int(np.prod(data.input_shape)),
                  input_shape=tuple(data.input_shape), batch_sizes=batch_sizes_for(len(data), opts.batch_size),
                  certificate_budget=opts.certificate_budget)
    if opts.certificate != "auto":  # a named rule that cannot be verified is the caller's error
        return plan_certificate(model, **kwargs)
    plan = plan_or_refusal(model, **kwargs)
    if isinstance(plan, NoCertificate):
        notes.append(f"no certificate: {plan.reason}")
    return plan


def _certify_or_none(model: Any, data: Any, opts: AnalyzeOptions, eps: Sequence[float], plan: Any,
                     progress: ProgressFn | None) -> Any:
    """Certify with the run's plan; None when there is none."""
    from ..certificates import CertificatePlan, certify

    if not isinstance(plan, CertificatePlan):
        return None
    return certify(model, data, norm=opts.norm, eps=eps, certificate=opts.certificate,
                   lipschitz_constant=opts.lipschitz_constant, assume_lipschitz=opts.assume_lipschitz,
                   batch_size=opts.batch_size, device=opts.device, seed=opts.seed, progress=progress, plan=plan,
                   certificate_budget=opts.certificate_budget)  # the plan was made with the same budget


def _forward_json(model: Any, data: Any, opts: AnalyzeOptions) -> dict[str, Any]:
    ex = forward_examples(model, data, batch_size=opts.batch_size, device=opts.device)
    return {"label": ex.label.tolist(), "prediction": ex.prediction.tolist(), "gap": ex.gap.tolist(),
            "margin": ex.margin.tolist(), "radius": [None] * len(ex)}


def external_reports(model: Any, data: Any, opts: AnalyzeOptions, eps: Sequence[float], notes: list[str],
                     progress: ProgressFn | None, plan: Any = None
                     ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Run the attacks (:func:`attacks.evaluate`, certify-first with the run's ``plan``) and the
    Lipschitz analyser; return their JSON sections."""
    from attacks import evaluate

    from ..results import attack_json, lipschitz_json

    attack = lipschitz = None
    if opts.attacks != () and eps:
        rep = evaluate(model, data, norm=opts.norm, eps=list(eps), attacks=opts.attacks, steps=opts.steps,
                       restarts=opts.restarts, certify_first=opts.certificate != "none",
                       certificate="auto" if opts.certificate == "none" else opts.certificate,
                       assume_lipschitz=opts.assume_lipschitz, min_distance=True,
                       batch_size=opts.batch_size, device=opts.device, seed=opts.seed, progress=progress, plan=plan,
                       certificate_budget=opts.certificate_budget)
        attack = attack_json(rep, list(opts.argv or ()))
        notes.extend(rep.notes)
    if opts.lipschitz:
        lipschitz = lipschitz_json(_lipschitz_report(model, data, opts, plan))
    return attack, lipschitz


def _lipschitz_report(model: Any, data: Any, opts: AnalyzeOptions, plan: Any) -> Any:
    """The analyser's report in the run's norm: the plan's own when it was made in that norm."""
    from ..lipschitz import analyse

    analysed = getattr(plan, "analysis", None)
    if analysed is not None and analysed.norm == opts.norm and getattr(plan, "certificate_norm", None) == opts.norm:
        return analysed
    return analyse(model, norm=opts.norm, input_shape=tuple(data.input_shape))


def analyse_results_parts(certify_pe: Mapping[str, Any] | None, attack: Mapping[str, Any] | None, *,
                          norm: str, eps: Sequence[float] | None = None, train_margins: Any = None,
                          spreads: Sequence[LayerSpread] = (),
                          delegate_accuracy: float = HYBRID_DELEGATE_ACCURACY) -> Analysis:
    """Analysis from per-example JSON blocks (certify and/or attack)."""
    ex = per_example_from_json(certify_pe, attack.get("per_example") if attack else None)
    return analyse_examples(ex, norm=norm, eps=eps, attack_points=attack_points_from_json(attack),
                            train_margins=train_margins, spreads=spreads, delegate_accuracy=delegate_accuracy)


def ensure_analysis(results: dict[str, Any], eps: Sequence[float] | None = None) -> dict[str, Any]:
    """Fill in ``analysis`` of combined results that have none (e.g. a wrapped certify JSON)."""
    from ..results import analysis_json

    if results.get("analysis") is not None:
        return results
    cert, attack = results.get("certify"), results.get("attack")
    section = cert or attack
    if not section:
        raise BadInputError("results hold neither certify nor attack results; nothing to analyse")
    norm = section.get("norm") or "l2"
    if eps is None:
        eps = default_eps_with(norm, [r["eps"] for s in (cert, attack) if s for r in s.get("results") or []])
    analysis = analyse_results_parts(cert.get("per_example") if cert else None, attack, norm=norm, eps=eps)
    return {**results, "analysis": analysis_json(analysis)}


def default_eps_with(norm: str, evaluated: Sequence[float]) -> tuple[float, ...]:
    """The norm's default chosen ε together with the ε a run evaluated (sorted, unique)."""
    from ..defaults import DEFAULT_ANALYSIS_EPS

    return tuple(sorted(set(DEFAULT_ANALYSIS_EPS.get(norm, ())) | {float(e) for e in evaluated}))
