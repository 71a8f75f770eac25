"""Every default lipcert uses lives here (after deel-torchlip's ``DEFAULT_*`` constants).

The CLI's ``show_default=True`` options, the dataclass defaults and the YAML
suite schema all read these names, so a default is changed in one place.
"""

from __future__ import annotations

DEFAULT_BATCH_SIZE = 256
DEFAULT_SPLIT = "test"
DEFAULT_DEVICE = "auto"
DEFAULT_SEED = 0
#: Largest accepted --seed (torch seeds are 64-bit; numpy gets seed mod 2**32).
SEED_MAX = 2**63 - 1
DEFAULT_CERTIFICATE = "auto"
#: What ``certificate=`` (``--certificate``) accepts: ``auto`` and the rules of
#: ``certify.certificates.margins.CERTIFICATES`` (kept torch-free here for the CLI; a test checks they agree).
CERTIFICATE_CHOICES = ("auto", "l2-multi", "l2-single", "linf-dist")
#: certificates from bound propagation (certify.bounds): ``lipcert certify --certificate``
BOUND_CERTIFICATES = ("ibp", "crown", "alpha-crown")
#: ``--certificate-budget``: what ``auto`` may spend on bound propagation beyond the Lipschitz certificate,
#: ``<N>s`` (seconds) or ``<N>`` (bound passes; docs/certificates.md); ``0`` keeps auto Lipschitz-only.
DEFAULT_CERTIFICATE_BUDGET = "30s"
DEFAULT_LIPSCHITZ_CONSTANT = 1.0
DEFAULT_NORM = "l2"

#: Where ``--data fashion-mnist`` looks when ``--data-root`` is not given
#: (Debian's ``dataset-fashion-mnist`` package installs it there).
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: Floating-point safety margin subtracted from every confidence gap before it
#: becomes a radius.  Logits come out of a float32 (or float64) forward pass;
#: rounding can make a computed gap larger than the true one.  We subtract
#: ``FLOAT_SAFETY_ULPS * finfo(dtype).eps * (1 + max_k |y_k|)`` from the gap
#: (computed in float64).  For float32 logits of magnitude ~10 this is ~8e-5,
#: far below any radius worth reporting, and it keeps a point that sits
#: exactly on the boundary (radius == eps) uncertified.
FLOAT_SAFETY_ULPS = 64

#: A progress bar is drawn when a run has at least this many examples.
PROGRESS_MIN_EXAMPLES = 512

# --------------------------------------------------------------------------- analyses and reports

#: ε values at which the summary reads off %err and certified accuracy ([WCAT] §5.1).
DEFAULT_ANALYSIS_EPS: dict[str, tuple[float, ...]] = {"l2": (0.0, 0.1, 1.5), "linf": (8 / 255,)}
#: Points on the ε grid of the error and certified-accuracy curves.
CURVE_POINTS = 101
#: Number of equal-size bins for accuracy binned by confidence gap ([L2NNN] Fig. 2).
GAP_BINS = 10
#: Number of thresholds on the hybrid-model curve ([L2NNN] §3.2).
HYBRID_POINTS = 21
#: Accuracy assumed for the points a hybrid model delegates to its other model.
HYBRID_DELEGATE_ACCURACY = 1.0
#: Bins of the label-margin histograms ([AR-REG] Fig. 4).
MARGIN_HIST_BINS = 40
#: Training examples used for the train-split margin histogram in ``lipcert analyze``.
TRAIN_MARGIN_LIMIT = 2000

# --------------------------------------------------------------------------- suites and gates

#: Gates: baseline comparison allows this much drop (absolute, accuracy in [0, 1]) ...
DEFAULT_MAX_DROP = 0.0
#: ... plus this explicit noise tolerance (absolute).
DEFAULT_NOISE_TOLERANCE = 0.0
# --------------------------------------------------------------------------- Lipschitz analysis

