"""``analyse``: guaranteed Lipschitz bounds and the floating-point error bound of a model.

Results are cached by content: the graph's code, every weight's bytes, the norm, the input shape
and box, and the batch sizes.  Changing a weight in place, or a new model that happens to reuse
an old one's memory, always misses the cache.  Across runs, the convolutions' bounds are cached
on disk by :mod:`.cache`, keyed by their bytes, settings and the analysis code, and trusted only
when this installation signed them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Iterable

import torch

from ..checkpoints import LoadedModel
from ..data import ProgressFn
from ..threat import Norm
from . import rules  # noqa: F401  (fills the registry)
from . import cache
from .analyser import Analyser, Var
from .forward import CertifiedForward, ForwardSet
from .fperror import evaluate, row_norms
from .graph import GraphError, analysis_inputs, box_radius, content_hash, example_shape, graphs
from .operator_norms import ROUNDING_SLACK, dense_max_flops
from .registry import NoRule
from .report import LayerBound, LipschitzReport

_CACHE: OrderedDict[tuple[Any, ...], tuple[LipschitzReport, CertifiedForward | None]] = OrderedDict()
_CACHE_SIZE = 16


def analyse(model: LoadedModel, *, norm: Norm | str = Norm.L2, input_shape: tuple[int, ...] | None = None,
            batch_sizes: Iterable[int] | None = None, progress: ProgressFn | None = None) -> LipschitzReport:
    """Guaranteed Lipschitz bounds of ``model`` in ``norm`` (L2→L2 or ℓ∞→ℓ∞; a :class:`~certify.threat.Norm`
    or its name).

    ``batch_sizes``: the batch sizes a run will evaluate the model at; graphs that can change with
    the batch size (TorchScript, modules that specialise) are analysed at each, and the worst
    bounds are reported.  ``progress(done, total)``: called as the analyser walks the graph's nodes.
    """
    return analyse_with_forward(model, norm=norm, input_shape=input_shape, batch_sizes=batch_sizes,
                                progress=progress)[0]


def analyse_with_forward(model: LoadedModel, *, norm: Norm | str = Norm.L2, input_shape: tuple[int, ...] | None = None,
                         batch_sizes: Iterable[int] | None = None, progress: ProgressFn | None = None
                         ) -> tuple[LipschitzReport, ForwardSet | None]:
    """The report and, when verified, the forward pass the certificate runs (:mod:`.forward`)."""
    norm = Norm.parse(norm)
    _check_settings()
    shape = example_shape(model, input_shape)
    bounds = tuple(float(b) for b in model.metadata.bounds)
    try:
        found = graphs(model, shape, batch_sizes)
    except GraphError as err:
        return _unverifiable(norm, f"<graph> ({err})")[0], None
    results = []
    for g in found:
        key = (content_hash(g.program), norm, shape, bounds, g.batch, g.dynamic)
        if key not in _CACHE:
            _CACHE[key] = _analyse_graph(g.program, g.source, g.batch, g.dynamic, norm, shape,  # type: ignore[arg-type]
                                         bounds, progress)
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
        results.append((g, _CACHE[key]))
    report = _worst([r for _, (r, _) in results])
    if not report.verified:
        return report, None
    return report, ForwardSet({(None if g.dynamic else g.batch): f for g, (_, f) in results})


def _check_settings() -> None:
    """The environment's settings (``$LIPCERT_CONV_EXACT_FLOPS``, ``$LIPCERT_CACHE_KEY``), read up front so
    a bad value is an input error, not an op the analyser could not evaluate."""
    dense_max_flops()
    if cache.cache_dir() is not None:
        cache.secret()


def _analyse_graph(ep: Any, source: str, batch: int, dynamic: bool, norm: Norm, shape: tuple[int, ...],
                   bounds: tuple[float, float], progress: ProgressFn | None = None
                   ) -> tuple[LipschitzReport, CertifiedForward | None]:
    analyser = Analyser(norm, box_radius(bounds, shape, norm), batch, progress=progress)
    try:
        inputs, user = analysis_inputs(ep, bounds, shape, batch)
        with torch.no_grad():
            out_node = analyser.run(ep.graph_module, inputs, user)
    except (GraphError, NoRule) as err:
        return _unverifiable(norm, f"<graph> ({err})", source)
    except Exception as err:  # noqa: BLE001 - a graph that cannot even run on its example
        lines = str(err).strip().splitlines()
        other = sorted({str(t.dtype).replace("torch.", "") for t in ep.state_dict.values()
                        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float32})
        if other:  # the example inputs are float32: a float64 (or half) model fails on them
            return _unverifiable(norm, f"<graph> (the model's parameters are {'/'.join(other)}; the analyser and its "
                                       "rounding model cover float32 models: convert it with model.float() before "
                                       "saving)", source)
        return _unverifiable(norm, f"<graph> (cannot evaluate the graph: {(lines[0] if lines else '')[:160]})",
                             source)
    report = _finish(analyser, out_node, norm, source, batch, () if dynamic else (batch,))
    if not report.verified:
        return report, None
    first = _first_output(out_node)
    return report, CertifiedForward(ep.graph_module, analyser.env, user, analyser.info[first].err, norm)


def _first_output(out_node: Any) -> Any:
    outs = out_node.args[0]
    return outs[0] if isinstance(outs, (tuple, list)) else outs


def _unverifiable(norm: Norm, what: str, source: str = "torch.export") -> tuple[LipschitzReport, None]:
    return LipschitzReport(norm, False, (what,), math.inf, (), (), (), source), None


def _finish(an: Analyser, out_node: Any, norm: Norm, source: str, batch: int, sizes: tuple[int, ...]
            ) -> LipschitzReport:
    first = _first_output(out_node)
    layers = tuple(LayerBound(r.name, r.op, r.bound, r.estimate, r.method, r.reused) for r in an.layers)
    if not isinstance(first, torch.fx.Node):
        return LipschitzReport(norm, False, ("output (not a tensor)",), math.inf, (), (), layers, source)
    value = an.env[first]
    info = an.info.get(first)
    if info is None:
        info = Var(0.0)  # the output does not depend on the input
    problems = list(an.unverifiable)
    if not problems and info.kind != "var":
        problems.append(f"output ({first.name})")
    if not problems and not (isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[0] == batch):
        problems.append(f"output ({first.name}): expected logits of shape batch×classes")
    if not problems and not (math.isfinite(info.lip) and not info.err.infinite):
        problems.append(f"output ({first.name}): the bound is not finite")
    if problems:
        return LipschitzReport(norm, False, tuple(problems), math.inf, (), (), layers, source, batch_sizes=sizes)
    per_logit, pairs = _logit_bounds(info, norm, int(value.shape[1]))
    return LipschitzReport(norm, True, (), float(info.lip), per_logit, pairs, layers, source,
                           float_error=_centre_error(an, info), batch_sizes=sizes)


def _centre_error(an: Analyser, info: Var) -> float:
    """The logits' error bound at the centre of the input box (r = 0), for the report."""
    def norms(key: Any) -> torch.Tensor:
        value = an.env[key[0]] if key[1] is None else an.env[key[0]][key[1]]
        return row_norms(value, an.norm)

    a, _ = evaluate(info.err, norms, an.batch, "cpu" if not an.env else _device(an))
    return float(a[0])


