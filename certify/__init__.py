"""lipcert: how robust is a PyTorch classifier, provably and empirically?

Library use::

    from certify import load_model, load_dataset, certify
    model = load_model("model.pt2")
    data = load_dataset("fashion-mnist", limit=1000)
    report = certify(model, data, norm="l2", eps=[0.5, 1.0])
    report.results[0].certified_accuracy
"""

from __future__ import annotations

from typing import Any

from ._version import __version__

#: Public name → the module that owns it.  Imported on first use (PEP 562), so
#: ``import certify`` and ``lipcert --help`` stay free of torch (a small front door, after rich's ``__init__``).
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["CertificatePlan", "CertifyReport", "EpsResult", "Examples", "certify", "plan_certificate"],
                    "certificates"),
    **dict.fromkeys(["Architecture", "LipschitzClaim", "LoadedModel", "ModelMetadata", "load_model", "save_model"],
                    "checkpoints"),
    **dict.fromkeys(["Dataset", "load_dataset"], "data"),
    **dict.fromkeys(["BadInputError", "CertificateViolation", "GateFailed", "LipcertError", "RuntimeFailure"],
                    "errors"),
    **dict.fromkeys(["CERTIFICATES", "logit_stats", "radius_from_gap"], "certificates.margins"),
    **dict.fromkeys(["Norm", "Threat", "parse_eps"], "threat"),
    **dict.fromkeys(["Analysis", "PerExample", "analyse_examples", "error_curve", "gap_bins", "hybrid_curve",
                     "margin_histograms", "median_distance", "singular_value_spreads"], "evaluation.analyses"),
    **dict.fromkeys(["AnalyzeOptions", "analyze", "ensure_analysis"], "evaluation.pipeline"),
    **dict.fromkeys(["GateConfig", "GateReport", "GateResult", "evaluate_gates", "load_gate_config"], "suites"),
    **dict.fromkeys(["Suite", "SuiteRun", "load_suite", "run_suite"], "suites"),
    "load_results": "results",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'certify' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "__version__",
    "Architecture", "BadInputError", "CERTIFICATES", "CertificatePlan", "CertificateViolation",
    "CertifyReport", "Dataset", "EpsResult", "Examples", "GateFailed", "LipcertError", "LipschitzClaim",
    "LoadedModel", "ModelMetadata", "RuntimeFailure", "certify", "load_dataset", "load_model",
    "logit_stats", "plan_certificate", "radius_from_gap", "save_model", "Norm", "Threat", "parse_eps",
    # analyses, reports, suites and gates (issues 6 and 7)
    "Analysis", "AnalyzeOptions", "GateConfig", "GateReport", "GateResult", "PerExample", "Suite", "SuiteRun",
    "analyse_examples", "analyze", "ensure_analysis", "error_curve", "evaluate_gates", "gap_bins", "hybrid_curve",
    "load_gate_config", "load_results", "load_suite", "margin_histograms", "median_distance", "report_markdown",
    "run_suite", "singular_value_spreads", "write_pdf",
]


def write_pdf(results: list, path: str) -> int:  # type: ignore[type-arg]
    """Write the PDF report of one or several combined results dicts; returns the page count."""
    from .evaluation.pipeline import ensure_analysis
    from .reporting.pdf import write_pdf as _write

    return _write([ensure_analysis(r) for r in results], path)


def report_markdown(results: list) -> str:  # type: ignore[type-arg]
    """The Markdown summary of one or several combined results dicts."""
    from .evaluation.pipeline import ensure_analysis
    from .reporting.markdown import markdown

    return markdown([ensure_analysis(r) for r in results])