#: Gram iteration steps for guaranteed L2 norms of dense matrices; the bound
#: overshoots σ_max by at most rank^(1/2^(t+1)) (t=18: 1.00003 for rank 784).
LIPSCHITZ_GRAM_ITERATIONS = 18
#: Power-iteration steps for the per-layer estimates shown beside the bounds.
LIPSCHITZ_POWER_ITERATIONS = 200
#: Lanczos steps (float32 products, full reorthogonalisation, started from the Fourier bound's top
#: singular vector) for the estimate shown beside each convolution's bound.
LIPSCHITZ_CONV_POWER_ITERATIONS = 60
#: Largest banded AᵀA (entries) the exact Cholesky certificate of a
#: convolution may allocate (float64: 8 bytes each).  Larger inputs use the
#: circulant bound.
LIPSCHITZ_CONV_EXACT_MAX_BAND_ENTRIES = 40_000_000
#: Largest work (≈ d·band² flops) for that certificate: it only runs on small inputs where the
#: Fourier (circular padding) bound is more than 1% above the layer's estimate.
LIPSCHITZ_CONV_EXACT_MAX_FLOPS = 1e9
#: Largest work (≈ side³/3 flops, side = the smaller of the layer's input and output dimensions)
#: for the dense Cholesky certificate of a convolution's exact norm (zero padding); it runs first on
#: output windows of ≤ 16 pixels and elsewhere where the bound so far is more than 0.5% above the
#: layer's estimate.  2e11 covers side ≤ 8434: ResNet-18 width 64's 4×4 stage (side 8192, ~4 s each
#: on 2 cores; the Fourier bounds there are ~10% above the exact norm).  ``$LIPCERT_CONV_EXACT_FLOPS``
#: overrides it (0 turns it off).
LIPSCHITZ_CONV_DENSE_MAX_FLOPS = 2e11
#: The same on a CUDA device (float64 Cholesky runs at teraflops there): side ≤ 31,000, e.g. width 64's
#: 8×8 stage (side 16,384) as well.
LIPSCHITZ_CONV_DENSE_MAX_FLOPS_CUDA = 1e13
#: A declared constant C is accepted when the bound computed from the weights is
#: at most C·(1 + tolerance): float32 weights that are orthonormal "by
#: construction" have σ_max = 1 + O(1e-7).  Certificates then use the computed
#: bound max(C, bound) as L, so this tolerance never over-claims.
LIPSCHITZ_CLAIM_TOLERANCE = 1e-3

# Empirical estimates ([L2NNN] §3.1, [WCAT] Tables 1, 2 and 4)
ESTIMATE_POWER_ITERATIONS = 10
ESTIMATE_BATCH_SIZE = 250
LOCAL_SEARCH_POINTS = 16
LOCAL_SEARCH_STEPS = 5
LOCAL_SEARCH_RADIUS = 0.1

# Lipschitz constant of the data
DATA_LIPSCHITZ_BLOCK = 2048
# --------------------------------------------------------------------------- attacks

