"""The model zoo: training-only code that ``examples/`` uses.

Lipschitz-by-construction layers (:mod:`certify.zoo.layers`), losses
(:mod:`certify.zoo.losses`), the model families (:mod:`certify.zoo.models`) and
the training loop (:mod:`certify.zoo.training`).  The certifier does not need
them; :mod:`certify.checkpoints.architecture` lets a checkpoint name their classes.
"""
