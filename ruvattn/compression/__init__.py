"""Tensor compression: quantised key/value tables (:mod:`~ruvattn.compression.quantization`)."""

from ruvattn.compression.quantization import FORMATS, QuantizedTable, dequantize, quantize, quantize_int8

__all__ = ["FORMATS", "QuantizedTable", "dequantize", "quantize", "quantize_int8"]
