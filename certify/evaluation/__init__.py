"""Evaluation: the analyze pipeline that combines certify, attacks and the Lipschitz analysis
(:mod:`.pipeline`), the analyses of per-example results (:mod:`.analyses`) and the demo (:mod:`.demo`)."""
