"""Cell-type composition from H&E through frozen embeddings (seed 001; Hist2Cell's graph idea, kept light).

``inputs`` reads spots (AnnData ``.h5ad`` or a CSV manifest) with their abundance columns, ``tiles`` cuts
spot tiles from a slide image, ``embed`` turns tiles into cached encoder embeddings, ``models`` holds the
ridge, MLP and neighbourhood regressors and the model folder, ``crossval`` runs leave-one-section-out
(or patient-out) evaluation, ``maps`` draws true-vs-predicted spatial maps and ``predict`` writes
predictions back into an AnnData and a CSV.
"""
