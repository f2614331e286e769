"""DOPDLossConfig: every knob of the objective, with the paper's defaults."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional

import torch

from .presets import WEIGHT_KEYS, RoutingTable, get_preset, is_routed, normalize_table
from .routing import REGIMES, ROUTING_STATISTICS, resolve_routing_scope

AGGREGATIONS = ("sequence", "token")
PRUNE_MODES = (None, "top", "bottom", "random")


@dataclass
class DOPDLossConfig:
    """Configuration of `dopd_loss` / `dopd_loss_from_hidden`.

    `preset` names a routing table in `PRESETS`; `table` (regime -> terms, see `presets.normalize_table`)
    overrides it when given. `routing_statistic` (`sampled`: q at the sampled token, the paper; `top1`: each
    privileged policy's top-1 probability at the position) is what the regimes compare; `teacher_veto` routes every
    token the teacher rejects (q_T < `teacher_veto_prob` at the sampled token and not its top choice) to HT whatever
    the statistics say. Both change only which regime a token lands in, never a table.
    """

    top_k: int = 128
    beta_l: float = 0.6
    beta_w: float = 0.3
    trim: float = 0.05
    temperature: float = 1.0
    aggregation: str = "sequence"
    topk_support: str = "student"
    topk_renormalize: bool = True
    preset: str = "dopd"
    table: Optional[Mapping[str, Any]] = None
    prune_mode: Optional[str] = None
    prune_fraction: float = 0.2
    prune_seed: int = 0
    routing_scope: str = "local"
    routing_statistic: str = "sampled"
    teacher_veto: bool = False
    teacher_veto_prob: float = 0.1

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 <= self.trim < 1.0:
            raise ValueError(f"trim must be in [0, 1), got {self.trim}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.topk_support not in ("student", "target"):
            raise ValueError(f"topk_support must be 'student' or 'target', got {self.topk_support!r}")
        if self.prune_mode not in PRUNE_MODES:
            raise ValueError(f"prune_mode must be one of {PRUNE_MODES}, got {self.prune_mode!r}")
        if not 0.0 <= self.prune_fraction < 1.0:
            raise ValueError(f"prune_fraction must be in [0, 1), got {self.prune_fraction}")
        if self.routing_scope not in ("local", "global"):
            raise ValueError(f"routing_scope must be 'local' or 'global', got {self.routing_scope!r}")
        if self.routing_statistic not in ROUTING_STATISTICS:
            raise ValueError(f"routing_statistic must be one of {ROUTING_STATISTICS}, got {self.routing_statistic!r}")
        if not 0.0 < self.teacher_veto_prob <= 1.0:
            raise ValueError(f"teacher_veto_prob must be in (0, 1], got {self.teacher_veto_prob}")
        get_preset(self.preset)  # fail early on an unknown name
        if self.table is not None:
            self.table = normalize_table(self.table)

    # ------------------------------------------------------------------ the table and what it needs
    @property
    def routing_table(self) -> RoutingTable:
        return self.table if self.table is not None else get_preset(self.preset).table

    @property
    def routed(self) -> bool:
        """Whether the table treats regimes differently (then q_S and q_T are needed)."""
        return is_routed(self.routing_table)

    @property
    def needs_gap(self) -> bool:
        """Whether the loss needs A (hence both the privileged student and the teacher)."""
        return self.routed or self.prune_mode in ("top", "bottom")

    def _targets(self) -> set[str]:
        return {t.target for terms in self.routing_table.values() for t in terms}

    @property
    def needs_teacher(self) -> bool:
        """Whether teacher logits / hidden states must be passed (else None is accepted)."""
        return self.needs_gap or "teacher" in self._targets()

    @property
    def needs_privileged_student(self) -> bool:
        """Whether privileged-student logits / hidden states must be passed (else None is accepted)."""
        return self.needs_gap or "privileged_student" in self._targets()

    def term_weights(self) -> dict[tuple[str, str], torch.Tensor]:
        """(target, divergence) -> float32 tensor [4] of the summed weight of that term in each regime."""
        betas = {k: float(getattr(self, k)) for k in WEIGHT_KEYS}
        out: dict[tuple[str, str], torch.Tensor] = {}
        for i, regime in enumerate(REGIMES):
            for term in self.routing_table[regime]:
                w = term.weight * (betas[term.weight_key] if term.weight_key else 1.0)
                key = (term.target, term.divergence)
                out.setdefault(key, torch.zeros(len(REGIMES)))[i] += w
        return out

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "DOPDLossConfig":
        return cls(preset=name, **overrides)

    @classmethod
    def from_args(cls, distill_args: Any, stage: str = "dopd") -> "DOPDLossConfig":
        """Map `DistillArguments` (flat config keys) and the `stage` name (= preset name) to a loss config.

        distill_top_k -> top_k, trim_fraction -> trim, distill_temperature -> temperature,
        loss_aggregation -> aggregation, routing_table (a mapping, or YAML/JSON text) -> table; the other
        fields keep their names. Raises `dopd.hparams.ConfigError` on a bad value.
        """
        from dopd.hparams import ConfigError

        table = getattr(distill_args, "routing_table", None)
        try:
            if isinstance(table, str):
                import yaml

                table = yaml.safe_load(table) if table.strip() else None
            return cls(
                top_k=distill_args.distill_top_k,
                beta_l=distill_args.beta_l,
                beta_w=distill_args.beta_w,
                trim=distill_args.trim_fraction,
                temperature=distill_args.distill_temperature,
                aggregation=distill_args.loss_aggregation,
                topk_support=distill_args.topk_support,
                topk_renormalize=distill_args.topk_renormalize,
                preset=stage,
                table=table,
                prune_mode=_none_if_off(distill_args.prune_mode),
                prune_fraction=distill_args.prune_fraction,
                prune_seed=getattr(distill_args, "prune_seed", 0),
                routing_statistic=getattr(distill_args, "routing_statistic", "sampled"),
                teacher_veto=bool(getattr(distill_args, "teacher_veto", False)),
                teacher_veto_prob=getattr(distill_args, "teacher_veto_prob", 0.1),
                routing_scope=resolve_routing_scope(getattr(distill_args, "routing_scope", "micro_batch"),
                                                    getattr(distill_args, "routing_across_ranks", False))[1],
            )
        except Exception as err:  # noqa: BLE001 - every problem here is a config problem
            raise ConfigError(f"DOPD objective (stage `{stage}`): {err}") from None

    def replace(self, **changes: Any) -> "DOPDLossConfig":
        return replace(self, **changes)


def _none_if_off(value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off", "null")):
        return None
    return value
