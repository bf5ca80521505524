"""Shared pytest setup: Hypothesis profiles and a deterministic seed per test.

Profiles: ``ci`` (default, small and fast), ``dev`` and ``campaign`` (long property-test
runs: ``pytest --hypothesis-profile=campaign``).
"""

import os

import pytest
from hypothesis import HealthCheck, settings

import minilm

settings.register_profile(
    "ci", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "campaign", max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _seed_and_reference_backend():
    """Every test starts on the NumPy reference backend with seed 0."""
    minilm.use_backend("numpy")
    minilm.manual_seed(0)
    yield
