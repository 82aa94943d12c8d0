"""The open-clip XLM-RoBERTa ViT-H/14 visual tower used for image conditioning (``model.py``)."""
