"""Arguments of the on-policy rollout: the student samples answers from the plain view x."""

from dataclasses import dataclass, field


@dataclass
class RolloutArguments:
    num_generations: int = field(default=4, metadata={"help": "Answers sampled per prompt (paper: G = 4)."})
    max_new_tokens: int = field(default=512, metadata={"help": "Maximum tokens per sampled answer."})
    temperature: float = field(default=1.0, metadata={"help": "Rollout sampling temperature (0: greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Rollout nucleus sampling."})
    top_k: int = field(default=0, metadata={"help": "Rollout top-k sampling (0: off)."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Rollout repetition penalty."})
