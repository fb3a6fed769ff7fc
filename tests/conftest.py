"""Test configuration: hypothesis profiles (CI keeps runs short; `--hypothesis-profile=thorough`
for a deeper search)."""
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=500)
settings.load_profile("default")
