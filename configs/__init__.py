"""Experiment configs (ml_collections), an importable package: ``from configs import base``.

``launch/train.py --config configs/<file>.py[:entry]`` and ``launch/sample.py --config configs/<file>.py`` load a
file by path; the files import each other as ``configs.<name>`` (installed with the project: ``pip install -e .``).
"""
