"""umT5-XXL text encoder (``t5.py``) and its SentencePiece tokenizer (``tokenizer.py``)."""
