"""Arguments of the DOPD objective (see ../distill and docs/objective.md)."""

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class DistillArguments:
    distill_top_k: int = field(default=128, metadata={"help": "K of the top-K reverse KL (K >= vocab: full vocabulary)."})
    beta_l: float = field(default=0.6, metadata={"help": "Weight of the HS and LH regimes (paper: 0.6)."})
    beta_w: float = field(default=0.3, metadata={"help": "Weight of the LL regime (paper: 0.3)."})
    trim_fraction: float = field(
        default=0.05,
        metadata={"help": "Fraction of the largest values dropped before each batch mean used as a routing threshold."},
    )
    distill_temperature: float = field(default=1.0, metadata={"help": "Temperature of the distributions in the divergences."})
    loss_aggregation: str = field(
        default="sequence",
        metadata={"help": "sequence: mean over sequences of each sequence's token mean; token: global token mean."},
    )
    topk_support: str = field(default="student", metadata={"help": "Whose top-K entries: student | target."})
    topk_renormalize: bool = field(default=True, metadata={"help": "Renormalise both distributions on the top-K support."})
    teacher_sees_privileged: bool = field(
        default=True,
        metadata={"help": "Whether the teacher scores x+p (true) or x (false). vanilla_opd in the paper's main baseline: false."},
    )
    routing_scope: str = field(
        default="step",
        metadata={"help": "Which batch the routing thresholds (and loss_aggregation) are taken over: step (every "
                          "micro-batch of the optimizer step, the paper's batch) | micro_batch (each micro-batch on "
                          "its own). Old names: local = micro_batch on this rank, global = micro_batch across ranks."},
    )
    routing_across_ranks: bool = field(
        default=True,
        metadata={"help": "Pool the routing statistics (and the token / sequence count of the loss mean) over all "
                          "data-parallel ranks (one all-gather per step); false: this rank's tokens only."},
    )
    loss_chunk_size: int = field(
        default=256,
        metadata={"help": "Tokens per chunk of the hidden-state loss path (lm_head applied per chunk; peak memory ~ 3-4 x chunk x vocab x 4 bytes); 0: all tokens in one chunk."},
    )
    prune_mode: Optional[str] = field(
        default=None,
        metadata={"help": "Token-pruning probe: drop tokens from the loss by gap A: top | bottom | random (None: off)."},
    )
    prune_fraction: float = field(default=0.2, metadata={"help": "Fraction of tokens the pruning probe drops."})
    prune_seed: int = field(
        default=0,
        metadata={"help": "Seed of the random pruning probe (mixed with each batch's token ids: reproducible per batch)."},
    )
    routing_statistic: str = field(
        default="sampled",
        metadata={"help": "What the regimes compare: sampled (q_S, q_T at the sampled token, the paper) | top1 (each "
                          "privileged policy's top-1 probability at the position, whatever was sampled)."},
    )
    teacher_veto: bool = field(
        default=False,
        metadata={"help": "Route every token the teacher rejects (q_T < teacher_veto_prob at the sampled token and "
                          "not its top choice) to HT whatever its statistics (the paper: false). See "
                          "docs/objective.md, 'When DOPD hurts'."},
    )
    teacher_veto_prob: float = field(
        default=0.1, metadata={"help": "q_T below which a token that is not the teacher's top choice is vetoed."},
    )
    routing_table: Optional[Any] = field(
        default=None,
        metadata={"help": "Custom routing table overriding the stage's preset: a mapping (or YAML/JSON text) "
                          "regime (HT|HS|LH|LL) -> list of [target, divergence, weight]; see docs/objective.md."},
    )
    max_nonfinite_steps: int = field(
        default=3,
        metadata={"help": "Stop the run after this many consecutive steps with a non-finite loss (each is skipped)."},
    )