def _device(an: Analyser) -> torch.device:
    for v in an.env.values():
        if isinstance(v, torch.Tensor):
            return v.device
    return torch.device("cpu")


def _logit_bounds(info: Var, norm: Norm, k: int) -> tuple[tuple[float, ...], tuple[tuple[float, ...], ...]]:
    """Per-logit and pairwise bounds: from the last affine map's rows when known, else the global bound
    (per-logit ≤ L, pairs ≤ κ·L: √2·L in L2 and 2·L in ℓ∞); rows are measured in the dual norm."""
    g = info.lip
    c = norm.kappa
    per = torch.full((k,), g, dtype=torch.float64, device="cpu")
    pair = torch.full((k, k), c * g, dtype=torch.float64, device="cpu")
    if info.affine is not None and info.affine[0].shape[0] == k:
        w, lh = info.affine
        w = w.to("cpu")
        q = norm.dual_p
        inflate = 1 + ROUNDING_SLACK
        per = torch.minimum(per, torch.linalg.vector_norm(w, ord=q, dim=1) * lh * inflate)
        diff = torch.linalg.vector_norm(w.unsqueeze(1) - w.unsqueeze(0), ord=q, dim=2) * lh * inflate
        pair = torch.minimum(pair, diff)
    pair.fill_diagonal_(0.0)
    return tuple(per.tolist()), tuple(tuple(r) for r in pair.tolist())


def _worst(reports: list[LipschitzReport]) -> LipschitzReport:
    """The elementwise worst of the reports of several graphs of one model."""
    if len(reports) == 1:
        return reports[0]
    bad = [r for r in reports if not r.verified]
    sizes = tuple(sorted({s for r in reports for s in r.batch_sizes}))
    if bad:
        ops = tuple(dict.fromkeys(op for r in bad for op in r.unverifiable_ops))
        return LipschitzReport(bad[0].norm, False, ops, math.inf, (), (), bad[0].layers, bad[0].source,
                               batch_sizes=sizes)
    first = reports[0]
    per = tuple(max(vals) for vals in zip(*(r.per_logit_bounds for r in reports)))
    pairs = tuple(tuple(max(v) for v in zip(*rows)) for rows in zip(*(r.pair_bounds for r in reports)))
    return LipschitzReport(first.norm, True, (), max(r.global_bound for r in reports), per, pairs,
                           first.layers, first.source, max(r.float_error for r in reports), sizes)
