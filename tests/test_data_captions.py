"""clean_prompt / pick_caption: the official template rewriting and its probabilities (§1.7)."""

import collections

import numpy as np

from gen3r_jax.data.captions import clean_prompt, pick_caption


def _outcomes(prompt, n=2000, seed=0):
  rng = np.random.default_rng(seed)
  return collections.Counter(clean_prompt(prompt, rng) for _ in range(n))


def test_template_rewrites_and_probabilities():
  raw = "  The image shows a wooden table in a kitchen.\n"
  c = _outcomes(raw)
  assert set(c) == {raw, "A wooden table in a kitchen.", "It is a wooden table in a kitchen."}
  n = sum(c.values())
  assert abs(c[raw] / n - 0.2) < 0.03  # raw line (unstripped) with p 0.2
  assert abs(c["A wooden table in a kitchen."] / n - 0.8 * 0.75) < 0.04
  vowel = _outcomes("The scene depicted in the images shows an old barn", n=200)
  assert set(vowel) == {"The scene depicted in the images shows an old barn", "An old barn", "It is an old barn"}
  # The article follows the next word, not the original one.
  assert set(_outcomes("The images depict a apple tree", n=200)) >= {"An apple tree"}


def test_no_match_long_and_deterministic():
  assert set(_outcomes(" A plain caption \n", n=300)) == {" A plain caption \n", "A plain caption"}
  assert clean_prompt("x" * 1001, np.random.default_rng(0)) == ""
  a = [clean_prompt("The image shows a cat", np.random.default_rng(7)) for _ in range(3)]
  assert len(set(a)) == 1


def test_pick_caption_uniform_over_lines():
  lines = ["first\n", "second\n"]
  rng = np.random.default_rng(0)
  picks = collections.Counter(pick_caption(lines, rng, clean=False) for _ in range(1000))
  assert set(picks) == set(lines) and abs(picks["first\n"] - 500) < 60
