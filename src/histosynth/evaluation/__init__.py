"""Evaluation: pixel metrics now; fidelity, memorisation and downstream utility later."""
