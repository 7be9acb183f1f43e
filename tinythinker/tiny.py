"""Tiny random students built locally in well under a second: for tests and smoke runs, never for results.

The tokenizer is a hand-built WordPiece: the stage words, a few hundred common English words, and every printable
ASCII character (as a word start and as a `##` continuation), so any English text tokenises without [UNK] and
decodes back to itself up to spacing. Cased, so `So the answer is option A.` survives a round trip. Built from a
fixed list, not trained, so the vocabulary is identical on every machine.
"""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertLMHeadModel,
    BertModel,
    EncoderDecoderConfig,
    EncoderDecoderModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from tinythinker.students import BERT2BERT, CAUSAL, SEQ2SEQ, Student, _finish, bert2bert_from_bert

PAD, UNK, CLS, SEP, BOS, EOS = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "<s>", "</s>"

_WORDS = """
Recall Analyze Summarize For option So the answer is yes no
a an and are as at be because but by can could did do does for from had has have he her his how if in into it
its may might more most much must not of on one or other people person place she should some something than that
their them then there these they thing things this those to too two use used usually very was water what when
where which while who why will with would you your all also always any around away back been before being best
better between both car city come day different down each eat even every find first food get give go going good
great hand help home house into just keep kind know large last learn left life like little live long look made
make man many money move name need never new next night now number off often old only open out over own part play
put read really right room run same say see seen set show side small so sound start still study such sure take
tell than time together top tree turn under until up want way well went were work world write year young
animal animals bank bed book box building child children class clothes cold store school shop office street
hot fire friend game garden grass ground happy hard head heat hear hold kitchen land light love meet mind morning
music ocean paper plant rain river road sea sky sleep snow sun table talk think travel walk war warm wind window
word correct wrong true false likely unlikely option describes refers means makes common sense likely explanation
question choice choices fact facts because therefore however since often found needs needed feel feeling
""".split()


_SPECIALS = {BERT2BERT: [CLS, SEP], SEQ2SEQ: [EOS], CAUSAL: [BOS, EOS]}


def _vocab(kind: str) -> dict[str, int]:
    # Only the kind's own special tokens, so a random model cannot write a stray `</s>` into its text.
    tokens = [PAD, UNK, *_SPECIALS[kind]]
    chars = [c for c in string.printable if not c.isspace()]
    seen = set(tokens)
    for t in [*_WORDS, *chars, *(f"##{c}" for c in chars)]:
        if t not in seen:
            seen.add(t)
            tokens.append(t)
    return {t: i for i, t in enumerate(tokens)}


def tiny_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """WordPiece tokenizer; special tokens laid out like the real student of each kind."""
    if kind not in _SPECIALS:
        raise ValueError(f"unknown tiny student kind {kind!r}; choose seq2seq, causal or bert2bert")
    vocab = _vocab(kind)
    tok = Tokenizer(models.WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    if kind == BERT2BERT:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}", special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])])
        specials = dict(cls_token=CLS, sep_token=SEP)
    elif kind == SEQ2SEQ:
        tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
        specials = dict(eos_token=EOS)
    else:
        tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
        specials = dict(bos_token=BOS, eos_token=EOS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, model_max_length=512,
                                   **specials)


def tiny_student(kind: str = SEQ2SEQ, seed: int = 0, device: str | None = "cpu") -> Student:
    """A randomly initialised 2-layer student of the given kind ("seq2seq" T5, "causal" Llama, "bert2bert").

    Weights are drawn about ten times wider than the libraries' defaults: at the default scale a model this small
    writes the same token whatever its input, which would let tests of batching and editing pass vacuously.
    """
    tokenizer = tiny_tokenizer(kind)
    n = len(tokenizer)
    torch.manual_seed(seed)
    if kind == SEQ2SEQ:
        cfg = T5Config(vocab_size=n, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                       relative_attention_num_buckets=16, dropout_rate=0.0, initializer_factor=5.0,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                       decoder_start_token_id=tokenizer.pad_token_id)
        model = T5ForConditionalGeneration(cfg)
        return _finish(model, tokenizer, SEQ2SEQ, f"tiny-{kind}", device, arch=SEQ2SEQ)
    if kind == CAUSAL:
        cfg = LlamaConfig(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                          pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True, initializer_range=0.2)
        model = LlamaForCausalLM(cfg)
        return _finish(model, tokenizer, CAUSAL, f"tiny-{kind}", device, max_source_length=1024)
    if kind == BERT2BERT:
        common = dict(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2)
        enc_cfg = BertConfig(**common)
        dec_cfg = BertConfig(**common, is_decoder=True, add_cross_attention=True)
        config = EncoderDecoderConfig.from_encoder_decoder_configs(enc_cfg, dec_cfg)
        model = EncoderDecoderModel(config=config, encoder=BertModel(enc_cfg, add_pooling_layer=False),
                                    decoder=BertLMHeadModel(dec_cfg))
        return bert2bert_from_bert(model, tokenizer, f"tiny-{kind}", device)
    raise ValueError(f"unknown tiny student kind {kind!r}; choose seq2seq, causal or bert2bert")
