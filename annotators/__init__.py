"""One file per CV model behind one interface (`annotators.base.Annotator`)."""
from .base import Annotator, Failed, MissingWeightsError, Result, check_images, set_offline

__all__ = ["Annotator", "Failed", "MissingWeightsError", "Result", "check_images", "set_offline"]