#: Attacks run by ``lipcert attack`` when ``--attacks`` is not given: AutoAttack's two
#: gradient attacks (APGD-CE, then targeted APGD-DLR on the points still robust), then a
#: minimum-norm attack for the distances.  On the bench CNN this matches AutoAttack standard's
#: robust accuracy (L2: +0.00 pp; ℓ∞: +0.40 pp at seed 0, +0.20 pp mean of 3 seeds) in 0.22–0.24× its
#: time (examples/benchmarks/bench_attacks.cpu.txt).
DEFAULT_ATTACKS: dict[str, tuple[str, ...]] = {
    "l2": ("apgd-ce", "apgd-t", "ddn"),
    "linf": ("apgd-ce", "apgd-t", "fmn"),
}
#: Attack iterations (``--steps``); several values give the iteration-scaling view.
#: Minimum-norm attack added when ``min_distance`` is on and the suite has none.
DEFAULT_DISTANCE_ATTACK: dict[str, str] = {"l2": "ddn", "linf": "fmn"}
DEFAULT_ATTACK_STEPS: tuple[int, ...] = (100,)
DEFAULT_RESTARTS = 1
#: Suites cascade (AutoAttack's flow): later attacks only attack points still robust.
DEFAULT_CASCADE = True
DEFAULT_ATTACK_BATCH_SIZE = 256
#: ``lipcert attack`` attacks points in chunks of this many (independent of the batch size), each with
#: its own seed: an interrupted run keeps its completed chunks and ``--resume`` gives the same results.
ATTACK_CHUNK = 512
#: Under torchrun, how long a rank waits for the others at an exchange of results before the run fails
#: (a rank that dies is noticed at once; this bounds one that hangs).  ``LIPCERT_DIST_TIMEOUT`` overrides it.
DIST_TIMEOUT_SECONDS = 7200
#: PGD step size relative to ε (foolbox's defaults: 0.025 for L2, 0.01/0.3 for ℓ∞).
DEFAULT_PGD_REL_STEPSIZE: dict[str, float] = {"l2": 0.025, "linf": 0.01 / 0.3}
#: PGD's first run starts uniformly in the ball of this radius × ε; restarts use the full ball.
#: A uniform L2 start lies almost on the sphere (radius ε·u^(1/d)), where small L2 steps spend
#: most of the budget turning away from the random direction: on the bench CNN, success 74.8% →
#: 77.6% and 9% fewer gradient evaluations with 0.1.  ℓ∞ steps (sign) are not slowed by it.
DEFAULT_PGD_START_FRACTION: dict[str, float] = {"l2": 0.1, "linf": 1.0}
#: Iterations of the minimum-norm attacks (FMN, DDN, DeepFool, C&W, HopSkipJump).
DEFAULT_MIN_NORM_STEPS: dict[str, int] = {"fmn": 100, "ddn": 100, "deepfool": 50, "cw": 100, "hsj": 16}
DEFAULT_CW_BINARY_SEARCH_STEPS = 5
#: APGD (Croce & Hein 2020): momentum α and the checkpoint threshold ρ of the paper.
APGD_ALPHA = 0.75
APGD_RHO = 0.75
#: APGD-T: target classes tried (the classes ranked highest at the clean point, after the label).
DEFAULT_APGD_TARGETS = 9  # AutoAttack standard's value; capped at classes − 1
#: ``--check-certificates``: strong settings, ε just below each point's radius.
DEFAULT_CHECK_STEPS = 200
DEFAULT_CHECK_RESTARTS = 3
CHECK_EPS_FRACTION = 0.999
#: ``robust-accuracy-still-falling``: robust accuracy at the largest budget is at
#: least this much (absolute, and at least one example) below the previous budget.
STILL_FALLING_DROP = 0.001
#: ``zero-gradients``: share of correctly classified points with an all-zero input gradient.
ZERO_GRADIENT_SHARE = 0.1
#: ``lipcert demo``: certified accuracy is reported at these ε (pixel space,
#: Fashion-MNIST in [0, 1]); the brief attack runs at the largest of each.
DEMO_L2_EPS = (0.1, 0.3, 0.5)
DEMO_LINF_EPS = (0.1,)
DEMO_ATTACK_STEPS = 20

# --------------------------------------------------------------------------- attacks per device

#: PGD's early stop and batch compaction, per device type: ``(every, compact_below)``.
#: Every ``every`` steps PGD asks which points are already adversarial (one device→host sync) and drops
#: them from the batch when at most ``compact_below`` of it is still running.  Between checks, the first
#: adversarial iterate of each point is kept on the device without a sync.  On the CPU a check is free and a
#: smaller batch is proportionally faster: check every step, compact on any hit.  On a GPU each sync stalls
#: the queue and a batch of another shape starts cold, while a half-empty batch costs little less than a
#: full one: check rarely, compact only when the batch has at least halved.
DEFAULT_EARLY_STOP: dict[str, tuple[int, float]] = {"cpu": (1, 1.0), "cuda": (25, 0.5)}
