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
    rollout_engine: str = field(
        default="hf",
        metadata={"help": "What samples the answers: hf (transformers generate on the trained student). Other "
                          "backends (vLLM, SGLang) would implement dopd.train.rollout.RolloutEngine and register "
                          "a name with register_rollout_engine; none ships (docs/architecture.md)."},
    )
    rollout_batch_size: int = field(
        default=0,
        metadata={"help": "Sequences per `generate` call when a step rolls out all its prompts at once (routing_scope "
                          "step): 0 = all the step's answers on this rank in one call; else rounded down to whole "
                          "prompts (a multiple of num_generations), at least one prompt."},
    )
    step_score_cache: str = field(
        default="device",
        metadata={"help": "routing_scope step: where the privileged student's and the teacher's no-grad hidden states "
                          "(response tokens only) wait between the step's routing pass and each micro-batch's loss: "
                          "device | cpu | none (none: both no-grad passes run again per micro-batch)."},
    )
