"""The default LLM that setup builds: a real Llama checkpoint with a working tokenizer and chat template."""

from __future__ import annotations

import hashlib
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from stack import ROOT
from stack.serving.models import tiny_llm

BUILT = ROOT / ".models" / "tiny-llama"


def test_setup_built_it() -> None:
    assert tiny_llm.is_built(BUILT)


def test_architecture_and_vocab() -> None:
    cfg = AutoConfig.from_pretrained(BUILT)
    tok = AutoTokenizer.from_pretrained(BUILT)
    assert cfg.model_type == "llama"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (2, 128, 4)
    assert cfg.vocab_size == len(tok) == tiny_llm.VOCAB_SIZE


def test_tokenizer_round_trips_and_chats() -> None:
    tok = AutoTokenizer.from_pretrained(BUILT)
    text = "Ray Serve routes requests to replicas: naïve 🚀 text too."
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n") and "hi" in prompt


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_weights_are_seeded(tmp_path: Path) -> None:
    again = tiny_llm.build(tmp_path / "again")
    assert _digest(again / "model.safetensors") == _digest(BUILT / "model.safetensors")
    assert len(AutoTokenizer.from_pretrained(again)) == tiny_llm.VOCAB_SIZE
