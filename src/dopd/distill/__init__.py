"""The DOPD objective: per-token privilege gap, four regimes, routed divergences. Pure tensors, no model inside.

    from dopd.distill import dopd_loss, DOPDLossConfig, REGIMES
    out = dopd_loss(student_logits, priv_student_logits, teacher_logits, labels, config=DOPDLossConfig())

`dopd_loss_from_hidden` computes the same from hidden states and lm_head weights in chunks of tokens.
Presets (routing tables) by name: `PRESETS`, `get_preset`. See docs/objective.md.
"""

from .chunked import dopd_loss_from_hidden, routing_pass_from_hidden
from .config import DOPDLossConfig
from .divergences import (
    DIVERGENCES, LOG_FLOOR, divergence, forward_kl, jensen_shannon, log_probs, reverse_kl, sampled_reverse_kl,
    topk_restrict,
)
from .loss import dopd_loss
from .outputs import IGNORE_INDEX, DOPDLossOutput
from .passes import RoutingPass
from .presets import PRESETS, TARGETS, Preset, Term, every_token, get_preset, normalize_table, register_preset
from .routing import IGNORED, REGIMES, UNROUTED, Thresholds, assign_regimes, compute_thresholds, trimmed_mean

__all__ = [
    "DIVERGENCES", "DOPDLossConfig", "DOPDLossOutput", "IGNORED", "IGNORE_INDEX", "LOG_FLOOR", "PRESETS", "Preset",
    "REGIMES", "RoutingPass", "TARGETS", "Term", "Thresholds", "UNROUTED", "assign_regimes", "compute_thresholds",
    "divergence", "dopd_loss", "dopd_loss_from_hidden", "every_token", "forward_kl", "get_preset", "jensen_shannon",
    "log_probs", "normalize_table", "register_preset", "reverse_kl", "routing_pass_from_hidden", "sampled_reverse_kl",
    "topk_restrict", "trimmed_mean",
]
