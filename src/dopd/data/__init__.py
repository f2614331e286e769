"""Datasets -> canonical samples -> the two prompt views (x, x+p). See docs/data.md."""

from .grounding import CONVENTIONS, GroundingConvention, get_convention
from .loader import LoadedDataset, load_dataset_samples, load_datasets, mix_samples
from .privilege import PROCESSORS, parse_privilege_names, register_processor
from .registry import DatasetAttr, get_dataset_attrs, load_dataset_info
from .sample import (
    IMAGE_PLACEHOLDER, Box, CanonicalSample, Crop, PrivilegedRecord, SampleError, SampleIssue, parse_privileged,
)
from .validate import DatasetReport, load_and_validate, validate_dataset, validate_samples
from .views import PromptView, build_views, text_only_view
from .vision import DefaultVision, VisionSpec

__all__ = [
    "CONVENTIONS", "IMAGE_PLACEHOLDER", "PROCESSORS", "Box", "CanonicalSample", "Crop", "DatasetAttr",
    "DatasetReport", "DefaultVision", "GroundingConvention", "LoadedDataset", "PrivilegedRecord", "PromptView",
    "SampleError", "SampleIssue", "VisionSpec", "build_views", "get_convention", "get_dataset_attrs",
    "load_and_validate", "load_dataset_info", "load_dataset_samples", "load_datasets", "mix_samples",
    "parse_privilege_names", "parse_privileged", "register_processor", "text_only_view", "validate_dataset",
    "validate_samples",
]
