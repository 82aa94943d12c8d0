"""Caption choice and ``clean_prompt`` (training-reference §1.7), with an explicit numpy RNG.

The official code draws with Python's global ``random``; we take a ``np.random.Generator`` so a clip's caption
is a function of (seed, record index) and resumes reproduce it. The draws and their probabilities are the
official ones: one line uniformly from ``captions.txt``; prompts over 1000 characters become ``''``; with
probability 0.2 the raw line is returned as is (not stripped, so it may end in a newline, as in the official
code); otherwise the stripped line's first matching template prefix becomes "A"/"An" (p 0.75) or
"It is a"/"It is an" (p 0.25), the article following the next word's first letter.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from gen3r_jax.errors import require

_VERBS = "shows|portrays|depicts|showcases|presents|captures|features|displays|comprises|includes"
_VERBS_PLURAL = "show|portray|depict|showcase|present|capture|feature|display|comprise|include"
_SCENES = ("scene|scene in the images|scene captured in the images|scene depicted in the images|"
           "main visual content of the scene")
_TAIL = r"(?P<art>a|an)(?=\s+(?P<next>\w+))"
PATTERNS = (
    re.compile(rf"^The image (?:{_VERBS}) {_TAIL}"),
    re.compile(rf"^The images (?:{_VERBS_PLURAL}) {_TAIL}"),
    re.compile(rf"^The (?:{_SCENES}) (?:is|is of|{_VERBS}) {_TAIL}"),
)
MAX_CHARS = 1000
P_RAW = 0.2
P_SHORT = 0.75


def clean_prompt(prompt: str, rng: np.random.Generator) -> str:
  """Strip the captioner's template prefix as the official ``clean_prompt`` does (module docstring)."""
  if len(prompt) > MAX_CHARS:
    return ""
  if rng.random() < P_RAW:
    return prompt

  def repl(m: re.Match) -> str:
    vowel = m.group("next")[:1].lower() in tuple("aeiou")
    if rng.random() < P_SHORT:
      return "An" if vowel else "A"
    return "It is an" if vowel else "It is a"

  prompt = prompt.strip()
  for pat in PATTERNS:
    new, n = pat.subn(repl, prompt, count=1)
    if n:
      return new
  return prompt


def pick_caption(lines: Sequence[str], rng: np.random.Generator, *, clean: bool = True) -> str:
  """One caption line uniformly at random (blank lines included, as ``random.choice(readlines())``)."""
  require(len(lines) > 0, "a scene has no captions; captions.txt needs at least one line.")
  line = str(lines[int(rng.integers(len(lines)))])
  return clean_prompt(line, rng) if clean else line
