"""The ``dpt`` preset: what the Dynamic Prompting reference code sets (``--set preset=dpt``).

The reference is the DP authors' OpenPrompt fork (github.com/Xianjun-Yang/DPT): its
``tutorial/adap_ins_pos_main.py`` (the instance-level position run) and
``openprompt/prompts/soft_ins_pos_adaptive.py`` (its template), with upstream OpenPrompt's
template and label-word files (``scripts/SuperGLUE/<task>/``, thunlp/OpenPrompt). ``sources``
says where it sets each value; ``notes`` how a run of the preset still departs from it. The
README's "The `dpt` preset" table repeats both, and ``tests/core/test_presets.py`` keeps it equal.
"""

from ...presets import register_preset

MAIN = "`tutorial/adap_ins_pos_main.py`"
TEMPLATE = "`openprompt/prompts/soft_ins_pos_adaptive.py`"

SETTINGS = {
    # the backbone and the method
    "model": "google/t5-large-lm-adapt",
    "method": "dynamic",
    "format": "text",
    # dynamic prompting's options
    "base": "shallow",
    "prompt_length": 20,
    "position": "instance",
    "estimator": "mixture",
    "selector": "linear_relu",
    "init": "vocab_first",
    "tau0": 1.0,
    "tau_min": 0.5,
    "anneal": "reference",
    "anneal_rate": 3.0e-6,
    "length": "none",
    "pool_size": 1,
    # the optimizer and the batch
    "optimizer": "adafactor",
    "lr": 0.3,
    "lr_schedule": "constant",
    "warmup_steps": 500,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "batch_size": 32,
    "grad_accum_steps": 4,
    "max_length": 480,
}

# ptcore's label order: CB entailment, contradiction, neutral; RTE entailment, not_entailment
# (ptcore/tasks/superglue.py), as OpenPrompt's processors order them; text_a is the premise and
# text_b the hypothesis in both
TASKS = {
    "superglue/cb": {"template": "hypothesis: {text_b}. premise: {text_a}", "verbalizer": ("yes", "no", "maybe")},
    "superglue/rte": {"template": "sentence1: {text_a} sentence2: {text_b}", "verbalizer": ("yes", "no")},
}

