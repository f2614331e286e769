from .annotate_args import AnnotateArguments
from .data_args import DataArguments
from .distill_args import DistillArguments
from .finetuning_args import FinetuningArguments
from .model_args import ModelArguments
from .parser import ConfigError, DOPDConfig, known_keys, load_config_dict, parse_config, parse_config_dict
from .rollout_args import RolloutArguments

__all__ = [
    "AnnotateArguments",
    "ConfigError", "DOPDConfig", "DataArguments", "DistillArguments", "FinetuningArguments", "ModelArguments",
    "RolloutArguments", "known_keys", "load_config_dict", "parse_config", "parse_config_dict",
]
