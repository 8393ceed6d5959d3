"""Request policies, one registry (``POLICIES``); importing this package registers them all."""

from srm_device.policies import coverage, intellectreq, lsc4rec, selfeval, simple  # noqa: F401  (registration)
from srm_device.policies.base import POLICIES, PolicyInputs, RequestPolicy, Threshold, make_policy

__all__ = ["POLICIES", "PolicyInputs", "RequestPolicy", "Threshold", "make_policy"]