SOURCES = {
    "model": f"{MAIN}: `--model t5-lm`, `--model_name_or_path .../t5-large-lm-adapt/`",
    "method": f"{MAIN}: `SoftTemplate_ins_pos` of {TEMPLATE}, a prompt placed per instance",
    "format": f"{MAIN}: `PromptForClassification` on T5 with a `ManualVerbalizer`: label words read from the decoder",
    "base": f"{TEMPLATE} `process_batch`: `soft_embeds` joined to the encoder's input embeddings, no per-layer prefixes",
    "prompt_length": f"{MAIN}: `--soft_token_num 20`",
    "position": f"{TEMPLATE} `process_batch`: a Gumbel-Softmax (`hard=True`) sample per instance over the l+1 placements",
    "estimator": f"{TEMPLATE} `assemble_soft_template`: the sum of the l+1 assembled sequences weighted by that sample",
    "selector": f"{TEMPLATE} `MLP_pos`: `Linear(d, l+1)`, `ReLU`, on the mean of the encoder's last states",
    "init": f"{TEMPLATE} `generate_parameters`: `raw_embedding.weight[:self.num_tokens]` (`initialize_from_vocab=True`)",
    "tau0": f"{MAIN}: `temperature = 1.0`",
    "tau_min": f"{MAIN}: `temp_min = 0.5`",
    "anneal": f"{MAIN}: `temp = np.maximum(temp * np.exp(-ANNEAL_RATE * glb_step / args.aneal), temp_min)` at each optimizer step",
    "anneal_rate": f"{MAIN}: `ANNEAL_RATE = 0.00003`, `--aneal 10.0` (3e-5 / 10)",
    "length": f"{TEMPLATE}: all `num_tokens` soft tokens in every input, no length choice",
    "pool_size": f"{TEMPLATE}: one `soft_embeds`, no prompt pool",
    "optimizer": f"{MAIN}: `Adafactor(..., lr=args.prompt_lr, relative_step=False, scale_parameter=False, warmup_init=False)`",
    "lr": f"{MAIN}: `--prompt_lr 0.3`",
    "lr_schedule": f"{MAIN}: `get_constant_schedule_with_warmup(optimizer2, num_warmup_steps=args.warmup_step_prompt)`",
    "warmup_steps": f"{MAIN}: `--warmup_step_prompt 500`",
    "weight_decay": f"{MAIN}: `Adafactor(...)` given no `weight_decay`: its default, 0.0",
    "max_grad_norm": f"{MAIN}: `torch.nn.utils.clip_grad_norm_(prompt_model.parameters(), 1.0)`",
    "batch_size": f"{MAIN}: `batchsize_t = 8` times `gradient_accumulation_steps = 4` (CB, RTE, BoolQ, frozen PLM) per optimizer step",
    "grad_accum_steps": f"{MAIN}: `gradient_accumulation_steps = 4` (CB, RTE, BoolQ, frozen PLM)",
    "max_length": f"{MAIN}: `max_seq_l = 480`",
    "superglue/cb template": "OpenPrompt `scripts/SuperGLUE/CB/soft_template.txt`, choice 0 (`--template_id 0`): "
    "`hypothesis: {text_b}. premise: {text_a} {mask}` (its `post_processing` adds the full stop; the mask is T5's target)",
    "superglue/cb verbalizer": "OpenPrompt `scripts/SuperGLUE/CB/manual_verbalizer.txt`, choice 0 (`--verbalizer_id 0`): "
    "yes, no, maybe for entailment, contradiction, neutral",
    "superglue/rte template": "OpenPrompt `scripts/SuperGLUE/RTE/soft_template.txt`, choice 0 (`--template_id 0`): "
    "`sentence1: {text_a} sentence2: {text_b} {mask}`",
    "superglue/rte verbalizer": "OpenPrompt `scripts/SuperGLUE/RTE/manual_verbalizer.txt`, choice 0 (`--verbalizer_id 0`): "
    "yes, no for entailment, not_entailment",
}

NOTES = (
    "Selection: on a dev split carved from train (ptcore's protocol), never on the reported validation split; "
    "the reference reports the best validation accuracy over its checkpoints, selected on that same split.",
    "Steps: the reference trains 20,000 optimizer steps (--max_steps) and evaluates every 500; "
    "ptcore trains whole epochs (the preset leaves epochs to the run) and evaluates after each.",
    "Scoring: ptcore ranks each label word's full target (its tokens and the end token) by summed log-likelihood and "
    "trains on the gold target's; the reference (OpenPrompt's ManualVerbalizer on T5) reads the first token of each "
    "label word at the first decoder step and trains a cross-entropy over the label words.",
    "Instance features: the mean of the frozen encoder's states over the real tokens; "
    "the reference averages over every position of the padded batch (padding included).",
    "Evaluation: ptcore places the prompt at the selector's argmax; the reference draws a Gumbel-Softmax sample "
    "at evaluation too (its process_batch samples in either mode).",
    "Dropout: as in the reference (--plm_eval_mode unset), the frozen T5's dropout is on while training "
    "(ptcore trains every frozen backbone in train mode) and off at evaluation.",
    "Tasks: templates and label words for CB and RTE only (the reference's files for BoolQ, WiC and MultiRC are "
    "not reproduced); other tasks keep their declared T5 format.",
)

DPT = register_preset(
    "dpt",
    description="the Dynamic Prompting reference code's setup (Yang et al. 2023, github.com/Xianjun-Yang/DPT): "
    "T5-large LM-adapted, a 20-token prompt placed per instance, Adafactor at lr 0.3",
    settings=SETTINGS,
    tasks=TASKS,
    notes=NOTES,
    sources=SOURCES,
)
