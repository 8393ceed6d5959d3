"""Device adaptation methods, one file each, in one registry (``METHODS``, :mod:`srm_device.adaptation.base`);
importing this package registers them all."""

from srm_device.adaptation import head_edit, layer_edit, persona, retrain, static  # noqa: F401  (registration)
from srm_device.adaptation.base import METHODS, DeviceMethod, make_method

__all__ = ["METHODS", "DeviceMethod", "make_method"]
