"""Text-to-text kinds (ptcore/tasks/text_kinds.py): rank classification by hand, the run's
format / template / verbalizer, generation's targets and scoring."""

from __future__ import annotations

import pytest
import torch

from ptcore.backbones import load_backbone
from ptcore.config import RunConfig
from ptcore.data import make_loader
from ptcore.model import build_model, run_kind
from ptcore.tasks import get_task
from ptcore.tasks.io import load_splits
from ptcore.tasks.kinds import Classification
from ptcore.tasks.text_kinds import Generation, RankClassification
from ptcore.tiny import write_tiny_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {f: str(write_tiny_model(root / f, f)) for f in ("gpt2", "llama", "t5", "bert")}


def cb(fixtures_dir, n=3, split="train"):
    return load_splits(get_task("superglue/cb"), str(fixtures_dir))[0][split][:n]


def run(models, fixtures_dir, family, **kw):
    kw.setdefault("task", "superglue/cb")
    return RunConfig(model=models[family], method="finetune", data_dir=str(fixtures_dir), **kw)


@pytest.mark.parametrize("family,fmt,kind,head", [
    ("gpt2", "head", Classification, torch.nn.Sequential), ("gpt2", "text", RankClassification, torch.nn.Identity),
    ("gpt2", "auto", RankClassification, torch.nn.Identity), ("t5", "auto", RankClassification, torch.nn.Identity),
    ("bert", "auto", Classification, torch.nn.Sequential),
])
def test_format_picks_the_kind_a_task_trains_with(models, fixtures_dir, family, fmt, kind, head):
    cfg = run(models, fixtures_dir, family, format=fmt)
    model = build_model(cfg, load_backbone(models[family]))
    assert type(model.kind) is kind and type(model.head) is head


def test_a_template_override_is_what_the_model_reads(models, fixtures_dir):
    examples = cb(fixtures_dir)
    tok = load_backbone(models["gpt2"]).tokenizer
    declared = run_kind(run(models, fixtures_dir, "gpt2"), "superglue/cb", load_backbone(models["gpt2"]))
    cfg = run(models, fixtures_dir, "gpt2", template="claim: {text_b} | text: {text_a} | answer:")
    kind = run_kind(cfg, "superglue/cb", load_backbone(models["gpt2"]))
    feats = kind.encode(examples, tok, 256)
    want = tok(f"claim: {examples[0]['text_b']} | text: {examples[0]['text_a']} | answer:")["input_ids"]
    assert feats[0]["input_ids"] == want
    assert declared.encode(examples, tok, 256)[0]["input_ids"] == tok(
        f"cb hypothesis: {examples[0]['text_b']} premise: {examples[0]['text_a']}")["input_ids"]


