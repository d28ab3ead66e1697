"""Evaluation: pixel metrics, fidelity, memorisation (privacy), the export gate, mask adherence."""
