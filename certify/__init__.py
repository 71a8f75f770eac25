"""lipcert: how robust is a PyTorch classifier, provably and empirically?

Library use::

    from certify import load_model, load_dataset, certify
    model = load_model("model.pt2")
    data = load_dataset("fashion-mnist", limit=1000)
    report = certify(model, data, norm="l2", eps=[0.5, 1.0])
    report.results[0].certified_accuracy
"""

from __future__ import annotations

__version__ = "0.1.0"

from .certificates import CertificatePlan, CertifyReport, EpsResult, Examples, certify, plan_certificate  # noqa: E402
from .checkpoint import Architecture, LipschitzClaim, LoadedModel, ModelMetadata, load_model, save_model  # noqa: E402
from .data import Dataset, load_dataset  # noqa: E402
from .errors import BadInputError, CertificateViolation, GateFailed, LipcertError, RuntimeFailure  # noqa: E402
from .margins import CERTIFICATES, logit_stats, radius_from_gap  # noqa: E402
from .analysis import (  # noqa: E402
    Analysis, PerExample, analyse_examples, error_curve, gap_bins, hybrid_curve, margin_histograms,
    median_distance, singular_value_spreads,
)
from .pipeline import AnalyzeOptions, analyze, ensure_analysis  # noqa: E402
from .gate import GateConfig, GateReport, GateResult, evaluate_gates, load_gate_config  # noqa: E402
from .suite import Suite, SuiteRun, load_suite, run_suite  # noqa: E402

__all__ = [
    "__version__",
    "Architecture", "BadInputError", "CERTIFICATES", "CertificatePlan", "CertificateViolation",
    "CertifyReport", "Dataset", "EpsResult", "Examples", "GateFailed", "LipcertError", "LipschitzClaim",
    "LoadedModel", "ModelMetadata", "RuntimeFailure", "certify", "load_dataset", "load_model",
    "logit_stats", "plan_certificate", "radius_from_gap", "save_model",
    # analyses, reports, suites and gates (issues 6 and 7)
    "Analysis", "AnalyzeOptions", "GateConfig", "GateReport", "GateResult", "PerExample", "Suite", "SuiteRun",
    "analyse_examples", "analyze", "ensure_analysis", "error_curve", "evaluate_gates", "gap_bins", "hybrid_curve",
    "load_gate_config", "load_results", "load_suite", "margin_histograms", "median_distance", "report_markdown",
    "run_suite", "singular_value_spreads", "write_pdf",
]


def load_results(path: str) -> dict:  # type: ignore[type-arg]
    """Read a results JSON (combined, or a bare certify/attack JSON wrapped into the combined shape)."""
    from .render import load_results as _load

    return _load(path)


def write_pdf(results: list, path: str) -> int:  # type: ignore[type-arg]
    """Write the PDF report of one or several combined results dicts; returns the page count."""
    from .report import write_pdf as _write

    return _write([ensure_analysis(r) for r in results], path)


def report_markdown(results: list) -> str:  # type: ignore[type-arg]
    """The Markdown summary of one or several combined results dicts."""
    from .report import markdown

    return markdown([ensure_analysis(r) for r in results])
