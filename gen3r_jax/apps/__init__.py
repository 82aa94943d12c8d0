"""The application layer: what a command-line tool stitches together from the layers below.

``cli`` (quiet logs, one-line errors, the compilation cache of every tool in ``launch/``), ``bundle`` (conversion of a
whole official Gen3R checkpoint, loading a converted one, random bundles), ``sample`` (``launch/sample.py``: checks,
bundle loading, generation, export), ``reconstruct`` (``launch/reconstruct.py``: VGGT on images), ``demo`` (the CPU
demo's random tiny bundle, tokenizer and synthetic example image) and ``vae_demo`` (``launch/demo_vae.py``).

Layering (``pyproject.toml``, import-linter): ``apps`` may import every library layer (``sampling``, ``convert``,
``data``, ``eval``, ``training``, ``models``, ``nn``, ``parallel``); nothing in those imports ``apps``.
"""
