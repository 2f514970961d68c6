"""The synthetic world: procedurally drawn scenes whose ground truth is known exactly.

It stands in for the public data and the pretrained weights that our machines cannot fetch:
a labelled ``seed`` split to train specialists on, an unlabelled ``pool`` for the engine to
annotate, and a held-out ``gold`` split to measure quality on.
"""
