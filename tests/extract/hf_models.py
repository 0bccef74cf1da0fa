"""Tiny random Hugging Face models with locally built tokenizers, saved as model folders (no download)."""

from __future__ import annotations

from pathlib import Path

TEXT = ("the cat sat on the mat. the dogs are sitting on a mat, and the cat is not. "
        "a dog sat; the cats sat. # not a comment ## either")
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "a", "and", "is", "not", "are", "sit", ".", ",", ";", "#",
         "##s", "##ting", "##ing", "##t", "c", "d", "m", "o", "n", "e", "i", "r", "s", "t", "h", "##a", "##e",
         "##o", "##m", "##n", "##r", "##i", "##h", "##c"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_bert(folder: str | Path, *, max_positions: int = 24, layers: int = 2, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 16, 2 heads) with a WordPiece tokenizer over a 45-token vocabulary."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = Path(folder)
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]",
                                   model_max_length=max_positions)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=layers,
                                 num_attention_heads=2, intermediate_size=32,
                                 max_position_embeddings=max_positions, pad_token_id=0))
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def build_gpt2(folder: str | Path, *, max_positions: int = 20, seed: int = 0) -> Path:
    """A 2-layer GPT-2 LM (hidden 16, 2 heads) with a byte-level BPE tokenizer trained on :data:`TEXT`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = Path(folder)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT] * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   model_max_length=max_positions)
    V = tok.get_vocab_size()
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=16, n_layer=2, n_head=2, n_positions=max_positions,
                                       bos_token_id=0, eos_token_id=0))
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
