"""Dataset readers and image loading.

Every reader is a sequence of ``Sample`` (``sasp.data.base``): ReasonSeg, RefCOCO / RefCOCO+ /
RefCOCOg, gRefCOCO, FP-RefCOCO(+/g), and the synthetic reasoning-segmentation task.
"""
from .base import IGNORE, DatasetError, Reader, Sample, SampleError
from .image import BACKGROUND, load_image

__all__ = ["BACKGROUND", "IGNORE", "DatasetError", "Reader", "Sample", "SampleError", "load_image"]
from .fp_refcoco import FPRefCOCOReader
from .grefcoco import GRefCOCOReader
from .reasonseg import ReasonSegReader
from .refer import RefCOCOReader

__all__ += ["FPRefCOCOReader", "GRefCOCOReader", "ReasonSegReader", "RefCOCOReader"]
from .synthetic import SyntheticReasonSeg

__all__ += ["SyntheticReasonSeg"]
