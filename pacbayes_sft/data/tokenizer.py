"""A word-level tokenizer for the synthetic task, as a transformers ``PreTrainedTokenizerFast``.

Every whitespace-separated word of the generator is one token, so the reference CoT length in
tokens is the number of words of the response.
"""

from __future__ import annotations

from pathlib import Path

from .igsm import vocabulary

SPECIAL = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}


def build_word_tokenizer(words: list[str]):
    """A PreTrainedTokenizerFast with ids 0..3 = <pad>, <bos>, <eos>, <unk>, then ``words``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if len(set(words)) != len(words):
        raise ValueError("words must be unique")
    vocab = {tok: i for i, tok in enumerate(SPECIAL.values())}
    for w in words:
        if w in vocab:
            raise ValueError(f"words must not contain the special token {w!r}")
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
    fast.padding_side = "right"
    return fast


def igsm_tokenizer(modulus: int = 7):
    """The tokenizer for :mod:`pacbayes_sft.data.igsm` problems with the given modulus."""

    return build_word_tokenizer(vocabulary(modulus))


def load_tokenizer(path: str | Path):
    """Load a tokenizer saved with ``save_pretrained`` from a local directory."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise ValueError(f"tokenizer directory {str(p)!r} does not exist")
    return AutoTokenizer.from_pretrained(str(p), local_files_only=True)


def train_bpe_tokenizer(texts: list[str], vocab_size: int = 512, *, chat_template: str | None = None):
    """A byte-level BPE PreTrainedTokenizerFast trained by ``tokenizers`` on ``texts``, with the
    specials <pad>, <bos>, <eos>, <unk> at ids 0..3 and, optionally, a Jinja chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise ValueError("texts must not be empty")
    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
    fast.padding_side = "right"
    if chat_template:
        fast.chat_template = chat_template
    return fast
