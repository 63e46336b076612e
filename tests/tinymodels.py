"""Tiny random encoders built from configs (no download), with a real WordPiece tokenizer."""

from __future__ import annotations

import string
from pathlib import Path

import torch

from ptcore.backbones import Backbone, backbone_from_model

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an is was it he she they we you i not no yes and or but of to in on at for with by from that this "
    "what cause result happened because so if then there good bad great movie film"
).split()


def write_vocab(directory: Path) -> Path:
    letters = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = SPECIALS + WORDS + letters + [f"##{c}" for c in string.ascii_lowercase + string.digits]
    Path(directory).mkdir(parents=True, exist_ok=True)
    path = Path(directory) / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    return path


def tiny_tokenizer(directory: Path):
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab=str(write_vocab(directory)), do_lower_case=True)  # transformers 5: `vocab`, not `vocab_file`


def vocab_tokenizer(vocab: list[str], directory: Path):
    """A WordPiece tokenizer over exactly ``vocab`` (tests that need particular sub-words)."""
    from transformers import BertTokenizerFast

    path = Path(directory) / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab=str(path))  # transformers 5: `vocab=`, `vocab_file=` is ignored
    assert len(tok) == len(vocab)
    return tok


def tiny_bert(tokenizer, hidden: int = 32, layers: int = 2, seed: int = 0) -> Backbone:
    """A random BERT over ``tokenizer``'s vocabulary."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * hidden,
        max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return backbone_from_model(BertModel(config), tokenizer, name="tiny-bert")


def tiny_backbone(family: str, directory: Path, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0) -> Backbone:
    """A random BERT / RoBERTa / ELECTRA small enough to train in milliseconds."""
    from transformers import AutoModel, BertConfig, ElectraConfig, RobertaConfig

    tok = tiny_tokenizer(directory)
    common = dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=160,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if family == "bert":
        config = BertConfig(**common)
    elif family == "roberta":
        common["max_position_embeddings"] += 2  # positions start at pad_token_id + 1
        config = RobertaConfig(**common, pad_token_id=1, type_vocab_size=1)
    elif family == "electra":
        config = ElectraConfig(**common, embedding_size=hidden)
    elif family == "deberta":  # DeBERTa-v3 style: relative c2p + p2c attention, no absolute positions, no segments
        from transformers import DebertaV2Config

        config = DebertaV2Config(
            **common, relative_attention=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
            max_relative_positions=-1, position_buckets=16, share_att_key=True, norm_rel_ebd="layer_norm", type_vocab_size=0,
        )  # fmt: skip
    else:
        raise ValueError(family)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    model.eval()
    return backbone_from_model(model, tok, name=f"tiny-{family}")


def save_tiny(family: str, directory: Path) -> Path:
    """Save a tiny backbone as a local model directory (for CLI / study tests)."""
    bb = tiny_backbone(family, directory)
    bb.model.save_pretrained(directory)
    bb.tokenizer.save_pretrained(directory)
    return directory


def tiny_backbone_dropout(family: str, directory: Path, dropout: float = 0.3, seed: int = 0, **kw) -> Backbone:
    """:func:`tiny_backbone` with dropout ``dropout`` on the hidden states and attention
    probabilities (same weights as ``tiny_backbone(family, directory, seed=seed, **kw)``),
    for tests where train vs. eval mode has to make a difference. Returned in eval mode."""
    import copy

    from transformers import AutoModel

    plain = tiny_backbone(family, directory, seed=seed, **kw)
    config = copy.deepcopy(plain.model.config)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    model.eval()
    return backbone_from_model(model, plain.tokenizer, name=f"tiny-{family}-dropout")


class SaveAndStop:
    """A training callback: save the state after epoch ``at`` into ``directory``, then stop the
    run (what a crash after that epoch leaves)."""

    def __init__(self, at: int, directory):
        self.at, self.directory = at, directory

    def on_epoch_end(self, epoch, metrics, model, state):
        if epoch == self.at:
            state.save(self.directory)
            return True
        return False


class Weights:
    """A training callback that keeps the trainable weights after the last epoch (``last``)."""

    def on_epoch_end(self, epoch, metrics, model, state):
        self.last = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
        return False
