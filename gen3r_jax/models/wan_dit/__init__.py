"""The Wan2.1 DiT with Gen3R's camera adapter: ``transformer.py`` (model), ``config.py``, ``blocks.py``, ``embed.py``,
``inputs.py``, ``camera_adapter.py``."""
