"""DOPDLossConfig: every knob of the objective, with the paper's defaults, under the config keys users write."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Optional

import torch
import yaml

from dopd.hparams import ConfigError

from .presets import WEIGHT_KEYS, RoutingTable, get_preset, is_routed, normalize_table
from .routing import REGIMES, ROUTING_STATISTICS, resolve_routing_scope

AGGREGATIONS = ("sequence", "token")
PRUNE_MODES = (None, "top", "bottom", "random")


@dataclass
class DOPDLossConfig:
    """Configuration of `dopd_loss` / `dopd_loss_from_hidden`. Each field is the `DistillArguments` key of the same
    name (docs/config.md says what it does); `preset` is the `stage`.

    `preset` names a routing table in `PRESETS`; `routing_table` (regime -> terms, see `presets.normalize_table`)
    overrides it when given; `table` is the one in force. `routing_statistic` (`sampled`: q at the sampled token,
    the paper; `top1`: each privileged policy's top-1 probability at the position) is what the regimes compare;
    `teacher_veto` routes every token the teacher rejects (q_T < `teacher_veto_prob` at the sampled token and not
    its top choice) to HT whatever the statistics say. Both change only which regime a token lands in, never a table.

    `routing_scope` + `routing_across_ranks` are resolved here, once, into `routing_unit` (`step`: the trainer
    routes over the optimizer step and hands the thresholds in; `micro_batch`: each call routes over its own
    tokens) and `rank_scope` (`global`: those tokens pooled over all data-parallel ranks; `local`: this rank's).
    Their defaults here are one call on this rank, what a direct call of the objective is; the trainer's config
    (`DistillArguments`) defaults to the step across ranks.
    """

    distill_top_k: int = 128
    beta_l: float = 0.6
    beta_w: float = 0.3
    trim_fraction: float = 0.05
    distill_temperature: float = 1.0
    loss_aggregation: str = "sequence"
    topk_support: str = "student"
    topk_renormalize: bool = True
    preset: str = "dopd"
    routing_table: Optional[Mapping[str, Any]] = None
    prune_mode: Optional[str] = None
    prune_fraction: float = 0.2
    prune_seed: int = 0
    routing_scope: str = "micro_batch"
    routing_across_ranks: bool = False
    routing_statistic: str = "sampled"
    teacher_veto: bool = False
    teacher_veto_prob: float = 0.1
    routing_unit: str = field(init=False, repr=False)  # step | micro_batch, from routing_scope
    rank_scope: str = field(init=False, repr=False)  # global | local, from routing_scope + routing_across_ranks

    def __post_init__(self) -> None:
        if self.distill_top_k < 1:
            raise ValueError(f"distill_top_k must be >= 1, got {self.distill_top_k}")
        if not 0.0 <= self.trim_fraction < 1.0:
            raise ValueError(f"trim_fraction must be in [0, 1), got {self.trim_fraction}")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.distill_temperature}")
        if self.loss_aggregation not in AGGREGATIONS:
            raise ValueError(f"loss_aggregation must be one of {AGGREGATIONS}, got {self.loss_aggregation!r}")
        if self.topk_support not in ("student", "target"):
            raise ValueError(f"topk_support must be 'student' or 'target', got {self.topk_support!r}")
        if self.prune_mode not in PRUNE_MODES:
            raise ValueError(f"prune_mode must be one of {PRUNE_MODES}, got {self.prune_mode!r}")
        if not 0.0 <= self.prune_fraction < 1.0:
            raise ValueError(f"prune_fraction must be in [0, 1), got {self.prune_fraction}")
        self.routing_unit, self.rank_scope = resolve_routing_scope(self.routing_scope, self.routing_across_ranks)
        if self.routing_statistic not in ROUTING_STATISTICS:
            raise ValueError(f"routing_statistic must be one of {ROUTING_STATISTICS}, got {self.routing_statistic!r}")
        if not 0.0 < self.teacher_veto_prob <= 1.0:
            raise ValueError(f"teacher_veto_prob must be in (0, 1], got {self.teacher_veto_prob}")
        get_preset(self.preset)  # fail early on an unknown name
        if self.routing_table is not None:
            self.routing_table = normalize_table(self.routing_table)

    # ------------------------------------------------------------------ the table and what it needs
    @property
    def table(self) -> RoutingTable:
        """The routing table in force: `routing_table` if given, else the preset's."""
        return self.routing_table if self.routing_table is not None else get_preset(self.preset).table

    @property
    def routed(self) -> bool:
        """Whether the table treats regimes differently (then q_S and q_T are needed)."""
        return is_routed(self.table)

    @property
    def needs_gap(self) -> bool:
        """Whether the loss needs A (hence both the privileged student and the teacher)."""
        return self.routed or self.prune_mode in ("top", "bottom")

    def _targets(self) -> set[str]:
        return {t.target for terms in self.table.values() for t in terms}

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
            for term in self.table[regime]:
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
        """`DistillArguments` and the `stage` name (= the preset's) -> the loss config: the same keys, a
        `routing_table` given as YAML/JSON text parsed, `prune_mode: off | none` read as None. The keys only the
        trainer reads (`loss_chunk_size`, `teacher_sees_privileged`, `max_nonfinite_steps`) are not copied; a key
        `distill_args` lacks keeps its default here. Raises `dopd.hparams.ConfigError` on a bad value."""
        values = {f.name: getattr(distill_args, f.name) for f in fields(cls)
                  if f.init and f.name != "preset" and hasattr(distill_args, f.name)}
        try:
            table = values.get("routing_table")
            if isinstance(table, str):
                values["routing_table"] = yaml.safe_load(table) if table.strip() else None
            values["prune_mode"] = _none_if_off(values.get("prune_mode"))
            return cls(preset=stage, **values)
        except Exception as err:  # noqa: BLE001 - every problem here is a config problem
            raise ConfigError(f"DOPD objective (stage `{stage}`): {err}") from None

    def replace(self, **changes: Any) -> "DOPDLossConfig":
        return replace(self, **changes)


def _none_if_off(value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off", "null")):
        return None
    return value
