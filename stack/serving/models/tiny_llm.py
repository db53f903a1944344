"""Build the default LLM: a tiny Llama with seeded random weights and a locally trained tokenizer.

vLLM serves it like any Hugging Face checkpoint, so the whole OpenAI path is real while the model
stays small enough for a 2-core box. The weights are seeded, so they are the same on every build;
BPE training breaks frequency ties in hash order, so merges of equal count may differ between builds.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
from pathlib import Path

VOCAB_SIZE = 2048
SEED = 0
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
# A plain role-tagged template; vLLM needs one to serve /v1/chat/completions.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Stdlib modules whose docstrings are the training text: always present, no download.
CORPUS_MODULES = [
    "argparse", "asyncio", "collections", "concurrent.futures", "contextlib", "csv", "dataclasses",
    "datetime", "decimal", "email", "functools", "http.client", "http.server", "inspect", "json",
    "logging", "os", "pathlib", "re", "shutil", "socket", "sqlite3", "statistics", "string",
    "subprocess", "tarfile", "threading", "typing", "unittest", "urllib.request", "zipfile",
]


def corpus() -> list[str]:
    """Docstrings of a fixed set of stdlib modules and of the names in their `__all__`.

    `__all__`, not dir(): dir() also lists submodules that other imports happened to load,
    which would make the tokenizer depend on what ran before.
    """
    import importlib
    from types import ModuleType

    texts: list[str] = []
    for name in CORPUS_MODULES:
        module = importlib.import_module(name)
        texts.append(inspect.getdoc(module) or "")
        for attr in sorted(getattr(module, "__all__", [])):
            value = getattr(module, attr, None)
            if not isinstance(value, ModuleType):
                texts.append(inspect.getdoc(value) or "")
    return [t for t in texts if t]


def build_tokenizer(out: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return len(fast)


def build_model(out: Path, vocab_size: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,  # the GPU profile serves max_model_len 4096
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)


def build(out: Path) -> Path:
    """Write tokenizer and weights to a temp dir, then move it into place, so a crash leaves no half model."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    vocab = build_tokenizer(tmp)
    build_model(tmp, vocab)
    (tmp / "serveops-model.json").write_text(json.dumps({"vocab_size": vocab, "seed": SEED}) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def is_built(out: Path) -> bool:
    return (out / "serveops-model.json").exists() and (out / "model.safetensors").exists()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="model directory to write")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args()
    if is_built(args.out) and not args.force:
        print(f"tiny LLM already built at {args.out}")
        return
    build(args.out)
    print(f"built tiny LLM at {args.out}")


if __name__ == "__main__":
    main()
