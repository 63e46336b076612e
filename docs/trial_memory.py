"""The fixed memory of one trial of studies/scale_sweep_cluster_generative.yaml and
studies/dynamic_claim_cluster.yaml, per backbone and method.

Each backbone is built from its config on the meta device (no weights, no download) with
ptcore's own method encoders, so the parameter counts are exact *for these configs*. The
configs are typed here from the models' published config.json files (check them against the
hub before relying on the figures). The fixed part of a trial under ptcore's precision policy
(bf16 autocast, fp32 master weights; AdamW):

    weights          4 B x every parameter (frozen ones too)
    gradients        4 B x trained parameters
    AdamW state      8 B x trained parameters (two fp32 moments)

Activations come on top and depend on batch x length (bf16 under autocast); they are not
estimated here: measure them on the GPU (docs/gpu_check.sh, orchestrate bench --generative).
One activation is counted, because it is the DP reference estimator's own: the l+1 assembled
encoder inputs that ``estimator: mixture`` stacks (and keeps for the backward), an fp32
(micro-batch, l+1, T+l, H) tensor, at the dpt preset's micro-batch 8 (32 in 4 accumulation
steps), T = 480 and l = 20.

    python docs/trial_memory.py            # the table in docs/cluster.md
"""

from __future__ import annotations

import torch
import transformers

from ptcore.backbones import Backbone
from ptcore.methods import get_method, make_method_config

CONFIGS = {
    # T5 v1.1 LM-adapt (google/t5-{base,large,xl}-lm-adapt): gated GELU, untied LM head
    "t5-base-lm-adapt": transformers.T5Config(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12, vocab_size=32128,
                                              feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "t5-large-lm-adapt": transformers.T5Config(d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16, vocab_size=32128,
                                               feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "t5-xl-lm-adapt": transformers.T5Config(d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32, vocab_size=32128,
                                            feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    # Qwen2.5 base models (Qwen/Qwen2.5-{0.5B,1.5B,3B}): grouped-query attention, tied embeddings
    "qwen2.5-0.5b": transformers.Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                                             num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": transformers.Qwen2Config(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                                             num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-3b": transformers.Qwen2Config(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                                           num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}
METHODS = {  # the study's fixed options (or the largest searched value)
    "finetune": {},
    "lora": {"r": 16},
    "prompt_tuning": {"prompt_length": 20},
    "ptuning_v2": {"prompt_length": 64, "reparameterize": True},
    "dynamic (deep)": {"base": "deep", "position": "none", "length": "instance", "pool_size": 4, "prompt_length": 64},
    # studies/dynamic_claim_cluster.yaml (T5 only: decoder LMs refuse the position choice): the dpt preset
    "dynamic (position)": {"base": "shallow", "prompt_length": 20, "position": "instance", "selector": "linear_relu",
                           "init": "vocab_first"},
}
MIXTURE = {"micro_batch": 8, "length": 480, "prompt_length": 20}  # the dpt preset's (ptcore/methods/dynamic/preset.py)


def fixed_bytes(trainable: int, total: int) -> int:
    return 4 * total + 12 * trainable


def build(config):
    with torch.device("meta"):  # shapes only: no memory, no weights
        if config.model_type == "t5":
            model = transformers.T5ForConditionalGeneration(config)
            # transformers 5.25 ties T5's LM head when built from a config; a v1.1 / LM-adapt
            # checkpoint loads its own lm_head.weight (untied): count it as loaded
            model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.shared.weight))
            return model
        return transformers.AutoModelForCausalLM.from_config(config)


def main() -> None:
    print("| backbone | parameters | method | trained | fixed memory (GB) |")
    print("|---|---|---|---|---|")
    for name, config in CONFIGS.items():
        total = sum(p.numel() for p in {id(p): p for p in build(config).parameters()}.values())
        for label, opts in METHODS.items():
            method = label.split(" ")[0]
            if label == "dynamic (position)" and config.model_type != "t5":
                continue
            with torch.device("meta"):  # a fresh model per method: LoRA rewrites it in place, fine-tuning unfreezes it
                enc = get_method(method).encoder_cls(Backbone(build(config), None, name, name), make_method_config(method, opts))
            params = {id(p): p for p in enc.parameters()}.values()
            trained = sum(p.numel() for p in params if p.requires_grad)
            everything = sum(p.numel() for p in params)
            print(f"| {name} | {total / 1e6:,.0f}M | {label} | {trained / 1e6:,.2f}M | {fixed_bytes(trained, everything) / 1e9:,.1f} |")
    m = MIXTURE
    print()
    print(f"| backbone | the mixture's stacked layouts, fp32 (GB): {m['micro_batch']} x {m['prompt_length'] + 1} x "
          f"{m['length'] + m['prompt_length']} x H |")
    print("|---|---|")
    for name, config in CONFIGS.items():
        if config.model_type == "t5":
            stack = 4 * m["micro_batch"] * (m["prompt_length"] + 1) * (m["length"] + m["prompt_length"]) * config.d_model
            print(f"| {name} | {stack / 1e9:.2f} |")


if __name__ == "__main__":
    main()
