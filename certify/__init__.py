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

__all__ = [
    "__version__",
    "Architecture", "BadInputError", "CERTIFICATES", "CertificatePlan", "CertificateViolation",
    "CertifyReport", "Dataset", "EpsResult", "Examples", "GateFailed", "LipcertError", "LipschitzClaim",
    "LoadedModel", "ModelMetadata", "RuntimeFailure", "certify", "load_dataset", "load_model",
    "logit_stats", "plan_certificate", "radius_from_gap", "save_model",
]
