"""Sequential recommenders, one per file, registered by name in :mod:`srm_device.models.registry`."""

from srm_device.models import gru4rec, sasrec  # noqa: F401  (registers the models)
from srm_device.models.base import SequentialRecommender
from srm_device.models.config import SRMConfig
from srm_device.models.registry import MODELS, build_model, default_config, model_names

__all__ = ["MODELS", "SRMConfig", "SequentialRecommender", "build_model", "default_config", "model_names"]
