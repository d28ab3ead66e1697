"""``histosynth serve``: a small local web app to paint or upload a mask, generate a tile beside it, transfer
an appearance, and browse synthetic dataset folders with their HTML reports.

``app.create_app`` wires the FastAPI routes; ``service`` holds the model and the generation modes;
``uploads`` turns uploaded bytes into arrays with one-line errors; ``datasets`` browses folders.
"""
