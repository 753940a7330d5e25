"""SIMULATED data: a seed in, API responses, photos and a sample trial out.

Takes a seed and gives out responses that follow the documented formulas, drawn photos, and the
sample trial in ``data/sample-trial`` (regenerate: ``python -m skintrack.sample DIR``). Nothing is real.
"""
from .simulate import Latent, build_response, sample_photo, sample_study_dir, simulate_trial

__all__ = ["Latent", "build_response", "sample_photo", "sample_study_dir", "simulate_trial"]
