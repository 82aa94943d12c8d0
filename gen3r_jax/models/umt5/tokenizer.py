"""umT5 tokenizer: the checkpoint's SentencePiece ``spiece.model`` with HF ``T5Tokenizer`` (legacy) semantics.

What Gen3R's ``_get_t5_prompt_embeds`` calls (``padding="max_length", max_length=512, truncation=True,
add_special_tokens=True``) gives, per prompt:

    ids = sentencepiece(text)            # special-token strings ("</s>", "<pad>", "<unk>") map to their ids
    ids = ids[:max_length - 1]           # truncation keeps room for the eos
    ids = ids + [eos]                    # unless ids already end with eos (HF T5 does not duplicate it)
    ids = ids + [pad] * (max_length - len(ids));  attention_mask = 1 on the real tokens (eos included)

pad 0 / eos 1 / unk 2 (umT5). Runs on the host (numpy int32), before anything is traced.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np
import sentencepiece as spm

from gen3r_jax.errors import Gen3RInputError, require

SPIECE_FILE = "spiece.model"


class UMT5Tokenizer:
  """``tok(prompts) -> {"input_ids": [B, L] int32, "attention_mask": [B, L] int32}``."""

  def __init__(self, model_file: str, *, max_length: int = 512, pad_token: str = "<pad>",
               eos_token: str = "</s>", unk_token: str = "<unk>"):
    if not os.path.isfile(model_file):
      raise Gen3RInputError(f"SentencePiece model {model_file} not found")
    require(max_length >= 1, f"max_length must be >= 1, got {max_length}")
    self.sp = spm.SentencePieceProcessor(model_file=os.fspath(model_file))
    self.max_length = int(max_length)
    self.special = {}
    for tok in (pad_token, eos_token, unk_token):
      i = self.sp.piece_to_id(tok)
      if self.sp.id_to_piece(i) != tok:
        raise Gen3RInputError(f"{model_file}: special token {tok!r} is not in the vocabulary")
      self.special[tok] = i
    self.pad_id, self.eos_id, self.unk_id = (self.special[t] for t in (pad_token, eos_token, unk_token))
    self._split = re.compile("(" + "|".join(re.escape(t) for t in self.special) + ")")

  @classmethod
  def from_pretrained(cls, directory: str, **kw) -> "UMT5Tokenizer":
    """From a checkpoint's ``tokenizer/`` folder (or the ``spiece.model`` file itself)."""
    directory = os.fspath(directory)
    if os.path.isfile(directory):
      return cls(directory, **kw)
    path = os.path.join(directory, SPIECE_FILE)
    if not os.path.isfile(path):
      found = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
      hint = (" It holds only a HF tokenizer.json; put the SentencePiece spiece.model of google/umt5-xxl "
              "next to it." if "tokenizer.json" in found else "")
      raise Gen3RInputError(f"{directory}: no {SPIECE_FILE} found (found: {', '.join(found) or 'nothing'})."
                            + hint)
    return cls(path, **kw)

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    """Token ids of one text without eos (special-token strings become their ids)."""
    ids: list[int] = []
    for chunk in self._split.split(text):
      if chunk in self.special:
        ids.append(self.special[chunk])
      elif chunk:
        ids.extend(self.sp.encode(chunk))
    return ids

  def __call__(self, prompts: str | Sequence[str], *, max_length: int | None = None,
               truncation: bool = True) -> dict[str, np.ndarray]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    for i, p in enumerate(prompts):
      if not isinstance(p, str):
        raise Gen3RInputError(f"prompts[{i}]: expected a string, got {type(p).__name__}")
    max_length = self.max_length if max_length is None else int(max_length)
    require(max_length >= 1, f"max_length must be >= 1, got {max_length}")
    ids = np.full((len(prompts), max_length), self.pad_id, np.int32)
    mask = np.zeros((len(prompts), max_length), np.int32)
    for b, text in enumerate(prompts):
      toks = self.encode(text)
      n_special = 0 if toks[-1:] == [self.eos_id] else 1
      if len(toks) + n_special > max_length:
        if not truncation:
          raise Gen3RInputError(
              f"prompts[{b}] has {len(toks) + n_special} tokens (eos included) but max_length is {max_length}; "
              "shorten the prompt, raise max_length, or pass truncation=True to cut it")
        toks = toks[:max_length - 1]
        n_special = 0 if toks[-1:] == [self.eos_id] else 1
      toks = toks + [self.eos_id] * n_special
      ids[b, :len(toks)] = toks
      mask[b, :len(toks)] = 1
    return {"input_ids": ids, "attention_mask": mask}