def test_a_verbalizer_override_is_what_the_model_scores(models, fixtures_dir):
    tok = load_backbone(models["t5"]).tokenizer
    cfg = run(models, fixtures_dir, "t5", verbalizer=("yes", "no", "maybe"))
    feats = run_kind(cfg, "superglue/cb", load_backbone(models["t5"])).encode(cb(fixtures_dir), tok, 256)
    assert feats[0]["targets"] == [tok(w, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for w in ("yes", "no", "maybe")]


def test_a_bad_override_is_one_line_before_anything_loads(models, fixtures_dir):
    from ptcore.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^task superglue/cb: verbalizer has 2 words .* 3 labels"):
        run(models, fixtures_dir, "gpt2", verbalizer=("yes", "no"))
    with pytest.raises(ConfigError, match=r"template field 'premise' is not in its examples"):
        kind = run_kind(run(models, fixtures_dir, "gpt2", template="{premise}"), "superglue/cb", load_backbone(models["gpt2"]))
        kind.encode(cb(fixtures_dir), load_backbone(models["gpt2"]).tokenizer, 64)


@pytest.mark.parametrize("family", ["gpt2", "llama", "t5"])
def test_rank_classification_is_the_hand_computed_log_likelihood_of_each_label(models, fixtures_dir, family):
    """score[n, c] = sum over label c's target tokens (end token included) of log p(token | input,
    target so far), from the plain model's own forward; the loss is the gold label's per-token NLL."""
    backbone = load_backbone(models[family])
    model = build_model(run(models, fixtures_dir, family), backbone).eval()
    tok, kind = backbone.tokenizer, model.kind
    examples = cb(fixtures_dir)
    feats = kind.encode(examples, tok, 256)
    batch = next(iter(make_loader(feats, kind, tok.pad_token_id, len(feats), shuffle=False)))
    with torch.no_grad():
        scores = model(batch)  # (N, 3)
        lm = backbone.model
        for n, ex in enumerate(examples):
            for c, word in enumerate(("entailment", "contradiction", "neutral")):
                src = f"cb hypothesis: {ex['text_b']} premise: {ex['text_a']}"
                if family == "t5":
                    src_ids = torch.tensor([tok(src)["input_ids"]])
                    tgt = torch.tensor([tok(word, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]])
                    logp = lm(input_ids=src_ids, labels=tgt).logits.log_softmax(-1)[0]
                    want = logp.gather(-1, tgt[0].unsqueeze(-1)).sum()
                else:
                    s = tok(src)["input_ids"]
                    t = tok(" " + word, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                    logp = lm(input_ids=torch.tensor([s + t])).logits.log_softmax(-1)[0]
                    want = sum(logp[len(s) - 1 + i, t[i]] for i in range(len(t)))
                assert scores[n, c].item() == pytest.approx(want.item(), abs=1e-4)
        gold = batch["label"]
        lens = batch["target_len"].gather(1, gold[:, None])[:, 0]
        want_loss = (-scores.gather(1, gold[:, None])[:, 0] / lens).mean()
        assert kind.loss(scores, batch).item() == pytest.approx(want_loss.item(), abs=1e-6)
    assert kind.decode(scores, batch) == scores.argmax(-1).tolist()


def test_generation_trains_toward_the_first_answer_and_scores_against_all(models, fixtures_dir):
    backbone = load_backbone(models["t5"])
    cfg = RunConfig(task="qa/squad", model=models["t5"], method="prompt_tuning", data_dir=str(fixtures_dir))
    kind = run_kind(cfg, "qa/squad", backbone)
    assert isinstance(kind, Generation)
    examples = load_splits(get_task("qa/squad"), str(fixtures_dir))[0]["val"][:4]
    tok = backbone.tokenizer
    feats = kind.encode(examples, tok, 128)
    first = examples[0]["answers"]["text"][0]
    assert feats[0]["target"] == tok(first, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    preds = [examples[0]["answers"]["text"][-1], "", "no such answer", examples[3]["answers"]["text"][0]]
    inputs = kind.metric_inputs(preds, feats, examples, get_task("qa/squad"))
    assert inputs.references[0] == list(examples[0]["answers"]["text"])
    scores = kind.score(preds, feats, examples, get_task("qa/squad"))
    assert scores["squad_em"] == pytest.approx(0.5)  # the last gold answer counts as much as the first


def test_a_decoder_target_takes_the_tokens_it_has_in_running_text():
    """A SentencePiece-style tokenizer (word starts marked "▁") writes " entailment" alone as two
    pieces ("▁", "▁entailment"), but after the source as one: the target is the joint text's
    tokens after the source's (lm-evaluation-harness's context/continuation split)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "</s>", "<pad>", "▁", "▁cb", "▁hypothesis:", "▁premise:", "▁it", "▁rained", "▁entailment",
             "▁contradiction", "▁neutral"]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    # Llama 2's tokenizer.json: a "▁" prepended to the text, every space a "▁" (SentencePiece's dummy prefix)
    raw.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    raw.pre_tokenizer = pre_tokenizers.Split(Regex("▁"), behavior="merged_with_next")
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="</s>", pad_token="<pad>")
    assert tok(" entailment", add_special_tokens=False)["input_ids"] == [3, 9]  # alone: a bare "▁" first
    kind = RankClassification(get_task("superglue/cb"), tok, seq2seq=False)
    ex = {"text_a": "it rained", "text_b": "it rained", "label": 0}
    feats = kind.encode([ex], tok, 64)
    assert feats[0]["targets"] == [[9, 1], [10, 1], [11, 1]]  # one piece each, then the end token
