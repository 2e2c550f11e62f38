"""SentencePiece models (``tokenizer.model``, ``spiece.model``): a protobuf ``ModelProto``.

Recognised by parsing, not by name: every top-level field must be one of ModelProto's
(sentencepiece/src/sentencepiece_model.proto: 1 pieces, 2 trainer_spec, 3
normalizer_spec, 4 self_test_data, 5 denormalizer_spec, all messages), every piece a
``SentencePiece`` (1 piece: UTF-8 string, 2 score: float, 3 type: enum) and the whole
buffer consumed. The format holds data only; a file that does not parse this way is
not a SentencePiece model (and falls through to the unknown-format check).
"""

from __future__ import annotations

from typing import Any

from mlwarden.supplychain.onnx_scan import _fields, _Malformed

_TOP = {1, 2, 3, 4, 5}
_PIECE = {1: 2, 2: 5, 3: 0}  # field -> wire type


def is_sentencepiece(buf: Any) -> bool:
    """Whether ``buf`` parses completely as a SentencePiece ``ModelProto``."""
    pieces = 0
    try:
        for num, wire, value in _fields(buf, 0, len(buf)):
            if num not in _TOP or wire != 2:
                return False
            start, end = value
            if num == 1:
                pieces += 1
                for pnum, pwire, pvalue in _fields(buf, start, end):
                    if _PIECE.get(pnum) != pwire:
                        return False
                    if pnum == 1:
                        bytes(buf[pvalue[0] : pvalue[1]]).decode("utf-8")
            else:
                for _ in _fields(buf, start, end):  # a well-formed message
                    pass
    except (_Malformed, IndexError, UnicodeDecodeError):
        return False
    return pieces > 0
